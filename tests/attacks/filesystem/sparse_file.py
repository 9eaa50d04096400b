# attack: creates a 1 TiB sparse file by seeking and writing one byte
# stopped-by: RLIMIT_FSIZE (16 MiB): the write past the limit fails (EFBIG)
# expect: 200
# result: {"error": "EFBIG", "truncate": "EFBIG"}
import errno
import os
import signal


def main():
    # SIGXFSZ would kill the process; ignoring it turns the limit into EFBIG.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    out = {}
    fd = os.open("/tmp/sparse", os.O_CREAT | os.O_WRONLY)
    try:
        os.lseek(fd, 1 << 40, os.SEEK_SET)
        os.write(fd, b"x")
        out["error"] = None
    except OSError as e:
        out["error"] = errno.errorcode[e.errno]
    try:
        os.ftruncate(fd, 1 << 40)
        out["truncate"] = None
    except OSError as e:
        out["truncate"] = errno.errorcode[e.errno]
    return out
