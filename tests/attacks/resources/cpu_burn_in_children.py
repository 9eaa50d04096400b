# attack: under a 1 CPU-second limit, four children each burn 0.9 s of CPU
#   (under their own RLIMIT_CPU, which counts one process) and the parent
#   waits for them: 3.6 CPU-seconds for a run allowed one
# stopped-by: the gateway reads the run's cgroup CPU time (every process
#   together) while it runs and ends it at the limit; RLIMIT_CPU stays as a
#   per-process backstop
# expect: 422 timeout
# detail: CPU limit of 1 s
# tenant: one-cpu-second
import os
import time


def burn(seconds):
    while time.process_time() < seconds:
        pass


def main():
    children = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            burn(0.9)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    return {"escaped": "the CPU limit"}
