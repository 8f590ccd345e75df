"""Run untrusted student code in a throw-away sandbox, under resource limits.

The grader calls :func:`run_sandboxed` once per submission.  The command runs in
a fresh process tree with

* **bubblewrap** (``bwrap``): new mount, pid, network, ipc, uts and cgroup
  namespaces; the root file system is an empty read-only tmpfs into which only
  an allow-list is bound read-only (``/usr``, ``/bin``, ``/lib*``, a few
  ``/etc`` files the dynamic linker needs, the Python install prefix and the
  virtualenv) plus the caller's :class:`Mount` s.  ``/scratch`` is a private
  tmpfs of ``Limits.scratch_mb`` (also the home and working directory);
  ``/tmp`` is another of the same size (a venv under the host's /tmp is bound
  inside it).  ``/dev/shm`` is a
  separate tmpfs (DataLoader workers need it) capped at ``Limits.memory_mb``.
  The environment is cleared; no network exists but an unconnected loopback.
* **an unprivileged uid**: RLIMIT_NPROC is what stops a fork bomb inside the
  kernel, and it counts the tasks of a *user*; root is exempt.  So

  - when the grader runs as root, bwrap runs privileged (no user namespace)
    and our start-up shim switches to a random otherwise unused uid/gid
    (``_pick_uid``) before exec'ing the command.  The count is then per
    sandbox.  Consequence: everything the caller mounts must be readable by
    "others" (and writable mounts writable by others); this is checked up
    front and a ``ValueError`` says what to chmod.
  - when the grader is an ordinary user, bwrap makes a user namespace.  On
    kernels >= 5.14 RLIMIT_NPROC set *inside* that namespace counts only the
    namespace's tasks, so we set it there; on older kernels it would count all
    of the user's processes, so we leave it to the watchdog.
* **a memory cgroup of its own** (cgroup.py), where the grader may make one
  (``memory_accounting()`` says which kind applies): bwrap starts inside it, so
  the kernel charges every page of the run there, mapped or not (memfds, files
  on a tmpfs it mounted), and kills inside it beyond ``Limits.memory_mb`` + a
  small allowance for kernel memory and page cache.  Removed after the run.
* **a seccomp filter** (seccomp.py, modelled on Docker's default profile) and
  **a session keyring of its own**, installed by the shim after the uid switch,
  right before the exec: no user namespaces, mounts, keyctl, ptrace, BPF,
  io_uring...; the grader's session keyring (the TA's login) is out of reach.
* **a watchdog** in the calling thread polls the process tree every
  ``_POLL_SECONDS``: wall time, memory (resident anonymous + shared-memory
  pages summed over the tree, or what the run's cgroup was charged for them if
  more; without a cgroup, plus memfds and the run's own tmpfs mounts; mapped
  library files are not counted, they are page cache the kernel can drop), and
  the number of tasks (processes + threads).  Going beyond ``Limits.processes`` tasks is
  treated as a fork bomb.  The kill is SIGKILL to the sandbox's pid 1, which
  makes the kernel kill every process in the pid namespace, double-forked and
  setsid'd ones included; we wait until it is gone before returning.
* **rlimits** set by the shim: RLIMIT_CORE=0, RLIMIT_FSIZE=scratch size (with
  SIGXFSZ ignored, so an oversized write fails with EFBIG instead of killing),
  RLIMIT_NPROC as above, and nice +10 so the watchdog and the machine stay
  responsive while a submission burns CPU.  RLIMIT_AS is deliberately not set (torch needs >= 4 GiB of address
  space to import, CUDA needs it unlimited).

Turns: with ``turn``, the command starts at once at nice +19 with a pipe on its
stdin, and the watchdog polls ``turn()`` until it returns True; then it writes
one byte to that pipe and closes it, and the wall-time limit starts counting.
The command may read stdin to wait for its turn.  At the turn the watchdog
moves every task of the sandbox, and the session's scheduling group
(autogroup), back to +10; lowering a nice value takes CAP_SYS_NICE, so a grader
that is not root leaves the tasks at +19.  Before its turn the sandbox uses
only CPU nobody else wants, and the time spent waiting is not the submission's:
the grader uses this to start the next sandbox (interpreter, torch, data)
while the current one trains.

Outcome (:class:`RunResult`): ``killed_for`` is ``None`` or one of ``"time"``,
``"memory"``, ``"processes"`` -- only things the watchdog killed for, or the
kernel inside the run's memory cgroup ("memory", then the whole run is killed) -- or
``"cancelled"`` (a waiting run whose ``turn`` raised :class:`TurnCancelled`).  Output
beyond the cap is drained and discarded (``output_truncated``), a full
scratch disk is an ENOSPC/EFBIG error inside the program; neither is a kill.
``returncode`` is the command's exit status, 128+N when it died of signal N
(what a shell reports; bwrap can not tell us more), and ``None`` when the
watchdog killed it.

Result channel: the command finds the write end of a pipe as file descriptor 3
and may write anything there (e.g. JSON or safetensors bytes); the caller gets
it as ``RunResult.data`` (capped at ``data_bytes``, then ``data_truncated``).
All three pipes are read concurrently so the child never blocks on a full one.

Fallback without bubblewrap (not installed, or the probe fails): a loud
warning, then the command runs as the caller's user with the same rlimits
(except NPROC), memory cgroup, seccomp filter, session keyring, watchdog,
cleared environment and private home.  A small shim
acts as child subreaper, so processes that double-fork or setsid are still
found and killed.  There is no namespace, so paths can not be remapped; a
private directory ``root`` stands in for ``/``:

* each Mount's target becomes a symlink ``root/<target>`` -> its source (not
  read-only!), ``/scratch`` becomes ``root/scratch`` and ``TMPDIR`` is
  ``root/tmp``;
* every argv item, ``cwd`` and every ``env`` value that starts with a mount
  target or ``/scratch`` is rewritten to start with ``root`` instead;
* the environment variable ``SANDBOX_ROOT`` holds that prefix (``""`` inside
  the real sandbox), so code inside can build other paths as
  ``os.environ["SANDBOX_ROOT"] + "/sandbox/data"``.

Pass ``require_sandbox=True`` to refuse the fallback (``SandboxUnavailable``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from . import cgroup, seccomp

__all__ = [
    "Limits",
    "Mount",
    "RunResult",
    "SandboxUnavailable",
    "bwrap_available",
    "memory_accounting",
    "run_sandboxed",
]

log = logging.getLogger(__name__)

RUN_NICE, WAIT_NICE = 10, 19  # a running sandbox; one that waits for its turn
_POLL_SECONDS = 0.05  # watchdog period: a fork bomb or a fast allocation gets this long
_DRAIN_SECONDS = 2.0  # after the command exits, how long to wait for the pipes to close
# Pipes of 1 MB, read 1 MB at a time. Every round of the watchdog needs the GIL, and while the judge computes
# in Python it gets it once per switch interval (5 ms): with 64 KB pipes, 300 MB of print() took 18.3 s to
# drain against 1.9 s with 1 MB ones (`python bench/pipe_drain.py --mb 300`, a thread spinning beside the
# reader, on a loaded machine), and in a loaded batch a gigabyte of print() ran past its cell's 60 s limit.
_READ_CHUNK = 1 << 20

FALLBACK_WARNING = (
    "bubblewrap not found: grading WITHOUT a sandbox (student code can read the disk "
    "and use the network); install it with apt-get install bubblewrap, or pass "
    "--require-sandbox to refuse"
)


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 300.0
    # Anonymous + shared memory of the whole run (mapped or not): the watchdog, and the kernel in a cgroup.
    memory_mb: int = 3072
    # Tasks (processes + threads) the command may have; one more is killed as a fork bomb.
    processes: int = 64
    # Bytes of stdout+stderr kept: half of it for each stream; the rest is discarded.
    output_bytes: int = 1_000_000
    # Size of each writable tmpfs: /scratch and /tmp.
    scratch_mb: int = 256


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    writable: bool = False


@dataclass
class RunResult:
    returncode: int | None  # None when killed by the watchdog (see killed_for)
    killed_for: str | None  # None, "time", "memory" or "processes"
    stdout: str
    stderr: str
    output_truncated: bool
    seconds: float
    peak_rss_mb: float  # peak of that memory over the whole run, as sampled (the cgroup's peak after its kill)
    sandboxed: bool
    data: bytes
    data_truncated: bool = False


class SandboxUnavailable(RuntimeError):
    """bubblewrap can not be used and the caller asked for a real sandbox."""


# --------------------------------------------------------------------------
# The shim: first program run in the sandbox (or, in the fallback, on the host).
# It puts the data pipe on fd 3, sets the rlimits, drops root, and execs the
# command.  In the fallback it stays as parent and child subreaper so that
# nothing can escape the process tree.  Run with ``python -I -S``: it must
# start fast and must not import anything from the sandboxed environment.
# --------------------------------------------------------------------------
_SHIM = r"""
import json, os, resource, signal, sys, time
cfg = json.loads(sys.argv[1])
argv = sys.argv[2:]
if cfg["data_fd"] != 3:
    os.dup2(cfg["data_fd"], 3)  # the copy is inheritable: it survives the exec
    os.close(cfg["data_fd"])
