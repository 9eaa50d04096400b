# attack: returns while a non-daemon thread keeps running, so the interpreter
#   never exits and the slot stays busy until the timeout
# stopped-by: the harness exits as soon as the result is written; the jail's
#   teardown kills the thread
# expect: 200
# result: "returned"
import threading
import time


def main():
    threading.Thread(target=lambda: time.sleep(3600)).start()
    return "returned"
