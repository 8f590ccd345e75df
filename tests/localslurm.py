"""A real one-node Slurm cluster on localhost, for tests of the `--cluster slurm` path.

`LocalSlurm` starts munged, slurmctld and slurmd as root from Debian's packages (`slurmctld slurmd munge`),
each in the foreground as a child of this process (there is no systemd in CI), with everything it writes —
configuration, munge key and socket, state, spool, logs, pid files — in its own folder: nothing under /etc or
/run, so it clashes neither with a system Slurm nor with a second test run. Clients (sbatch, squeue, and so
dask-jobqueue) find it through `env["SLURM_CONF"]`; the munge socket reaches them through `AuthInfo` in that
slurm.conf, so no other variable is needed.

On exit every job is cancelled and every process it started is gone: the daemons, the slurmstepds, and the
jobs' own processes (found by a tag in their environment, which sbatch passes on to jobs by default). If the
test process is killed instead, the daemons die with it (they are started with PR_SET_PDEATHSIG, so start
a LocalSlurm from a thread that lives as long as it does: the main thread) and the next LocalSlurm to start
kills the jobs left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

DAEMONS = ("munged", "slurmctld", "slurmd")
OUR_COMMANDS = DAEMONS + ("slurmscriptd", "slurmstepd")  # slurmctld's helper; a job's step daemon
CLIENTS = ("sbatch", "squeue", "sinfo", "scancel", "scontrol")
# In the daemons' environment and in `env`, so that a cluster's processes can be found, jobs' included. Its value
# names the process that owns the cluster ("pid.start-time.random"), so that a later run can tell the leftovers
# of a test process that was killed before it could stop its cluster.
TAG = "LOCALSLURM_ID"
SOCKET_PATH_MAX = 100  # AF_UNIX paths hold 108 bytes; munged adds ".lock" beside its socket
PORT_ATTEMPTS = 3
# One sinfo or scontrol ping while waiting for a daemon; one that times out is simply tried again. Short, so
# that a daemon that died meanwhile (a port another program listens on hangs the ping) is noticed soon.
PROBE_TIMEOUT = 2.0


class SlurmStartError(RuntimeError):
    """A daemon of the local cluster did not come up; the message carries the tails of its logs."""


def available() -> str | None:
    """None when a local cluster can start here; otherwise why not (a reason for `pytest.skip`)."""
    missing = [name for name in DAEMONS + CLIENTS if shutil.which(name) is None]
    if missing:
        return ("Slurm is not installed (missing " + ", ".join(missing) + "): "
                "apt-get install --no-install-recommends slurmctld slurmd slurm-client munge, as .ci/run does")
    if os.geteuid() != 0:
        return "a local Slurm needs root (slurmd starts jobs as their user; munged and slurmctld run as root here)"
    return None


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on every address just now (the daemons bind 0.0.0.0)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def machine_memory_mb() -> int:
    """MemTotal in MiB, as slurmd counts RealMemory."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class LocalSlurm:
    """`with LocalSlurm(tmp_path, cpus=2, memory_mb=8192) as slurm:` a running one-node cluster.

    `env` holds what a client needs (merge it into the environment of sbatch, squeue or dask-jobqueue);
    `partition` is the only partition, and the default one. `cpus` and `memory_mb` are what the node offers
    to jobs, whatever the machine has (`SlurmdParameters=config_overrides`): jobs may ask for up to that with
    --cpus-per-task and --mem, and are scheduled against it. Nothing enforces the limits inside a job
    (no cgroups, which a container seldom lets us use).
    """

    def __init__(self, root: Path, *, cpus: int = 2, memory_mb: int | None = None,
                 partition: str = "debug", timeout: float = 30.0) -> None:
        self.dir = Path(root) / "localslurm"
        self.cpus = cpus
        self.memory_mb = memory_mb if memory_mb is not None else machine_memory_mb()
        self.partition = partition
        self.timeout = timeout
        # slurmctld refuses to start unless SlurmctldHost is this host's short name; slurmd is told its
        # node's name with -N, and everything is reached at 127.0.0.1, so name resolution never matters.
        self.nodename = socket.gethostname().split(".")[0]
        self.conf = self.dir / "etc" / "slurm.conf"
        self.env: dict[str, str] = {"SLURM_CONF": str(self.conf), TAG: f"{_own_identity()}.{secrets.token_hex(4)}"}
        self._procs: dict[str, subprocess.Popen] = {}
        self._outputs: list[IO[bytes]] = []
        self._socket_dir: str | None = None

    # -- lifecycle

    def __enter__(self) -> LocalSlurm:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        reason = available()
        if reason:
            raise SlurmStartError(reason)
        kill_orphans()
        for attempt in range(PORT_ATTEMPTS):
            try:
                self._start_once()
                return
            except SlurmStartError as e:
                self.stop()
                # Another process may take a port between free_ports() and the daemon's bind: new ports.
                if "Address already in use" not in str(e) or attempt == PORT_ATTEMPTS - 1:
                    raise
                shutil.rmtree(self.dir, ignore_errors=True)
            except BaseException:
                self.stop()
                raise

    def _start_once(self) -> None:
        self._write_files()
        self._start_munged()
        self._start("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._wait("slurmctld", lambda: "UP" in self.run("scontrol", "ping", timeout=PROBE_TIMEOUT).stdout)
        self._start("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.nodename])
        self._wait("slurmd", self._node_idle)

    def stop(self) -> None:
        """Cancel every job, stop the daemons, and kill whatever of ours is left. Safe to call twice."""
        if self._procs.get("slurmctld") and self._procs["slurmctld"].poll() is None:
            self._cancel_all_jobs()
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self._procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self._procs.clear()
        self._kill_leftovers()
        for f in self._outputs:
            f.close()
        self._outputs.clear()
        if self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
        left = self.leftovers()
        if left:
            raise RuntimeError(f"processes of the local Slurm survived SIGKILL: {left}")

    # -- for tests

    def run(self, *args: str, timeout: float = 30.0, check: bool = False) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster, e.g. `slurm.run("squeue", "-h")`."""
        return subprocess.run(args, env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=timeout, check=check)

    def jobs(self) -> list[str]:
        """Ids of the jobs squeue shows (pending, running or completing)."""
        out = self.run("squeue", "-h", "-o", "%i", check=True).stdout
        return out.split()

    def logs(self, lines: int = 40) -> str:
        """The last `lines` lines of each daemon's log, for a failure message."""
        log, parts = self.dir / "log", []
        for name in DAEMONS:
            # A Slurm daemon's log file also has its slurmstepds' lines; its stderr (.out) has what came before
            # it could open the file (a bad slurm.conf). munged in the foreground writes to stderr only.
            path = log / f"{name}.log"
            if not (path.exists() and path.stat().st_size):
                path = log / f"{name}.out"
            if not path.exists():
                continue
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts) or "(no logs)"

    def leftovers(self) -> list[str]:
        """Processes of this cluster still alive ("pid command"): none once `stop` has returned."""
        return [f"{pid} {_cmdline(pid)}" for pid in self._our_pids()]

    # -- files

    def _write_files(self) -> None:
        for sub in ("etc", "munge", "state", "spool", "log", "run"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)  # munged refuses a key or socket in a folder others may write to
        key = self.dir / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(128))  # munged wants 32 to 1024 bytes, readable by its user only
        key.chmod(0o600)
        socket_path = self.dir / "munge" / "munge.socket"
        if len(str(socket_path)) > SOCKET_PATH_MAX:  # a long pytest tmp_path: keep the socket short
            self._socket_dir = tempfile.mkdtemp(prefix="localslurm-")
            socket_path = Path(self._socket_dir) / "munge.socket"
        self.munge_socket = socket_path
        (self.dir / "etc" / "plugstack.conf").write_text("")  # not /etc/slurm's plugstack.conf
        self.ports = free_ports(2)
        self.conf.write_text(self._slurm_conf())

    def _slurm_conf(self) -> str:
        d, run, log = self.dir, self.dir / "run", self.dir / "log"
        ctld_port, slurmd_port = self.ports
        return "\n".join([
            "ClusterName=localslurm",
            f"SlurmctldHost={self.nodename}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            # The socket of our own munged, for auth/munge and cred/munge in daemons and clients alike.
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={d / 'state'}",
            f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={run / 'slurmctld.pid'}",
            f"SlurmdPidFile={run / 'slurmd.pid'}",
            f"SlurmctldLogFile={log / 'slurmctld.log'}",
            f"SlurmdLogFile={log / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"PlugStackConfig={d / 'etc' / 'plugstack.conf'}",
            # No systemd, and a container's cgroups are seldom ours: a job's processes are its process group
            # (proctrack/linuxproc, by parentage, loses a background process once its shell has exited).
            "ProctrackType=proctrack/pgid",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",  # jobs ask for --cpus-per-task and --mem
            # Without a default, a job that names no --mem holds the whole node's memory.
            f"DefMemPerCPU={max(1, self.memory_mb // self.cpus)}",
            # The node offers what we say, not what slurmd finds (it would drain a node with less).
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            # A job asking for more than the partition has is refused at sbatch, not left pending for ever.
            "EnforcePartLimits=ALL",
            # Start a batch job when it is submitted, not up to 3 s later in a scheduling pass (that default
            # batches a flood of submissions; here it would only add to each worker's time to join).
            "SchedulerParameters=batch_sched_delay=0",
            "KillWait=2",  # seconds from SIGTERM to SIGKILL when a job is cancelled: quick teardown
            "InactiveLimit=0",
            f"NodeName={self.nodename} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} "
            "State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.nodename} Default=YES MaxTime=INFINITE State=UP",
            "",
        ])

    # -- daemons

    def _start_munged(self) -> None:
        m = self.dir / "munge"
        # --force: munged wants every folder above its socket open to all (for other users' clients); pytest's
        # tmp_path is root's alone, and only root's clients talk to this munged. Paths of its own, or it would
        # use /run/munge and /etc/munge, and clash with a system munged.
        self._start("munged", ["munged", "--foreground", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={m / 'munge.key'}", f"--seed-file={m / 'munged.seed'}",
                               f"--log-file={self.dir / 'log' / 'munged.log'}",
                               f"--pid-file={self.dir / 'run' / 'munged.pid'}"])
        self._wait("munged", self.munge_socket.exists)

    def _start(self, name: str, argv: list[str]) -> None:
        out = open(self.dir / "log" / f"{name}.out", "wb")
        self._outputs.append(out)
        env = {**os.environ, **self.env}
        self._procs[name] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                             env=env, start_new_session=True, preexec_fn=_die_with_parent)

    def _wait(self, name: str, ready, step: float = 0.1) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for daemon, proc in self._procs.items():
                if proc.poll() is not None:
                    raise SlurmStartError(f"{daemon} exited with status {proc.returncode} while waiting for "
                                          f"{name}\n{self.logs()}")
            try:
                if ready():
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(step)
        raise SlurmStartError(f"{name} did not come up within {self.timeout:.0f} s\n{self.logs()}")

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %t", timeout=PROBE_TIMEOUT).stdout.split()
        return out == [self.nodename, "idle"]

    def _cancel_all_jobs(self) -> None:
        try:
            ids = self.jobs()
            if ids:
                self.run("scancel", *ids, timeout=10)
            deadline = time.monotonic() + 15
            while self.jobs() and time.monotonic() < deadline:
                time.sleep(0.2)
        except (subprocess.SubprocessError, OSError):
            pass  # the daemons are going down anyway; _kill_leftovers takes what remains

    # -- leftovers

    def _our_pids(self) -> list[int]:
        """Pids of this cluster's daemons, slurmstepds and job processes: their environment carries our tag."""
        marker = f"{TAG}={self.env[TAG]}".encode()
        table = _processes()
        parents = {pid: ppid for pid, (ppid, _, _) in table.items()}
        me = os.getpid()
        pids = []
        for pid, (_, comm, environ) in table.items():
            if pid == me or marker not in environ:
                continue
            # The test's own children (sbatch, a dask LocalCluster) carry the tag too, and SLURM_JOB_ID as well
            # when the tests themselves run in a job of a real cluster: leave them alone. A job's processes never
            # descend from this one (slurmstepd detaches from slurmd).
            if comm in OUR_COMMANDS or (
                    b"SLURM_JOB_ID" in {v.split(b"=", 1)[0] for v in environ} and not _descends(pid, me, parents)):
                pids.append(pid)
        return pids

    def _kill_leftovers(self) -> None:
        for _ in range(50):
            pids = self._our_pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)


