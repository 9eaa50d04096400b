# attack: hard-links read-only system files (the harness, python) into the
#   writable /tmp to modify them there
# stopped-by: /tmp is its own tmpfs: links across filesystems fail (EXDEV)
# expect: 200
# result: {"/pyexec/harness.py": "EXDEV", "/etc/passwd": "EXDEV", "/usr/bin/env": "EXDEV"}
import errno
import os


def main():
    out = {}
    for i, path in enumerate(["/pyexec/harness.py", "/etc/passwd", "/usr/bin/env"]):
        try:
            os.link(path, "/tmp/link%d" % i)
            out[path] = "linked"
        except OSError as e:
            out[path] = errno.errorcode[e.errno]
    return out
