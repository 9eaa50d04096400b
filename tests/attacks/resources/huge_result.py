# attack: returns a 200 MB string to exhaust the gateway's memory
# stopped-by: the gateway reads at most 1 MiB from the result channel; the
#   copies needed to encode it may hit the memory limit first
# expect: 422 non-json-result | 422 memory-limit


def main():
    return "x" * (200 * 1000 * 1000)