def kill_orphans() -> list[int]:
    """Kill what is left of clusters whose test process died without stopping them (killed by a timeout, say):
    processes tagged by a LocalSlurm whose owner no longer runs. Returns their pids."""
    pids = []
    for pid, (_, _, environ) in _processes().items():
        tag = next((v[len(TAG) + 1:] for v in environ if v.startswith(TAG.encode() + b"=")), None)
        if tag is None:
            continue
        owner = tag.decode(errors="replace").split(".")[:2]
        if len(owner) == 2 and owner[0].isdigit() and _identity(int(owner[0])) != ".".join(owner):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                pids.append(pid)
    return pids


def _identity(pid: int) -> str | None:
    """"pid.start-time" of a running process (a pid alone may have been reused), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{pid}.{stat[stat.rindex(')') + 2:].split()[19]}"


def _own_identity() -> str:
    identity = _identity(os.getpid())
    assert identity is not None
    return identity


def _die_with_parent() -> None:
    """In a daemon, before exec: the kernel sends it SIGTERM when the test process dies, however it dies."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _processes() -> dict[int, tuple[int, str, list[bytes]]]:
    """pid -> (parent pid, command name, environment) of every process we may read (we are root)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(rest[1]), comm, environ)
    return table


def _descends(pid: int, ancestor: int, parents: dict[int, int]) -> bool:
    seen = set()
    while pid in parents and pid not in seen:
        if pid == ancestor:
            return True
        seen.add(pid)
        pid = parents[pid]
    return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"
