#!/usr/bin/env python
"""Benchmark (issue 5): the kit's `autograder grade` against nbgrader's own `autograde`, on the same notebooks.

Run by hand; it prints figures and is not a test. In one run it

1. builds, in a temporary folder, the course a TA would set up with nbgrader alone, from the same source
   notebook (assignments/cnn_mnist/cnn_mnist.ipynb): the experiment cell (training on the full set) and the accuracy check
   that reads its result are dropped, and one hidden-test grade cell is added that trains the student's
   `Net` with the student's `train_one_epoch` under assignment.toml's [training] budget the ordinary way
   (torchvision datasets.MNIST + ToTensor/Normalize + DataLoader(shuffle=True)) and asserts the test accuracy
   against [accuracy].threshold; runs `nbgrader generate_assignment`; writes N submissions (the released
   notebook filled with the answer key) as submitted/<student>/cnn_mnist/cnn_mnist.ipynb;
2. per round, in turn: `nbgrader autograde` one student at a time (timed per submission), then
   `autograder grade submitted --jobs 1`, then `--jobs 2`, each a subprocess, timed as a batch;
3. runs one submission through autograder.observe directly (per-cell, training and peak-memory figures),
   times a bare sandbox with `import torch` and the hidden checks (judge) in this process; then, alternating
   round by round (bench/epoch_in_sandbox.py), the training epoch inside a sandbox and the floor: the same
   lecture Net, batch size, optimizer, convolution kernels and resident normalised tensors trained in a plain
   process (and that floor again with torch's default kernels, oneDNN, as an ordinary loop runs);
4. prints a table with the targets and PASS/MISS.

Usage:  MNIST_DIR=/path/to/mnist .venv/bin/python bench/grade_vs_nbgrader.py [--n 6] [--rounds 1] [--keep]
                                                                  [--wait-quiet 120] [--epoch-rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the kit (installed with -e anyway) and tests/mutants.py, used read-only
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))  # epoch_in_sandbox.py

BIN = Path(sys.executable).parent  # the virtualenv's bin: nbgrader, autograder, alembic, jupyter
NOTEBOOK = "cnn_mnist.ipynb"
ASSIGNMENT = "cnn_mnist"
HIDDEN_ID = "test_accuracy_hidden"

# Targets of issue 5.
TARGET_SPEEDUP = 4.0  # nbgrader per submission / kit per submission (jobs 1), both in the steady state
TARGET_OVERHEAD = 3.0  # kit seconds per submission beyond the training epoch (steady state, jobs 1)
TARGET_EPOCH = 1.25  # the training epoch inside the grader / the same epoch in-process (the floor)
TARGET_SCALING = 1.6  # kit throughput with --jobs 2 (= cores) / with --jobs 1
TARGET_RSS_MB = 1.5 * 1024  # peak resident memory of one sandbox

T0 = time.monotonic()


def log(msg: str) -> None:
    t = time.monotonic() - T0
    print(f"[{int(t) // 60:02d}:{int(t) % 60:02d}] {msg}", flush=True)


class Meter:
    """CPU that other processes used while a phase ran, sampled from /proc in a background thread.

    Every process that is not this one or one of its descendants (sandboxes included) counts as foreign. A
    foreign process that starts and ends between two samples is missed, so the figure is a lower bound.
    Other people's jobs on the same machine change the timings a lot (two torch threads on two cores slow
    down sharply when a third process wants a core), so every phase reports it next to its timings.
    """

    HZ = os.sysconf("SC_CLK_TCK")
    INTERVAL = 0.5

    def __init__(self):
        self.phases: list[tuple[str, float, float, float]] = []  # name, wall, foreign cores, steal cores
        self._lock = threading.Lock()
        self._foreign = 0.0
        self._last: dict[tuple[int, int], int] = {}
        self._last_scan_ticks = 0.0
        self.waited = 0.0
        self._scan()
        threading.Thread(target=self._loop, daemon=True, name="bench-meter").start()

    @staticmethod
    def _uptime_ticks() -> float:
        return float(Path("/proc/uptime").read_text().split()[0]) * Meter.HZ

    @staticmethod
    def _steal() -> float:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / Meter.HZ if len(fields) > 8 else 0.0

    def _scan(self) -> None:
        now = self._uptime_ticks()
        procs = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                raw = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            rest = raw[raw.rfind(")") + 2:].split()
            procs[int(name)] = (int(rest[1]), int(rest[19]), int(rest[11]) + int(rest[12]))  # ppid, start, cpu
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        mine, todo = set(), [os.getpid()]
        while todo:
            pid = todo.pop()
            mine.add(pid)
            todo += children.get(pid, [])
        seen, foreign = {}, 0
        for pid, (_, started, cpu) in procs.items():
            if pid in mine:
                continue
            key = (pid, started)
            seen[key] = cpu
            if key in self._last:
                foreign += cpu - self._last[key]
            elif started >= self._last_scan_ticks:  # started since the last scan: all of its time is new
                foreign += cpu
        with self._lock:
            self._foreign += foreign / self.HZ
            self._last, self._last_scan_ticks = seen, now

    def _loop(self) -> None:
        while True:
            time.sleep(self.INTERVAL)
            try:
                self._scan()
            except Exception:  # a measurement aid must never stop the benchmark
                pass

    def foreign_now(self, window: float = 3.0) -> float:
        """Cores other processes use now, over `window` seconds."""
        self._scan()
        with self._lock:
            before = self._foreign
        started = time.monotonic()
        time.sleep(window)
        self._scan()
        with self._lock:
            return max(0.0, self._foreign - before) / (time.monotonic() - started)

    def wait_quiet(self, most: float, threshold: float = 0.15) -> float:
        """Wait (at most `most` seconds) until other processes use under `threshold` cores; return the wait."""
        started = time.monotonic()
        announced = False
        while most > 0 and time.monotonic() - started < most:
            busy = self.foreign_now()
            if busy < threshold:
                break
            if not announced:
                log(f"  waiting for the machine to be quiet (other processes use {busy:.2f} cores; at most {most:g} s)")
                announced = True
        waited = time.monotonic() - started
        self.waited += waited
        return waited

    def start(self) -> None:
        self._scan()
        with self._lock:
            self._foreign = 0.0
        self._t0, self._steal0 = time.monotonic(), self._steal()

    def stop(self, name: str) -> float:
        self._scan()
        wall = max(time.monotonic() - self._t0, 1e-9)
        with self._lock:
            foreign = self._foreign / wall
        steal = (self._steal() - self._steal0) / wall
        self.phases.append((name, wall, foreign, steal))
        return foreign


METER: Meter | None = None  # started in main()


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# ----------------------------------------------------------------------------------------------------------
# 1. the nbgrader-only course
# ----------------------------------------------------------------------------------------------------------

def hidden_test_source(assignment, data_root: Path) -> str:
    t, threshold = assignment.training, assignment.accuracy.threshold
    n_train = 60_000 - t.holdout
    if t.optimizer == "adam":
        make_opt = f"optim.Adam(_model.parameters(), lr={t.lr!r})"
    else:
        make_opt = f"optim.SGD(_model.parameters(), lr={t.lr!r}, momentum={t.momentum!r})"
    return f"""# 非公開テスト / hidden test: train one budget on MNIST and check the test accuracy