for name, value in cfg["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # kept across exec: too big a write is EFBIG
os.nice(cfg["nice"])
if cfg["uid"] is not None:  # root: leaving uid 0 also drops every capability
    os.setgroups([])
    os.setresgid(cfg["uid"], cfg["uid"], cfg["uid"])
    os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])

def confine():
    # A session keyring of its own (not the grader's: see seccomp.join_session_keyring), then the seccomp
    # filter, last before the exec (a copy of seccomp.install: this shim can import nothing of ours; it is
    # single-threaded, as prctl needs).
    if cfg["keyctl"] is None and not cfg["seccomp"]:
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    long, ulong = ctypes.c_long, ctypes.c_ulong
    if cfg["keyctl"] is not None and libc.syscall(long(cfg["keyctl"]), long(1), ctypes.c_void_p(None)) < 0:
        if ctypes.get_errno() not in (1, 38):  # EPERM, ENOSYS: no keyrings to inherit here
            sys.stderr.write("sandbox: cannot join a new session keyring: %s\n" % os.strerror(ctypes.get_errno()))
            os._exit(126)
    if cfg["seccomp"]:
        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
        prog = bytes.fromhex(cfg["seccomp"])
        buf = ctypes.create_string_buffer(prog, len(prog))
        fprog = SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
        if (libc.prctl(38, ulong(1), ulong(0), ulong(0), ulong(0)) != 0
                or libc.prctl(22, ulong(2), ctypes.byref(fprog), ulong(0), ulong(0)) != 0):
            sys.stderr.write("sandbox: cannot install the seccomp filter: %s\n" % os.strerror(ctypes.get_errno()))
            os._exit(126)

