# attack: opens as many inotify and fanotify instances as it can and holds
#   them for two seconds: they are charged to root on the host (128 inotify
#   instances for the whole machine), so every root process there, the
#   gateway's policy watcher among them, would lose inotify meanwhile;
#   watches on the shared Python tree would also show other runs' imports
# stopped-by: seccomp refuses inotify_init, inotify_init1 and fanotify_init
#   (EPERM) in both modes; the test makes an inotify instance on the host
#   while the run holds what it got
# expect: 200
# result: {"inotify": 0, "inotify_error": "EPERM", "fanotify_error": "EPERM"}
# probe: inotify
import ctypes
import errno
import time

libc = ctypes.CDLL(None, use_errno=True)


def main():
    held, error = [], None
    while len(held) < 200:
        fd = libc.inotify_init1(0)
        if fd < 0:
            error = errno.errorcode[ctypes.get_errno()]
            break
        held.append(fd)
    fanotify = None
    if libc.fanotify_init(0, 0) < 0:
        fanotify = errno.errorcode[ctypes.get_errno()]
    time.sleep(2)
    return {"inotify": len(held), "inotify_error": error, "fanotify_error": fanotify}