### BEGIN HIDDEN TESTS
import time as _time
from torch.utils.data import DataLoader as _DataLoader, Subset as _Subset
from torchvision import datasets as _datasets, transforms as _transforms

_transform = _transforms.Compose([_transforms.ToTensor(), _transforms.Normalize((0.1307,), (0.3081,))])
_train = _Subset(_datasets.MNIST({str(data_root)!r}, train=True, download=True, transform=_transform),
                 range({n_train}))
_test = _datasets.MNIST({str(data_root)!r}, train=False, download=True, transform=_transform)
_device = torch.device("cpu")
torch.manual_seed({t.seed})
_model = Net().to(_device)
_opt = {make_opt}
_loader = _DataLoader(_train, batch_size={t.batch_size}, shuffle=True)
_started = _time.perf_counter()
for _epoch in range({t.epochs}):
    train_one_epoch(_model, _loader, _opt, _device)
_train_seconds = _time.perf_counter() - _started
_model.eval()
_correct = 0
with torch.no_grad():
    for _x, _y in _DataLoader(_test, batch_size=1000):
        _correct += (_model(_x).argmax(dim=1) == _y).sum().item()
_accuracy = _correct / len(_test)
print(f"BENCH epoch_seconds={{_train_seconds:.3f}} accuracy={{_accuracy:.4f}} threads={{torch.get_num_threads()}}")
assert _accuracy >= {threshold!r}, f"test accuracy {{_accuracy:.4f}} < {threshold!r}"
### END HIDDEN TESTS
"""


def nbgrader_source(assignment, data_root: Path) -> tuple[dict, list[str]]:
    """The course's source notebook as an nbgrader-only course would have it; returns (notebook, what changed)."""
    from autograder.notebook import grade_id

    nb = json.loads(assignment.source_notebook.read_text(encoding="utf-8"))
    kept, dropped = [], []
    for cell in nb["cells"]:
        gid = grade_id(cell)
        if gid in assignment.experiment_cells:
            dropped.append(f"the experiment cell {gid!r} (training on the full training set)")
            continue
        if gid == "test_accuracy":
            dropped.append("the locked cell 'test_accuracy' (asserts the experiment's test_accuracy)")
            continue
        kept.append(cell)
    points = assignment.check_points.get("training.accuracy", 15.0)
    kept.append({
        "cell_type": "code", "execution_count": None, "outputs": [],
        "metadata": {"nbgrader": {"grade": True, "grade_id": HIDDEN_ID, "locked": True, "points": points,
                                  "schema_version": 3, "solution": False, "task": False}},
        "source": hidden_test_source(assignment, data_root),
    })
    nb["cells"] = kept
    return nb, dropped


