# attack: rewrites the harness itself (it is __main__, in the same process)
#   so that its report says whatever the script likes
# stopped-by: nothing in the process can stop it; the gateway parses the frame
#   strictly, so the script can at most choose its own answer or lose it
# expect: 422 sandbox-killed
import sys


def main():
    harness = sys.modules["__main__"]
    harness._report = lambda frame: None
    return "never reported"