def run():
    confine()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stderr.write("sandbox: cannot execute %r: %s\n" % (argv[0], exc))
        os._exit(127)

if not cfg["subreaper"]:
    run()

import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
shim = os.getpid()
child = os.fork()
if child == 0:
    os.setpgid(0, 0)  # its own process group: one killpg() stops a fork bomb at once
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die if the shim is killed
    if os.getppid() != shim:
        os._exit(137)
    run()

def descendants():
    kids = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % entry) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    out, todo = [], [os.getpid()]
    while todo:
        found = kids.get(todo.pop(), [])
        out += found
        todo += found
    return out

code = None
while code is None:
    pid, status = os.waitpid(-1, 0)
    if pid == child:
        code = os.waitstatus_to_exitcode(status)
# The command is done: whatever it left behind is now our child; kill and reap it
# (without blocking: a process forked while we killed its parent needs another round).
while True:
    for pid in descendants():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        break
    time.sleep(0.01)
os._exit(code if code >= 0 else 128 - code)
"""


# --------------------------------------------------------------------------
# Capability detection
# --------------------------------------------------------------------------
def _is_root() -> bool:
    return os.geteuid() == 0


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split("-")[0].split(".")
        return (int(parts[0]), int(parts[1])) >= (major, minor)
    except (ValueError, IndexError):
        return False


@lru_cache(maxsize=None)
def _bwrap_has(option: str) -> bool:
    """Whether this bwrap knows `option` (--size needs bwrap >= 0.7, Ubuntu 22.04 has 0.6)."""
    try:
        return option in subprocess.run([shutil.which("bwrap") or "bwrap", "--help"],
                                        capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False


def _pick_uid() -> int:
    """A uid that no process on the machine uses (the sandbox's own NPROC count)."""
    used = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                used.add(os.stat(f"/proc/{entry}").st_uid)
            except OSError:
                pass
    while True:
        uid = 1_000_000_000 + secrets.randbelow(1_000_000_000)
        if uid not in used:
            return uid


@lru_cache(maxsize=1)
def _probe() -> str | None:
    """Run a trivial Python in the real sandbox once; None if it works, else why not."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "the bwrap executable is not on PATH"
    argv = [sys.executable, "-I", "-S", "-c", "import os; os.write(3, b'ok')"]
    try:
        result = _run(argv, mounts=[], limits=Limits(wall_seconds=30), env=None, cwd="/scratch",
                      devices=(), data_bytes=16, sandboxed=True)
    except (OSError, ValueError) as exc:
        return f"bwrap failed to start: {exc}"
    if result.returncode != 0 or result.data != b"ok":
        return f"bwrap probe failed (exit {result.returncode}): {result.stderr.strip()[-500:]}"
    return None


def bwrap_available() -> bool:
    """True if bubblewrap is installed and a probe sandbox runs here (cached)."""
    return _probe() is None


# --------------------------------------------------------------------------
# Command lines
# --------------------------------------------------------------------------
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
              "/etc/localtime")


def _python_dirs() -> list[str]:
    """Install prefix and virtualenv of this interpreter, unless already under /usr."""
    dirs = []
    for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
              os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))):
        for q in (os.path.abspath(p), os.path.realpath(p)):
            if any(q == d or q.startswith(d + "/") for d in _SYSTEM_DIRS + tuple(dirs)):
                continue
            dirs.append(q)
    return dirs


def _base_env(env: dict[str, str] | None, home: str, tmp: str, root: str) -> dict[str, str]:
    base = {
        "PATH": f"{sys.prefix}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        # getpass.getuser() (used e.g. by torch's compile caches) reads these
        # first; without them it needs an /etc/passwd entry we don't provide.
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "SANDBOX_ROOT": root,
    }
    base.update(env or {})
    return base


def _shim_argv(argv: list[str], cfg: dict) -> list[str]:
    return [sys.executable, "-I", "-S", "-c", _SHIM, json.dumps(cfg), *argv]


@lru_cache(maxsize=1)
def seccomp_program() -> bytes | None:
    """The filter student code runs under (seccomp.py); None on an architecture it does not know, where
    it would kill every process."""
    if platform.machine() not in seccomp.AUDIT_ARCH:
        log.warning("no seccomp filter for %s: student code runs without one", platform.machine())
        return None
    return seccomp.program()


def _confinement(zygote: bool = False) -> dict:
    """The shim's keyring and seccomp settings. The fork server's zygote gets a keyring of its own but no
    filter: it unshares and mounts for every run, and filters each run itself (zygote.py)."""
    prog = None if zygote else seccomp_program()
    return {"keyctl": seccomp.KEYCTL.get(platform.machine()), "seccomp": prog.hex() if prog else None}


def _rlimits(limits: Limits, nproc: int | None) -> dict[str, int]:
    rl = {"RLIMIT_CORE": 0, "RLIMIT_FSIZE": limits.scratch_mb << 20}
    if nproc is not None:
        rl["RLIMIT_NPROC"] = nproc
    return rl


def _parents(path: str) -> list[str]:
    """bwrap creates a bind target's missing parents with the host's modes (/root is
    0700): create them first, traversable by the unprivileged sandbox uid."""
    args, parts = [], path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        parent = "/" + "/".join(parts[:i])
        if parent in ("/scratch", "/tmp"):
            continue  # tmpfs mounts of the sandbox's own; what lies below still needs traversable parents
        if any(parent == d or parent.startswith(d + "/") for d in _SYSTEM_DIRS):
            break
        args += ["--perms", "0755", "--dir", parent]
    return args


def _size(mb: int) -> list[str]:
    """Size option for the next --tmpfs; older bwrap can't (then only RLIMIT_FSIZE caps files)."""
    return ["--size", str(mb << 20)] if _bwrap_has("--size") else []


def _bwrap_argv(argv, mounts, limits, env, cwd, devices, data_fd, waits: bool, zygote: bool = False) -> list[str]:
    """zygote: the command stays root, with what it needs to give each run namespaces and a uid of its own
    (root only; see forkserver.py)."""
    root = _is_root()
    cmd = [shutil.which("bwrap") or "bwrap",
           "--die-with-parent",  # if the grader dies, so does the sandbox
           "--new-session",      # no controlling tty: blocks TIOCSTI injection
           "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
           "--unshare-cgroup-try", "--hostname", "sandbox"]
    if root:
        # Privileged bwrap keeps every capability by default; keep only what the
        # shim needs to switch to the unprivileged uid (which then drops them).
        cmd += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        if zygote:
            cmd += ["--cap-add", "CAP_SYS_ADMIN"]  # unshare() and mount() for each run
    else:
        cmd += ["--unshare-user"]
        if _bwrap_has("--disable-userns"):  # bwrap >= 0.8: no nested user namespace (seccomp refuses it too)
            cmd += ["--disable-userns"]
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            cmd += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
    for f in _ETC_FILES:
        cmd += ["--ro-bind-try", f, f]
    # /tmp is a tmpfs of its own, laid before the Python binds: the grader's venv may itself live under /tmp
    # (a CI checkout), and a bind there must land inside the sandbox's /tmp, not clash with it.
    cmd += ["--perms", "1777", *_size(limits.scratch_mb), "--tmpfs", "/tmp"]
    for d in _python_dirs():
        cmd += _parents(d) + ["--ro-bind", d, d]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    for dev in devices:
        cmd += ["--dev-bind", dev, dev]
    # /dev/shm is memory; /scratch and /tmp are the command's disk, each of scratch_mb.
    cmd += ["--perms", "1777", *_size(limits.memory_mb), "--tmpfs", "/dev/shm",
            "--perms", "1777", *_size(limits.scratch_mb), "--tmpfs", "/scratch"]
    for m in mounts:
        cmd += _parents(m.target) + ["--bind" if m.writable else "--ro-bind", str(m.source), m.target]
    # The sandbox root and /dev are tmpfs mounts owned by the sandbox's user
    # (in a user namespace): make them read-only so they can't be filled.
    cmd += ["--remount-ro", "/dev", "--remount-ro", "/"]
    cmd += ["--chdir", cwd, "--clearenv"]
    for k, v in _base_env(env, "/scratch", "/tmp", "").items():
        cmd += ["--setenv", k, v]
    # RLIMIT_NPROC lets the command reach one task more than allowed, which the
    # watchdog sees and kills for; the rlimit only makes sure the bomb stops there.
    if root and zygote:
        uid, nproc = None, None  # each run gets its own uid and RLIMIT_NPROC from the zygote
    elif root:
        uid = _pick_uid()
        nproc = limits.processes + 1
    else:
        uid = None
        # bwrap's pid 1 shares our uid in the namespace and counts too.
        nproc = limits.processes + 2 if _kernel_at_least(5, 14) else None
    cfg = {"data_fd": data_fd, "rlimits": _rlimits(limits, nproc), "nice": WAIT_NICE if waits else RUN_NICE,
           "uid": uid, "subreaper": False, **_confinement(zygote)}
    return cmd + ["--", *_shim_argv(argv, cfg)]


def _fallback_argv(argv, mounts, limits, env, cwd, data_fd, root: str, waits: bool):
    """Command, cwd and env for running without bwrap, with `root` standing in for /."""
    prefixes = sorted({m.target.rstrip("/") for m in mounts} | {"/scratch"}, key=len, reverse=True)

    def remap(s: str) -> str:
        for p in prefixes:
            if s == p or s.startswith(p + "/"):
                return root + s
        return s

    for d in ("scratch", "tmp"):
        os.mkdir(os.path.join(root, d))
    for m in mounts:
        link = root + m.target.rstrip("/")
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(os.path.abspath(m.source), link)
    full_env = {k: remap(v) for k, v in _base_env(env, "/scratch", root + "/tmp", root).items()}
    cfg = {"data_fd": data_fd, "rlimits": _rlimits(limits, None), "nice": WAIT_NICE if waits else RUN_NICE,
           "uid": None, "subreaper": True, **_confinement()}
    return _shim_argv([remap(a) for a in argv], cfg), remap(cwd), full_env


def _check_mounts_for_uid_switch(mounts: list[Mount]) -> None:
    """As root the command runs as an unrelated uid: mounts must be open to 'others'."""
    bad = []
    for m in mounts:
        need_dir = 0o005 | (0o002 if m.writable else 0)
        paths = [str(m.source)]
        if os.path.isdir(m.source):
            for dirpath, dirnames, filenames in os.walk(m.source):
                paths += [os.path.join(dirpath, n) for n in dirnames + filenames]
                if len(paths) > 10_000:
                    break
        for i, p in enumerate(paths):
            try:
                st = os.stat(p)
            except OSError:
                bad.append(f"{p} (missing)")
                continue
            need = (need_dir if i == 0 else 0o005) if os.path.isdir(p) else 0o004
            if st.st_mode & need != need:
                bad.append(p)
    if bad:
        raise ValueError(
            "run as root, the sandbox runs the command as an unprivileged uid, which can "
            "not read these mounted paths; make them readable by others (chmod -R o+rX; "
            "a writable mount's directory also o+w, e.g. 0o1777): " + ", ".join(bad[:10]))


# --------------------------------------------------------------------------
# Process tree inspection
# --------------------------------------------------------------------------
# /proc/<pid>/task/<tid>/children lists a task's children without scanning all
# of /proc; it needs CONFIG_PROC_CHILDREN (on in the usual distribution kernels).
_HAVE_CHILDREN_FILES = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _children_by_scan() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _tree(root_pid: int) -> tuple[list[int], int]:
    """(pids of root_pid and all its descendants, breadth first; their number of tasks)."""
    scanned = None if _HAVE_CHILDREN_FILES else _children_by_scan()
    pids, tasks, i = [root_pid], 0, 0
    while i < len(pids):
        pid = pids[i]
        i += 1
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # already gone
        tasks += len(tids)
        if scanned is not None:
            pids += scanned.get(pid, [])
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    pids += [int(k) for k in f.read().split()]
            except OSError:
                pass
    return pids, tasks


def _memory_bytes(pid: int) -> int:
    """Anonymous + shared-memory resident bytes of one process.

    Read from /proc/<pid>/status, which the kernel keeps as counters: cheap.
    (PSS from smaps_rollup walks the page tables: ~12 ms for a process that
    imported torch, slowing its import by half at our polling rate.)  Mapped
    files (torch's libraries) are left out: the kernel can drop those pages.
    Anonymous pages shared copy-on-write after fork() count once per process,
    which errs on the safe side."""
    total = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssShmem:")):
                    total += int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return total


_OCTAL = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space in a path as \040


def _tmpfs_mounts(pid: int | str) -> list[tuple[str, str]]:
    """(device, mount point) of each tmpfs mount `pid` sees; of several on one point, the topmost."""
    found = {}
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[fields.index("-") + 1] == "tmpfs":
                found[_OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4])] = fields[2]
    return [(dev, point) for point, dev in found.items()]


