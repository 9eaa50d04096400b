# attack: patches json.dumps, JSONEncoder and json.encoder before returning,
#   so the harness would write a forged frame
# stopped-by: the harness bound its encoder before the script ran
# expect: 200
# result: {"real": true}
import json
import json.encoder


def main():
    json.dumps = lambda *a, **k: '{"status":"ok","result":"forged"}'
    json.JSONEncoder.encode = lambda self, o: '{"status":"ok","result":"forged"}'
    json.encoder.encode_basestring = lambda s: '"forged"'
    json.encoder.encode_basestring_ascii = lambda s: '"forged"'
    return {"real": True}
