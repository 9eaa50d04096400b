# attack: forks inside main so parent and child both return through the
#   harness, racing two frames onto the result channel
# stopped-by: only the process that started the run may report; the child
#   leaves silently
# expect: 200
# result: "parent"
import os


def main():
    pid = os.fork()
    if pid == 0:
        return "child"
    os.waitpid(pid, 0)
    return "parent"
