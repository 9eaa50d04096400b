# attack: raises KeyboardInterrupt from main
# stopped-by: the harness catches BaseException
# expect: 422 runtime-error


def main():
    raise KeyboardInterrupt
