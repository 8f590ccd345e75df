"""The command line of a sandboxed run: bubblewrap's arguments (or the fallback's, without it), what the
sandbox sees of the file system, its environment, and the shim's settings (rlimits, uid, keyring, seccomp).

The fork server (forkserver.py) builds its zygote's sandbox with `bwrap_argv` and gives each run a uid of its
own (`pick_uid`) and its rlimits (`rlimits`) the same way.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
import secrets
import shutil
import subprocess
import sys
from functools import lru_cache

from .. import seccomp
from .gpu import GpuAccess
from .limits import RUN_NICE, WAIT_NICE, Limits, Mount
from .shim import SHIM

log = logging.getLogger(__name__)


def is_root() -> bool:
    return os.geteuid() == 0


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split("-")[0].split(".")
        return (int(parts[0]), int(parts[1])) >= (major, minor)
    except (ValueError, IndexError):
        return False


@lru_cache(maxsize=None)
def bwrap_has(option: str) -> bool:
    """Whether this bwrap knows `option` (--size needs bwrap >= 0.7, Ubuntu 22.04 has 0.6)."""
    try:
        return option in subprocess.run([shutil.which("bwrap") or "bwrap", "--help"],
                                        capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False


def pick_uid() -> int:
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


_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
              "/etc/localtime")


# What the harness imports: the folders that hold them are bound too, wherever they are installed (an
# environment may take its packages from another one's site-packages through a .pth file).
_RUNTIME_PACKAGES = ("torch", "safetensors", "numpy")


def _package_dirs() -> list[str]:
    dirs = []
    for name in _RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
        if spec is not None and spec.submodule_search_locations:
            dirs += [os.path.dirname(p) for p in spec.submodule_search_locations]
    return dirs


def python_dirs() -> list[str]:
    """Install prefix and virtualenv of this interpreter, and the site folders of the packages the harness
    imports, unless already under /usr."""
    dirs = []
    for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
              os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))), *_package_dirs()):
        for q in (os.path.abspath(p), os.path.realpath(p)):
            if any(q == d or q.startswith(d + "/") for d in _SYSTEM_DIRS + tuple(dirs)):
                continue
            dirs.append(q)
    return dirs


def bound_dirs() -> tuple[str, ...]:
    """The host folders every sandbox binds read-only (a GPU run's library folders among them need no bind of
    their own)."""
    return _SYSTEM_DIRS + tuple(python_dirs())


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
    return [sys.executable, "-I", "-S", "-c", SHIM, json.dumps(cfg), *argv]


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


def rlimits(limits: Limits, nproc: int | None) -> dict[str, int]:
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
        if parent in ("/scratch", "/tmp", "/dev"):
            continue  # mounts of the sandbox's own; what lies below still needs traversable parents
        if any(parent == d or parent.startswith(d + "/") for d in _SYSTEM_DIRS):
            break
        args += ["--perms", "0755", "--dir", parent]
    return args


def _size(mb: int) -> list[str]:
    """Size option for the next --tmpfs; older bwrap can't (then only RLIMIT_FSIZE caps files)."""
    return ["--size", str(mb << 20)] if bwrap_has("--size") else []


def bwrap_argv(argv, mounts, limits, env, cwd, gpu: GpuAccess | None, data_fd, waits: bool,
               zygote: bool = False) -> list[str]:
    """gpu: what a CUDA run needs of the host (gpu.py), or None. zygote: the command stays root, with what it
    needs to give each run namespaces and a uid of its own (root only; see forkserver.py)."""
    root = is_root()
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
        if bwrap_has("--disable-userns"):  # bwrap >= 0.8: no nested user namespace (seccomp refuses it too)
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
    for d in python_dirs() + list(gpu.read_only if gpu else ()):
        cmd += _parents(d) + ["--ro-bind", d, d]
    cmd += ["--proc", "/proc", "--dev", "/dev"]
    for dev in gpu.devices if gpu else ():
        cmd += _parents(dev) + ["--dev-bind", dev, dev]
    # /dev/shm is memory; /scratch and /tmp are the command's disk, each of scratch_mb.
    cmd += ["--perms", "1777", *_size(limits.memory_mb), "--tmpfs", "/dev/shm",
            "--perms", "1777", *_size(limits.scratch_mb), "--tmpfs", "/scratch"]
    for m in mounts:
        cmd += _parents(m.target) + ["--bind" if m.writable else "--ro-bind", str(m.source), m.target]
    # The sandbox root and /dev are tmpfs mounts owned by the sandbox's user
    # (in a user namespace): make them read-only so they can't be filled.
    cmd += ["--remount-ro", "/dev", "--remount-ro", "/"]
    cmd += ["--chdir", cwd, "--clearenv"]
    for k, v in _base_env({**(gpu.env if gpu else {}), **(env or {})}, "/scratch", "/tmp", "").items():
        cmd += ["--setenv", k, v]
    # RLIMIT_NPROC lets the command reach one task more than allowed, which the
    # watchdog sees and kills for; the rlimit only makes sure the bomb stops there.
    if root and zygote:
        uid, nproc = None, None  # each run gets its own uid and RLIMIT_NPROC from the zygote
    elif root:
        uid = pick_uid()
        nproc = limits.processes + 1
    else:
        uid = None
        # bwrap's pid 1 shares our uid in the namespace and counts too.
        nproc = limits.processes + 2 if _kernel_at_least(5, 14) else None
    cfg = {"data_fd": data_fd, "rlimits": rlimits(limits, nproc), "nice": WAIT_NICE if waits else RUN_NICE,
           "uid": uid, "groups": list(gpu.groups) if gpu and uid is not None else [], "subreaper": False,
           **_confinement(zygote)}
    return cmd + ["--", *_shim_argv(argv, cfg)]


def fallback_argv(argv, mounts, limits, env, cwd, gpu: GpuAccess | None, data_fd, root: str, waits: bool):
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
    env = {**(gpu.env if gpu else {}), **(env or {})}
    full_env = {k: remap(v) for k, v in _base_env(env, "/scratch", root + "/tmp", root).items()}
    cfg = {"data_fd": data_fd, "rlimits": rlimits(limits, None), "nice": WAIT_NICE if waits else RUN_NICE,
           "uid": None, "groups": [], "subreaper": True, **_confinement()}
    return _shim_argv([remap(a) for a in argv], cfg), remap(cwd), full_env


def check_mounts_for_uid_switch(mounts: list[Mount]) -> None:
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
