# attack: four children each take 100 MiB, under the limit alone, 400 MiB
#   together
# stopped-by: the memory cgroup counts the whole run: one of them is OOM-killed
# expect: 200 | 422 memory-limit
# result: {"all_children_finished": false}
import os
import time


def main():
    pids = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            block = bytearray(100 << 20)
            for i in range(0, len(block), 4096):
                block[i] = 1
            time.sleep(2)
            os._exit(0)
        pids.append(pid)
    codes = [os.waitpid(p, 0)[1] for p in pids]
    return {"all_children_finished": all(c == 0 for c in codes)}