def _unmapped_bytes(pids: list[int], host_tmpfs: set[str]) -> int:
    """Shared memory no process of the run need map, where no memory cgroup counts it for us: memfds (open
    or mapped) and the used blocks of every tmpfs the run's processes see that the grader does not
    (`host_tmpfs`: devices of the grader's own tmpfs mounts, which are not the run's). A mapped page of
    these also counts in RssShmem: counted twice, erring on the safe side."""
    total, seen_files, seen_ns, seen_dev = 0, set(), set(), set(host_tmpfs)
    for pid in pids:
        try:
            memfds = [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")
                      if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:")]
            with open(f"/proc/{pid}/maps") as f:
                memfds += [f"/proc/{pid}/map_files/{line.split()[0]}" for line in f if " /memfd:" in line]
            mnt = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            continue  # gone, or a descriptor closed while we looked
        for path in memfds:
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen_files:
                seen_files.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
        if mnt in seen_ns:
            continue
        seen_ns.add(mnt)
        try:
            mounts = _tmpfs_mounts(pid)
        except (OSError, ValueError, IndexError):
            continue
        for dev, point in mounts:
            if dev in seen_dev:
                continue
            seen_dev.add(dev)
            try:
                st = os.statvfs(f"/proc/{pid}/root{point}")
            except OSError:
                continue
            total += (st.f_blocks - st.f_bfree) * st.f_frsize
    return total


def memory_accounting() -> str:
    """Which memory accounting applies to runs on this machine: "cgroup v1" or "cgroup v2" (a memory cgroup
    per run: the kernel counts and limits every page, mapped or not), or "watchdog" (no usable cgroup: the
    watchdog sums the tree's anonymous and shared memory, memfds and the run's tmpfs mounts, every
    _POLL_SECONDS)."""
    return cgroup.accounting()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _kill_sandbox(proc: subprocess.Popen) -> list[int]:
    """Kill bwrap's pid 1 (the kernel then kills its whole pid namespace) and bwrap.

    Returns the pids to wait for."""
    inits = [p for p in _tree(proc.pid)[0] if p != proc.pid][:1]
    for p in inits + [proc.pid]:
        _kill(p)
    return inits


def _kill_unsandboxed(proc: subprocess.Popen) -> list[int]:
    """Kill everything below the subreaper shim, repeatedly (children may still
    be forking), and the shim last: killed first, it would let orphans escape."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        below = _tree(proc.pid)[0][1:]
        if not below:
            break
        for p in below:
            try:  # the whole process group a command leads, atomically, then p itself
                os.killpg(p, signal.SIGKILL)
            except OSError:
                pass
            _kill(p)
        time.sleep(0.005)
    _kill(proc.pid)
    return []


def _kill_on_error(proc: subprocess.Popen, sandboxed: bool) -> None:
    """Best effort, and simple enough not to fail itself: Popen.__exit__ waits next."""
    try:
        (_kill_sandbox if sandboxed else _kill_unsandboxed)(proc)
    except BaseException:  # noqa: BLE001 - a second Ctrl-C too: the first one propagates
        pass
    for kill in (os.killpg, os.kill):  # bwrap's pid 1 dies with it (--die-with-parent)
        try:
            kill(proc.pid, signal.SIGKILL)
        except OSError:
            pass


# --------------------------------------------------------------------------
# Supervision
# --------------------------------------------------------------------------
class _Sink:
    """Keeps the first `cap` bytes, counts and discards the rest."""

    def __init__(self, cap: int):
        self.cap, self.parts, self.kept, self.truncated = cap, [], 0, False

    def add(self, chunk: bytes) -> None:
        room = self.cap - self.kept
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[:max(room, 0)]
        if chunk:
            self.parts.append(chunk)
            self.kept += len(chunk)

    def value(self) -> bytes:
        return b"".join(self.parts)


class TurnCancelled(Exception):
    """Raised by a `turn` callback: the waiting run is not wanted any more (the batch is stopping); the
    sandbox is killed before any of its command's own work starts."""


def _its_turn(turn) -> bool | None:
    """True: start now; False: not yet; None: never (cancelled)."""
    try:
        return bool(turn())
    except TurnCancelled:
        return None
    except Exception:  # our own bookkeeping failed: better to run now than to wait for ever
        log.exception("the turn callback failed; starting the run")
        return True


def _start_turn(proc) -> None:
    try:
        proc.stdin.write(b"\n")
        proc.stdin.close()
    except OSError:  # it has already exited: the loop notices
        pass


def _renice(pids: list[int], nice: int) -> None:
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            except (OSError, ValueError):  # not root (no CAP_SYS_NICE), or already gone
                pass


def _set_group_nice(pids: list[int], nice: int) -> bool:
    """Where the kernel groups each session's processes for scheduling ("autogroup"), a process's own nice
    value only weighs inside its session, and the sandbox is a session of its own (bwrap --new-session):
    its group's nice value is what counts against the grader and the other sandboxes. Set from here, not
    from inside, where the command lacks the rights. False: try again later (the kernel allows one change
    per 0.1 s to callers without CAP_SYS_ADMIN)."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/autogroup", "w") as f:
                f.write(str(nice))
        except BlockingIOError:
            return False
        except OSError:  # no autogroup here, or the process is gone: nothing to do
            pass
    return True


def _supervise(proc, data_r, limits, data_bytes, sandboxed, start, turn, *, wrappers=None, kill=None,
               memcg: cgroup.RunCgroup | None = None) -> RunResult:
    """Read the pipes and watch the tree below proc.pid until the command is done or killed. `wrappers`: how
    many processes at the top of the tree are not the command's; `kill(proc)` kills it all and returns the pids
    to wait for (both default to those of a bwrap sandbox, or of the fallback's shim). `memcg`: the run's
    memory cgroup, whose charges count too, and whose out-of-memory kills are memory kills of the run."""
    out, err = _Sink(limits.output_bytes // 2), _Sink(limits.output_bytes - limits.output_bytes // 2)
    data = _Sink(data_bytes)
    sel = selectors.DefaultSelector()
    for fileobj, sink in ((proc.stdout, out), (proc.stderr, err), (data_r, data)):
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: the pipe keeps its size
            fcntl.fcntl(fileobj if isinstance(fileobj, int) else fileobj.fileno(), fcntl.F_SETPIPE_SZ, _READ_CHUNK)
        sel.register(fileobj, selectors.EVENT_READ, sink)
    killed_for, wait_for, peak, last_sample, exited_at = None, [], 0, 0.0, None
    if wrappers is None:
        wrappers = 2 if sandboxed else 1  # bwrap + its pid 1, or the shim: not the submission's tasks
    if kill is None:
        kill = _kill_sandbox if sandboxed else _kill_unsandboxed
    waiting = turn is not None
    group_nice = WAIT_NICE if waiting else RUN_NICE  # still to be set, or None
    host_tmpfs = set() if memcg else {dev for dev, _ in _tmpfs_mounts("self")}
    while True:
        for key, _ in sel.select(timeout=_POLL_SECONDS):
            chunk = os.read(key.fd, _READ_CHUNK)
            if chunk:
                key.data.add(chunk)
            else:
                sel.unregister(key.fileobj)
        now = time.monotonic()
        if proc.poll() is not None:
            # Something that inherited a pipe may keep it open; it gets killed below.
            exited_at = exited_at or now
            if not sel.get_map() or now - exited_at > _DRAIN_SECONDS:
                break
            continue
        go = _its_turn(turn) if waiting and killed_for is None else False
        if go:
            waiting, start, group_nice = False, now, RUN_NICE  # the time limit counts from here
            _renice(_tree(proc.pid)[0], RUN_NICE)
            _start_turn(proc)
        elif go is None:
            killed_for = "cancelled"
            wait_for = kill(proc)
        if killed_for is not None or now - last_sample < _POLL_SECONDS:
            continue
        last_sample = now
        pids, tasks = _tree(proc.pid)
        # bwrap, its pid 1 and the command (the shim and the command without bwrap) before it counts as set
        if group_nice is not None and _set_group_nice(pids, group_nice) and len(pids) > wrappers:
            group_nice = None
        rss = sum(_memory_bytes(p) for p in pids)
        # Pages no process maps: the cgroup has them all (once each); without one, look for them.
        rss = max(rss, memcg.usage_bytes()) if memcg else rss + _unmapped_bytes(pids, host_tmpfs)
        peak = max(peak, rss)
        if not waiting and now - start > limits.wall_seconds:
            killed_for = "time"
        elif tasks - wrappers > limits.processes:
            killed_for = "processes"
        elif rss > limits.memory_mb << 20 or (memcg and memcg.oom_kills()):
            killed_for = "memory"
        if killed_for:
            wait_for = kill(proc)
    sel.close()
    # The kernel's out-of-memory kill inside the cgroup may have ended the command before a round saw it.
    if memcg and killed_for is None and memcg.oom_kills():
        killed_for = "memory"
    if memcg and killed_for == "memory":
        peak = max(peak, memcg.peak_bytes())  # what the kernel counted when it refused
    # Nothing is left to kill: bwrap's pid 1 takes its namespace with it and the
    # fallback shim kills what it reaped.  (Never signal proc.pid from here on:
    # it has been reaped and the number may already belong to someone else.)
    # After a kill, bwrap's pid 1 may still be tearing the namespace down.
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in wait_for) and time.monotonic() < deadline:
        time.sleep(0.01)
    return RunResult(
        returncode=None if killed_for else proc.returncode,
        killed_for=killed_for,
        stdout=out.value().decode("utf-8", errors="replace"),
        stderr=err.value().decode("utf-8", errors="replace"),
        output_truncated=out.truncated or err.truncated,
        seconds=time.monotonic() - start,
        peak_rss_mb=peak / (1 << 20),
        sandboxed=sandboxed,
        data=data.value(),
        data_truncated=data.truncated,
    )


def _run(argv, *, mounts, limits, env, cwd, devices, data_bytes, sandboxed, turn=None) -> RunResult:
    # Fail here rather than as an exit status 1 from bwrap that looks like the student's.
    for m in mounts:
        if not m.target.startswith("/"):
            raise ValueError(f"mount target must be an absolute path: {m.target!r}")
        if not os.path.exists(m.source):
            raise FileNotFoundError(f"mount source does not exist: {m.source}")
    for dev in devices:
        if not os.path.exists(dev):
            raise FileNotFoundError(f"device does not exist: {dev}")
    if sandboxed and _is_root():
        _check_mounts_for_uid_switch(mounts)
    data_r, data_w = os.pipe()
    memcg = None
    try:
        # fake_root: the fallback's stand-in for "/" (unused by the real sandbox)
        with tempfile.TemporaryDirectory(prefix="sandbox-", ignore_cleanup_errors=True) as fake_root:
            if sandboxed:
                cmd = _bwrap_argv(argv, mounts, limits, env, cwd, devices, data_w, turn is not None)
                popen_cwd, popen_env = "/", {"PATH": "/usr/bin:/bin"}
            else:
                cmd, popen_cwd, popen_env = _fallback_argv(argv, mounts, limits, env, cwd, data_w,
                                                           fake_root, turn is not None)
            memcg = cgroup.create(limits.memory_mb)
            if memcg:
                cmd = memcg.wrap(cmd)  # bwrap (or the fallback's shim) starts in it: all of the run is charged
            start = time.monotonic()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL if turn is None else subprocess.PIPE,
                                    stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, pass_fds=(data_w,), cwd=popen_cwd,
                                    env=popen_env, start_new_session=True)
            os.close(data_w)  # only the child holds the write end now: EOF when it is done
            data_w = -1
            with proc:
                try:
                    return _supervise(proc, data_r, limits, data_bytes, sandboxed, start, turn, memcg=memcg)
                finally:
                    if proc.poll() is None:  # _supervise raised (e.g. KeyboardInterrupt)
                        _kill_on_error(proc, sandboxed)
    finally:
        os.close(data_r)
        if data_w >= 0:
            os.close(data_w)
        if memcg:
            memcg.remove()


def run_sandboxed(argv: list[str], *, mounts: list[Mount], limits: Limits,
                  env: dict[str, str] | None = None, cwd: str = "/scratch",
                  require_sandbox: bool = False, devices: list[str] = (),
                  data_bytes: int = 64 << 20, turn: Callable[[], bool] | None = None) -> RunResult:
    """Run `argv` in a sandbox (see the module docstring) and return what happened.

    `env` is added to the minimal environment (e.g. OMP_NUM_THREADS); `devices`
    are device nodes to expose (e.g. /dev/nvidia0); `turn`: see "Turns" above.  Raises SandboxUnavailable
    when bwrap can not be used and `require_sandbox` is true, and ValueError
    when (as root) a mount is not readable by the sandbox's uid.
    """
    sandboxed = bwrap_available()
    if not sandboxed:
        reason = _probe() or "bwrap_available() is False"
        if require_sandbox:
            raise SandboxUnavailable(
                f"cannot sandbox the submission: {reason}. Install bubblewrap "
                "(apt-get install bubblewrap) and make sure it can run here: as a non-root "
                "user it needs unprivileged user namespaces (on Ubuntu >= 23.10: sysctl "
                "kernel.apparmor_restrict_unprivileged_userns=0, or run the grader as root). "
                "Or run without --require-sandbox to grade unsandboxed (unsafe).")
        warnings.warn(f"{FALLBACK_WARNING} ({reason})", RuntimeWarning, stacklevel=2)
        log.warning("%s (%s)", FALLBACK_WARNING, reason)
    return _run(list(argv), mounts=list(mounts), limits=limits, env=env, cwd=cwd,
                devices=tuple(devices), data_bytes=data_bytes, sandboxed=sandboxed, turn=turn)
