# attack: creates a nested user namespace (unshare, clone) to gain a full
#   capability set there, or joins another namespace with setns
# stopped-by: seccomp: unshare, setns and namespace-creating clone flags
#   answer EPERM; clone3 answers ENOSYS
# expect: 200
# result: {"unshare": "EPERM", "clone": "EPERM", "clone3": "ENOSYS", "setns": "EPERM"}
import ctypes
import errno

libc = ctypes.CDLL(None, use_errno=True)


def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def main():
    CLONE_NEWUSER, CLONE_NEWNS, SIGCHLD = 0x10000000, 0x00020000, 17
    return {
        "unshare": call(272, CLONE_NEWUSER | CLONE_NEWNS),
        "clone": call(56, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0),
        "clone3": call(435, 0, 0),
        "setns": call(308, 0, 0),
    }
