# attack: returns integers too large for JSON numbers (10**5000 breaks
#   Python's own int-to-str limit; 2**70 overflows 64 bits)
# stopped-by: the harness refuses integers beyond 64 bits
# expect: 422 non-json-result


def main():
    return {"big": 2**70, "huge": 10**5000}
