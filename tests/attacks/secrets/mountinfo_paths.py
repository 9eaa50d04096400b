# attack: reads /proc/self/mountinfo and the cgroup files, whose bind-mount
#   sources and cgroup paths would name host folders
# stopped-by: the harness and /etc files are bound from a neutral folder the
#   gateway writes (not the repository); cgroup namespace shows "/"
# expect: 200
# result: {"cgroups": ["/"]}
import os


def main():
    print(open("/proc/self/mountinfo").read())
    print(open("/proc/self/mounts").read())
    cgroups = sorted({line.split(":", 2)[2] for line in open("/proc/self/cgroup").read().splitlines()})
    return {"cgroups": cgroups}
