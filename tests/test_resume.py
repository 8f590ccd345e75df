"""kill -9 of the grader in the middle of a batch, then the same command again: every student graded exactly
once, nothing lost, nothing of the killed run left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from autograder.results import ResultStore

import mutants
from repo import REPO_ROOT

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def start_batch(tmp_path, mnist_dir, students):
    """`autograder grade --jobs 1` on copies of the answer key, started; returns once a first result is saved."""
    folder = tmp_path / "subs"
    folder.mkdir()
    for name in students:
        mutants.write(mutants.filled(), folder / f"{name}.ipynb")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "autograder.cli", "grade", str(folder), "--assignment", "cnn_mnist", "--out", str(out), "--jobs", "1",
               "--device", "cpu"]
    env = {**os.environ, "MNIST_DIR": str(mnist_dir)}
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = out / "results"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (results.is_dir() and any(results.glob("*.json"))):
        time.sleep(0.2)
    return proc, command, env, out


def test_kill_9_then_rerun_grades_everyone_once(tmp_path, mnist_dir):
    students = ["s1", "s2", "s3", "s4"]
    first, command, env, out = start_batch(tmp_path, mnist_dir, students)
    results = out / "results"
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


def test_ctrl_c_stops_the_batch_soon_and_keeps_what_was_saved(tmp_path, mnist_dir):
    """Ctrl-C after the first result: the sandbox waiting for its turn is killed, no queued submission
    starts, the one running may finish; the command ends within a run's time, every sandbox gone."""
    grader, _, _, out = start_batch(tmp_path, mnist_dir, [f"s{i}" for i in range(6)])
    results = out / "results"
    grader.send_signal(signal.SIGINT)
    try:
        _, stderr = grader.communicate(timeout=60)  # at most the running sandbox's own run
    finally:
        grader.kill()
    assert grader.returncode == 130 and b"Run the same command again" in stderr
    saved = sorted(p.stem for p in results.glob("*.json"))
    assert 1 <= len(saved) <= 3 and not list(results.glob(".*.tmp"))
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _is_harness(p)]


def _is_harness(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
            return b"/sandbox/run/harness.py" in cmd or b"/sandbox/zygote/zygote.py" in cmd  # forked runs too
    except OSError:
        return False
