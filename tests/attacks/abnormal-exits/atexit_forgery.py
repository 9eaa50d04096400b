# attack: registers an atexit handler that writes a second frame after the
#   harness has reported
# stopped-by: the harness leaves with os._exit after its report: atexit
#   handlers never run
# expect: 200
# result: "real"
import atexit
import os


def main():
    atexit.register(lambda: os.write(3, b'{"status":"ok","result":"forged"}'))
    return "real"
