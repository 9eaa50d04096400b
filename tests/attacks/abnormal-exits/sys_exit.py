# attack: calls sys.exit(3) in main
# stopped-by: the harness catches SystemExit like any exception
# expect: 422 runtime-error


def main():
    import sys
    sys.exit(3)
