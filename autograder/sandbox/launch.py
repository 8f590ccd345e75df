"""Starting a sandboxed run: check what it asks for, build its command (command.py), start it in a memory
cgroup of its own where one can be made (cgroup.py), and supervise it (watchdog.py). Also whether
bubblewrap works here at all (a probe sandbox, once).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from functools import lru_cache

from .. import cgroup
from . import gpu as gpu_access
from .command import bound_dirs, bwrap_argv, check_mounts_for_uid_switch, fallback_argv, is_root
from .limits import Limits, Mount, RunResult, SandboxUnavailable
from .watchdog import kill_on_error, supervise

log = logging.getLogger(__name__)

FALLBACK_WARNING = (
    "bubblewrap not found: grading WITHOUT a sandbox (student code can read the disk "
    "and use the network); install it with apt-get install bubblewrap, or pass "
    "--require-sandbox to refuse"
)


@lru_cache(maxsize=1)
def probe() -> str | None:
    """Run a trivial Python in the real sandbox once; None if it works, else why not."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "the bwrap executable is not on PATH"
    argv = [sys.executable, "-I", "-S", "-c", "import os; os.write(3, b'ok')"]
    try:
        result = _run(argv, mounts=[], limits=Limits(wall_seconds=30), env=None, cwd="/scratch",
                      gpu=False, data_bytes=16, sandboxed=True)
    except (OSError, ValueError) as exc:
        return f"bwrap failed to start: {exc}"
    if result.returncode != 0 or result.data != b"ok":
        return f"bwrap probe failed (exit {result.returncode}): {result.stderr.strip()[-500:]}"
    return None


def bwrap_available() -> bool:
    """True if bubblewrap is installed and a probe sandbox runs here (cached)."""
    return probe() is None


def _run(argv, *, mounts, limits, env, cwd, gpu, data_bytes, sandboxed, turn=None) -> RunResult:
    # Fail here rather than as an exit status 1 from bwrap that looks like the student's.
    for m in mounts:
        if not m.target.startswith("/"):
            raise ValueError(f"mount target must be an absolute path: {m.target!r}")
        if not os.path.exists(m.source):
            raise FileNotFoundError(f"mount source does not exist: {m.source}")
    access = gpu_access.access(system_dirs=bound_dirs()) if gpu else None
    if sandboxed and is_root():
        check_mounts_for_uid_switch(mounts)
    data_r, data_w = os.pipe()
    memcg = None
    try:
        # fake_root: the fallback's stand-in for "/" (unused by the real sandbox)
        with tempfile.TemporaryDirectory(prefix="sandbox-", ignore_cleanup_errors=True) as fake_root:
            if sandboxed:
                cmd = bwrap_argv(argv, mounts, limits, env, cwd, access, data_w, turn is not None)
                popen_cwd, popen_env = "/", {"PATH": "/usr/bin:/bin"}
            else:
                cmd, popen_cwd, popen_env = fallback_argv(argv, mounts, limits, env, cwd, access, data_w,
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
                    return supervise(proc, data_r, limits, data_bytes, sandboxed, start, turn, memcg=memcg)
                finally:
                    if proc.poll() is None:  # supervise raised (e.g. KeyboardInterrupt)
                        kill_on_error(proc, sandboxed)
    finally:
        os.close(data_r)
        if data_w >= 0:
            os.close(data_w)
        if memcg:
            memcg.remove()


def run_sandboxed(argv: list[str], *, mounts: list[Mount], limits: Limits,
                  env: dict[str, str] | None = None, cwd: str = "/scratch",
                  require_sandbox: bool = False, gpu: bool = False,
                  data_bytes: int = 64 << 20, turn: Callable[[], bool] | None = None) -> RunResult:
    """Run `argv` in a sandbox (see the module docstring) and return what happened.

    `env` is added to the minimal environment (e.g. OMP_NUM_THREADS); `gpu`: the run may use this machine's
    NVIDIA GPUs (gpu.py says what of the host that lets in); `turn`: see "Turns" above.  Raises SandboxUnavailable
    when bwrap can not be used and `require_sandbox` is true, and ValueError
    when (as root) a mount is not readable by the sandbox's uid.
    """
    sandboxed = bwrap_available()
    if not sandboxed:
        reason = probe() or "bwrap_available() is False"
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
                gpu=gpu, data_bytes=data_bytes, sandboxed=sandboxed, turn=turn)
