# attack: sends UDP datagrams to the gateway's port on loopback, a public
#   DNS server and the broadcast address
# stopped-by: network namespace: the jail's loopback is its own (the datagram
#   reaches no one); nothing else is routable
# expect: 200
# result: {"sent": ["127.0.0.1"]}
import socket


def main():
    sent = []
    for host in [("127.0.0.1", {{GATEWAY_PORT}}), ("8.8.8.8", 53), ("255.255.255.255", 67)]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:
            s.sendto(b"x" * 100, host)
            sent.append(host[0])
        except OSError:
            pass
        finally:
            s.close()
    return {"sent": sent}
