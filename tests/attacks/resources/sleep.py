# attack: sleeps for an hour to hold a sandbox slot without using CPU
# stopped-by: the wall-clock timer
# expect: 422 timeout
# timeout_ms: 1500
import time


def main():
    time.sleep(3600)
