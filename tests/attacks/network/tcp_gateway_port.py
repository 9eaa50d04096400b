# attack: connects to the gateway's own port on loopback to call /execute
#   (or /health) from inside
# stopped-by: network namespace: the jail's loopback is its own and down
# expect: 200
# result: {"127.0.0.1": "unreachable", "::1": "unreachable", "localhost": "unreachable"}
import socket


def main():
    out = {}
    for host in ["127.0.0.1", "::1", "localhost"]:
        try:
            s = socket.create_connection((host, {{GATEWAY_PORT}}), timeout=2)
            s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            out[host] = s.recv(100).decode(errors="replace")
            s.close()
        except OSError:
            out[host] = "unreachable"
    return out
