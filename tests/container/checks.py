"""The image, run as deploy/README.md documents it, checked through its published port.

Called by scripts/container-test.sh once the image is built. The `docker run`
line is read from deploy/README.md ("Run it locally with Docker"), so the test
runs what the guide tells a user to run; only `-d`, a name and the test's own
`-e`/`-v` are added. Each check prints one line; the first failure prints the
container's logs and exits 1.
"""

import hashlib
import os
import re
import secrets
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
DOCKER = os.environ.get("DOCKER", "docker")
IMAGE = os.environ.get("PYEXEC_IMAGE", "pyexec")
PORT = int(os.environ.get("PYEXEC_CONTAINER_PORT", "8080"))
BASE = f"http://127.0.0.1:{PORT}"
NAME = "pyexec-container-test"
SIZE_KB = 10 * 1024


def docker(*args, check=True, timeout=120):
    result = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        fail(f"docker {' '.join(args[:3])}… exited {result.returncode}: {result.stderr.strip()}")
    return result


def fail(message):
    print(f"FAIL {message}", flush=True)
    logs = subprocess.run([DOCKER, "logs", "--tail", "60", NAME], capture_output=True, text=True, check=False)
    if logs.returncode == 0:
        print("---- container logs (last 60 lines) ----")
        print(logs.stdout + logs.stderr)
    remove_container()
    sys.exit(1)


def ok(message):
    print(f"ok   {message}", flush=True)


def expect(condition, message, detail=""):
    if not condition:
        fail(f"{message}: {detail}")
    ok(message)


def remove_container():
    subprocess.run([DOCKER, "rm", "-f", NAME], capture_output=True, check=False)


def run_command_in(document, after):
    """The first ```sh block starting with `docker run` after a heading, as argv."""
    text = (ROOT / document).read_text()
    if after not in text:
        fail(f"{document} has no {after!r}")
    block = re.search(r"```sh\n\s*(docker run .*?)\n\s*```", text.split(after, 1)[1], re.S)
    if not block:
        fail(f"{document} has no ```sh block starting with `docker run` after {after!r}")
    return shlex.split(block.group(1).replace("\\\n", " "))


def documented_run_command():
    """The `docker run` of deploy/README.md's section 2, which the README repeats."""
    argv = run_command_in("deploy/README.md", "## 2. Run it locally with Docker")
    if argv[-1] != IMAGE:
        fail(f"the documented command runs {argv[-1]!r}, not the image {IMAGE!r}")
    readme = run_command_in("README.md", "## Deploying")
    if readme != argv:
        fail(f"README.md's docker run ({shlex.join(readme)}) is not deploy/README.md's ({shlex.join(argv)})")
    return argv


def start(argv, *extra):
    """Runs a documented command detached, named, with the test's extras.

    Without --rm, so that the exit code stays to be inspected; the test
    removes the container itself."""
    remove_container()
    kept = [a for a in argv[2:] if a != "--rm"]
    command = [argv[0], argv[1], "-d", "--name", NAME, *extra, *kept]
    command[0] = DOCKER
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        fail(f"{shlex.join(command)} exited {result.returncode}: {result.stderr.strip()}")
    return started


def wait_for(path, status, deadline_s=120):
    last = None
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            last = requests.get(BASE + path, timeout=2)
            if last.status_code == status:
                return last
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    fail(f"GET {path} never answered {status} (last: {last.status_code if last else 'no answer'} {last.text[:300] if last else ''})")


def execute(key, script, **fields):
    return requests.post(
        BASE + "/execute",
        headers={"Authorization": f"Bearer {key}"},
        json={"script": script, **fields},
        timeout=60,
    )


def problem_type(response):
    return response.json().get("type", "").rsplit("/", 1)[-1]


def processes_in_cgroup_of(container_id):
    """Host processes still in the container's cgroup (any hierarchy)."""
    left = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if container_id in (proc / "cgroup").read_text():
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
                left.append(f"{proc.name} {command.decode(errors='replace')}")
        except OSError:
            pass
    return left


