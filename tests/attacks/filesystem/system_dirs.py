# attack: writes into system folders, the Python runtime and the harness, to
#   plant code for later runs
# stopped-by: read-only binds; the jail's user owns none of them
# expect: 200
# result: {"written": []}
import os


def main():
    written = []
    site = [p for p in __import__("sys").path if p.endswith("site-packages")][0]
    for path in ["/usr/evil", "/usr/lib/evil", "/bin/evil", "/lib/evil", site + "/evil.pth",
                 "/pyexec/harness.py", "/pyexec/evil.py", "/evil", "/proc/sys/kernel/core_pattern",
                 "/dev/evil", "/dev/null2"]:
        try:
            with open(path, "a") as f:
                f.write("import os")
            written.append(path)
        except OSError:
            pass
    return {"written": written}
