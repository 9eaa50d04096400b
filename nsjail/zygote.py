"""Warm-path zygote: a jailed interpreter with the heavy modules imported that
hands each request to a fresh, never-reused process.

It runs inside the same nsjail jail as a cold run (mounts, uid, seccomp), as
pid 1 of the jail. For every request there is one "runner" process G, made
ahead of time so the fork is off the critical path:

    zygote ──clone(new user, mount, pid, ipc, uts namespaces)──▶ G (pid 1 of its own pid ns)

One clone system call makes G and its namespaces: a fork of this interpreter
copies the page tables of every module it holds, and an intermediate process
(fork, unshare, fork again) would pay that twice per request, and its exit
too. G first makes itself the leader of a session and process group of its
own, so nothing a script sends to its group reaches the zygote or another
runner. G waits on a socketpair for its request: the gateway's pipes for
stdin/stdout/stderr/result and the run's limits. Then G mounts its own /proc
and private tmpfs /tmp and /dev/shm, applies the CPU and file-size rlimits, drops every
capability of its user namespace, installs a seccomp filter that forbids
further namespace and mount calls, reseeds the random generators and runs the
harness, which reads the script from stdin. The gateway moves G into the run's
own cgroup (memory, pids, CPU) before it writes that script, so no code of the
request ever runs outside its limits, and kills the cgroup on timeout.

Control protocol on fd 3 (SOCK_SEQPACKET, one JSON object per message):
  zygote → gateway  {"op": "ready", "python"}      once, after the preload
                    {"op": "runner", "pid"}        a runner G is ready, with SCM_RIGHTS [its channel]
                    {"op": "exit", "pid", "code"}  a runner ended: exit code, or 128 + signal (like nsjail)
  gateway → zygote  {"op": "took", "pid"}          the gateway gave that runner a request
                    {"op": "wait"}                 a request found no ready runner

The gateway sends each request straight to its runner over the runner's own
channel, so no request ever waits for this process, which may be busy
copying itself for the next runner:
  gateway → G       {"cpu_seconds", "file_size_bytes", "tmpfs_bytes", "tmpfs_inodes", "shm_bytes", "shm_inodes"}
                    with SCM_RIGHTS [stdin_r, stdout_w, stderr_w, result_w]
"""

import ctypes
import gc
import json
import os
import platform
import resource
import selectors
import signal
import socket
import struct
import sys

CONTROL_FD = 3
# Runners kept forked ahead of requests (argv: --ready=N); as many as can run
# at once, so a burst does not wait for forks.
READY_RUNNERS = 2
# How long nothing must run before the ready pool is topped up between batches.
IDLE_TOP_UP_SECONDS = 0.05
# argv --idle-warm-up: while no request waits for a runner, the zygote runs as
# SCHED_IDLE, and so do the runners it makes (they inherit it): getting the
# next runner ready never takes a CPU from a script that runs now. The gateway,
# which has CAP_SYS_NICE then, puts a runner back to normal when it gives it a
# request, and the zygote before it says a request waits ("wait").
IDLE_WARM_UP = False

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWCGROUP = 0x02000000
NAMESPACE_FLAGS = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP

MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
JAIL_UID = 65534

libc = ctypes.CDLL(None, use_errno=True)


def fail(what):
    errno = ctypes.get_errno()
    raise OSError(errno, "%s: %s" % (what, os.strerror(errno)))


# ---- the runner's lockdown -------------------------------------------------------

