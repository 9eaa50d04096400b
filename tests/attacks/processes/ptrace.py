# attack: ptrace (PTRACE_TRACEME, then attaching) to inspect or control
#   another process
# stopped-by: seccomp kills the process on ptrace
# expect: 422 sandbox-killed
import ctypes


def main():
    ctypes.CDLL(None).ptrace(0, 0, 0, 0)
    return "ptrace allowed"
