# attack: rewrites the harness itself (in the same process: __main__ in a cold
#   run, the `harness` module in a warm runner) so it never reports
# stopped-by: nothing in the process can stop it; the gateway parses the frame
#   strictly, so the script can at most choose its own answer or lose it
# expect: 422 sandbox-killed
import sys


def main():
    for name in ("harness", "__main__"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "_report"):
            module._report = lambda frame: None
    return "never reported"
