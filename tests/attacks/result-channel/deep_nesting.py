# attack: returns a list nested 100,000 deep, to overflow the gateway's stack
#   while it parses
# stopped-by: the harness refuses results nested deeper than 100 levels; the
#   gateway's parser stops at 128
# expect: 422 non-json-result


def main():
    v = []
    for _ in range(100_000):
        v = [v]
    return v
