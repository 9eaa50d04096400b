# attack: four runs at once meet on a well-known abstract unix socket, to
#   pass data between tenants' runs
# stopped-by: a cold jail has a network namespace, and so abstract names, of
#   its own; warm runners share their zygote's, and each is a Landlock domain
#   that scopes abstract sockets to its own processes, so a connect to
#   another run's name is refused
# expect: 200
# result: {"met_another_run": false}
# concurrent: 4
import socket

NAME = "\0pyexec-corpus-rendezvous"


def main():
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(NAME)
        c.sendall(b"hello")
        return {"met_another_run": True}
    except OSError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(NAME)
    except OSError:
        # Warm: another run holds the name in the shared namespace; it is
        # still out of reach, which the connect above has just shown.
        return {"met_another_run": False}
    s.listen(8)
    s.settimeout(1.5)
    try:
        conn, _ = s.accept()
        return {"met_another_run": bool(conn.recv(5))}
    except OSError:
        return {"met_another_run": False}
