"""The watchdog: reads a run's pipes and watches its process tree until the command is done or killed for
a limit (wall time, memory, tasks), hands out turns, and kills what is left.

The fork server (forkserver.py) supervises each forked run with `supervise`, as a sandbox of its own is.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import selectors
import signal
import subprocess
import time

from .. import cgroup
from .limits import RUN_NICE, WAIT_NICE, RunResult, TurnCancelled

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.05  # watchdog period: a fork bomb or a fast allocation gets this long
_DRAIN_SECONDS = 2.0  # after the command exits, how long to wait for the pipes to close
# Pipes of 1 MB, read 1 MB at a time. Every round of the watchdog needs the GIL, and while the judge computes
# in Python it gets it once per switch interval (5 ms): with 64 KB pipes, 300 MB of print() took 18.3 s to
# drain against 1.9 s with 1 MB ones (`python bench/pipe_drain.py --mb 300`, a thread spinning beside the
# reader, on a loaded machine), and in a loaded batch a gigabyte of print() ran past its cell's 60 s limit.
READ_CHUNK = 1 << 20


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


def process_tree(root_pid: int) -> tuple[list[int], int]:
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


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def kill_sandbox(proc: subprocess.Popen) -> list[int]:
    """Kill bwrap's pid 1 (the kernel then kills its whole pid namespace) and bwrap.

    Returns the pids to wait for."""
    inits = [p for p in process_tree(proc.pid)[0] if p != proc.pid][:1]
    for p in inits + [proc.pid]:
        kill(p)
    return inits


def _kill_unsandboxed(proc: subprocess.Popen) -> list[int]:
    """Kill everything below the subreaper shim, repeatedly (children may still
    be forking), and the shim last: killed first, it would let orphans escape."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        below = process_tree(proc.pid)[0][1:]
        if not below:
            break
        for p in below:
            try:  # the whole process group a command leads, atomically, then p itself
                os.killpg(p, signal.SIGKILL)
            except OSError:
                pass
            kill(p)
        time.sleep(0.005)
    kill(proc.pid)
    return []


def kill_on_error(proc: subprocess.Popen, sandboxed: bool) -> None:
    """Best effort, and simple enough not to fail itself: Popen.__exit__ waits next."""
    try:
        (kill_sandbox if sandboxed else _kill_unsandboxed)(proc)
    except BaseException:  # noqa: BLE001 - a second Ctrl-C too: the first one propagates
        pass
    for kill in (os.killpg, os.kill):  # bwrap's pid 1 dies with it (--die-with-parent)
        try:
            kill(proc.pid, signal.SIGKILL)
        except OSError:
            pass


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


def supervise(proc, data_r, limits, data_bytes, sandboxed, start, turn, *, wrappers=None, kill=None,
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
            fcntl.fcntl(fileobj if isinstance(fileobj, int) else fileobj.fileno(), fcntl.F_SETPIPE_SZ, READ_CHUNK)
        sel.register(fileobj, selectors.EVENT_READ, sink)
    killed_for, wait_for, peak, last_sample, exited_at = None, [], 0, 0.0, None
    if wrappers is None:
        wrappers = 2 if sandboxed else 1  # bwrap + its pid 1, or the shim: not the submission's tasks
    if kill is None:
        kill = kill_sandbox if sandboxed else _kill_unsandboxed
    waiting = turn is not None
    group_nice = WAIT_NICE if waiting else RUN_NICE  # still to be set, or None
    host_tmpfs = set() if memcg else {dev for dev, _ in _tmpfs_mounts("self")}
    while True:
        for key, _ in sel.select(timeout=_POLL_SECONDS):
            chunk = os.read(key.fd, READ_CHUNK)
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
            _renice(process_tree(proc.pid)[0], RUN_NICE)
            _start_turn(proc)
        elif go is None:
            killed_for = "cancelled"
            wait_for = kill(proc)
        if killed_for is not None or now - last_sample < _POLL_SECONDS:
            continue
        last_sample = now
        pids, tasks = process_tree(proc.pid)
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
