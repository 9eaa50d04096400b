# attack: a classic fork bomb: every process forks forever
# stopped-by: the run's cgroup pids limit (32); the wall timeout ends the
#   rest and the whole cgroup is killed
# expect: 422 timeout
# timeout_ms: 2500
import os


def main():
    while True:
        try:
            os.fork()
        except OSError:
            pass
