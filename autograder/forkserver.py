"""One warmed-up sandbox per batch that forks each submission into namespaces and a uid of its own.

A sandbox per submission (sandbox.run_sandboxed) pays for the interpreter, torch, torch._dynamo and the
training data every time: 2.5-3 s of CPU here, as much again as the rest of a submission's non-training work.
On two cores that is what keeps --jobs 2 from scaling (see README, "Speed"). The fork server pays it once:
one bubblewrap sandbox runs zygote.py, which does harness.prepare() and then forks a process per submission.

What each submission gets is what a sandbox of its own gives it (zygote.py says how): its own pid, mount,
network and IPC namespaces, fresh /scratch, /tmp and /dev/shm, its own devpts, its own unused uid with no
capability, the same rlimits, seccomp filter and fresh session keyring, its own memory cgroup (made here and
handed to the zygote as a descriptor), and the same watchdog here (watchdog.supervise: time, memory and task limits, output caps, the kill
that takes its whole pid namespace). What it shares with the others is read-only or copy-on-write: the file
system of the zygote's sandbox and the zygote's memory as it was after the warm-up.

Only on CPU (CUDA can not be forked once initialised), with bubblewrap, as root (each run's uid switch
needs CAP_SETUID in the zygote). Anything else, or a fork server that fails, falls back to a sandbox per
submission (Grader.sandboxed).
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import cgroup
from .sandbox import command, launch, watchdog
from .sandbox import Limits, Mount, RunResult

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
START_SECONDS = 120  # the warm-up: a few seconds, more on a busy machine
HELD = "/sandbox/held"  # where the zygote's sandbox also binds interpreter folders that lie under /tmp


class ForkServerGone(RuntimeError):
    """The fork server can not take runs (it did not start, or it died): run in a sandbox of its own instead."""


def usable(device: str) -> bool:
    return device == "cpu" and os.geteuid() == 0 and launch.bwrap_available()


class ForkServer:
    def __init__(self, warm_plan: dict, *, mounts: list[Mount], limits: Limits, env: dict[str, str]):
        self._lock = threading.Lock()  # one request on the socket at a time
        self._work = Path(tempfile.mkdtemp(prefix="autograder-zygote-"))
        self._log = tempfile.TemporaryFile()
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            under_tmp = [d for d in command.python_dirs() if d == "/tmp" or d.startswith("/tmp/")]
            held = [(f"{HELD}/{i}", d) for i, d in enumerate(under_tmp)]
            for name in ("harness.py", "zygote.py", "seccomp.py"):
                shutil.copy(HERE / name, self._work / name)
            (self._work / "plan.json").write_text(json.dumps({**warm_plan, "zygote": {"held": held}}))
            for p in [self._work, *self._work.iterdir()]:
                p.chmod(0o755 if p.is_dir() else 0o644)
            mounts = [*mounts, Mount(self._work, "/sandbox/zygote"), *(Mount(Path(d), h) for h, d in held)]
            argv = [sys.executable, "-I", "/sandbox/zygote/zygote.py", "/sandbox/zygote/plan.json", "3"]
            cmd = command.bwrap_argv(argv, mounts, limits, env, "/scratch", None, theirs.fileno(), False, zygote=True)
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                          pass_fds=(theirs.fileno(),), cwd="/", env={"PATH": "/usr/bin:/bin"},
                                          start_new_session=True)
        except BaseException:
            self._cleanup()
            raise
        finally:
            theirs.close()
        self._sock.settimeout(START_SECONDS)
        try:
            ready = self._sock.recv(16)
        except OSError:
            ready = b""
        if ready != b"ready":
            why = self._stderr_tail()
            self.close()
            raise ForkServerGone(f"the fork server did not start: {why}")
        self._sock.settimeout(None)

    def run(self, plan: dict, limits: Limits, data_bytes: int = 64 << 20) -> RunResult:
        """One submission's run, forked from the warmed-up zygote, under the watchdog. Raises ForkServerGone
        when the zygote could not take the run or died during it: then nothing of the run counts."""
        # The run's own memory cgroup (cgroup.py), entered by the zygote's per-run waiter before it forks.
        memcg = cgroup.create(limits.memory_mb)
        prog = command.seccomp_program()
        request = {"uid": command.pick_uid(), "rlimits": command.rlimits(limits, limits.processes + 1),
                   "scratch_mb": limits.scratch_mb, "memory_mb": limits.memory_mb, "cgroup": memcg is not None,
                   "seccomp": prog.hex() if prog else None}
        pipes = [os.pipe() for _ in range(4)]  # stdout, stderr, the record channel, the status
        ours, theirs = [r for r, _ in pipes], [w for _, w in pipes]
        try:
            if memcg:
                theirs.append(memcg.open_procs())
            with tempfile.TemporaryFile() as plan_file, self._lock:
                plan_file.write(json.dumps(plan).encode())
                plan_file.seek(0)
                try:
                    socket.send_fds(self._sock, [json.dumps(request).encode()], [plan_file.fileno(), *theirs])
                except OSError as exc:
                    raise ForkServerGone(f"the fork server is gone: {exc}; {self._stderr_tail()}") from None
            start = time.monotonic()
        except BaseException:
            for fd in ours:
                os.close(fd)
            if memcg:
                memcg.remove()
            raise
        finally:
            for fd in theirs:  # the zygote has its copies; EOF on ours once the run's processes are gone
                os.close(fd)
        out_r, err_r, data_r, status_r = ours
        proc = _Forked(out_r, err_r, status_r)
        try:
            ns_pid = proc.read_pid()
            if ns_pid is None:
                raise ForkServerGone(f"the fork server did not start the run; {self._stderr_tail()}")
            proc.pid = self._host_pid(ns_pid)
            result = watchdog.supervise(proc, data_r, limits, data_bytes, True, start, None, wrappers=0,
                                        kill=_kill_namespace, memcg=memcg)
        finally:
            proc.close()
            os.close(data_r)
            if memcg:
                memcg.remove()
        if self._proc.poll() is not None:
            # The zygote died (the kernel's out-of-memory killer picks the biggest process) and its sandbox
            # took every run with it: what this run reported is not the student's doing.
            raise ForkServerGone(f"the fork server died during the run; {self._stderr_tail()}")
        if not proc.set_up and result.killed_for is None:
            raise ForkServerGone(f"the fork server could not set the run up: {result.stderr.strip()[-2000:]}")
        return result

    def _host_pid(self, ns_pid: int) -> int:
        """The pid, as this process sees it, of the zygote's child `ns_pid` (as the zygote sees it)."""
        for pid in watchdog.process_tree(self._proc.pid)[0]:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("NSpid:"):
                            pids = line.split()[1:]
                            if len(pids) >= 2 and int(pids[1]) == ns_pid and len(pids) == 3:
                                return pid
                            break
            except (OSError, ValueError):
                continue
        return 0  # already gone: nothing to watch, and nothing to kill

    def _stderr_tail(self) -> str:
        try:
            self._log.seek(0)
            return self._log.read()[-2000:].decode("utf-8", "replace").strip() or "(no output)"
        except (OSError, ValueError):
            return "(no output)"

    def close(self) -> None:
        """End the batch: the zygote exits when its socket closes; kill the sandbox if it does not."""
        with self._lock:
            self._sock.close()
        proc = getattr(self, "_proc", None)
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                watchdog.kill_sandbox(proc)
                proc.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        shutil.rmtree(self._work, ignore_errors=True)
        self._log.close()


