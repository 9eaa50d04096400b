# attack: returns a self-referencing structure to loop the encoder
# stopped-by: the harness detects the cycle
# expect: 422 non-json-result


def main():
    a = []
    a.append(a)
    return {"a": a}
