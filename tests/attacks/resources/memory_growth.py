# attack: grows its memory 16 MiB at a time until the host runs out
# stopped-by: the run's memory cgroup (256 MiB) OOM-kills it
# expect: 422 memory-limit


def main():
    hoard = []
    while True:
        hoard.append(bytearray(16 << 20))
