# attack: looks for its parent (nsjail, then the gateway) through getppid,
#   /proc/1/../ and /proc/self/status
# stopped-by: pid namespace: the parent is outside and shows as pid 0
# expect: 200
# result: {"ppid": 0, "status_ppid": "0", "pid": 1}
import os


def main():
    status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
    return {"ppid": os.getppid(), "status_ppid": status["PPid"].strip(), "pid": os.getpid()}
