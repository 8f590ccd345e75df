"""A memory cgroup of its own for each run, where the grader may make one.

The watchdog (sandbox/watchdog.py, supervise) sums what the run's processes map: memory that no process maps escapes it
(a memfd written with write(), files on a tmpfs the run mounted in a namespace of its own). The kernel's
memory controller charges every page to the cgroup of the task that allocated it, mapped or not, and
refuses (out-of-memory kill inside the cgroup) beyond its limit, between two of the watchdog's rounds too.

Only cgroups made here are touched: a child of the grader's own cgroup per run, removed after it. cgroup v1
(the memory hierarchy mounted on its own) where the grader's memory cgroup is writable; cgroup v2 where the
grader's cgroup has the memory controller and already hands it down (cgroup.subtree_control: delegated to
us; enabling it ourselves would change a cgroup we did not make, and is refused while it holds processes).
Neither: None, and the watchdog counts memfds and tmpfs mounts itself (sandbox/watchdog.py).
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from functools import lru_cache

__all__ = ["RunCgroup", "accounting", "create"]

log = logging.getLogger(__name__)

# The kernel also charges the run's kernel memory (page tables, stacks, slab) and the page cache of files
# it reads first; the cache is reclaimed under the limit, the rest is not. Measured on the answer key (a
# sandbox of its own; memory.max_usage_in_bytes against the watchdog's peak): 3-22 MB more with a warm page
# cache, 65 MB right after drop_caches (58 MB of it cache, 6 MB kernel memory). Even with no allowance and
# the limit 25 MB above the run's peak it finished, as the cache gave way. The allowance covers the cold
# case, so that the kernel refuses only what the watchdog's own limit would also refuse.
ALLOWANCE_MB = 64
_counter = itertools.count()


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def _own_dir(proc_cgroup: str, mountinfo: str) -> tuple[str, str] | None:
    """("v1" or "v2", the directory of this process's memory cgroup, if we may make children there with the
    memory controller), or None; from the texts of /proc/self/cgroup and /proc/self/mountinfo."""
    own = {}  # hierarchy key -> path, from /proc/self/cgroup ("4:memory:/a/b", "0::/a/b")
    for line in proc_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        own["v2" if controllers == "" else ("v1" if "memory" in controllers.split(",") else "")] = path
    mounts = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        if fstype == "cgroup" and "memory" in options:
            mounts.setdefault("v1", (fields[3], fields[4]))
        elif fstype == "cgroup2":
            mounts.setdefault("v2", (fields[3], fields[4]))
    for version in ("v1", "v2"):  # memory bound to v1 is absent from v2's controllers
        if version not in own or version not in mounts:
            continue
        root, mountpoint = mounts[version]
        path = own[version]
        if root != "/":  # a mount of part of the hierarchy (a container's): the path must lie inside it
            if path != root and not path.startswith(root + "/"):
                continue
            path = path[len(root):]
        directory = os.path.normpath(mountpoint + "/" + path)
        if version == "v2":
            try:
                if not {"memory"} <= set(_read(directory + "/cgroup.controllers").split()) & set(
                        _read(directory + "/cgroup.subtree_control").split()):
                    continue
            except OSError:
                continue
        if os.access(directory, os.W_OK):
            return version, directory
    return None


@lru_cache(maxsize=1)
def _parent() -> tuple[str, str] | None:
    """Where this process makes its runs' cgroups, once it has seen that one works (cached)."""
    try:
        found = _own_dir(_read("/proc/self/cgroup"), _read("/proc/self/mountinfo"))
    except (OSError, ValueError, IndexError):
        return None
    if found is None:
        return None
    probe = RunCgroup._make(*found, memory_mb=64)
    if probe is None:
        return None
    try:
        # A process moved in by the same wrapper the runs use must find itself there.
        show = [sys.executable, "-I", "-S", "-c", "print(open('/proc/self/cgroup').read())"]
        out = subprocess.run(probe.wrap(show), capture_output=True, text=True, timeout=30).stdout
        works = probe.path.rsplit("/", 1)[1] in out
    except (OSError, subprocess.SubprocessError):
        works = False
    finally:
        probe.remove()
    if not works:
        log.warning("cannot move a process into a memory cgroup under %s: the watchdog counts memory alone",
                    found[1])
    return found if works else None


def accounting() -> str:
    """Which memory accounting applies to runs here: "cgroup v1", "cgroup v2" or "watchdog"."""
    found = _parent()
    return f"cgroup {found[0]}" if found else "watchdog"


