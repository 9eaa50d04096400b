# attack: looks for the host's files outside the few bound system folders
# stopped-by: mount namespace: the root is an empty read-only tmpfs
# expect: 200
# result: {"visible": ["/bin", "/dev", "/etc", "/lib", "/lib64", "/opt", "/proc", "/pyexec", "/tmp", "/usr"]}
import os


def main():
    return {"visible": sorted("/" + name for name in os.listdir("/"))}
