# attack: walks every file descriptor number for inherited sockets, the
#   gateway's listener, its log or config files
# stopped-by: nsjail closes every fd but 0-2 and the result fd 3; all are
#   pipes or /dev/null
# expect: 200
# result: {"sockets": [], "other": []}
import os
import stat


def main():
    sockets, other = [], []
    for fd in range(4096):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        target = os.readlink("/proc/self/fd/%d" % fd) if os.path.exists("/proc/self/fd/%d" % fd) else "?"
        print(fd, target)
        if stat.S_ISSOCK(st.st_mode):
            sockets.append(fd)
        elif not stat.S_ISFIFO(st.st_mode) and target != "/dev/null" and not target.startswith("/proc/"):
            other.append(target)
    return {"sockets": sockets, "other": other}
