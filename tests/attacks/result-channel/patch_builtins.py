# attack: replaces isinstance, type, str, dict and sys.modules["json"]
#   before returning
# stopped-by: the harness bound every builtin it uses before the script ran
# expect: 200
# result: {"real": [1, 2.5, "x", null]}
import builtins
import sys


def main():
    value = {"real": [1, 2.5, "x", None]}
    builtins.isinstance = lambda *a: True
    builtins.type = lambda *a: str
    builtins.str = lambda *a: "forged"
    builtins.id = lambda *a: 0
    sys.modules["json"] = None
    sys.modules["os"] = None
    return value
