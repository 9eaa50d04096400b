# attack: lowers the CPU and I/O priority of its process group and of every
#   process of its uid (setpriority and ioprio_set on its own group and uid,
#   which every run shares) while another tenant's run is in flight
# stopped-by: own process group per run; the kernel applies PRIO_USER and
#   IOPRIO_WHO_USER only to processes visible in the caller's pid namespace;
#   the victim checks its own nice and I/O priority at the end
# expect: 200
# result: {"setpriority": ["ok", "ok"], "ioprio_set": ["ok", "ok"]}
# cross-run: victim
import ctypes
import os

SYS_IOPRIO_SET = 251
IOPRIO_WHO_PGRP = 2
IOPRIO_WHO_USER = 3
IOPRIO_IDLE = 3 << 13
libc = ctypes.CDLL(None, use_errno=True)


def outcome(call):
    try:
        call()
        return "ok"
    except OSError as e:
        return e.strerror


def ioprio_set(which):
    # For IOPRIO_WHO_USER, 0 names uid 0 (unmapped here), not the caller.
    who = os.getuid() if which == IOPRIO_WHO_USER else 0
    if libc.syscall(SYS_IOPRIO_SET, which, who, IOPRIO_IDLE) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def main():
    return {
        "setpriority": [outcome(lambda: os.setpriority(os.PRIO_PGRP, 0, 19)),
                        outcome(lambda: os.setpriority(os.PRIO_USER, 0, 19))],
        "ioprio_set": [outcome(lambda: ioprio_set(IOPRIO_WHO_PGRP)),
                       outcome(lambda: ioprio_set(IOPRIO_WHO_USER))],
    }
