# attack: takes 1 GiB of shared memory (MAP_SHARED anonymous, the /dev/shm
#   equivalent), which is not any process's private memory
# stopped-by: shared pages are charged to the run's memory cgroup too
# expect: 422 memory-limit
import mmap


def main():
    m = mmap.mmap(-1, 1 << 30, flags=mmap.MAP_SHARED)
    for i in range(0, len(m), 4096):
        m[i] = 1
    return "1 GiB of shared memory"
