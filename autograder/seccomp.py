"""The seccomp filter every submission runs under, and a fresh session keyring for it.

Modelled on Docker's default profile: allow everything, except the system calls that reach kernel state
shared with the host (keyrings, namespaces, mounts, modules, clocks, tracing other processes, BPF, io_uring)
and that an unprivileged process only needs to attack the kernel. The sandbox's uid already lacks the
capabilities most of them check; the filter also closes what needs none: user namespaces (in which the
process is root again and may mount a tmpfs that no watchdog sees), keyctl on the session keyring it
inherited, ptrace of its own processes, io_uring and userfaultfd (frequent kernel exploit primitives).

The program is classic BPF, built here in pure Python (no libseccomp) and covering x86_64 and aarch64 in
one: the architecture is checked first (anything else is killed: a 32-bit system call table would let a
blocked call through under another number), and on x86_64 the x32 calls (nr >= 0x40000000) are refused for
the same reason. ``clone`` is refused only with a CLONE_NEW* flag (threads and fork() use it); ``clone3``
says ENOSYS, since a filter can not read flags behind a pointer, and glibc then falls back to ``clone``.

Standard library only: zygote.py imports this file inside the fork server's sandbox, and the sandbox's shim (sandbox/shim.py)
carries a copy of `install` (it runs with ``python -I -S`` and can import nothing of ours).
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

__all__ = ["program", "install", "join_session_keyring", "KEYCTL"]

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_BIT = 0x40000000

# Refused with EPERM. Docker's default profile blocks these for a container without added capabilities.
BLOCKED = (
    "keyctl", "add_key", "request_key",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "mount_setattr",
    "move_mount", "open_tree", "open_tree_attr", "fsopen", "fsmount", "fsconfig", "fspick",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "process_madvise",
    "bpf", "perf_event_open", "userfaultfd", "lookup_dcookie", "fanotify_init", "syslog",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "create_module", "get_kernel_syms", "query_module",
    "open_by_handle_at", "name_to_handle_at", "acct", "swapon", "swapoff", "reboot", "vhangup",
    "settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "sethostname", "setdomainname",
    "iopl", "ioperm", "quotactl", "quotactl_fd", "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl",
)

# Numbers from the kernel's arch/x86/entry/syscalls/syscall_64.tbl and include/uapi/asm-generic/unistd.h
# (aarch64). Only the calls the filter names; a call an architecture lacks is simply absent.
SYSCALLS = {
    "x86_64": {
        "clone": 56, "uselib": 134, "personality": 135, "ustat": 136, "sysfs": 139, "ptrace": 101,
        "syslog": 103, "vhangup": 153, "pivot_root": 155, "_sysctl": 156, "adjtimex": 159, "chroot": 161,
        "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168,
        "reboot": 169, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
        "create_module": 174, "init_module": 175, "delete_module": 176, "get_kernel_syms": 177,
        "query_module": 178, "quotactl": 179, "nfsservctl": 180, "lookup_dcookie": 212,
        "clock_settime": 227, "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250,
        "unshare": 272, "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at": 303,
        "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310,
        "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320, "bpf": 321,
        "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "clone3": 435, "pidfd_getfd": 438, "process_madvise": 440, "mount_setattr": 442,
        "quotactl_fd": 443, "open_tree_attr": 467,
    },
    "aarch64": {
        "lookup_dcookie": 18, "umount2": 39, "mount": 40, "pivot_root": 41, "nfsservctl": 42, "chroot": 51,
        "vhangup": 58, "quotactl": 60, "acct": 89, "personality": 92, "unshare": 97, "kexec_load": 104,
        "init_module": 105, "delete_module": 106, "clock_settime": 112, "syslog": 116, "ptrace": 117,
        "reboot": 142, "sethostname": 161, "setdomainname": 162, "settimeofday": 170, "adjtimex": 171,
        "add_key": 217, "request_key": 218, "keyctl": 219, "clone": 220, "swapon": 224, "swapoff": 225,
        "perf_event_open": 241, "fanotify_init": 262, "name_to_handle_at": 264, "open_by_handle_at": 265,
        "clock_adjtime": 266, "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
        "finit_module": 273, "bpf": 280, "userfaultfd": 282, "kexec_file_load": 294,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
        "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435,
        "pidfd_getfd": 438, "process_madvise": 440, "mount_setattr": 442, "quotactl_fd": 443,
        "open_tree_attr": 467,
    },
}
KEYCTL = {arch: table["keyctl"] for arch, table in SYSCALLS.items()}

# clone()'s first argument on both architectures (their argument orders differ only after it). 0x80,
# CLONE_NEWTIME, is only meaningful to unshare/clone3, but costs nothing to include.
CLONE_NEW = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x80
PERSONALITY_ALLOWED = (0, 0xFFFFFFFF)  # PER_LINUX, and the query that changes nothing

SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x80000000, 0x7FFF0000, 0x00050000
EPERM, ENOSYS = 1, 38
# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]. Both architectures
# are little-endian, so an argument's low 32 bits lie at its start.
_NR, _ARCH, _ARG0 = 0, 4, 16
# Classic BPF opcodes: BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_JMP|BPF_JGE|BPF_K,
# BPF_JMP|BPF_JSET|BPF_K, BPF_RET|BPF_K.
_LD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06


def _arch_block(arch: str) -> list[tuple[int, int, int, int]]:
    """The instructions for one architecture, starting with loading the call number; every path returns."""
    table = SYSCALLS[arch]
    blocked = sorted({table[name] for name in BLOCKED if name in table})
    head: list[tuple[int, int, int, int]] = [(_LD, 0, 0, _NR)]
    if arch == "x86_64":
        head += [(_JGE, 0, 1, X32_BIT), (_RET, 0, 0, SECCOMP_RET_ERRNO | EPERM)]
    jumps = [(table["clone"], "clone"), (table["clone3"], "enosys"), (table["personality"], "personality")]
    jumps += [(nr, "eperm") for nr in blocked]
    # After the chain of comparisons (classic BPF jumps only forward, at most 255 instructions):
    tail = [
        ("allow", (_RET, 0, 0, SECCOMP_RET_ALLOW)),  # none of the above
        ("eperm", (_RET, 0, 0, SECCOMP_RET_ERRNO | EPERM)),
        ("enosys", (_RET, 0, 0, SECCOMP_RET_ERRNO | ENOSYS)),
        ("clone", (_LD, 0, 0, _ARG0)),
        (None, (_JSET, 0, 1, CLONE_NEW)),
        (None, (_RET, 0, 0, SECCOMP_RET_ERRNO | EPERM)),
        (None, (_RET, 0, 0, SECCOMP_RET_ALLOW)),
        ("personality", (_LD, 0, 0, _ARG0)),
        (None, (_JEQ, 2, 0, PERSONALITY_ALLOWED[0])),
        (None, (_JEQ, 1, 0, PERSONALITY_ALLOWED[1])),
        (None, (_RET, 0, 0, SECCOMP_RET_ERRNO | EPERM)),
        (None, (_RET, 0, 0, SECCOMP_RET_ALLOW)),
    ]
    at = {label: len(jumps) + i for i, (label, _) in enumerate(tail) if label}
    chain = []
    for i, (nr, label) in enumerate(jumps):
        offset = at[label] - i - 1
        assert offset < 256, "a classic BPF conditional jump reaches at most 255 instructions ahead"
        chain.append((_JEQ, offset, 0, nr))
    return head + chain + [insn for _, insn in tail]


def program() -> bytes:
    """The filter as struct sock_filter[] bytes (8 bytes an instruction), for `install`."""
    x86, arm = _arch_block("x86_64"), _arch_block("aarch64")
    insns = [
        (_LD, 0, 0, _ARCH),
        (_JEQ, 2, 0, AUDIT_ARCH["x86_64"]),
        (_JEQ, 1 + len(x86), 0, AUDIT_ARCH["aarch64"]),
        (_RET, 0, 0, SECCOMP_RET_KILL_PROCESS),
        *x86,
        *arm,
    ]
    return b"".join(struct.pack("=HBBI", *insn) for insn in insns)


def install(prog: bytes) -> None:
    """Apply `prog` to this process and everything it starts from now on (and set no_new_privs, which
    seccomp needs without CAP_SYS_ADMIN). prctl filters the calling thread only: refuse to leave other
    threads unfiltered."""
    if len(os.listdir("/proc/self/task")) != 1:
        raise RuntimeError("seccomp: the process must be single-threaded to install its filter")
    libc = ctypes.CDLL(None, use_errno=True)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    ulong = ctypes.c_ulong
    if libc.prctl(38, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(22, ulong(2), ctypes.byref(fprog), ulong(0), ulong(0)) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def join_session_keyring() -> None:
    """Replace the session keyring inherited from the grader (the TA's login session, whose keys a
    possessor may read, and to which it may add a key that outlives the run) with a new, empty, anonymous
    one: keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL). Where keys do not exist (ENOSYS) or keyctl is already
    forbidden (EPERM, e.g. a container's own seccomp profile), there is nothing to inherit."""
    nr = KEYCTL.get(platform.machine())
    if nr is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(ctypes.c_long(nr), ctypes.c_long(1), ctypes.c_void_p(None)) < 0:
        err = ctypes.get_errno()
        if err not in (EPERM, ENOSYS):
            raise OSError(err, f"keyctl(KEYCTL_JOIN_SESSION_KEYRING): {os.strerror(err)}")
