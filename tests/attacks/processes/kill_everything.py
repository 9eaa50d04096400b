# attack: kills its parent (nsjail), every pid it can name and every process
#   it may signal (-1), hoping to take the gateway down
# stopped-by: pid namespace: no process outside it can be named or signalled
# expect: 200
# result: {"ppid": 0, "signalable_pids": 0, "kill_minus_1": "ESRCH"}
import errno
import os
import signal


def main():
    out = {"ppid": os.getppid(), "signalable_pids": 0}
    for pid in range(2, 5000):
        try:
            os.kill(pid, signal.SIGKILL)
            out["signalable_pids"] += 1
        except OSError:
            pass
    try:
        os.kill(-1, signal.SIGKILL)
        out["kill_minus_1"] = "sent"
    except OSError as e:
        out["kill_minus_1"] = errno.errorcode[e.errno]
    return out
