# attack: returns raw bytes, including invalid UTF-8
# stopped-by: the harness refuses bytes
# expect: 422 non-json-result


def main():
    return {"raw": b"\xff\xfe\x00"}
