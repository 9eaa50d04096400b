# attack: rewrites /etc/hosts and /etc/resolv.conf (to redirect a later run)
#   and creates files in /etc
# stopped-by: read-only binds of root-owned files and a read-only root
# expect: 200
# result: {"/etc/hosts": "EACCES", "/etc/resolv.conf": "EACCES", "/etc/new": "EROFS", "/etc/passwd": "EACCES"}
import errno


def main():
    out = {}
    for path in ["/etc/hosts", "/etc/resolv.conf", "/etc/new", "/etc/passwd"]:
        try:
            with open(path, "a") as f:
                f.write("6.6.6.6 evil\n")
            out[path] = "written"
        except OSError as e:
            out[path] = errno.errorcode[e.errno]
    return out
