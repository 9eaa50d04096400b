# attack: reads /proc/PID/environ and cmdline of every visible pid, hoping
#   for the gateway's or nsjail's
# stopped-by: pid namespace: the script is pid 1 and sees only its own tree
# expect: 200
# result: {"pids": [1], "environ_has_secret": false}
# forbid: CARGO_
import os


def main():
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    secret = False
    for pid in pids:
        for name in ("environ", "cmdline"):
            try:
                data = open("/proc/%d/%s" % (pid, name), "rb").read()
            except OSError:
                continue
            print(pid, name, data)
            secret |= b"PYEXEC" in data or b"KEY" in data
    return {"pids": pids, "environ_has_secret": secret}
