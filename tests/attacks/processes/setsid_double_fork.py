# attack: double-forks a setsid daemon that sleeps on to outlive the request
#   (and would run beside the next tenant's script)
# stopped-by: pid namespace and cgroup: the whole tree is killed and its
#   cgroup removed before the response is sent (the corpus checks it)
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
