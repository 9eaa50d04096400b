# attack: becomes root with setuid(0) or through set-user-id binaries (su,
#   mount, passwd)
# stopped-by: no capabilities; no_new_privs ignores set-user-id bits; the
#   jail maps only one unprivileged id (uid 0 does not exist: EINVAL)
# expect: 200
# result: {"setuid": "EINVAL", "su": "failed", "uid_after": 65534}
import errno
import os
import subprocess


def main():
    out = {}
    try:
        os.setuid(0)
        out["setuid"] = "ok"
    except OSError as e:
        out["setuid"] = errno.errorcode[e.errno]
    su = [p for p in ["/usr/bin/su", "/bin/su", "/usr/bin/sudo"] if os.path.exists(p)]
    r = subprocess.run([su[0], "-c", "id -u"], capture_output=True, text=True, input="") if su else None
    out["su"] = "root" if r and r.stdout.strip() == "0" else "failed"
    out["uid_after"] = os.getuid()
    return out
