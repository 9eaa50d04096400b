# attack: inflates a few kilobytes of deflate data into 2 GiB
# stopped-by: the memory cgroup
# expect: 422 memory-limit
import zlib


def main():
    # A full flush makes each 1 MiB block of zeros compress to the same bytes,
    # so the bomb is built without compressing 2 GiB.
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    c.compress(b"\0" * (1 << 20))
    block = c.flush(zlib.Z_FULL_FLUSH)
    bomb = block * 2048 + c.flush()
    return len(zlib.decompressobj(-15).decompress(bomb))
