# attack: calls unshare, setns, mount, umount2, pivot_root and socket through
#   their x32-ABI numbers (bit 30 set), which a filter comparing plain
#   x86_64 numbers lets through to the kernel
# stopped-by: the jail's seccomp policy lists each x32 alias, and a warm
#   runner's own filter refuses every number with the x32 bit: EPERM in both
#   modes (on a kernel without x32 support the call would say ENOSYS, having
#   reached it)
# expect: 200
# result: {"unshare": "EPERM", "setns": "EPERM", "mount": "EPERM", "umount2": "EPERM", "pivot_root": "EPERM", "socket": "EPERM"}
import ctypes
import errno

X32 = 0x40000000
NUMBERS = {"unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "socket": 41}
CLONE_NEWUSER = 0x10000000
libc = ctypes.CDLL(None, use_errno=True)


def main():
    out = {}
    for name, nr in NUMBERS.items():
        first = CLONE_NEWUSER if name == "unshare" else 0
        if libc.syscall(X32 | nr, first, 0, 0, 0, 0) == 0:
            out[name] = "allowed"
        else:
            out[name] = errno.errorcode[ctypes.get_errno()]
    return out
