# attack: fills /tmp until the disk is full, hoping it is the host's disk
# stopped-by: /tmp is a private tmpfs of 32 MiB (ENOSPC) and RLIMIT_FSIZE
# expect: 200
# result: {"error": "ENOSPC", "under_limit": true}
import errno
import os


def main():
    written = 0
    chunk = b"x" * (1 << 20)
    try:
        for i in range(1000):
            with open("/tmp/fill%d" % i, "wb") as f:
                for _ in range(8):
                    f.write(chunk)
                    written += len(chunk)
    except OSError as e:
        return {"error": errno.errorcode[e.errno], "under_limit": written <= 32 << 20}
    return {"error": None, "under_limit": written <= 32 << 20}
