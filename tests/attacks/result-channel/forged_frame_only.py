# attack: writes its own frame on fd 3, closes it and exits
# stopped-by: nothing needs to: the frame is parsed strictly and can say no
#   more than main() could have returned itself
# expect: 200
# result: {"admin": true}
import os


def main():
    os.write(3, b'{"status":"ok","result":{"admin":true}}')
    os.close(3)
    os._exit(0)
