# attack: defines main and then rebinds it to something that is not a function
# stopped-by: the harness requires a plain function
# expect: 422 missing-main


def main():
    return 1


main = type("main", (), {"__call__": lambda self: "called"})()
