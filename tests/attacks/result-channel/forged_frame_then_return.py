# attack: writes a forged frame on fd 3 (and every other fd) before
#   returning its real value
# stopped-by: the gateway accepts exactly one well-formed frame: two frames
#   are no result at all
# expect: 422 sandbox-killed
import os


def main():
    frame = b'{"status":"ok","result":"forged"}'
    for fd in range(0, 64):
        try:
            os.write(fd, frame)
        except OSError:
            pass
    return "real"