def check_documented_run(argv):
    key = "pyx_" + secrets.token_hex(32)
    started = start(argv, "-e", f"PYEXEC_API_KEY={key}")
    wait_for("/readyz", 200)
    cold_start = time.monotonic() - started
    ok(f"cold start: docker run → /readyz 200 in {cold_start:.2f} s")
    health = requests.get(BASE + "/health", timeout=5)
    body = health.json()
    expect(
        health.status_code == 200 and body["status"] == "healthy" and body["sandbox"]["problems"] == [],
        "/health is healthy with no sandbox problems",
        health.text,
    )
    expect(body["cgroup"] in ("v1", "v2") and body["python"], f"/health: cgroup {body['cgroup']}, python {body['python']}", health.text)

    dict_result = execute(key, 'def main():\n    return {"message": "Hello World", "status": "success"}')
    expect(
        dict_result.status_code == 200
        and dict_result.json()["result"] == {"message": "Hello World", "status": "success"}
        and dict_result.json()["execution_method"] == "nsjail",
        "seed: basic example returns its dict",
        dict_result.text,
    )
    pandas_numpy = execute(
        key,
        "def main():\n    import pandas as pd\n    import numpy as np\n"
        "    data = pd.DataFrame({'values': np.random.randint(1, 100, 10)})\n"
        "    return {'mean': float(data['values'].mean()), 'max': int(data['values'].max()), 'count': len(data)}",
    )
    result = pandas_numpy.json().get("result", {})
    expect(
        pandas_numpy.status_code == 200 and result.get("count") == 10 and 1 <= result.get("max", 0) < 100,
        "seed: pandas/numpy example",
        pandas_numpy.text,
    )
    os_example = execute(
        key,
        "def main():\n    import os\n    import json\n    current_dir = os.getcwd()\n"
        "    temp_files = os.listdir('/tmp')\n"
        "    return {'current_directory': current_dir, 'temp_file_count': len(temp_files)}",
    )
    expect(
        os_example.status_code == 200 and os_example.json()["result"]["current_directory"] == "/tmp",
        "seed: os example runs in the jail's /tmp",
        os_example.text,
    )
    missing_main = execute(key, 'def calculate():\n    return {"result": 42}')
    expect(
        missing_main.status_code == 422 and problem_type(missing_main) == "missing-main",
        "seed: no main() → 422 missing-main",
        missing_main.text,
    )
    data_frame = execute(key, "def main():\n    import pandas as pd\n    return pd.DataFrame({'A': [1, 2, 3]})")
    expect(
        data_frame.status_code == 422 and problem_type(data_frame) == "non-json-result",
        "seed: a DataFrame → 422 non-json-result",
        data_frame.text,
    )
    too_large = execute(key, "def main():\n    return 1\n" + "#" * (SIZE_KB + 1))
    expect(
        too_large.status_code == 413 and problem_type(too_large) == "too-large",
        "seed: a script over 10 KB → 413 too-large",
        too_large.text,
    )
    timeout = execute(key, "def main():\n    while True:\n        pass", timeout_ms=1000, cache=False)
    expect(
        timeout.status_code == 422 and problem_type(timeout) == "timeout",
        "a busy loop with timeout_ms=1000 → 422 timeout",
        timeout.text,
    )
    memory = execute(
        key,
        "def main():\n    blocks = []\n    while True:\n        blocks.append(bytearray(16 << 20))",
        cache=False,
    )
    expect(
        memory.status_code == 422 and problem_type(memory) == "memory-limit",
        "growing memory → 422 memory-limit (the run's cgroup, inside the container's)",
        memory.text,
    )
    still_serving = execute(key, "def main():\n    return 'still here'", cache=False)
    expect(still_serving.status_code == 200, "serves again after the timeout and the OOM kill", still_serving.text)
    check_gateway_cannot_raise_its_own_limits()
    check_drain_on_docker_stop(key)


