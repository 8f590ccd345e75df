"""The local one-node Slurm (localslurm.py) that the `--cluster slurm` tests run on: it starts from Debian's
packages without systemd, runs root's jobs with the CPUs and memory they ask for, carries dask-jobqueue's
workers, keeps two clusters apart, says why when a daemon does not come up, and leaves nothing behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from dask_jobqueue import SLURMCluster
from distributed import Client

import localslurm
from localslurm import LocalSlurm, SlurmStartError

SKIP = localslurm.available()


def needs_slurm(test):
    """A test that starts daemons and jobs: slow, and skipped (with the reason) where Slurm cannot start."""
    return pytest.mark.slow(pytest.mark.skipif(SKIP is not None, reason=SKIP or "")(test))


def refuses(port: int) -> bool:
    """Nothing listens on this port of localhost any more."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not so after {timeout:.0f} s")
        time.sleep(0.2)


def test_available_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(localslurm.shutil, "which", lambda name: None if name == "munged" else f"/usr/bin/{name}")
    monkeypatch.setattr(localslurm.os, "geteuid", lambda: 0)
    assert "missing munged" in localslurm.available() and "apt-get install" in localslurm.available()
    monkeypatch.setattr(localslurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert localslurm.available() is None
    monkeypatch.setattr(localslurm.os, "geteuid", lambda: 1000)
    assert "needs root" in localslurm.available()


@pytest.fixture
def slurm(tmp_path):
    with LocalSlurm(tmp_path, cpus=2, memory_mb=4096) as cluster:
        yield cluster
    assert cluster.leftovers() == []
    assert all(refuses(port) for port in cluster.ports)


@needs_slurm
def test_sbatch_wait_runs_a_root_job_with_what_it_asked_for(slurm, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n"
                      'echo "$SLURM_JOB_ID $(id -u) $SLURM_CPUS_PER_TASK $SLURM_MEM_PER_NODE $PWD" > result\n')
    done = slurm.run("sbatch", "--wait", "--parsable", f"--chdir={tmp_path}", f"--output={tmp_path}/out.txt",
                     "--cpus-per-task=2", "--mem=1000", str(script), timeout=60)
    assert done.returncode == 0, done.stderr + slurm.logs()
    job_id = done.stdout.strip()
    assert (tmp_path / "result").read_text().split() == [job_id, "0", "2", "1000", str(tmp_path)]
    assert slurm.jobs() == []


@needs_slurm
def test_a_job_asking_for_more_than_the_node_has_is_refused(slurm, tmp_path):
    """The node offers what LocalSlurm was told (2 CPUs, 4096 MB), not the machine's own."""
    for ask in ("--cpus-per-task=3", "--mem=5000"):
        r = slurm.run("sbatch", ask, f"--output={tmp_path}/out.txt", "--wrap", "true")
        assert r.returncode != 0 and "Batch job submission failed" in r.stderr, r
    assert slurm.jobs() == []  # refused at once (EnforcePartLimits), not left pending for ever


@needs_slurm
def test_leaving_kills_running_jobs_and_every_process_they_started(tmp_path):
    with LocalSlurm(tmp_path, cpus=2, memory_mb=4096) as slurm:
        # A job that starts a process in a session of its own, out of Slurm's sight (proctrack/pgid kills the
        # job's process group), then waits on another.
        r = slurm.run("sbatch", "--parsable", f"--chdir={tmp_path}", f"--output={tmp_path}/out.txt", "--wrap",
                      "setsid sleep 600 & echo $! > pids; sh -c 'echo $$ >> pids; exec sleep 600'")
        assert r.returncode == 0, r.stderr
        wait_until(lambda: len((tmp_path / "pids").read_text().split()) == 2 if (tmp_path / "pids").exists()
                   else False, 30, "the job's processes started")
        pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
        assert all(alive(p) for p in pids)
        assert slurm.jobs() == [r.stdout.strip()]
    assert not any(alive(p) for p in pids)
    assert slurm.leftovers() == []
    assert all(refuses(port) for port in slurm.ports)


def tagged(tag: str) -> dict[int, str]:
    """pid -> command name of the running processes whose environment carries this LocalSlurm tag."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"LOCALSLURM_ID={tag}".encode() in (entry / "environ").read_bytes().split(
                    b"\0") and alive(int(entry.name)):
                found[int(entry.name)] = (entry / "comm").read_text().strip()
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    """Running (a zombie left to an init that does not reap is not running)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@needs_slurm
def test_two_clusters_at_once_keep_apart(tmp_path):
    """Two runs at once (or a cluster next to a CI's) share no port, socket or job; the second one's folder
    is too deep for a unix socket's path, so its munge socket lives in a temporary folder of its own."""
    deep = tmp_path / ("d" * 90)
    with LocalSlurm(tmp_path / "a", cpus=1, memory_mb=1024) as a, LocalSlurm(deep, cpus=1, memory_mb=1024) as b:
        assert set(a.ports).isdisjoint(b.ports)
        assert a.munge_socket.parent == a.dir / "munge" and not b.munge_socket.is_relative_to(deep)
        r = a.run("sbatch", "--parsable", f"--output={tmp_path}/out.txt", "--wrap", "sleep 600")
        assert r.returncode == 0, r.stderr
        assert a.jobs() == [r.stdout.strip()] and b.jobs() == []
    assert not b.munge_socket.parent.exists()


@needs_slurm
def test_a_killed_test_process_leaves_nothing_for_long(tmp_path):
    """A test process killed before it can stop its cluster (a CI timeout): the daemons die with it, and the
    next LocalSlurm to start kills the jobs it left."""
    owner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from localslurm import LocalSlurm
        slurm = LocalSlurm(Path({str(tmp_path)!r}))
        slurm.start()
        slurm.run("sbatch", "--output=/dev/null", "--wrap", "echo $$ > {tmp_path}/job.pid; exec sleep 600")
        print(slurm.env["LOCALSLURM_ID"], flush=True)
        time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        tag = owner.stdout.readline().strip()
        assert tag, "the cluster did not start"
        wait_until(lambda: (tmp_path / "job.pid").exists() and (tmp_path / "job.pid").read_text().strip(), 30,
                   "the job started")
        job = int((tmp_path / "job.pid").read_text())
        assert set(tagged(tag).values()) >= {"munged", "slurmctld", "slurmd", "slurmstepd", "sleep"}
    finally:
        owner.kill()
        owner.wait()
    wait_until(lambda: not set(tagged(tag).values()) & {"munged", "slurmctld", "slurmd"}, 15,
               "the daemons died with their owner")
    assert alive(job)  # Slurm's own job outlives slurmd ...
    assert job in localslurm.kill_orphans()  # ... until a later run sweeps it
    wait_until(lambda: not tagged(tag), 10, "the orphans are gone")


@pytest.fixture
def taken_port():
    """A port some other program listens on."""
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        yield taken.getsockname()[1]


@needs_slurm
def test_a_daemon_that_cannot_start_says_why_and_leaves_nothing(tmp_path, monkeypatch, taken_port):
    monkeypatch.setattr(localslurm, "free_ports", lambda count: [taken_port, taken_port + 1])
    monkeypatch.setattr(localslurm, "PORT_ATTEMPTS", 1)
    cluster = LocalSlurm(tmp_path, timeout=15)
    with pytest.raises(SlurmStartError) as raised:
        cluster.start()
    assert "slurmctld exited" in str(raised.value)
    assert "Address already in use" in str(raised.value)  # the tail of slurmctld's own log
    assert cluster.leftovers() == []


@needs_slurm
def test_a_port_taken_meanwhile_is_replaced(tmp_path, monkeypatch, taken_port):
    """Another program may take a port between free_ports() and slurmctld's bind: LocalSlurm picks anew."""
    offers = iter([[taken_port, taken_port + 1]])
    real = localslurm.free_ports
    monkeypatch.setattr(localslurm, "free_ports", lambda count: next(offers, None) or real(count))
    with LocalSlurm(tmp_path) as cluster:
        assert taken_port not in cluster.ports
        assert cluster.run("sinfo", "-h", "-o", "%t").stdout.split() == ["idle"]
    assert cluster.leftovers() == []


@needs_slurm
def test_dask_jobqueue_workers_run_as_slurm_jobs(slurm, tmp_path, monkeypatch):
    # dask-jobqueue runs sbatch and scancel with this process's environment, and sbatch passes it on to the
    # job: SLURM_CONF reaches both, and the tag lets LocalSlurm find the workers' processes at the end.
    for name, value in slurm.env.items():
        monkeypatch.setenv(name, value)
    logs = tmp_path / "dask-logs"
    with SLURMCluster(
            queue=slurm.partition, cores=1, processes=1, memory="2GB", walltime="00:10:00",
            python=sys.executable,
            # Workers reach the scheduler on localhost; port 0 for a dashboard: two runs do not collide.
            scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"},
            log_directory=str(logs), local_directory=str(tmp_path / "dask-local"),
            job_extra_directives=[f"--chdir={tmp_path}"],
            job_script_prologue=["export GRADING_SLOT=yes"],
            worker_extra_args=["--resources", "grading=1"]) as cluster:
        script = cluster.job_script()
        for line in ("#SBATCH -p debug", "#SBATCH --cpus-per-task=1", "#SBATCH --mem=2G", "#SBATCH -t 00:10:00",
                     f"#SBATCH --chdir={tmp_path}", f"#SBATCH -o {logs}/dask-worker-%J.out",
                     "export GRADING_SLOT=yes", "--resources grading=1", "tcp://127.0.0.1:"):
            assert line in script, script
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            started = time.monotonic()
            client.wait_for_workers(2, timeout=60)
            joined = time.monotonic() - started
            job_ids = sorted(job.job_id for job in cluster.workers.values())
            assert sorted(slurm.jobs()) == job_ids
            # Each worker is a process of its own Slurm job, with the prologue and the resources it was given.
            assert sorted(client.run(lambda: os.environ.get("SLURM_JOB_ID")).values()) == job_ids
            assert set(client.run(lambda: os.environ.get("GRADING_SLOT")).values()) == {"yes"}
            pid = client.submit(os.getpid, resources={"grading": 1}).result(timeout=30)
            assert pid != os.getpid()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert any(v.decode() in {f"SLURM_JOB_ID={j}" for j in job_ids} for v in environ)
    print(f"2 workers joined in {joined:.1f} s")
    wait_until(lambda: slurm.jobs() == [], 30, "the workers' jobs are gone from squeue")
    assert sorted(p.name for p in logs.iterdir()) == sorted(
        f"dask-worker-{j}.{ext}" for j in job_ids for ext in ("err", "out"))
