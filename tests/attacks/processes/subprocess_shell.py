# attack: spawns a shell and system tools to look around with them
# stopped-by: allowed, but they run inside the same jail as the same
#   unprivileged user, with the same view and limits
# expect: 200
# result: {"id": "65534", "shadow": 1, "ps_sees": ["1"]}
import subprocess


def main():
    uid = subprocess.run(["/usr/bin/id", "-u"], capture_output=True, text=True).stdout.strip()
    shadow = subprocess.run(["/bin/cat", "/etc/shadow"], capture_output=True).returncode
    ps = subprocess.run(["/bin/sh", "-c", "ls /proc | grep -E '^[0-9]+$'"], capture_output=True, text=True).stdout.split()
    return {"id": uid, "shadow": shadow, "ps_sees": [p for p in ps if p == "1"]}
