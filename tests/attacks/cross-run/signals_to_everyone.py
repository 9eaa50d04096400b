# attack: sends SIGKILL, SIGSTOP, SIGINT, SIGTERM, SIGUSR1 and SIGHUP to
#   every process it may signal (kill -1), for a second, while another
#   tenant's run is in flight and the warm pool is full
# stopped-by: kill(-1) reaches only the caller's own pid namespace, where the
#   run is alone
# expect: 200
# result: {"SIGKILL": "ESRCH", "SIGSTOP": "ESRCH", "SIGINT": "ESRCH", "SIGTERM": "ESRCH", "SIGUSR1": "ESRCH", "SIGHUP": "ESRCH"}
# cross-run: victim
import errno
import os
import signal
import time

SIGNALS = [signal.SIGKILL, signal.SIGSTOP, signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP]


def main():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = {}
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        for sig in SIGNALS:
            try:
                os.kill(-1, sig)
                out[sig.name] = "sent"
            except OSError as e:
                out[sig.name] = errno.errorcode[e.errno]
        time.sleep(0.01)
    return out