def build_course(tmp: Path, assignment, n: int) -> tuple[Path, list[str], list[str]]:
    from autograder import mnist
    import mutants  # tests/mutants.py: answers() is the answer key's code per grade_id (read-only use)

    data_root = tmp / "torchvision-mnist"
    for train in (True, False):  # extract once, as a TA's shared data folder; each run then only reads it
        mnist.torchvision_dataset(train, root=data_root)
    course = tmp / "course"
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "c.CourseDirectory.course_id = 'bench'\n"
        "c.Execute.timeout = 1800  # nbgrader's default of 30 s per cell would stop the training cell\n",
        encoding="utf-8")
    nb, dropped = nbgrader_source(assignment, data_root)
    (course / "source" / ASSIGNMENT / NOTEBOOK).write_text(json.dumps(nb, ensure_ascii=False, indent=1),
                                                           encoding="utf-8")
    run_logged([str(BIN / "nbgrader"), "generate_assignment", ASSIGNMENT, "--force"], cwd=course,
               logfile=tmp / "logs" / "generate_assignment.log")
    released = json.loads((course / "release" / ASSIGNMENT / NOTEBOOK).read_text(encoding="utf-8"))
    assert not any(HIDDEN_ID == (c.get("metadata", {}).get("nbgrader", {}) or {}).get("grade_id")
                   and "BEGIN HIDDEN" in "".join(c["source"]) for c in released["cells"]), "hidden tests leaked"
    code = mutants.answers()
    filled = copy.deepcopy(released)
    from autograder.notebook import grade_id
    for cell in filled["cells"]:
        if grade_id(cell) in code:
            cell["source"] = code[grade_id(cell)]
    students = [f"s{i:02d}" for i in range(1, n + 1)]
    for sid in students:
        folder = course / "submitted" / sid / ASSIGNMENT
        folder.mkdir(parents=True)
        (folder / NOTEBOOK).write_text(json.dumps(filled, ensure_ascii=False, indent=1), encoding="utf-8")
    return course, students, dropped


# ----------------------------------------------------------------------------------------------------------
# 2. the timed batches
# ----------------------------------------------------------------------------------------------------------

