# attack: writes a frame with extra fields (stdout, duration, status of the
#   response) to smuggle them into the response
# stopped-by: unknown frame fields make the frame invalid: no result
# expect: 422 sandbox-killed
import os


def main():
    os.write(3, b'{"status":"ok","result":1,"stdout":"x","execution_method":"host"}')
    os.close(3)
    os._exit(0)
