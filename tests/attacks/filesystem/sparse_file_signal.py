# attack: a child writes past the file size limit with SIGXFSZ at its
#   default action
# stopped-by: RLIMIT_FSIZE: the kernel kills the child with SIGXFSZ
# expect: 200
# result: {"child_killed_by": "SIGXFSZ"}
import os
import signal


def main():
    pid = os.fork()
    if pid == 0:
        # CPython ignores SIGXFSZ at start (a write then fails with EFBIG, see
        # sparse_file.py); restore the default. Done in a child because the
        # script itself is pid 1 of its namespace, which the kernel shields
        # from its own default-action signals.
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        fd = os.open("/tmp/big", os.O_CREAT | os.O_WRONLY)
        os.lseek(fd, 1 << 40, os.SEEK_SET)
        os.write(fd, b"x")
        os._exit(0)
    status = os.waitpid(pid, 0)[1]
    return {"child_killed_by": signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else None}
