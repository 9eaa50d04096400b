# attack: raises an exception whose message holds a lone surrogate, so the
#   error report itself would be invalid UTF-8
# stopped-by: the harness replaces what cannot be encoded
# expect: 422 runtime-error


def main():
    raise ValueError("bad \udcff text")
