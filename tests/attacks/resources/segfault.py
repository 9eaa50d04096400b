# attack: dereferences a null pointer with ctypes
# stopped-by: the process dies of SIGSEGV inside its own jail
# expect: 422 sandbox-killed
import ctypes


def main():
    ctypes.memset(0, 1, 1)
