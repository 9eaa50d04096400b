# attack: returns a result 200 levels deep: under the harness's old limit
#   (256), over the gateway parser's (128)
# stopped-by: the harness's limit sits below the parser's, so the answer is a
#   clear non-json-result, not a missing result
# expect: 422 non-json-result


def main():
    v = 1
    for _ in range(200):
        v = [v]
    return v
