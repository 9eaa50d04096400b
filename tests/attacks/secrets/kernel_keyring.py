# attack: lists and reads the kernel keyrings (session, user) where host
#   processes may keep secrets
# stopped-by: seccomp: keyctl, add_key and request_key answer EPERM
# expect: 200
# result: {"keyctl": "EPERM", "add_key": "EPERM", "request_key": "EPERM"}
import ctypes
import errno

libc = ctypes.CDLL(None, use_errno=True)


def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def main():
    # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING), add_key and request_key.
    return {"keyctl": call(250, 0, -3), "add_key": call(248, 0, 0, 0, 0, -3), "request_key": call(249, 0, 0, 0, 0)}
