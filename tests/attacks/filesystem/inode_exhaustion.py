# attack: creates empty files until inodes run out
# stopped-by: the private tmpfs has its own inode limit (nr_inodes): ENOSPC
#   there, before the inodes' kernel memory reaches the memory limit
# expect: 200
# result: {"error": "ENOSPC"}
import errno
import os


def main():
    try:
        for i in range(10_000_000):
            os.close(os.open("/tmp/%d" % i, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError as e:
        return {"error": errno.errorcode[e.errno]}
    return {"error": None}
