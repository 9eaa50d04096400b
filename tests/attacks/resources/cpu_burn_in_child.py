# attack: burns CPU in a child while the parent waits quietly for it
# stopped-by: the wall-clock timer kills the whole cgroup, child included
# expect: 422 timeout
# timeout_ms: 1500
import os


def main():
    pid = os.fork()
    if pid == 0:
        while True:
            pass
    os.waitpid(pid, 0)
