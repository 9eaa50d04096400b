# attack: points fd 3 at /dev/null, so the real result vanishes
# stopped-by: no frame means no result
# expect: 422 sandbox-killed
import os


def main():
    os.dup2(os.open("/dev/null", os.O_WRONLY), 3)
    return "lost"
