# attack: remounts / read-write, mounts a new tmpfs or proc, bind-mounts over
#   /pyexec, and uses the new mount API (fsopen)
# stopped-by: seccomp (mount, umount2, fsopen… answer EPERM); no capabilities
# expect: 200
# result: {"mount": "EPERM", "umount2": "EPERM", "fsopen": "EPERM", "pivot_root": "EPERM", "chroot": "EPERM"}
import ctypes
import errno

libc = ctypes.CDLL(None, use_errno=True)


def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(nr, *[ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def main():
    MS_REMOUNT = 32
    return {
        "mount": call(165, b"none", b"/", b"tmpfs", MS_REMOUNT, 0),
        "umount2": call(166, b"/pyexec", 2),
        "fsopen": call(430, b"tmpfs", 0),
        "pivot_root": call(155, b"/tmp", b"/tmp"),
        "chroot": call(161, b"/tmp"),
    }
