# attack: four runs at once meet on a well-known abstract unix socket, to
#   pass data between tenants' runs
# stopped-by: seccomp refuses socket() in both modes (warm runners share
#   their zygote's network namespace, where abstract names would meet)
# expect: 200
# result: {"met_another_run": false}
# concurrent: 4
import socket
import time

NAME = "\0pyexec-corpus-rendezvous"


def main():
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(NAME)
        return {"met_another_run": True}
    except OSError:
        pass
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError:
        return {"met_another_run": False}
    s.bind(NAME)
    s.listen(8)
    s.settimeout(1.5)
    try:
        s.accept()
        return {"met_another_run": True}
    except OSError:
        return {"met_another_run": False}
