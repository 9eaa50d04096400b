# attack: aborts the interpreter
# stopped-by: the process dies of SIGABRT inside its own jail
# expect: 422 sandbox-killed
import os


def main():
    os.abort()
