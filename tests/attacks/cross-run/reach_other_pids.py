# attack: names every pid and process group up to 4096 and tries each call a
#   process may make on another of the same uid: all six signals, killpg,
#   setpriority, sched_setaffinity, prlimit, pidfd_open; while another
#   tenant's run is in flight and the warm pool is full
# stopped-by: pid namespace per run: no pid or group of another run, of a
#   waiting runner or of the zygote can be named from inside
# expect: 200
# result: {"reached": 0}
# cross-run: victim
import os
import resource
import signal

SIGNALS = [signal.SIGKILL, signal.SIGSTOP, signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP]


def attempts(pid):
    for sig in SIGNALS:
        yield lambda: os.kill(pid, sig)
        yield lambda: os.killpg(pid, sig)
    yield lambda: os.setpriority(os.PRIO_PROCESS, pid, 19)
    yield lambda: os.setpriority(os.PRIO_PGRP, pid, 19)
    yield lambda: os.sched_setaffinity(pid, {0})
    yield lambda: resource.prlimit(pid, resource.RLIMIT_NOFILE, (1, 1))
    yield lambda: os.close(os.pidfd_open(pid))


def main():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reached = 0
    # pid 1 is the script itself.
    for pid in range(2, 4097):
        for attempt in attempts(pid):
            try:
                attempt()
                reached += 1
            except OSError:
                pass
    return {"reached": reached}
