"""`autograder grade --cluster slurm` on a real Slurm (a one-node cluster on localhost, localslurm.py): the
course's [cluster] table becomes Slurm jobs through dask-jobqueue, their workers grade the batch, and the jobs
are gone when it ends."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

import localslurm
import mutants
from localslurm import LocalSlurm
from repo import REPO_ROOT

SKIP = localslurm.available()


@pytest.mark.sandbox
@pytest.mark.slow
@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_grade_cluster_slurm_grades_a_batch_through_jobs_that_slurm_started(tmp_path, mnist_dir):
    course = tmp_path / "course"
    shutil.copytree(REPO_ROOT / "assignments" / "cnn_mnist", course / "assignments" / "cnn_mnist",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # What a TA writes for their cluster; here one job of the node's two cores, one worker process per core.
    (course / "course.toml").write_text(
        '[cluster]\nqueue = "debug"\njobs = 1\ncores = 2\nmemory = "6GB"\nwalltime = "00:20:00"\n'
        f'host = "127.0.0.1"\nprologue = ["export MNIST_DIR={mnist_dir}"]\n'
        f'directives = ["--chdir={tmp_path}"]\n', encoding="utf-8")
    subs = tmp_path / "subs"
    subs.mkdir()
    mutants.write(mutants.filled(), subs / "ann.ipynb")
    relu = next(m for m in mutants.MUTANTS if m.name == "missing_relu")
    mutants.write(mutants.mutant_notebook(relu), subs / "ben.ipynb")
    out = tmp_path / "out"
    with LocalSlurm(tmp_path, cpus=2, memory_mb=8192) as slurm:
        env = {**os.environ, **slurm.env}
        env.pop("MNIST_DIR", None)  # the workers get it from the [cluster] prologue, as on a real cluster
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", str(subs), "--course", str(course),
                               "--out", str(out), "--cluster", "slurm", "--lang", "en"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        seconds = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr[-4000:] + slurm.logs()
        deadline = time.monotonic() + 60  # a cancelled job stays in squeue a few seconds while it ends
        while slurm.jobs() and time.monotonic() < deadline:
            time.sleep(0.5)
        jobs_left = slurm.jobs()
        controller_log = slurm.logs()
    results = {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}
    assert sorted(results) == ["ann", "ben"]
    assert sum(results["ann"]["parts"].values()) == 100
    assert results["ben"]["parts"]["net"] < 25 and results["ben"]["parts"]["training"] == 35
    jobs = {re.search(r"Slurm job (\d+)", r["ran_on"]).group(1) for r in results.values()}
    assert jobs and all(job.isdigit() for job in jobs), [r["ran_on"] for r in results.values()]
    # The worker logs are the job's, under the batch's output folder; the jobs ended with the batch.
    assert any((out / "slurm-logs").glob(f"dask-worker-{job}.err") for job in jobs)
    assert jobs_left == [], controller_log
    assert "cluster: graded 2 on" in proc.stdout + proc.stderr
    print(f"graded 2 through Slurm in {seconds:.1f} s")
