# attack: reads well-known credential files: cloud SDK, ssh, kubernetes
#   service account, docker, /etc/shadow, the server's policies and keys
# stopped-by: the jail's root is an empty tmpfs with only system folders bound
# expect: 200
# result: {"readable": []}
import os

PATHS = [
    "/root/.config/gcloud/application_default_credentials.json", "/root/.ssh/id_rsa",
    "/root/.ssh/id_ed25519", "/root/.aws/credentials", "/root/.docker/config.json",
    "/var/run/secrets/kubernetes.io/serviceaccount/token", "/run/secrets", "/etc/shadow",
    "/etc/gshadow", "/etc/ssh/ssh_host_ed25519_key", "/home", "/root", "/var/lib",
    "{{REPO}}/policies", "{{REPO}}/Cargo.toml", "/proc/1/root/etc/shadow", "/proc/kcore",
    "/sys/kernel", "/dev/mem", "/dev/kmsg", "/boot",
]


def main():
    readable = []
    for i, path in enumerate(PATHS):
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                open(path, "rb").read(16)
            readable.append(i)
        except OSError:
            pass
    return {"readable": readable}
