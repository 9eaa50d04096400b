# attack: double-forks a setsid daemon that sleeps on to outlive the request
#   (and would run beside the next tenant's script)
# stopped-by: pid namespace and cgroup: the whole tree is sent SIGKILL before
#   the response and is gone, its cgroup removed, before the run's slot is
#   free again (the corpus checks it)
# expect: 200
# result: {"daemonized": true}
import os
import time


def main():
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            while True:
                time.sleep(1)
        os._exit(0)
    os.wait()
    return {"daemonized": True}
