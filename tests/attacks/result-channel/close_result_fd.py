# attack: closes the result fd so the harness cannot report
# stopped-by: no frame means no result: the run ends as sandbox-killed
# expect: 422 sandbox-killed
import os


def main():
    os.close(3)
    return "unreported"
