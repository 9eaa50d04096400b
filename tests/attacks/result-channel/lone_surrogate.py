# attack: returns a string with a lone surrogate, which is not valid UTF-8
#   once encoded
# stopped-by: the harness refuses it as non-JSON instead of writing invalid
#   UTF-8 to the channel
# expect: 422 non-json-result


def main():
    return {"s": "\ud800"}
