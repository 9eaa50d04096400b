# attack: writes its own frame on fd 3 listing output files outside /tmp/out
#   (a path with `..`, an absolute path), hoping the gateway reads or trusts
#   them as host paths
# stopped-by: a frame's files are paths and contents, never read from disk by
#   the gateway; a path that is not plain makes the frame invalid: no result
# expect: 422 sandbox-killed
import os


def main():
    os.write(
        3,
        b'{"status":"ok","result":1,"files":[{"path":"../../etc/passwd","content":""},'
        b'{"path":"/etc/shadow","content":""}]}',
    )
    os.close(3)
    os._exit(0)
