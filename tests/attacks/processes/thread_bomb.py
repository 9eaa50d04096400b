# attack: starts threads until the machine runs out
# stopped-by: the cgroup pids limit counts threads: the 33rd cannot start
# expect: 200
# result: {"bounded": true}
import threading
import time


def main():
    started = 0
    try:
        for _ in range(10_000):
            threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
            started += 1
    except RuntimeError:
        pass
    return {"bounded": started < 32}
