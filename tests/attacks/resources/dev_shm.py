# attack: fills /dev/shm, the host's shared-memory tmpfs (and what
#   multiprocessing locks need)
# stopped-by: the jail has no /dev/shm at all; its /dev holds three nodes
# expect: 200
# result: {"error": "ENOENT", "dev": ["null", "urandom", "zero"]}
import errno
import os


def main():
    try:
        with open("/dev/shm/fill", "wb") as f:
            f.write(b"x" * (64 << 20))
        return {"error": None, "dev": sorted(os.listdir("/dev"))}
    except OSError as e:
        return {"error": errno.errorcode[e.errno], "dev": sorted(os.listdir("/dev"))}
