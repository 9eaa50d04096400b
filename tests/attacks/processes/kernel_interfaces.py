# attack: reaches kernel attack surface: bpf, userfaultfd, perf_event_open,
#   io_uring, module loading, kexec, syslog, reboot
# stopped-by: seccomp: EPERM (ENOSYS for io_uring)
# expect: 200
# result: {"bpf": "EPERM", "userfaultfd": "EPERM", "perf_event_open": "EPERM", "io_uring_setup": "ENOSYS", "init_module": "EPERM", "finit_module": "EPERM", "kexec_load": "EPERM", "syslog": "EPERM", "reboot": "EPERM", "open_by_handle_at": "EPERM"}
import ctypes
import errno

libc = ctypes.CDLL(None, use_errno=True)


def call(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def main():
    return {
        "bpf": call(321, 0, 0, 0),
        "userfaultfd": call(323, 0),
        "perf_event_open": call(298, 0, 0, -1, -1, 0),
        "io_uring_setup": call(425, 8, 0),
        "init_module": call(175, 0, 0, 0),
        "finit_module": call(313, 0, 0, 0),
        "kexec_load": call(246, 0, 0, 0, 0),
        "syslog": call(103, 3, 0, 0),
        "reboot": call(169, 0xfee1dead, 672274793, 0x4321fedc, 0),
        "open_by_handle_at": call(304, 0, 0, 0),
    }
