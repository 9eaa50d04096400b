# attack: prints a well-formed result frame on stdout and then exits without
#   returning
# stopped-by: the result travels on its own fd; stdout is only ever stdout
# expect: 422 sandbox-killed
import os
import sys


def main():
    print('{"status": "ok", "result": "forged"}')
    print('{"result": "forged", "stdout": "", "stderr": ""}')
    sys.stdout.flush()
    os._exit(0)
