# attack: main is a generator, so its value is a generator object
# stopped-by: the harness refuses non-JSON values
# expect: 422 non-json-result


def main():
    yield 1
