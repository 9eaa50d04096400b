# attack: main needs arguments that the request does not send
# stopped-by: the TypeError is the script's own runtime error
# expect: 422 runtime-error


def main(a, b):
    return a + b
