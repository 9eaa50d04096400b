# attack: creates device nodes (a disk, /dev/mem) with mknod to read the host
# stopped-by: no CAP_MKNOD; the user namespace forbids device nodes; /tmp is
#   nodev
# expect: 200
# result: {"block": "EPERM", "char": "EPERM"}
import errno
import os
import stat


def main():
    out = {}
    for name, mode, dev in (("block", stat.S_IFBLK, os.makedev(254, 0)), ("char", stat.S_IFCHR, os.makedev(1, 1))):
        try:
            os.mknod("/tmp/" + name, mode | 0o600, dev)
            out[name] = "created"
        except OSError as e:
            out[name] = errno.errorcode[e.errno]
    return out
