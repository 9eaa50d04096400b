# attack: raises the recursion limit to a million and recurses to overflow
#   the C stack
# stopped-by: the frames fill the memory cgroup, or the C stack overflows
#   (SIGSEGV): either way it dies inside its own jail
# expect: 422 sandbox-killed | 422 runtime-error | 422 memory-limit
import sys


def down(n):
    return down(n + 1) + 1


def main():
    sys.setrecursionlimit(10**6)
    return down(0)
