"""kill -9 of the grader in the middle of a batch, then the same command again: every student graded exactly
once, nothing lost, nothing of the killed run left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from autograder.config import REPO_ROOT
from autograder.results import ResultStore

import mutants


def test_kill_9_then_rerun_grades_everyone_once(tmp_path, mnist_dir):
    folder = tmp_path / "subs"
    folder.mkdir()
    students = ["s1", "s2", "s3", "s4"]
    for name in students:
        mutants.write(mutants.filled(), folder / f"{name}.ipynb")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "autograder.cli", "grade", str(folder), "--out", str(out), "--jobs", "1",
               "--device", "cpu"]
    env = {**os.environ, "MNIST_DIR": str(mnist_dir)}
    first = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (results.is_dir() and any(results.glob("*.json"))):
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)  # in the middle: one result written, the next sandbox running
    first.wait()
    done_before = {p.name: p.read_bytes() for p in results.glob("*.json")}
    assert 1 <= len(done_before) < len(students)

    second = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    graded = ResultStore(out).load_all()
    assert sorted(r.student_id for r in graded) == students
    assert all(r.status == "graded" and r.total == 100 for r in graded)
    # Those finished before the kill were kept as they were, not graded again.
    assert {name: (results / name).read_bytes() for name in done_before} == done_before
    assert not list(results.glob(".*.tmp"))  # no half-written result survives
