# attack: spins forever to hold a sandbox slot and a CPU
# stopped-by: the gateway's wall-clock timer kills the run's cgroup
# expect: 422 timeout
# timeout_ms: 1500


def main():
    while True:
        pass
