# attack: raises SystemExit at module level, before main is ever looked up
# stopped-by: the harness runs the module body inside its own try
# expect: 422 runtime-error
raise SystemExit(0)


def main():
    return 1