def check_gateway_cannot_raise_its_own_limits():
    """CAP_SYS_ADMIN is gone from every thread of the gateway (pid 1), and root
    without it can neither write the container's own limits nor mount a fresh
    cgroup hierarchy. `docker exec` itself keeps the container's grants, which
    is the contrast showing that these checks can fail."""
    threads = docker("exec", NAME, "sh", "-c", "grep -h -E '^Cap(Eff|Prm|Bnd):' /proc/1/task/*/status").stdout
    with_admin = [line for line in threads.splitlines() if int(line.split()[1], 16) & (1 << 21)]
    expect(not with_admin and threads, "no thread of the gateway holds CAP_SYS_ADMIN", threads)
    mountinfo = docker("exec", NAME, "cat", "/proc/1/mountinfo").stdout
    cgroup_views = [line for line in mountinfo.splitlines() if " - cgroup " in line or " - cgroup2 " in line]
    is_v1 = any(" - cgroup " in line for line in cgroup_views)
    without_admin = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--"]
    if is_v1:
        memory_view = [line for line in cgroup_views if line.split()[4] == "/sys/fs/cgroup/memory"]
        delegated = [line for line in cgroup_views if line.split()[4] == "/sys/fs/cgroup/memory/pyexec"]
        expect(
            memory_view and memory_view[0].split()[5].startswith("ro")
            and delegated and delegated[0].split()[5].startswith("rw"),
            "cgroup v1: the container's memory view is read-only, only its pyexec subtree writable",
            "\n".join(cgroup_views),
        )
        limit = "/sys/fs/cgroup/memory/memory.limit_in_bytes"
        raise_limit = docker("exec", NAME, *without_admin, "sh", "-c", f"echo 8G > {limit}", check=False)
        expect(
            raise_limit.returncode != 0 and "Read-only file system" in raise_limit.stderr,
            "root without CAP_SYS_ADMIN cannot write the container's memory limit (read-only view)",
            raise_limit.stdout + raise_limit.stderr,
        )
        check_gateway_sits_below_the_containers_groups()
        check_user_namespace_route(without_admin, limit)
    works = docker("exec", NAME, *without_admin, "sh", "-c", "grep CapEff /proc/self/status", check=False)
    expect(
        works.returncode == 0 and not int(works.stdout.split()[1], 16) & (1 << 21),
        "(control) the probe runs, and without CAP_SYS_ADMIN",
        works.stdout + works.stderr,
    )
    fresh = "mkdir -p /run/fresh && mount -t cgroup -o memory none /run/fresh 2>&1 || mount -t cgroup2 none /run/fresh"
    mount_fresh = docker("exec", NAME, *without_admin, "sh", "-c", fresh, check=False)
    expect(
        mount_fresh.returncode != 0 and "ermission denied" in mount_fresh.stdout + mount_fresh.stderr,
        "root without CAP_SYS_ADMIN cannot mount a fresh cgroup hierarchy",
        mount_fresh.stdout + mount_fresh.stderr,
    )
    contrast = docker("exec", NAME, "sh", "-c", fresh + " && umount /run/fresh", check=False)
    expect(contrast.returncode == 0, "(contrast) a docker exec with the container's grants can", contrast.stdout + contrast.stderr)


def check_gateway_sits_below_the_containers_groups():
    """In every v1 hierarchy the gateway has left the namespace's root group
    for its pyexec subtree, so any cgroup namespace it creates is rooted there."""
    groups = docker("exec", NAME, "cat", "/proc/1/cgroup").stdout
    v1 = [line.split(":", 2) for line in groups.splitlines() if not line.startswith("0::")]
    outside = [":".join(parts) for parts in v1 if not parts[2].startswith("/pyexec")]
    expect(v1 and not outside, f"the gateway is in /pyexec in all {len(v1)} v1 hierarchies", groups)


def check_user_namespace_route(without_admin, limit):
    """Without CAP_SYS_ADMIN, a process can still mount a v1 hierarchy from a
    new user and cgroup namespace of its own: the mount shows its cgroup
    namespace's root. From the gateway's group that root is the pyexec
    subtree, and the container's own limit stays as it was; from the
    namespace's root group (the contrast) the same steps change it."""
    before = docker("exec", NAME, "cat", limit).stdout.strip()
    attempt = (
        "mkdir -p /mnt/fresh && mount -t cgroup -o memory none /mnt/fresh"
        " && echo 4294967296 > /mnt/fresh/memory.limit_in_bytes"
        " && cat /mnt/fresh/memory.limit_in_bytes; echo -1 > /mnt/fresh/memory.limit_in_bytes"
    )
    from_gateway_group = docker(
        "exec", NAME, *without_admin, "sh", "-c",
        "echo $$ > /sys/fs/cgroup/memory/pyexec/cgroup.procs && exec unshare -Urm --cgroup sh -c " + shlex.quote(attempt),
        check=False,
    )
    after = docker("exec", NAME, "cat", limit).stdout.strip()
    expect(
        "4294967296" in from_gateway_group.stdout and after == before,
        "from the gateway's group, a fresh mount in a new user namespace reaches only the pyexec subtree's limit",
        f"{from_gateway_group.stdout}{from_gateway_group.stderr} container limit {before} -> {after}",
    )
    from_root_group = docker(
        "exec", NAME, *without_admin, "unshare", "-Urm", "--cgroup", "sh", "-c",
        "mkdir -p /mnt/fresh && mount -t cgroup -o memory none /mnt/fresh"
        " && echo 4294967296 > /mnt/fresh/memory.limit_in_bytes && cat /mnt/fresh/memory.limit_in_bytes",
        check=False,
    )
    changed = docker("exec", NAME, "cat", limit).stdout.strip()
    # Put it back the same way.
    docker(
        "exec", NAME, "unshare", "-Urm", "--cgroup", "sh", "-c",
        "mkdir -p /mnt/fresh && mount -t cgroup -o memory none /mnt/fresh && echo -1 > /mnt/fresh/memory.limit_in_bytes",
        check=False,
    )
    expect(
        changed == "4294967296",
        "(contrast) from the namespace's root group the same route does change the container's limit",
        f"{from_root_group.stdout}{from_root_group.stderr} container limit {before} -> {changed}",
    )


