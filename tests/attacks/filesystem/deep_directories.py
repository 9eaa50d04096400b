# attack: builds a directory tree thousands of levels deep to exhaust the
#   kernel's path handling or the gateway's cleanup
# stopped-by: the tree lives in the run's tmpfs, discarded with its mount
#   namespace; ENAMETOOLONG/ENOSPC bound it
# expect: 200
# result: {"deep": true}
import os


def main():
    depth = 0
    os.chdir("/tmp")
    try:
        while depth < 100_000:
            os.mkdir("d")
            os.chdir("d")
            depth += 1
    except OSError:
        pass
    return {"deep": depth > 1000}
