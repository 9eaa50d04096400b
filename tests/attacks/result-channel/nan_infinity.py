# attack: returns NaN and Infinity, which strict JSON parsers choke on
# stopped-by: the harness refuses them; the gateway parses strictly anyway
# expect: 422 non-json-result


def main():
    return {"nan": float("nan"), "inf": float("inf")}