def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # nbgrader runs `alembic` from PATH
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def run_logged(argv: list[str], *, cwd: Path, logfile: Path) -> float:
    """Run argv, output to logfile; return wall seconds; on failure show the log's tail and stop."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with logfile.open("wb") as out:
        code = subprocess.run(argv, cwd=cwd, env=subprocess_env(), stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        tail = logfile.read_text(errors="replace")[-3000:]
        raise SystemExit(f"failed (exit {code}): {shlex.join(argv)}\n--- {logfile} (tail) ---\n{tail}")
    return seconds


def nbgrader_round(course: Path, students: list[str], tmp: Path, rnd: int, wait: float) -> list[dict]:
    from nbgrader.api import Gradebook

    rows = []
    for sid in students:
        METER.wait_quiet(wait)
        METER.start()
        argv = [str(BIN / "nbgrader"), "autograde", ASSIGNMENT, "--student", sid, "--force"]
        seconds = run_logged(argv, cwd=course, logfile=tmp / "logs" / f"nbgrader-r{rnd}-{sid}.log")
        graded = json.loads((course / "autograded" / sid / ASSIGNMENT / NOTEBOOK).read_text(encoding="utf-8"))
        text = "".join("".join(o.get("text", "")) for c in graded["cells"] for o in c.get("outputs", [])
                       if o.get("output_type") == "stream")
        m = re.search(r"BENCH epoch_seconds=([\d.]+) accuracy=([\d.]+) threads=(\d+)", text)
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
            sub = gb.find_submission(ASSIGNMENT, sid)
            score, max_score = sub.score, sub.max_score
        foreign = METER.stop(f"r{rnd} nbgrader {sid}")
        row = {"student": sid, "seconds": seconds, "score": score, "max_score": max_score, "foreign": foreign,
               "epoch_seconds": float(m.group(1)) if m else None, "accuracy": float(m.group(2)) if m else None,
               "threads": int(m.group(3)) if m else None}
        rows.append(row)
        log(f"  nbgrader autograde {sid}: {seconds:.1f} s, score {score:g}/{max_score:g}, "
            f"epoch in kernel {row['epoch_seconds']} s, accuracy {row['accuracy']}; "
            f"other processes {foreign:.2f} cores")
    return rows


def nbgrader_batch(course: Path, students: list[str], tmp: Path, rnd: int) -> dict:
    """The whole class in one `nbgrader autograde` command, as a TA would run it: wall / N per submission."""
    from nbgrader.api import Gradebook

    argv = [str(BIN / "nbgrader"), "autograde", ASSIGNMENT, "--force"]
    wall = run_logged(argv, cwd=course, logfile=tmp / "logs" / f"nbgrader-batch-r{rnd}.log")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        full = sum(gb.find_submission(ASSIGNMENT, sid).score == gb.find_submission(ASSIGNMENT, sid).max_score
                   for sid in students)
    # Steady state, as for the kit: from the first autograded notebook written to the last, per submission.
    saved = sorted((course / "autograded" / sid / ASSIGNMENT / NOTEBOOK).stat().st_mtime for sid in students)
    gaps = [(saved[-1] - saved[0]) / (len(saved) - 1)] if len(saved) > 1 else []
    log(f"  nbgrader autograde (all {len(students)} at once): {wall:.1f} s, {wall / len(students):.1f} s per "
        f"submission, full marks {full}/{len(students)}")
    return {"wall": wall, "full": full, "n": len(students), "gaps": gaps}


def kit_round(course: Path, students: list[str], tmp: Path, rnd: int, jobs: int, fork_server: bool = True,
              threads: int = 0) -> dict:
    flags = ([] if fork_server else ["--no-fork-server"]) + ([f"--threads={threads}"] if threads else [])
    name = f"r{rnd}-jobs{jobs}" + ("" if fork_server else "-own") + (f"-threads{threads}" if threads else "")
    out = tmp / "kit" / name
    # --db: the nbgrader-only course's gradebook is the baseline's (its hidden cell is no part of the kit's); without
    # it the kit would record into the course's own gradebook, as it does for a TA's nbgrader course.
    argv = [str(BIN / "autograder"), "grade", str(course / "submitted"), "--assignment", ASSIGNMENT, "--out", str(out), "--force",
            "--jobs", str(jobs), "--db", f"sqlite:///{out / 'gradebook.db'}", *flags]
    wall = run_logged(argv, cwd=REPO, logfile=tmp / "logs" / f"kit-{name}.log")
    per_sub, bad = {}, []
    # Steady state: from the end of the first wave (the jobs-th saved result: those paid the grader's start)
    # to the last saved result (the reports and the gradebook come after it), per submission saved in
    # between. With --jobs 2 results come in pairs: counting from the first result would credit the second
    # of the first pair as a whole submission's work done in no time.
    saved = sorted((out / "results" / f"{sid}.json").stat().st_mtime for sid in students)
    gaps = [(saved[-1] - saved[jobs - 1]) / (len(saved) - jobs)] if len(saved) > jobs else []
    for sid in students:
        result = json.loads((out / "results" / f"{sid}.json").read_text(encoding="utf-8"))
        per_sub[sid] = result["seconds"]
        total, most = sum(result["parts"].values()), sum(result["max_parts"].values())
        if result["status"] != "graded" or total != most:
            bad.append(f"{sid}: {result['status']} {total:g}/{most:g}")
    log(f"  autograder grade --jobs {jobs} {' '.join(flags)}: batch {wall:.1f} s, "
        f"per-submission seconds "
        f"{', '.join(f'{s:.1f}' for s in per_sub.values())}" + (f"; NOT FULL MARKS: {bad}" if bad else ""))
    return {"jobs": jobs, "wall": wall, "per_sub": per_sub, "bad": bad, "argv": argv, "gaps": gaps}


# ----------------------------------------------------------------------------------------------------------
# 3. inside the kit, and the floor
# ----------------------------------------------------------------------------------------------------------

def sandbox_import_torch(assignment, threads: int) -> dict:
    """A bare sandbox (same limits, same environment) that only imports torch: the fixed start-up cost."""
    from autograder.sandbox import run_sandboxed

    code = ("import time; t = time.perf_counter(); import torch; "
            "print(f'IMPORT {time.perf_counter() - t:.3f}')")
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONHASHSEED": "0"}
    started = time.perf_counter()
    run = run_sandboxed([sys.executable, "-I", "-c", code], mounts=[], limits=assignment.limits, env=env)
    wall = time.perf_counter() - started
    m = re.search(r"IMPORT ([\d.]+)", run.stdout)
    return {"wall": wall, "import": float(m.group(1)) if m else None, "peak_rss_mb": run.peak_rss_mb,
            "sandboxed": run.sandboxed}


def direct_observe(assignment, notebook: bytes) -> dict:
    """One submission through Grader.observe / Grader.judge in this process, with jobs 1 and jobs 2 threads."""
    from autograder.grade import Grader, Options, sandbox_threads
    from autograder.submissions import Submission

    started = time.perf_counter()
    grader = Grader(assignment, Options(device="cpu", jobs=1))
    init_seconds = time.perf_counter() - started
    out = {"grader_init": init_seconds, "runs": []}
    try:
        started = time.perf_counter()
        out["fork_server"] = grader._fork_server() is not None  # started by the first run otherwise
        out["server_start"] = time.perf_counter() - started
        for threads in sorted({sandbox_threads(1), sandbox_threads(2)}, reverse=True):  # jobs 1, jobs 2
            grader.settings = dataclasses.replace(grader.settings, threads=threads)
            sub = Submission(student_id="direct", notebook=notebook, source="direct")
            t = time.perf_counter()
            observed = grader.observe(sub)
            obs, run, seconds = observed.obs, observed.run, observed.seconds
            observe_wall = time.perf_counter() - t
            t = time.perf_counter()
            result = grader.judge(observed)
            judge_seconds = time.perf_counter() - t
            training = obs.first("training") or {}
            cells = {c["id"]: c.get("seconds") for c in obs.all("cell")}
            out["runs"].append({
                "ready": (obs.first("ready") or {}).get("t"), "evaluate_at": (obs.first("evaluate") or {}).get("t"),
                "training_at": (obs.first("training") or {}).get("t"), "done_at": (obs.first("done") or {}).get("t"),
                "threads": threads, "observe": observe_wall, "seconds": seconds, "judge": judge_seconds,
                "training": training.get("seconds"), "cells": cells, "peak_rss_mb": run.peak_rss_mb,
                "sandboxed": run.sandboxed, "status": result.status,
                "points": sum(result.parts.values()), "max_points": sum(result.max_parts.values()),
                "wall_status": run.killed_for,
            })
            r = out["runs"][-1]
            log(f"  direct observe, {threads} thread(s): observe {observe_wall:.2f} s (training "
                f"{r['training']:.2f} s, cells {sum(v or 0 for v in cells.values()):.2f} s), judge "
                f"{judge_seconds:.2f} s, peak RSS {run.peak_rss_mb:.0f} MB, {result.status} "
                f"{r['points']:g}/{r['max_points']:g}, sandboxed={run.sandboxed}")
    finally:
        grader.close()
    return out


def epoch_vs_floor(assignment, threads: list[int], cores: int, rounds: int) -> dict:
    """Median epoch seconds, alternating round by round (on a machine whose speed drifts, figures taken
    minutes apart do not compare): the harness in a bwrap sandbox as grading runs it, the floor (the answer
    key's Net and loop on resident batches in a plain process, with the sandbox's convolution kernels) with
    the sandbox's allocator settings and with glibc's defaults, with torch's default kernels (oneDNN) as an
    ordinary loop runs, the floor with all cores for comparison, and one-thread floors on every core at once
    (what parallel epochs get from this machine). See bench/epoch_in_sandbox.py."""
    import epoch_in_sandbox as eis
    from autograder import forkserver, observe, sandbox
    from autograder.sanitize import sanitize

    clean = sanitize((REPO / "solutions" / ASSIGNMENT / NOTEBOOK).read_bytes(), assignment)
    probes, data, bwrap = observe.load_probes(assignment), observe.DataDir(), sandbox.bwrap_available()
    servers = {}  # by threads: the grader's epochs run forked from a fork server wherever grading does that
    ways = {}
    for th in threads:
        if forkserver.usable("cpu"):
            servers[th] = observe.start_fork_server(assignment, observe.RunSettings(threads=th), data)
        ways[("grader", th)] = lambda th=th: eis.harness_epoch(assignment, clean, probes, data, th, bwrap,
                                                               servers.get(th))
        ways[("floor", th)] = lambda th=th: eis.floor_in_child(th, tuned=True)
        ways[("floor, glibc malloc", th)] = lambda th=th: eis.floor_in_child(th, tuned=False)
        ways[("floor, oneDNN", th)] = lambda th=th: eis.floor_in_child(th, tuned=True, default_kernels=True)
    if cores not in threads:
        ways[("floor", cores)] = lambda: eis.floor_in_child(cores, tuned=True)
    if cores > 1 and 1 in threads:
        ways[("floors at once", 1)] = lambda: eis.floors_at_once(cores, 1)
    seconds = {key: [] for key in ways}
    try:
        for rnd in range(1, rounds + 1):
            for key, way in ways.items():
                seconds[key].append(way())
                log(f"  round {rnd}/{rounds}: {key[0]}, {key[1]} thread(s): {seconds[key][-1]:.2f} s")
    finally:
        for server in servers.values():
            server.close()
        data.close()
    return {key: statistics.median(values) for key, values in seconds.items()}


# ----------------------------------------------------------------------------------------------------------
# 4. the report
# ----------------------------------------------------------------------------------------------------------

def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=6, help="submissions per batch (default 6)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of nbgrader / kit jobs 1 / kit jobs 2 (default 1)")
    parser.add_argument("--epoch-rounds", type=int, default=3,
                        help="rounds of the alternating epoch-vs-floor comparison (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (course, outputs, logs)")
    parser.add_argument("--wait-quiet", type=float, default=120, metavar="S",
                        help="before each timed step, wait up to S seconds while other processes use >= 0.15 cores "
                             "(default 120; 0: never wait)")
    args = parser.parse_args(argv)
    # kill PID: stop like Ctrl-C, so the running command is stopped and the temporary folder removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.n < 1 or args.rounds < 1:
        parser.error("--n and --rounds must be at least 1")
    if not os.environ.get("MNIST_DIR"):
        parser.error("MNIST_DIR is not set: point it at the folder with the four MNIST .gz files")
    os.environ["MNIST_DIR"] = str(Path(os.environ["MNIST_DIR"]).resolve())

    import nbgrader
    import torch

    from autograder.course import Course

    global METER
    METER = Meter()
    default_threads = torch.get_num_threads()
    command = shlex.join([sys.executable, *sys.argv])
    cores = os.cpu_count() or 1
    assignment = Course.at(REPO).lab(ASSIGNMENT)
    tmp = Path(tempfile.mkdtemp(prefix="bench-grade-vs-nbgrader-"))
    log(f"command: {command}")
    log(f"load average at start: {loadavg()}")
    log(f"work folder: {tmp}{' (kept)' if args.keep else ' (removed at the end; --keep keeps it)'}")
    try:
        log(f"building the nbgrader-only course and {args.n} submissions")
        course, students, dropped = build_course(tmp, assignment, args.n)
        nb_rows, nb_batches, kit_runs, own_runs, all_core_runs = [], [], {1: [], 2: []}, {1: [], 2: []}, []
        for rnd in range(1, args.rounds + 1):
            log(f"round {rnd}/{args.rounds}: nbgrader autograde, one student at a time")
            nb_rows += nbgrader_round(course, students, tmp, rnd, args.wait_quiet)
            log(f"round {rnd}/{args.rounds}: nbgrader autograde, the class in one command")
            METER.wait_quiet(args.wait_quiet)
            METER.start()
            nb_batches.append(nbgrader_batch(course, students, tmp, rnd))
            METER.stop(f"r{rnd} nbgrader-batch")
            for jobs in (1, 2):
                log(f"round {rnd}/{args.rounds}: autograder grade --jobs {jobs}")
                METER.wait_quiet(args.wait_quiet)
                METER.start()
                kit_runs[jobs].append(kit_round(course, students, tmp, rnd, jobs))
                log(f"  other processes used {METER.stop(f'r{rnd} kit --jobs {jobs}'):.2f} cores on average meanwhile")
            if cores > 1:  # --jobs 1 training with every core (--threads): what the core left idle would give
                log(f"round {rnd}/{args.rounds}: autograder grade --jobs 1 --threads {cores}")
                METER.wait_quiet(args.wait_quiet)
                METER.start()
                all_core_runs.append(kit_round(course, students, tmp, rnd, 1, threads=cores))
                METER.stop(f"r{rnd} kit --jobs 1 --threads {cores}")
            for jobs in (1, 2):  # the baseline: a sandbox of its own per submission, as before the fork server
                log(f"round {rnd}/{args.rounds}: autograder grade --jobs {jobs} --no-fork-server")
                METER.wait_quiet(args.wait_quiet)
                METER.start()
                own_runs[jobs].append(kit_round(course, students, tmp, rnd, jobs, fork_server=False))
                METER.stop(f"r{rnd} kit --jobs {jobs} --no-fork-server")
        log("inside the kit: one submission through autograder.observe, a bare sandbox importing torch")
        notebook = (course / "submitted" / students[0] / ASSIGNMENT / NOTEBOOK).read_bytes()
        METER.wait_quiet(args.wait_quiet)
        METER.start()
        direct = direct_observe(assignment, notebook)
        from autograder.grade import sandbox_threads

        threads_j1, threads_j2 = sandbox_threads(1), sandbox_threads(2)  # what grade.Grader gives each sandbox
        bare = {th: sandbox_import_torch(assignment, th) for th in sorted({threads_j1, threads_j2}, reverse=True)}
        for th, b in bare.items():
            log(f"  bare sandbox + import torch ({th} thread(s)): {b['wall']:.2f} s "
                f"(import {b['import']} s), peak RSS {b['peak_rss_mb']:.0f} MB")
        METER.stop("direct observe + bare sandboxes")
        log(f"the training epoch: the harness in a sandbox and the floor, alternating, {args.epoch_rounds} rounds")
        METER.wait_quiet(args.wait_quiet)
        METER.start()
        epochs = epoch_vs_floor(assignment, sorted({threads_j1, threads_j2}), cores, args.epoch_rounds)
        METER.stop("epoch vs floor")
    finally:
        if args.keep:
            log(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    # --- figures ---------------------------------------------------------------------------------------
    n_total = len(nb_rows)
    nb_med = statistics.median(r["seconds"] for r in nb_rows)
    nb_epoch = [r["epoch_seconds"] for r in nb_rows if r["epoch_seconds"] is not None]
    nb_ok = sum(r["score"] == r["max_score"] for r in nb_rows)
    nb_batch = sum(b["wall"] for b in nb_batches) / sum(b["n"] for b in nb_batches)
    nb_batch_ok = sum(b["full"] for b in nb_batches)
    k1 = [s for run in kit_runs[1] for s in run["per_sub"].values()]
    k2 = [s for run in kit_runs[2] for s in run["per_sub"].values()]
    k1_wall = sum(run["wall"] for run in kit_runs[1])
    k2_wall = sum(run["wall"] for run in kit_runs[2])
    k1_per, k2_per = k1_wall / len(k1), k2_wall / len(k2)  # batch wall / N, start and reports included
    k1_steady = statistics.median(g for run in kit_runs[1] for g in run["gaps"]) if args.n > 1 else k1_per
    k2_steady = statistics.median(g for run in kit_runs[2] for g in run["gaps"]) if args.n > 2 else k2_per
    kit_bad = [b for runs in (*kit_runs.values(), *own_runs.values(), all_core_runs) for run in runs
               for b in run["bad"]]
    own_steady = {jobs: statistics.median(g for run in runs for g in run["gaps"]) if args.n > jobs else
                  sum(r["wall"] for r in runs) / (args.n * len(runs)) for jobs, runs in own_runs.items()}
    nb_steady = statistics.median(g for b in nb_batches for g in b["gaps"]) if args.n > 1 else nb_batch
    # The verdicts use the steady state, what a class of hundreds sees; batch wall / N (start-up, gradebook and
    # reports over only N submissions) is printed beside it.
    speedup = nb_steady / k1_steady
    scaling = k1_steady / k2_steady
    run_j1 = next(r for r in direct["runs"] if r["threads"] == threads_j1)
    peak = max(r["peak_rss_mb"] for r in direct["runs"])
    overhead = k1_steady - epochs[("grader", threads_j1)]  # the epoch's median from the alternating runs
    cells_s = sum(v or 0 for v in run_j1["cells"].values())
    bare_j1 = bare[threads_j1]
    ready = run_j1["ready"] or 0.0
    before_training = (run_j1["training_at"] or 0.0) - run_j1["training"]
    evaluate_s = (run_j1["evaluate_at"] or 0.0) - (run_j1["training_at"] or 0.0)
    rest = run_j1["seconds"] - ready - (run_j1["evaluate_at"] or 0.0)

    w = 70
    line = "-" * 108
    print("\n" + "=" * 108)
    print("grade_vs_nbgrader: the kit's `autograder grade` vs nbgrader autograde, same notebooks")
    print("=" * 108)
    print(f"command     : {command}")
    print(f"machine     : {cores} cores ({platform.processor() or platform.machine()}; "
          f"{_cpu_model()}), {platform.system()} {platform.release()}")
    print(f"software    : python {platform.python_version()}, torch {torch.__version__} "
          f"(default threads {default_threads}), nbgrader {nbgrader.__version__}")
    print(f"submissions : {args.n} x {args.rounds} round(s) (answer-key-filled release of the nbgrader course); "
          f"order per round: nbgrader, kit --jobs 1, kit --jobs 2, kit --jobs 1 --threads {cores}, "
          f"--jobs 1 and 2 again with --no-fork-server")
    t = assignment.training
    print(f"budget      : {t.epochs} epoch(s), {60_000 - t.holdout} training images, batch {t.batch_size}, "
          f"{t.optimizer} lr={t.lr} momentum={t.momentum}, seed {t.seed}; threshold {assignment.accuracy.threshold}")
    print(f"nbgrader    : course dropped {'; '.join(dropped)}; added hidden grade cell '{HIDDEN_ID}'")
    print("kit command : autograder grade <course>/submitted --out OUT --force --jobs 1|2")
    print(line)
    print(f"{'figure':<{w}} {'value':>12}  {'target':>10}  verdict")
    print(line)

    def row(name, value, target="", ok=None):
        print(f"{name:<{w}} {value:>12}  {target:>10}  {'' if ok is None else verdict(ok)}")

    row("nbgrader autograde, the class in one command: wall / N (s)", f"{nb_batch:.2f}")
    row("  steady state: first to last autograded notebook / (N - 1) (s)", f"{nb_steady:.2f}")
    row("  full marks (hidden accuracy test passed)", f"{nb_batch_ok}/{sum(b['n'] for b in nb_batches)}")
    row("nbgrader autograde --student, one command each, median (s)", f"{nb_med:.2f}")
    row("  of which the epoch inside the kernel, median (s)",
        f"{statistics.median(nb_epoch):.2f}" if nb_epoch else "n/a")
    row("  full marks (hidden accuracy test passed)", f"{nb_ok}/{n_total}")
    row("kit --jobs 1: batch wall / N (s)", f"{k1_per:.2f}")
    row("  steady state: first to last saved result / (N - 1) (s)", f"{k1_steady:.2f}")
    row(f"kit --jobs 2 (= cores: {cores}): batch wall / N (s)", f"{k2_per:.2f}")
    row("  steady state: 2nd to last saved result / (N - 2) (s)", f"{k2_steady:.2f}")
    row("kit --jobs 1 --no-fork-server (a sandbox per submission): steady state (s)", f"{own_steady[1]:.2f}")
    row("kit --jobs 2 --no-fork-server: steady state (s)", f"{own_steady[2]:.2f}")
    if all_core_runs:
        all_steady = statistics.median(g for run in all_core_runs for g in run["gaps"]) if args.n > 1 else \
            sum(r["wall"] for r in all_core_runs) / (args.n * len(all_core_runs))
        row(f"kit --jobs 1 --threads {cores} (every core trains): steady state (s)", f"{all_steady:.2f}")
        row("  speed-up over nbgrader / scaling of --jobs 2 over it",
            f"{nb_steady / all_steady:.2f}x / {all_steady / k2_steady:.2f}x")
    n_kit = len(k1) + len(k2) + sum(len(run["per_sub"]) for runs in (*own_runs.values(), all_core_runs)
                                    for run in runs)
    row("  full marks (kit, every way)", f"{n_kit - len(kit_bad)}/{n_kit}")
    row("  the fork server's gain, --jobs 1 / --jobs 2 (steady state, --no-fork-server / default)",
        f"{own_steady[1] / k1_steady:.2f}x / {own_steady[2] / k2_steady:.2f}x")
    row("speed-up: nbgrader / kit --jobs 1, steady state per submission", f"{speedup:.2f}x",
        f">= {TARGET_SPEEDUP:g}x", speedup >= TARGET_SPEEDUP)
    row("  as batch wall / N: nbgrader (one command) / kit --jobs 1", f"{nb_batch / k1_per:.2f}x")
    row("  nbgrader (--student each, median) / kit --jobs 1 batch wall / N", f"{nb_med / k1_per:.2f}x")
    row("  nbgrader / kit --jobs 2, steady state", f"{nb_steady / k2_steady:.2f}x")
    row("throughput kit --jobs 1 / --jobs 2 (submissions/min)", f"{60 / k1_per:.2f} / {60 / k2_per:.2f}")
    row("scaling: jobs 2 / jobs 1 throughput, steady state", f"{scaling:.2f}x", f">= {TARGET_SCALING:g}x",
        scaling >= TARGET_SCALING)
    row("  as batch wall / N", f"{k1_per / k2_per:.2f}x")
    row("peak resident memory per sandbox, direct runs (MB)", f"{peak:.0f}", f"<= {TARGET_RSS_MB:.0f}", peak <= TARGET_RSS_MB)
    row(f"training epoch inside the grader, {threads_j1} thread(s) (jobs 1), median of {args.epoch_rounds} (s)",
        f"{epochs[('grader', threads_j1)]:.2f}")
    row("overhead per submission = kit --jobs 1 steady state - epoch (s)", f"{overhead:.2f}",
        f"<= {TARGET_OVERHEAD:g}", overhead <= TARGET_OVERHEAD)
    print(line)
    print("where one submission's time goes (one direct run through Grader.observe / judge, jobs-1 threads):")
    row("  bare sandbox + python + import torch, for comparison (s)", f"{bare_j1['wall']:.2f}")
    if direct["fork_server"]:
        row("  fork server start, once per batch: interpreter, torch, lazy imports, data (s)",
            f"{direct['server_start']:.2f}")
        row("  from the fork to the student's first cell (s)", f"{ready:.2f}")
    else:
        row("  warm-up before the turn: interpreter, torch, lazy imports, data (s)", f"{ready:.2f}")
        row("    (in a batch it overlaps the run before; hidden when that run is longer)", "")
    row("  cells, shape / device / Net probes, training set-up (s)", f"{before_training:.2f}")
    row("    of which the answer cells (s)", f"{cells_s:.2f}")
    row("  training epoch (harness 'training' seconds)", f"{run_j1['training']:.2f}")
    row("  the student's evaluate() on the holdout, weights out (s)", f"{evaluate_s:.2f}")
    row("  exit, sandbox teardown, parse (s)", f"{rest:.2f}")
    row("  = sanitize + run ('seconds') (s)", f"{run_j1['seconds']:.2f}")
    row("  judge: hidden pytest checks in the grading process (s)", f"{run_j1['judge']:.2f}")
    row("  Grader start: MNIST, reference, trusted data, check session (s)", f"{direct['grader_init']:.2f}")
    print(line)
    print(f"training epoch, the harness in a sandbox vs the floor (same Net, batch, optimizer, resident data, a plain "
          f"process), alternating, median of {args.epoch_rounds}:")
    for th in sorted({threads_j1, threads_j2}):
        grader_s, floor_s = epochs[("grader", th)], epochs[("floor", th)]
        row(f"  {th} thread(s): grader / floor (s)", f"{grader_s:.2f} / {floor_s:.2f}",
            f"{grader_s / floor_s:.2f}x <= {TARGET_EPOCH:g}x", grader_s / floor_s <= TARGET_EPOCH)
        row("    the floor with glibc's default allocator settings (s)", f"{epochs[('floor, glibc malloc', th)]:.2f}")
        onednn = epochs[("floor, oneDNN", th)]
        row("    the floor with torch's default conv kernels, oneDNN (s)", f"{onednn:.2f}",
            f"the sandbox's kernels: {onednn / floor_s:.2f}x faster")
    if ("floor", cores) in epochs and cores not in (threads_j1, threads_j2):
        row(f"  (for comparison) the floor with {cores} threads (s)", f"{epochs[('floor', cores)]:.2f}")
    if ("floors at once", 1) in epochs and ("floor", 1) in epochs:
        together = epochs[("floors at once", 1)]
        ceiling = cores * epochs[("floor", 1)] / together
        row(f"  {cores} one-thread floors training at once: each (s)", f"{together:.2f}")
        row(f"    so --jobs {cores} can scale at most, with no overhead at all", f"{ceiling:.2f}x",
            f"({TARGET_SCALING:g}x)")
    if nb_epoch:
        floor_j1 = epochs[("floor", threads_j1)]
        row(f"  nbgrader kernel (DataLoader + transforms, {nb_rows[0]['threads']} threads) / {threads_j1}-thread floor",
            f"{statistics.median(nb_epoch):.2f} / {floor_j1:.2f}", f"{statistics.median(nb_epoch) / floor_j1:.2f}x")
    print(line)
    walls1 = ", ".join(f"{r['wall']:.1f}" for r in kit_runs[1])
    walls2 = ", ".join(f"{r['wall']:.1f}" for r in kit_runs[2])
    nb_each = ", ".join(f"{r['seconds']:.1f}" for r in nb_rows)
    nb_walls = ", ".join(f"{b['wall']:.1f}" for b in nb_batches)
    print(f"batch walls (s): kit --jobs 1: {walls1}; kit --jobs 2: {walls2}; nbgrader one command: {nb_walls}; "
          f"nbgrader --student each: {nb_each}")
    if kit_bad:
        print(f"kit submissions without full marks: {kit_bad}")
    print("machine noise: CPU used by other processes while each phase ran (cores on average, of "
          f"{cores}); load average at the end: {loadavg()}")
    nb_phases = [(name, wall, foreign) for name, wall, foreign, _ in METER.phases if " nbgrader " in name]
    if nb_phases:
        print(f"  nbgrader, per submission: most {max(f for *_, f in nb_phases):.2f}, "
              f"mean {sum(f * w for _, w, f in nb_phases) / sum(w for _, w, _ in nb_phases):.2f}")
    print("  " + "; ".join(f"{name} {foreign:.2f} ({wall:.0f} s)" for name, wall, foreign, _ in METER.phases
                           if " nbgrader " not in name))
    print(f"  waited for quiet: {METER.waited:.0f} s in all (--wait-quiet {args.wait_quiet:g})")
    print(f"  hypervisor steal, most in one phase: {max(st for *_, st in METER.phases):.2f} cores")
    if max(f for _, _, f, _ in METER.phases) > 0.2:
        print("  WARNING: the machine was not quiet; two-thread torch on two cores slows down sharply when another "
              "process wants a core, so the figures above are pessimistic for the two-thread runs.")
    print(f"total benchmark time: {time.monotonic() - T0:.0f} s")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
