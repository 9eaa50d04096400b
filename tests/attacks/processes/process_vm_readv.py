# attack: reads another process's memory with process_vm_readv
# stopped-by: seccomp kills the process on process_vm_readv/writev
# expect: 422 sandbox-killed
import ctypes


def main():
    libc = ctypes.CDLL(None)
    libc.syscall(310, 1, 0, 0, 0, 0, 0)
    return "process_vm_readv allowed"
