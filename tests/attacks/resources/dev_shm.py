# attack: fills /dev/shm (what multiprocessing's locks and shared_memory
#   use) to take memory outside the run's limits, or the host's shared tmpfs
# stopped-by: each run has a /dev/shm of its own, a tmpfs of spec.sandbox.shmMiB
#   (32 MiB) whose pages are charged to the run's memory cgroup
# expect: 200
# result: {"error": "ENOSPC", "dev": ["null", "shm", "urandom", "zero"]}
import errno
import os


def main():
    try:
        # Files of 8 MiB, under the file-size limit: 64 MiB in all.
        for i in range(8):
            with open("/dev/shm/fill-%d" % i, "wb") as f:
                f.write(b"x" * (8 << 20))
        return {"error": None, "dev": sorted(os.listdir("/dev"))}
    except OSError as e:
        return {"error": errno.errorcode[e.errno], "dev": sorted(os.listdir("/dev"))}