class _Forked:
    """What watchdog.supervise needs of a Popen, for a run the zygote forked: its pipes, and its exit status.
    The status pipe carries "pid N" (the run's pid as the zygote sees it) and "exit N" from the zygote's
    per-run waiter, and "ok" from the run itself once it is set up, just before it closes its end."""

    def __init__(self, out_r: int, err_r: int, status_r: int):
        self.stdout, self.stderr = os.fdopen(out_r, "rb", buffering=0), os.fdopen(err_r, "rb", buffering=0)
        self._status, self._buf, self._seen, self._eof = status_r, b"", {}, False
        self.pid, self.returncode = 0, None

    @property
    def set_up(self) -> bool:
        return "ok" in self._seen

    def _read(self) -> None:
        try:
            chunk = os.read(self._status, 256)
        except BlockingIOError:
            return
        self._eof = not chunk
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            key, _, value = line.decode("ascii", "replace").partition(" ")
            self._seen.setdefault(key, value)

    def read_pid(self) -> int | None:
        """The run's pid as the zygote sees it, once it has forked (None: it did not, within a minute)."""
        while "pid" not in self._seen and not self._eof:
            if not select.select([self._status], [], [], 60)[0]:
                return None
            self._read()
        os.set_blocking(self._status, False)
        return int(self._seen["pid"]) if "pid" in self._seen else None

    def poll(self) -> int | None:
        if self.returncode is None:
            if "exit" not in self._seen and not self._eof:
                self._read()
            if "exit" in self._seen:
                self.returncode = int(self._seen["exit"])
            elif self._eof:  # the waiter died without a word (it was killed): as bwrap reports a SIGKILL
                self.returncode = 137
        return self.returncode

    def close(self) -> None:
        for f in (self.stdout, self.stderr):
            f.close()
        os.close(self._status)


def _kill_namespace(proc: _Forked) -> list[int]:
    """SIGKILL to the run's pid 1: the kernel kills its whole pid namespace."""
    if proc.pid > 0:  # never 0 or -1: those mean "every process I may signal"
        watchdog.kill(proc.pid)
        return [proc.pid]
    return []
