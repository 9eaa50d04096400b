# attack: for a second, sends SIGKILL, SIGSTOP, SIGINT, SIGTERM, SIGUSR1 and
#   SIGHUP to its process group (kill 0), over and over, while another
#   tenant's run is in flight and the warm pool is full
# stopped-by: every run (and every warm runner, before it is handed out) is
#   the leader of a session and process group of its own: its group holds
#   only its own processes; the zygote ignores what it could be sent
# expect: 200
# result: {"sent": 6, "errors": []}
# cross-run: victim
import os
import signal
import time

SIGNALS = [signal.SIGKILL, signal.SIGSTOP, signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP]


def main():
    # pid 1 of its own pid namespace, the script ignores signals it has no
    # handler for; SIGINT it would handle (KeyboardInterrupt), so not that.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    errors = set()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        for sig in SIGNALS:
            try:
                os.kill(0, sig)
            except OSError as e:
                errors.add(e.strerror)
        time.sleep(0.01)
    return {"sent": len(SIGNALS), "errors": sorted(errors)}
