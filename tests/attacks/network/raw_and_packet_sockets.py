# attack: opens raw IP and packet sockets to sniff or forge traffic
# stopped-by: seccomp refuses socket() but for AF_UNIX; behind it, no CAP_NET_RAW
# expect: 200
# result: {"raw": "EPERM", "packet": "EPERM", "icmp_dgram": "EPERM"}
import errno
import socket


def main():
    out = {}
    for name, args in (("raw", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)),
                       ("packet", (socket.AF_PACKET, socket.SOCK_RAW, 0x0300)),
                       ("icmp_dgram", (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))):
        try:
            socket.socket(*args).close()
            out[name] = "opened"
        except OSError as e:
            out[name] = errno.errorcode[e.errno]
    return out
