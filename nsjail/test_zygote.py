"""Unit tests of the warm runner's own seccomp filter (zygote.seccomp_program).

Run with the jail's Python: python3 -m unittest discover -s nsjail
The program is run two ways: by a small classic-BPF interpreter over
seccomp_data for every ABI a process can enter the kernel by (x86_64, x32,
i386), and for real, installed in a forked child.
"""

import ctypes
import os
import struct
import unittest

import zygote

AUDIT_ARCH_I386 = 0x40000003
SECCOMP_RET_ACTION_FULL = 0xFFFF0000


def run_filter(program, nr, arch=zygote.AUDIT_ARCH_X86_64, args=(0, 0, 0, 0, 0, 0)):
    """What the kernel would answer: the BPF program run over seccomp_data."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args)
    insns = [struct.unpack("HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
            pc += 1
        elif code == 0x15:  # jeq #k
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x45:  # jset #k
            pc += 1 + (jt if acc & k else jf)
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError("instruction %#x is not interpreted here" % code)


EPERM = zygote.SECCOMP_RET_ERRNO | zygote.EPERM
ENOSYS = zygote.SECCOMP_RET_ERRNO | zygote.ENOSYS
ALLOW = zygote.SECCOMP_RET_ALLOW
X32 = zygote.X32_SYSCALL_BIT


class RunnerFilter(unittest.TestCase):
    program = zygote.seccomp_program(forbid_sockets=False)

    def answer(self, nr, **kwargs):
        return run_filter(self.program, nr, **kwargs)

    def test_socket_is_refused_only_where_landlock_cannot_scope_it(self):
        # Which families the zygote's own filter lets by is nsjail's policy.
        self.assertEqual(self.answer(zygote.SYS_SOCKET, args=(1, 1, 0, 0, 0, 0)), ALLOW)
        strict = zygote.seccomp_program(forbid_sockets=True)
        self.assertEqual(run_filter(strict, zygote.SYS_SOCKET, args=(1, 1, 0, 0, 0, 0)), EPERM)
        self.assertEqual(run_filter(strict, X32 | zygote.SYS_SOCKET), EPERM)
        self.assertEqual(run_filter(strict, 39), ALLOW)

    def test_ordinary_x86_64_calls_are_allowed(self):
        for nr in (0, 1, 2, 39, 57, 59, 60, 231):  # read, write, open, getpid, fork, execve, exit, exit_group
            self.assertEqual(self.answer(nr), ALLOW, nr)

    def test_every_forbidden_call_is_refused_with_eperm(self):
        for name, nr in zygote.FORBIDDEN_AFTER_SETUP.items():
            self.assertEqual(self.answer(nr), EPERM, name)

    def test_clone_with_namespace_flags_is_refused_and_without_them_allowed(self):
        self.assertEqual(self.answer(zygote.SYS_CLONE, args=(zygote.CLONE_NEWUSER, 0, 0, 0, 0, 0)), EPERM)
        self.assertEqual(self.answer(zygote.SYS_CLONE, args=(0x11, 0, 0, 0, 0, 0)), ALLOW)  # SIGCHLD
        self.assertEqual(self.answer(zygote.SYS_CLONE3), ENOSYS)

    def test_every_x32_number_is_refused(self):
        # The forbidden calls under their x32 numbers, and any other.
        for nr in list(zygote.FORBIDDEN_AFTER_SETUP.values()) + [0, 1, 39, 56, 512, 547]:
            self.assertEqual(self.answer(X32 | nr), EPERM, nr)

    def test_i386_calls_kill_the_process(self):
        for nr in (1, 26, 120, 310):  # exit, ptrace, clone, process_vm_readv
            self.assertEqual(self.answer(nr, arch=AUDIT_ARCH_I386) & SECCOMP_RET_ACTION_FULL,
                             zygote.SECCOMP_RET_KILL_PROCESS, nr)

    def test_installed_filter_refuses_x32_calls_before_the_kernel_sees_them(self):
        # Without the filter, a kernel without x32 support answers ENOSYS.
        libc = ctypes.CDLL(None, use_errno=True)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
                    os._exit(2)
                if libc.prctl(zygote.PR_SET_SECCOMP, zygote.SECCOMP_MODE_FILTER, zygote.SECCOMP_FPROG, 0, 0) != 0:
                    os._exit(3)
                refused = libc.syscall(X32 | 39) == -1 and ctypes.get_errno() == zygote.EPERM
                unshare = libc.syscall(X32 | 272, zygote.CLONE_NEWUSER) == -1 and ctypes.get_errno() == zygote.EPERM
                code = 0 if refused and unshare and libc.syscall(39) == os.getpid() else 4
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)


if __name__ == "__main__":
    unittest.main()
