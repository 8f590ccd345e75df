"""The fork server: runs forked from one warmed-up sandbox train exactly as a sandbox of their own does, stay
under the same limits, leave nothing behind, and a fork server that dies costs no student a grade.
(What a forked run can see and reach: test_isolation.py, which runs the same probe both ways.)"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace

import pytest

from autograder import observe
from autograder.grade import Grader, Options
from autograder.sanitize import Cell
from autograder.submissions import Submission

from repo import REPO_ROOT

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def answer_key() -> Submission:
    notebook = (REPO_ROOT / "solutions" / "cnn_mnist" / "cnn_mnist.ipynb").read_bytes()
    return Submission(student_id="key", notebook=notebook, source="key")


def run_cells(grader, server, source: str, **limits):
    plan = observe.plan_for(grader.assignment, [Cell("setup", source)], grader.probes.SANDBOX,
                            grader.settings, grader.data)
    return observe.run(plan, limits=replace(grader.assignment.limits, **limits), data=grader.data,
                       settings=grader.settings, server=server)


def test_a_forked_run_trains_exactly_as_a_sandbox_of_its_own(grader, server, assignment):
    forked = grader.observe(answer_key())
    own = Grader(assignment, Options(jobs=1, require_sandbox=True, fork_server=False))
    try:
        alone = own.observe(answer_key())
        assert own._server is None
    finally:
        own.close()
    for observed in (forked, alone):
        assert observed.run.sandboxed and observed.run.returncode == 0, observed.run.stderr[-2000:]
    # Same seed, same data, same kernels: the same trained weights to the last bit, and so the same grade.
    assert forked.obs.first("weights")["weights"] == alone.obs.first("weights")["weights"]
    assert forked.obs.first("training")["returned"] == alone.obs.first("training")["returned"]
    a, b = grader.judge(forked), grader.judge(alone)
    assert a.parts == b.parts == dict(assignment.points)


def test_training_convolves_with_torch_own_kernels_on_cpu(grader, server):
    """On the CPU, runs convolve with torch's own kernels, not oneDNN's or NNPACK's (twice as fast for the
    lecture's 2- and 3-channel layers; harness.use_small_conv_kernels), whether forked or in a sandbox of
    their own: the student's cells see the flags the training will run with."""
    source = ("import torch\nassert not torch.backends.mkldnn.enabled, 'oneDNN'\n"
              "assert not torch._C._get_nnpack_enabled(), 'NNPACK'\n")
    for via in (server, None):
        run, obs = run_cells(grader, via, source)
        cell = obs.all("cell")[0]
        assert run.killed_for is None and cell["ok"], (via, cell)


def test_time_limit(grader, server):
    run, _ = run_cells(grader, server, "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n"
                                       "    pass", wall_seconds=3)
    assert run.killed_for == "time" and 3 <= run.seconds < 8


def test_memory_limit(grader, server):
    run, _ = run_cells(grader, server, "hog = []\nwhile True:\n    hog.append(bytearray(50 << 20))", memory_mb=1500)
    assert run.killed_for == "memory" and run.peak_rss_mb < 1500 + 500


def test_fork_bomb(grader, server):
    # Small children (a copy of the harness would trip the memory limit first: copy-on-write pages count
    # once per process).
    run, _ = run_cells(grader, server, "import os\nwhile True:\n    try:\n        if os.fork() == 0:\n"
                                       "            os.execvp('sleep', ['sleep', '100'])\n    except OSError:\n"
                                       "        pass")
    assert run.killed_for == "processes"


def test_nothing_outlives_its_run(grader, server):
    token = f"outlive-{os.getpid()}-{time.monotonic_ns()}"
    run, obs = run_cells(grader, server, f"import subprocess\nsubprocess.Popen(['sleep', '600', '{token}'], "
                                         "start_new_session=True)\nimport os\nif os.fork() == 0:\n"
                                         f"    os.setsid()\n    os.execvp('sleep', ['sleep', '601', '{token}'])")
    assert run.returncode == 0 and obs.finished
    time.sleep(0.2)
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if token.encode() in f.read():
                    left.append(pid)
        except OSError:
            pass
    assert left == []


def test_a_dead_fork_server_costs_nobody_a_grade(assignment, mnist_dir, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    g = Grader(assignment, Options(jobs=1, require_sandbox=True))
    try:
        server = g._fork_server()
        os.kill(server._proc.pid, signal.SIGKILL)  # bwrap, and with it the zygote's whole sandbox
        server._proc.wait()
        observed = g.observe(answer_key())
        assert g._server is None and g._server_off  # from now on, a sandbox per submission
        assert observed.run.sandboxed and observed.run.returncode == 0 and observed.obs.finished
        assert g.judge(observed).parts == dict(assignment.points)
    finally:
        g.close()


def test_runs_with_several_torch_threads_do_not_hang(grader):
    """OpenMP's thread pool does not survive fork(): a zygote that warmed up with two threads would leave
    every forked run deadlocked in its first parallel operation (seen on this machine). The zygote warms up
    with one thread; each run starts its own pool."""
    settings = replace(grader.settings, threads=2)
    server = observe.start_fork_server(grader.assignment, settings, grader.data)
    try:
        plan = observe.plan_for(grader.assignment, [Cell("setup", "import torch\nx = torch.randn(1500, 1500)\n"
                                                             "for _ in range(3):\n    x = torch.tanh(x @ x)\n"
                                                             "assert torch.get_num_threads() == 2\n")],
                                grader.probes.SANDBOX, settings, grader.data)
        run, obs = observe.run(plan, limits=replace(grader.assignment.limits, wall_seconds=60), data=grader.data,
                               settings=settings, server=server)
    finally:
        server.close()
    assert run.killed_for is None and obs.all("cell")[0]["ok"], (run.killed_for, obs.all("cell"))
