# attack: returns a dict keyed by tuples, which JSON cannot carry
# stopped-by: the harness refuses non-scalar keys
# expect: 422 non-json-result


def main():
    return {(1, 2): "tuple key"}
