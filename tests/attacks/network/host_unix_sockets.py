# attack: connects to the host's unix sockets (docker, containerd, systemd)
#   by path and by abstract name
# stopped-by: the paths are not in the jail (its root is a fresh tmpfs) and
#   abstract names live in the host's network namespace, not the jail's
# expect: 200
# result: {"connected": []}
import socket


def main():
    connected = []
    for addr in ["/var/run/docker.sock", "/run/containerd/containerd.sock", "/run/systemd/private",
                 "\0/org/freedesktop/systemd1/notify", "\0/containerd-shim"]:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(addr)
            connected.append(addr)
        except OSError:
            pass
    return {"connected": connected}
