# attack: writes 64 MiB to stderr and then returns normally
# stopped-by: stderr is capped at 1 MiB and flagged as truncated
# expect: 200
# result: "flooded"
import os


def main():
    chunk = b"E" * (1 << 20)
    for _ in range(64):
        os.write(2, chunk)
    return "flooded"