def check_drain_on_docker_stop(key):
    container_id = docker("inspect", "-f", "{{.Id}}", NAME).stdout.strip()
    running = processes_in_cgroup_of(container_id)
    expect(len(running) > 1, f"the container's processes are visible on the host ({len(running)}: gateway, nsjail, zygotes)", running)
    answers = {}

    def in_flight():
        answers["response"] = execute(
            key, "def main():\n    import time\n    time.sleep(3)\n    return 'finished'", cache=False
        )

    request = threading.Thread(target=in_flight)
    request.start()
    time.sleep(1.0)
    stop_started = time.monotonic()
    docker("stop", NAME, timeout=30)
    stopped_in = time.monotonic() - stop_started
    request.join(timeout=30)
    response = answers.get("response")
    expect(
        response is not None and response.status_code == 200 and response.json()["result"] == "finished",
        f"docker stop drains the run in flight (stopped in {stopped_in:.1f} s)",
        response.text if response is not None else "no answer",
    )
    state = docker("inspect", "-f", "{{.State.ExitCode}}", NAME).stdout.strip()
    expect(state == "0", "the gateway exited 0 after the drain", state)
    left = processes_in_cgroup_of(container_id)
    expect(not left, "no process of the container is left on the host", "\n".join(left))
    remove_container()


def check_mounted_policies(argv):
    key = "pyx_" + secrets.token_hex(32)
    second_key = "pyx_" + secrets.token_hex(32)
    folder = Path(tempfile.mkdtemp(prefix="pyexec-policies-"))
    folder.chmod(0o755)

    def write_policy(keys, memory_mib):
        hashes = "\n".join(
            f"      - sha256: {hashlib.sha256(k.encode()).hexdigest()}" for k in keys
        )
        text = f"""apiVersion: pyexec.dev/v1
kind: Tenant
metadata:
  name: container-test
spec:
  auth:
    apiKeys:
{hashes}
  sandbox:
    memoryMiB: {memory_mib}
"""
        staged = folder / ".tenant.yaml.tmp"
        staged.write_text(text)
        staged.chmod(0o644)
        staged.rename(folder / "tenant.yaml")

    write_policy([key], 64)
    # The bootstrap key is set too: a user mounting tenants keeps an
    # operator key of their own choosing.
    start(argv, "-e", f"PYEXEC_API_KEY=pyx_{secrets.token_hex(32)}", "-v", f"{folder}:/etc/pyexec/policies:ro")
    wait_for("/readyz", 200)
    grow = "def main():\n    x = bytearray(128 << 20)\n    return len(x)"
    small = execute(key, grow, cache=False)
    expect(
        small.status_code == 422 and problem_type(small) == "memory-limit",
        "a tenant mounted from the host (-v …:/etc/pyexec/policies:ro): its key works, its 64 MiB limit holds",
        small.text,
    )
    refused = execute(second_key, "def main():\n    return 1")
    expect(refused.status_code == 401, "a key the mounted policy does not list → 401", refused.text)
    write_policy([key, second_key], 512)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        reloaded = execute(second_key, grow, cache=False)
        if reloaded.status_code == 200:
            break
        time.sleep(0.2)
    expect(
        reloaded.status_code == 200 and reloaded.json()["result"] == 128 << 20,
        "hot reload through the mount: the new key works and the new 512 MiB limit applies",
        reloaded.text,
    )
    remove_container()


def check_flagless_run(argv):
    plain = [argv[0], "run", "--rm", "-p", f"{PORT}:8080", IMAGE]
    start(plain, "-e", f"PYEXEC_API_KEY=pyx_{secrets.token_hex(32)}")
    health = wait_for("/health", 503, deadline_s=60)
    problems = " ".join(health.json()["sandbox"]["problems"])
    documented = [a for a in argv if a.startswith("--") and a not in ("--rm",)]
    wanted = {
        "seccomp=unconfined": "--security-opt seccomp=unconfined",
        "systempaths=unconfined": "--security-opt systempaths=unconfined",
        "--cgroupns=private": "--cgroupns=private",
        "SYS_ADMIN": "--cap-add SYS_ADMIN",
    }
    missing = [flag for needle, flag in wanted.items() if needle not in problems]
    expect(
        not missing and len(documented) >= 5,
        "a flagless docker run serves no script and /health names the missing flags",
        f"not named: {missing}; problems: {problems}",
    )
    readyz = requests.get(BASE + "/readyz", timeout=5)
    expect(readyz.status_code == 503, "… and /readyz stays 503", readyz.text)
    remove_container()


def main():
    argv = documented_run_command()
    ok(f"documented command (README.md and deploy/README.md): {shlex.join(argv)}")
    check_documented_run(argv)
    check_mounted_policies(argv)
    check_flagless_run(argv)
    print("container checks passed", flush=True)


if __name__ == "__main__":
    main()
