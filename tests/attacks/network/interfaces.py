# attack: brings the loopback up and lists interfaces, looking for a way out
# stopped-by: the namespace holds only a loopback; no CAP_NET_ADMIN to change it
# expect: 200
# result: {"interfaces": ["lo"], "ioctl": "EPERM"}
import errno
import fcntl
import socket
import struct


def main():
    names = [name for _, name in socket.if_nameindex()]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    SIOCSIFFLAGS = 0x8914
    try:
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", 1))
        result = "up"
    except OSError as e:
        result = errno.errorcode[e.errno]
    return {"interfaces": names, "ioctl": result}
