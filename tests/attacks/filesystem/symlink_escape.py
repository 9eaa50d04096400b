# attack: plants symlinks in /tmp to host paths and to /proc/1/root, then
#   follows them
# stopped-by: links resolve inside the jail's own root; there is no host path
#   to reach
# expect: 200
# result: {"shadow": "ENOENT", "root_shadow": "ENOENT", "proc_root_listing": ["bin", "dev", "etc", "lib", "lib64", "opt", "proc", "pyexec", "tmp", "usr"]}
import errno
import os


def main():
    out = {}
    os.symlink("/etc/shadow", "/tmp/shadow")
    os.symlink("/proc/1/root/etc/shadow", "/tmp/root_shadow")
    for name in ["shadow", "root_shadow"]:
        try:
            open("/tmp/" + name).read()
            out[name] = "read"
        except OSError as e:
            out[name] = errno.errorcode[e.errno]
    out["proc_root_listing"] = sorted(os.listdir("/proc/1/root"))
    return out
