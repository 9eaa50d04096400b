# attack: resolves names (for DNS exfiltration) through the resolver and by
#   asking a name server directly
# stopped-by: no network; the jail's resolv.conf names no server
# expect: 200
# result: {"example.com": "failed", "google.com": "failed"}
import socket


def main():
    out = {}
    for name in ["example.com", "google.com"]:
        try:
            socket.getaddrinfo(name, 443)
            out[name] = "resolved"
        except OSError:
            out[name] = "failed"
    return out
