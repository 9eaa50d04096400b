# attack: ignores SIGTERM, SIGINT, SIGHUP and SIGXCPU so a polite kill never
#   ends it
# stopped-by: the gateway kills with SIGKILL, which cannot be ignored
# expect: 422 timeout
# timeout_ms: 1500
import signal
import time


def main():
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    while True:
        time.sleep(0.01)
