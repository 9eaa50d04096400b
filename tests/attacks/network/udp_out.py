# attack: sends UDP datagrams to the gateway's port on loopback, a public
#   DNS server and the broadcast address
# stopped-by: seccomp refuses socket() but for AF_UNIX; behind it, a network namespace whose
#   loopback is the jail's own and where nothing else is routable
# expect: 200
# result: {"sent": []}
import socket


def main():
    sent = []
    for host in [("127.0.0.1", {{GATEWAY_PORT}}), ("8.8.8.8", 53), ("255.255.255.255", 67)]:
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            s.sendto(b"x" * 100, host)
            sent.append(host[0])
        except OSError:
            pass
    return {"sent": sent}
