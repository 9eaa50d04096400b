# attack: one 64 GiB allocation, touched page by page
# stopped-by: the memory cgroup; Python reports MemoryError or the kernel
#   OOM-kills it, both answered as memory-limit
# expect: 422 memory-limit
import numpy as np


def main():
    a = np.ones(8 << 30, dtype=np.float64)
    return float(a.sum())
