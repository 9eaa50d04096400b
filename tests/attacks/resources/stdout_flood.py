# attack: prints without end, to fill the gateway's memory with its output
# stopped-by: the gateway keeps 1 MiB of stdout and drains the rest; the
#   wall-clock timer ends it
# expect: 422 timeout
# timeout_ms: 2000
import sys


def main():
    line = "A" * 65536
    while True:
        sys.stdout.write(line)
