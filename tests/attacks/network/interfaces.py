# attack: lists the interfaces and brings the loopback up, looking for a way out
# stopped-by: seccomp refuses socket() but for AF_UNIX (netlink and ioctl sockets included);
#   behind it, a namespace with only a loopback and no CAP_NET_ADMIN
# expect: 200
# result: {"interfaces": "EPERM", "ioctl": "EPERM"}
import errno
import fcntl
import socket
import struct


def main():
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError as e:
        names = errno.errorcode[e.errno]
    SIOCSIFFLAGS = 0x8914
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", 1))
        result = "up"
    except OSError as e:
        result = errno.errorcode[e.errno]
    return {"interfaces": names, "ioctl": result}
