"""Grading on a Dask cluster (cluster.py, slot.py) with a real distributed.LocalCluster of worker processes: the
same grades as a local batch, check for check; a worker killed in the middle of a submission; workers that
refuse to grade, and why."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from autograder import grade
from autograder.cluster import ClusterError, ClusterPool
from autograder.results import ResultStore, fingerprint
from autograder.submissions import Submission

import mutants



def local_cluster(workers: int = 2, **env) -> LocalCluster:
    """Worker processes of one thread each, as `dask worker --nthreads 1` starts them. No memory limit: the
    nanny must not restart a worker for what the sandboxes use (they have limits of their own)."""
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0,
                        dashboard_address=None, env=env or None)


def class_of(names_and_notebooks) -> list[Submission]:
    import json

    return [Submission(student_id=name, notebook=json.dumps(nb).encode(), source=f"{name}.ipynb")
            for name, nb in names_and_notebooks]


def by_check(result) -> dict:
    return {c.name: c.points for c in result.checks}


@pytest.mark.sandbox
@pytest.mark.slow
def test_a_cluster_grades_check_for_check_as_a_local_batch(tmp_path, assignment, mnist_dir, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    subs = class_of([
        ("answer", mutants.filled()),
        ("missing_relu", mutants.mutant_notebook(next(m for m in mutants.MUTANTS if m.name == "missing_relu"))),
        ("no_zero_grad", mutants.mutant_notebook(next(m for m in mutants.MUTANTS if m.name == "no_zero_grad"))),
        ("untouched", __import__("json").loads(mutants.released("cnn_mnist").read_text())),
    ])
    local = {r.student_id: r for r in grade.grade(assignment, subs, tmp_path / "local", grade.Options(jobs=2))}
    progress = Notes()
    # The pool of `--cluster local --jobs 2`: two worker processes of this machine, started and stopped by it.
    with ClusterPool.connect("local", jobs=2) as pool:
        remote = {r.student_id: r for r in grade.grade(assignment, subs, tmp_path / "cluster", grade.Options(jobs=2),
                                                       progress=progress, pool=pool)}
        workers = set(pool.client.scheduler_info(n_workers=-1)["workers"])
        assert len(workers) == 2 and pool.gpu_slots == 2
    assert set(remote) == set(local) == {s.student_id for s in subs}
    for student, mine in local.items():
        theirs = remote[student]
        assert (theirs.status, theirs.parts, by_check(theirs)) == (mine.status, mine.parts, by_check(mine)), student
        assert theirs.measures.accuracy == mine.measures.accuracy or mine.measures.accuracy is None
        assert theirs.fingerprint == fingerprint(assignment)  # saved by the client as a local result is
        assert mine.ran_on == "" and any(w in theirs.ran_on for w in workers), theirs.ran_on
    assert local["answer"].total == 100 and remote["missing_relu"].parts["net"] < 25
    # The summary says where the submissions ran and how long the workers were held.
    summary = "\n".join(m.en for m in progress.lines)
    assert "cluster: graded 4 on" in summary and "workers held" in summary, summary
    # Resume works as locally: the same batch again grades nothing.
    with local_cluster(1) as cluster, ClusterPool.connect(cluster.scheduler_address) as pool:
        again = Notes()
        grade.grade(assignment, subs, tmp_path / "cluster", grade.Options(), progress=again, pool=pool)
    assert again.total == 0


class Notes:
    """A Progress that keeps what it is told."""

    def __init__(self):
        self.lines, self.total, self.workers = [], None, []

    def start(self, total):
        self.total = total

    def advance(self, result):
        pass

    def cluster(self, grading, refused):
        self.workers.append((grading, refused))

    def finish(self):
        pass

    def note(self, message):
        self.lines.append(message)


@pytest.mark.sandbox
@pytest.mark.slow
def test_a_worker_killed_in_the_middle_of_a_submission_has_it_graded_elsewhere_once(tmp_path, assignment, mnist_dir,
                                                                                     monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    subs = class_of([(name, mutants.filled()) for name in ("ann", "ben", "cid")])
    out = tmp_path / "out"
    killed, first_busy = {}, {}
    with local_cluster(2) as cluster, ClusterPool.connect(cluster.scheduler_address) as pool:
        done = {}

        def batch():
            done["results"] = grade.grade(assignment, subs, out, grade.Options(), progress=Notes(), pool=pool)

        thread = threading.Thread(target=batch)
        thread.start()
        with Client(cluster.scheduler_address) as watcher:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not killed:
                busy = {w: keys for w, keys in watcher.processing().items() if keys}
                # A worker that has held its task for a few seconds is training inside a sandbox by now.
                for w in busy:
                    first_busy.setdefault(w, time.monotonic())
                if busy and time.monotonic() - min(first_busy[w] for w in busy) > 8:
                    address = sorted(busy)[0]
                    pid = watcher.run(os.getpid, workers=[address])[address]
                    killed.update(address=address, pid=pid)
                    os.kill(pid, signal.SIGKILL)
                time.sleep(0.2)
        thread.join(timeout=600)
    assert killed, "no worker ever held a task"
    results = done["results"]
    assert sorted(r.student_id for r in results) == ["ann", "ben", "cid"]  # each exactly once
    assert all(r.total == 100 for r in results), [(r.student_id, r.status, r.reason) for r in results]
    assert not any(killed["address"] in r.ran_on for r in results)  # what the dead worker held ran elsewhere
    assert len(list((out / "results").glob("*.json"))) == 3
    # Nothing of the dead worker's sandboxes is left running.
    assert not _descendants_alive(killed["pid"])


def _descendants_alive(pid: int) -> bool:
    """Whether any process still names the killed worker as its parent (its fork server, its sandboxes)."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        if f"\nPPid:\t{pid}\n" in text:
            return True
    return False