# x86_64 system call numbers the runner forbids once it is set up: new
# namespaces and mounts would give a script a fresh set of capabilities to
# probe the kernel with.
AUDIT_ARCH_X86_64 = 0xC000003E
FORBIDDEN_AFTER_SETUP = {
    "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "unshare": 272, "setns": 308, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}
SYS_CLONE = 56
# socket(): the zygote's own filter (nsjail/seccomp.kafel) already refuses
# every family but AF_UNIX. Runners share the zygote's network namespace, and
# with it the abstract unix names, where two requests could meet; a Landlock
# domain per runner scopes those to the runner's own processes (kernel 6.12,
# ABI 6). Without it the runner refuses socket() altogether, and
# multiprocessing's Manager, which listens on a unix socket, is unavailable.
SYS_SOCKET = 41
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET = 1
LANDLOCK_SCOPE_SIGNAL = 2
X32_SYSCALL_BIT = 0x40000000
SYS_CLONE3 = 435
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
EPERM = 1
ENOSYS = 38


def _bpf(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k)


def landlock_scopes_unix_sockets():
    """Whether this kernel can scope abstract unix sockets to a Landlock
    domain (ABI 6 and later)."""
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    return abi >= 6


def seccomp_program(forbid_sockets):
    ld_w_abs, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    deny = SECCOMP_RET_ERRNO | EPERM
    numbers = sorted(list(FORBIDDEN_AFTER_SETUP.values()) + ([SYS_SOCKET] if forbid_sockets else []))
    # Layout: arch check, load nr, the x32 bit, one jeq per forbidden call,
    # clone3, clone (with its flags), allow; then the shared returns.
    insns = [_bpf(ld_w_abs, 0, 0, 4)]
    insns.append(_bpf(jeq, 1, 0, AUDIT_ARCH_X86_64))
    insns.append(_bpf(ret, 0, 0, SECCOMP_RET_KILL_PROCESS))
    insns.append(_bpf(ld_w_abs, 0, 0, 0))
    # x32 (and any number with bit 30 set): the same calls again under other
    # numbers, passing the same AUDIT_ARCH_X86_64 check, so none is let by.
    tail = len(numbers) + 6  # instructions between the x32 test and the deny return
    insns.append(_bpf(jset, tail, 0, X32_SYSCALL_BIT))
    for i, nr in enumerate(numbers):
        insns.append(_bpf(jeq, tail - i - 1, 0, nr))
    insns.append(_bpf(jeq, 4, 0, SYS_CLONE3))          # → ENOSYS: libc falls back to clone
    insns.append(_bpf(jeq, 0, 2, SYS_CLONE))
    insns.append(_bpf(ld_w_abs, 0, 0, 16))              # clone's flags (low word)
    insns.append(_bpf(jset, 2, 0, NAMESPACE_FLAGS))     # → deny
    insns.append(_bpf(ret, 0, 0, SECCOMP_RET_ALLOW))
    insns.append(_bpf(ret, 0, 0, SECCOMP_RET_ERRNO | ENOSYS))
    insns.append(_bpf(ret, 0, 0, deny))
    return b"".join(insns)


def empty_bounding_set():
    """Nothing the runner executes can ever gain a capability. Done while
    the runner waits: the bounding set limits exec, not the capabilities the
    runner still uses to mount its /proc and /tmp."""
    for cap in range(LAST_CAP + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: past the last cap
            fail("PR_CAPBSET_DROP")


def last_capability():
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 63  # every bit the kernel could ever define


# Read once in the zygote: every runner drops exactly the capabilities the
# kernel has.
LAST_CAP = last_capability()


def lock_down():
    """Drops every capability of the runner's user namespace and forbids new
    namespaces and mounts. no_new_privs is already set by nsjail, and the
    bounding set is already empty."""
    header = struct.pack("II", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = bytes(24)  # two empty (effective, permitted, inheritable) sets
    if libc.syscall(126, header, data) != 0:  # capset
        fail("capset")
    if UNIX_SOCKETS_SCOPED:
        scope_to_own_processes()
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, SECCOMP_FPROG, 0, 0) != 0:
        fail("seccomp")


def scope_to_own_processes():
    """A Landlock domain of the runner's own: no connection or datagram to
    an abstract unix socket and no signal crosses from it to a process
    outside it (another request's runner, the zygote). It handles no file
    or network access, which the mounts and namespaces already decide."""
    attr = struct.pack("QQQ", 0, 0, LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL)
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, attr, len(attr), 0)
    if ruleset < 0:
        fail("landlock_create_ruleset")
    try:
        if libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            fail("landlock_restrict_self")
    finally:
        os.close(ruleset)


# Decided and built once in the zygote; every runner installs the same.
UNIX_SOCKETS_SCOPED = landlock_scopes_unix_sockets()
SECCOMP_PROGRAM = ctypes.create_string_buffer(seccomp_program(forbid_sockets=not UNIX_SOCKETS_SCOPED))
SECCOMP_FPROG = struct.pack("HxxxxxxQ", len(SECCOMP_PROGRAM.raw) // 8, ctypes.addressof(SECCOMP_PROGRAM))


# ---- the runner (G) --------------------------------------------------------------

def warm_up():
    """Does once what most scripts do first: compile a main(), build a small
    DataFrame from a numpy array, reduce it, encode a result.

    The zygote runs it before freezing its heap, so the lazy imports and
    caches it triggers are shared by every runner. Each runner runs it again
    while it waits for a request: a runner is a copy-on-write child of the
    zygote, and the first write to each shared page (a reference count is
    enough) costs a page fault and a copy. Taking those faults here moves
    them off the request's critical path, as long as this stays about as
    small as the scripts it stands for; anything heavier is CPU every
    request pays for nothing. It is not free: the script then runs the same
    code again (~0.8 ms of CPU per request here), so runners made when
    requests wait skip it (see Zygote.spawn_runner). Nothing of a request
    exists yet, and the random generators are reseeded after this.
    """
    import harness
    harness.rehearse()  # compiles, runs and encodes a small main() as a request would
    numpy = sys.modules.get("numpy")
    pandas = sys.modules.get("pandas")
    if numpy is not None:
        values = numpy.random.randint(1, 100, 10)
        float(values.mean()), int(values.max())
        if pandas is not None:
            frame = pandas.DataFrame({"values": values})
            float(frame["values"].mean()), int(frame["values"].max()), len(frame)


def runner(channel, warm):
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    empty_bounding_set()
    if warm:
        warm_up()
    # What does not depend on the request is done before it comes: its own
    # /proc (only its pid namespace), and random generators of its own (after
    # the warm-up, which draws from them).
    if libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) != 0:
        fail("mount /proc")
    reseed_random_generators()
    channel.send(b"ready")
    message, fds, _, _ = socket.recv_fds(channel, 4096, 4)
    if not message or len(fds) != 4:
        os._exit(0)  # the zygote is gone or retired this runner
    request = json.loads(message)
    channel.close()

    tmpfs = ("size=%d,nr_inodes=%d,mode=1777" % (int(request["tmpfs_bytes"]), int(request["tmpfs_inodes"]))).encode()
    if libc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, tmpfs) != 0:
        fail("mount /tmp")
    shm = ("size=%d,nr_inodes=%d,mode=1777" % (int(request["shm_bytes"]), int(request["shm_inodes"]))).encode()
    if libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", MS_NOSUID | MS_NODEV, shm) != 0:
        fail("mount /dev/shm")
    for target, fd in enumerate(fds):
        if fd != target:
            os.dup2(fd, target)
            os.close(fd)
    import harness
    # The gateway writes the script only once this process is in the run's
    # cgroup, so reading it is also the wait for that move.
    payload = harness.read_request()
    # A cgroup namespace rooted at the run's group: /proc/self/cgroup then
    # shows "/" as in a cold run, not where the group sits on the host.
    if libc.unshare(CLONE_NEWCGROUP) != 0:
        fail("unshare cgroup")
    cpu = max(1, int(request["cpu_seconds"]))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    fsize = int(request["file_size_bytes"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    lock_down()
    os.chdir("/tmp")
    harness.run(payload)
    os._exit(0)


def reseed_random_generators():
    # Every runner is a copy of the zygote: without this, every request would
    # draw the same "random" numbers.
    import random
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


# ---- making G ---------------------------------------------------------------------

# ctypes.pythonapi keeps the GIL held across the call, as os.fork does.
_python = ctypes.pythonapi
_python.syscall.restype = ctypes.c_long
_python.syscall.argtypes = [ctypes.c_long] * 6


def clone_into_namespaces():
    """fork(), but the child starts in new user, mount, pid, ipc and uts
    namespaces, as pid 1 of its pid namespace. Python's own fork hooks run
    around it exactly as os.fork runs them. glibc's fork handlers do not: this
    process has one thread (nothing can hold a libc lock at this point), and
    glibc asks the kernel, not its cache, for the thread id it signals."""
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | signal.SIGCHLD
    _python.PyOS_BeforeFork()
    pid = _python.syscall(SYS_CLONE, flags, 0, 0, 0, 0)
    if pid == 0:
        _python.PyOS_AfterFork_Child()
        return 0
    errno = ctypes.get_errno()
    _python.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(errno, "clone: %s" % os.strerror(errno))
    return pid


def enter_own_user_namespace():
    # The jail's uid stays the only one there is, with no way back to groups.
    # Plain fds, no file objects: every object a fresh runner touches costs
    # it a copy-on-write page fault.
    for path, text in USER_NAMESPACE_FILES:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text)
        finally:
            os.close(fd)


USER_NAMESPACE_FILES = (
    ("/proc/self/setgroups", b"deny"),
    ("/proc/self/uid_map", b"%d %d 1" % (JAIL_UID, JAIL_UID)),
    ("/proc/self/gid_map", b"%d %d 1" % (JAIL_UID, JAIL_UID)),
)


# ---- the zygote ------------------------------------------------------------------

class Zygote:
    def __init__(self, control):
        self.control = control
        self.selector = selectors.DefaultSelector()
        self.starting = {}   # channel fd → (runner pid, channel)
        self.ready = set()   # pids of runners handed to the gateway, not yet given a request
        self.running = set()  # pids of runners the gateway gave a request
        self.waiting = 0     # requests the gateway has with no runner
        self.refilling = True
        self.idle = False    # whether this process runs as SCHED_IDLE now
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.wake_r = wake_r
        self.selector.register(control, selectors.EVENT_READ, "control")
        self.selector.register(wake_r, selectors.EVENT_READ, "child")

    def send(self, message):
        self.control.send(json.dumps(message).encode())

    def spawn_runner(self):
        # Skip the warm-up for a runner that a waiting request needs now (no
        # runner ready or starting is left for it), and for every runner
        # while several requests wait: the machine is saturated, and CPU,
        # not the script's own faults, is the limit. Runners that refill the
        # pool for later requests warm up: that keeps the median low.
        warm = self.waiting <= 1 and self.runners_coming() >= self.waiting
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = clone_into_namespaces()
        if pid == 0:
            try:
                # A session and process group of its own before anything
                # else: every runner starts in the zygote's group, and a
                # script's kill(0, ...) or setpriority(PRIO_PGRP, 0, ...)
                # would reach the zygote and every other runner there.
                os.setsid()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                # Nothing of the zygote may reach a request: not the control
                # channel, not other runners' channels, not its epoll set.
                keep = child_end.fileno()
                os.closerange(3, keep)
                os.closerange(keep + 1, 65536)
                enter_own_user_namespace()
                runner(child_end, warm)
            except BaseException as exc:  # noqa: B036 - the runner must never return into the zygote loop
                try:
                    os.write(2, ("pyexec runner failed: %r\n" % (exc,)).encode())
                finally:
                    os._exit(70)
            os._exit(0)
        child_end.close()
        self.starting[parent_end.fileno()] = (pid, parent_end)
        self.selector.register(parent_end, selectors.EVENT_READ, "runner")

    def runner_ready(self, fd):
        if fd not in self.starting:
            return  # already handled earlier in the same select
        pid, channel = self.starting.pop(fd)
        self.selector.unregister(channel)
        message = channel.recv(4096)
        if not message:
            channel.close()  # it died while setting up; reaping reports it
            return
        # From now on the gateway talks to the runner itself; it also moves
        # the runner into a cgroup of its own while it waits.
        try:
            socket.send_fds(self.control, [json.dumps({"op": "runner", "pid": pid}).encode()], [channel.fileno()])
        finally:
            channel.close()
        self.ready.add(pid)
        self.waiting = max(0, self.waiting - 1)

    def handle_message(self):
        try:
            message = self.control.recv(4096)
        except ConnectionResetError:
            message = b""
        if not message:
            raise SystemExit(0)  # the gateway closed the channel: retire
        message = json.loads(message)
        if message["op"] == "took":
            self.ready.discard(message["pid"])
            self.running.add(message["pid"])
        elif message["op"] == "wait":
            self.waiting += 1
            self.idle = False  # the gateway has put this process back to normal

    def runners_coming(self):
        """Runners handed over without a request yet, or still getting ready."""
        return len(self.ready) + len(self.starting)

    def wants_runner(self):
        """Whether to fork one more runner now. Requests that wait get one
        at once. The ready pool is refilled in batches: once it is down to
        half, back to full, and topped up when nothing has run for a moment.
        A fork copies the whole interpreter's page tables, so on a small
        machine it slows down whatever script runs beside it; a batch leaves
        most requests with none beside them, at the same CPU per request."""
        coming = self.runners_coming() - self.waiting
        if coming < 0:
            return True
        if coming >= READY_RUNNERS:
            self.refilling = False
        elif coming <= READY_RUNNERS // 2:
            self.refilling = True
        return self.refilling

    def reap(self):
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            self.running.discard(pid)
            self.ready.discard(pid)
            self.send({"op": "exit", "pid": pid, "code": code})

    def serve(self):
        os.set_blocking(self.wake_r, False)
        self.send({"op": "ready", "python": platform.python_version()})
        while True:
            if IDLE_WARM_UP and not self.idle and not self.waiting:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
                self.idle = True
            if self.wants_runner():
                timeout = 0
            elif self.runners_coming() < READY_RUNNERS and not self.running:
                timeout = IDLE_TOP_UP_SECONDS
            else:
                timeout = None
            events = self.selector.select(timeout=timeout)
            if not events:
                self.spawn_runner()
                continue
            for key, _ in events:
                if key.data == "control":
                    self.handle_message()
                elif key.data == "runner":
                    self.runner_ready(key.fd)
                elif key.data == "child":
                    self.reap()


def main():
    global READY_RUNNERS, IDLE_WARM_UP
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    for arg in sys.argv[1:]:
        if arg.startswith("--ready="):
            READY_RUNNERS = max(1, int(arg.split("=", 1)[1]))
        elif arg == "--idle-warm-up":
            IDLE_WARM_UP = True
        else:
            __import__(arg)
    # pid 1 of its jail, the kernel already drops every signal it has no
    # handler for, SIGKILL and SIGSTOP included, when it comes from inside
    # the jail; SIGINT is the one Python handles itself (KeyboardInterrupt).
    # Runners cannot name this process at all (own pid namespace, own
    # session), so this only keeps the rule true if that ever changes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import harness  # noqa: F401 - bound once here, so every runner gets it for free
    warm_up()
    gc.collect()
    # Objects that exist now are never scanned by a runner's collector, so
    # copy-on-write keeps them shared with the zygote.
    gc.freeze()
    control = socket.socket(fileno=CONTROL_FD)
    Zygote(control).serve()


if __name__ == "__main__":
    main()
