# attack: checks for privileges: no_new_privs, capability sets, seccomp mode,
#   uid
# stopped-by: nsjail drops every capability, sets no_new_privs and loads the
#   seccomp filter
# expect: 200
# result: {"Uid": "65534", "NoNewPrivs": "1", "Seccomp": "2", "CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000", "CapAmb": "0000000000000000"}


def main():
    status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
    out = {k: status[k].strip() for k in ["NoNewPrivs", "Seccomp", "CapInh", "CapPrm", "CapEff", "CapAmb"]}
    out["Uid"] = status["Uid"].split()[0]
    return out