def create(memory_mb: int) -> RunCgroup | None:
    """A new memory cgroup for one run, limited to `memory_mb` (+ ALLOWANCE_MB); None where none can be made."""
    found = _parent()
    return RunCgroup._make(*found, memory_mb=memory_mb) if found else None


class RunCgroup:
    def __init__(self, version: str, path: str):
        self.version, self.path = version, path
        self.procs = path + "/cgroup.procs"

    @classmethod
    def _make(cls, version: str, parent: str, *, memory_mb: int) -> RunCgroup | None:
        path = f"{parent}/autograder-{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}"
        try:
            os.mkdir(path)
        except OSError as exc:
            log.warning("cannot make a memory cgroup under %s: %s", parent, exc)
            return None
        cg = cls(version, path)
        limit = str((memory_mb + ALLOWANCE_MB) << 20)
        try:
            if version == "v1":
                _write(path + "/memory.limit_in_bytes", limit)
                # Memory + swap: nothing beyond the limit goes to swap. Without swap accounting there is
                # no such file: then keep the run's pages out of swap as far as v1 allows.
                if os.path.exists(path + "/memory.memsw.limit_in_bytes"):
                    _write(path + "/memory.memsw.limit_in_bytes", limit)
                else:
                    _write(path + "/memory.swappiness", "0")
            else:
                _write(path + "/memory.max", limit)
                if os.path.exists(path + "/memory.swap.max"):
                    _write(path + "/memory.swap.max", "0")
                if os.path.exists(path + "/memory.oom.group"):
                    _write(path + "/memory.oom.group", "1")  # an out-of-memory kill takes the whole run
        except OSError as exc:
            log.warning("cannot set up the memory cgroup %s: %s", path, exc)
            cg.remove()
            return None
        return cg

    def wrap(self, cmd: list[str]) -> list[str]:
        """`cmd`, entering this cgroup before it starts (same pid: exec), so all it starts is charged here."""
        return ["/bin/sh", "-c", 'echo 0 > "$0" || exit 125; exec "$@"', self.procs, *cmd]

    def open_procs(self) -> int:
        """A descriptor on cgroup.procs, for a process that can not open it (the fork server's runs)."""
        return os.open(self.procs, os.O_WRONLY | os.O_CLOEXEC)

    def _stat(self, path: str, *keys: str) -> int:
        try:
            values = dict(line.split() for line in _read(f"{self.path}/{path}").splitlines())
            return sum(int(values.get(k, 0)) for k in keys)
        except (OSError, ValueError):
            return 0

    def usage_bytes(self) -> int:
        """Anonymous + shared-memory pages charged here: the watchdog's measure, mapped or not (memfds,
        tmpfs files); page cache, which the kernel reclaims, is left out."""
        if self.version == "v1":
            return self._stat("memory.stat", "total_rss", "total_shmem")
        return self._stat("memory.stat", "anon", "shmem")

    def oom_kills(self) -> int:
        """Processes the kernel killed here for going over the limit."""
        return self._stat("memory.oom_control" if self.version == "v1" else "memory.events", "oom_kill")

    def peak_bytes(self) -> int:
        name = "memory.max_usage_in_bytes" if self.version == "v1" else "memory.peak"
        try:
            return int(_read(f"{self.path}/{name}"))
        except (OSError, ValueError):
            return 0

    def _pids(self) -> list[int]:
        try:
            return [int(p) for p in _read(self.procs).split()]
        except (OSError, ValueError):
            return []

    def kill_all(self) -> None:
        """SIGKILL whatever is still in here: after the run, that can only be the run's. v1 has no
        cgroup.kill; a pidfd makes sure the signal reaches the process that is a member, not one that got
        its number after it exited."""
        if self.version == "v2" and os.path.exists(self.path + "/cgroup.kill"):
            try:
                _write(self.path + "/cgroup.kill", "1")
                return
            except OSError:
                pass
        name = "/" + os.path.basename(self.path)
        for pid in self._pids():
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue  # already gone
            try:
                if any(line.endswith(name) for line in _read(f"/proc/{pid}/cgroup").splitlines()):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os.close(fd)

    def remove(self) -> None:
        """Kill what is left of the run (a killed pid namespace takes a moment to go; the fork server's
        waiter exits just after reporting), then rmdir once it is empty. Charges that outlive the run (page
        cache of files it wrote) move to the parent."""
        start = time.monotonic()
        while True:
            self.kill_all()
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if time.monotonic() - start > 10:
                    log.warning("cannot remove the memory cgroup %s: %s", self.path, exc)
                    return
            time.sleep(0.01)
