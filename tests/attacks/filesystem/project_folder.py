# attack: looks for the service's own folder (its source, nsjail configs,
#   policies) and the nsjail binary
# stopped-by: mount namespace: only the harness (and, in a warm runner, the
#   zygote) is bound, from a neutral copy
# expect: 200
# result: {"found": [], "pyexec": ["harness.py"]}
import os


def main():
    found = [p for p in ["{{REPO}}", "{{REPO}}/nsjail/base.cfg", "/opt/pyexec/bin/nsjail", "/work", "/srv", "/app"]
             if os.path.exists(p)]
    return {"found": found, "pyexec": sorted(set(os.listdir("/pyexec")) - {"zygote.py"})}
