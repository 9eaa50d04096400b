# attack: queues real-time signals to itself (blocked, so they stay pending)
#   until the kernel refuses, and holds them for two seconds: pending signals
#   are charged to root on the host, whose ~96,000 would then be used up and
#   every host timer_create fail with EAGAIN
# stopped-by: RLIMIT_SIGPENDING of 64 for every run, set by the gateway on
#   nsjail and inherited by the jail and every warm runner; the test creates
#   a POSIX timer on the host while the run holds its signals
# expect: 200
# result: {"at_most_64": true, "refused": "EAGAIN"}
# probe: timer
import ctypes
import errno
import os
import signal
import time

libc = ctypes.CDLL(None, use_errno=True)


def main():
    sig = signal.SIGRTMIN
    signal.pthread_sigmask(signal.SIG_BLOCK, [sig])
    queued, refused = 0, None
    while queued < 200000:
        if libc.sigqueue(os.getpid(), sig, ctypes.c_long(0)) != 0:
            refused = errno.errorcode[ctypes.get_errno()]
            break
        queued += 1
    time.sleep(2)
    return {"at_most_64": queued <= 64, "refused": refused}
