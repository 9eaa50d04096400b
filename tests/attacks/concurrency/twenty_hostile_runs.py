# attack: twenty runs at once, each forking, allocating and spinning, while a
#   healthy client keeps sending requests
# stopped-by: bounded slots and queue; each run's own cgroup limits and
#   timer; the healthy client gets a 200 for every request
# expect: 422 timeout | 422 memory-limit
# timeout_ms: 1500
# concurrent: 20
import os


def main():
    for _ in range(4):
        try:
            os.fork()
        except OSError:
            pass
    hoard = bytearray(8 << 20)
    while True:
        hoard[0] = 1
