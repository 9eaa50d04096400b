# attack: opens TCP connections to the internet and private ranges to
#   exfiltrate data
# stopped-by: network namespace without interfaces: no route anywhere
# expect: 200
# result: {"connected": []}
import socket


def main():
    connected = []
    for host, port in [("1.1.1.1", 443), ("8.8.8.8", 53), ("10.0.0.1", 80), ("172.17.0.1", 2375), ("192.168.0.1", 80)]:
        try:
            socket.create_connection((host, port), timeout=1).close()
            connected.append(host)
        except OSError:
            pass
    return {"connected": connected}
