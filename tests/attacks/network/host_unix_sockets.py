# attack: connects to the host's unix sockets (docker, containerd, systemd)
#   by path and by abstract name
# stopped-by: their paths are not in the jail; abstract names live in the
#   host's network namespace
# expect: 200
# result: {"connected": []}
import socket


def main():
    connected = []
    for addr in ["/var/run/docker.sock", "/run/containerd/containerd.sock", "/run/systemd/private",
                 "\0/org/freedesktop/systemd1/notify", "\0/containerd-shim"]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(addr)
            connected.append(addr)
        except OSError:
            pass
        finally:
            s.close()
    return {"connected": connected}
