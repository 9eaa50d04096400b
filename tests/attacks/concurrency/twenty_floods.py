# attack: twenty runs at once, each flooding stdout and stderr and returning
#   a result near the 1 MiB limit
# stopped-by: per-run output caps; the gateway drains each pipe concurrently
# expect: 200
# result: "done"
# concurrent: 20
import os


def main():
    chunk = b"F" * (1 << 20)
    for _ in range(8):
        os.write(1, chunk)
        os.write(2, chunk)
    return "done"