@pytest.mark.sandbox
@pytest.mark.slow
def test_a_worker_without_bubblewrap_is_refused_with_its_reason_and_gets_no_work(tmp_path, assignment, mnist_dir,
                                                                                  monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    subs = class_of([("ann", mutants.filled()), ("ben", mutants.filled())])
    with local_cluster(1) as cluster:
        # A second worker on a "node" whose PATH has no bwrap, started as a TA would start one.
        env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
        stray = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
                                  "--nthreads", "1", "--memory-limit", "0", "--no-dashboard"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with ClusterPool.connect(cluster.scheduler_address) as pool:
                pool.client.wait_for_workers(2, timeout=60)
                notes = Notes()
                results = grade.grade(assignment, subs, tmp_path / "out", grade.Options(), progress=notes, pool=pool)
                refusals = [m.en for m in notes.lines if m.en.startswith("worker refused to grade")]
        finally:
            stray.terminate()
            stray.wait(timeout=30)
    assert [r.total for r in results] == [100, 100]
    assert len(refusals) == 1 and "no working sandbox: the bwrap executable is not on PATH" in refusals[0], notes.lines
    refused_address = refusals[0].split(": ")[1]
    assert not any(refused_address in r.ran_on for r in results)


@pytest.mark.sandbox
@pytest.mark.slow
def test_a_cluster_where_every_worker_refuses_fails_the_batch_with_the_reasons_and_loses_nothing(
        tmp_path, assignment, mnist_dir, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    subs = class_of([("ann", mutants.filled())])
    with local_cluster(1, MNIST_DIR=str(tmp_path / "nowhere")) as cluster, \
            ClusterPool.connect(cluster.scheduler_address) as pool:
        with pytest.raises(ClusterError) as failed:
            grade.grade(assignment, subs, tmp_path / "out", grade.Options(), progress=Notes(), pool=pool)
    message = str(failed.value)
    assert "every worker of the cluster refused" in message and "the data set mnist cannot be read here" in message
    assert "MNIST files missing" in message
    assert ResultStore(tmp_path / "out").load_all() == []


def test_no_scheduler_at_the_address_is_a_clear_error():
    with pytest.raises(ClusterError, match="no Dask scheduler answers at tcp://127.0.0.1:9"):
        with ClusterPool.connect("tcp://127.0.0.1:9"):
            pass


def processes_with_env(token: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if token.encode() in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@pytest.mark.sandbox
@pytest.mark.slow
def test_cluster_local_on_the_command_line_grades_on_its_own_workers_and_stops_them(tmp_path, mnist_dir):
    # `--cluster local`: --jobs grading processes of this machine, each with its own judge, gone with the batch.
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "ann.ipynb").write_text(__import__("json").dumps(mutants.filled()), encoding="utf-8")
    mutants.write(mutants.mutant_notebook(next(m for m in mutants.MUTANTS if m.name == "missing_relu")),
                  folder / "ben.ipynb")
    tag = f"AUTOGRADER_TEST_TAG={os.getpid()}-{time.monotonic_ns()}"
    own_tmp = tmp_path / "tmp"  # the batch's temporary folder: the workers' fork servers make theirs here
    own_tmp.mkdir()
    own_tmp.chmod(0o755)
    env = {**os.environ, "MNIST_DIR": str(mnist_dir), tag.split("=")[0]: tag.split("=")[1], "TMPDIR": str(own_tmp)}
    done = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", str(folder), "--assignment", "cnn_mnist",
                           "--out", str(tmp_path / "out"), "--lang", "en", "--cluster", "local", "--jobs", "2"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: a student lost points
    import csv

    with (tmp_path / "out" / "grades.csv").open(encoding="utf-8-sig") as f:
        rows = {r["student_id"]: r for r in csv.DictReader(f)}
    assert float(rows["ann"]["total"]) == 100 and float(rows["ben"]["total"]) < 100
    assert all(r["graded_on"] for r in rows.values()), rows  # each names the worker that graded it
    assert "cluster: graded 2 on" in done.stdout + done.stderr
    assert processes_with_env(tag) == []  # the workers, their fork servers and sandboxes: all gone
    # ... and nothing of the batch is left in its temporary folder (the fork servers' and sandboxes' folders)
    assert [p.name for p in own_tmp.iterdir() if p.name.startswith(("autograder-", "sandbox-"))] == []
