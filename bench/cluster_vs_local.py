#!/usr/bin/env python
"""Benchmark (issue 18): the cluster path against the local pool on this machine, and Dask's own cost per task.

Run by hand; it prints figures and is not a test. In one run it

1. measures the scheduler's own cost per task: a real Dask scheduler and two worker processes (started with the
   `dask` command, as a TA starts them), and a few thousand tasks that do nothing, sent as the kit sends its
   submissions (cluster.ClusterPool: a window of tasks in flight, each asking for one grading slot, results taken
   as they finish); the figure is wall time / tasks;
2. grades the same N copies of the answer key, alternating round by round, with `autograder grade --jobs 2` and with
   `autograder grade --cluster ADDRESS` on a fresh scheduler and two one-thread workers, each batch a subprocess;
   per-submission figures are batch wall / N and the steady state (results' write times from the second result
   on: the first wave of both is two submissions at once), as bench/grade_vs_nbgrader.py measures them;
3. prints the table, the ratio of throughputs (target: the cluster at least 0.9 of the local pool), and the
   figures the README's estimate for large courses is computed from.

Usage:  MNIST_DIR=/path/to/mnist .venv/bin/python bench/cluster_vs_local.py [--n 8] [--rounds 1] [--tasks 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # tests/mutants.py, read only: the answer key as a student notebook
BIN = Path(sys.executable).parent
TARGET_RATIO = 0.9  # cluster throughput / local throughput, two workers against --jobs 2


def start_cluster(workers: int, log: Path) -> tuple[str, list[subprocess.Popen]]:
    """`dask scheduler` and `dask worker --nworkers N --nthreads 1`, as a TA would start them; returns the address."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    address_file = log.parent / f"{log.stem}.scheduler.json"
    out = log.open("ab")
    scheduler = subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--dashboard-address", ":0", "--scheduler-file", str(address_file)],
                                 stdout=out, stderr=out, env=env)
    deadline = time.monotonic() + 60
    while not address_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    address = json.loads(address_file.read_text())["address"]
    worker = subprocess.Popen([str(BIN / "dask"), "worker", address, "--nworkers", str(workers), "--nthreads", "1",
                               "--memory-limit", "0", "--no-dashboard"], stdout=out, stderr=out, env=env)
    from distributed import Client

    with Client(address) as client:
        client.wait_for_workers(workers, timeout=120)
    return address, [worker, scheduler]


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scheduler_cost(tasks: int, folder: Path) -> dict:
    """Wall time per task of `tasks` no-op tasks through the kit's pattern (a window, one slot each)."""
    from distributed import Client, as_completed

    address, procs = start_cluster(2, folder / "scheduler-cost.log")
    try:
        with Client(address) as client:
            client.run(_offer_slot)  # what slot.GradingSlot does once a worker passed its checks
            figures = {}
            for window in (16, tasks):  # the kit's window; and every task at once, for comparison
                started = time.perf_counter()
                finished = as_completed(loop=client.loop)
                left, held = tasks, 0
                while left or held:
                    while left and held < window:
                        finished.add(client.submit(_nothing, left, key=f"nothing-{window}-{left}",
                                                   resources={"grading": 1}, pure=False))
                        left, held = left - 1, held + 1
                    for future in finished.next_batch(block=True):
                        future.result()
                        future.release()
                        held -= 1
                figures[window] = (time.perf_counter() - started) / tasks
            return figures
    finally:
        stop(procs)


def _nothing(x):
    return x


async def _offer_slot(dask_worker=None):
    await dask_worker.set_resources(grading=1)


def write_class(folder: Path, n: int) -> None:
    import mutants

    folder.mkdir(parents=True)
    for i in range(n):
        mutants.write(mutants.filled(), folder / f"s{i:03d}.ipynb")


def batch(kind: str, subs: Path, folder: Path, rnd: int) -> dict:
    out = folder / f"out-{kind}-{rnd}"
    command = [str(BIN / "autograder"), "grade", str(subs), "--assignment", "cnn_mnist", "--out", str(out),
               "--device", "cpu", "--lang", "en", "--db", f"sqlite:///{out}/gradebook.db"]
    procs = []
    if kind == "local":
        command += ["--jobs", "2"]
    else:
        address, procs = start_cluster(2, folder / f"cluster-{rnd}.log")
        command += ["--cluster", address]
    try:
        started = time.time()
        proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.time() - started
    finally:
        stop(procs)
    if proc.returncode != 0:
        sys.exit(f"{kind} batch failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    results = sorted(out.glob("results/*.json"), key=lambda p: p.stat().st_mtime)
    totals = [sum(json.loads(p.read_text())["parts"].values()) for p in results]
    if len(results) != len(list(subs.glob("*.ipynb"))) or any(t != 100 for t in totals):
        sys.exit(f"{kind} batch: expected every copy of the answer key at 100, got {totals}")
    times = [p.stat().st_mtime for p in results]
    steady = (times[-1] - times[1]) / (len(times) - 2)
    summary = "\n".join(line for line in proc.stdout.splitlines() + proc.stderr.splitlines()
                        if line.startswith("cluster:"))
    return {"wall": wall, "per_sub": wall / len(times), "steady": steady, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8, help="submissions per batch (default 8)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of local-then-cluster batches (default 1)")
    parser.add_argument("--tasks", type=int, default=3000, help="no-op tasks for the scheduler's cost (default 3000)")
    args = parser.parse_args()
    if not os.environ.get("MNIST_DIR"):
        sys.exit("MNIST_DIR must name the folder with the four MNIST .gz files")
    if args.n < 3:
        sys.exit("--n must be at least 3: the steady state starts at the second result")
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        folder = Path(tmp)
        cost = scheduler_cost(args.tasks, folder)
        print(f"scheduler: {args.tasks} no-op tasks, window 16: {cost[16] * 1000:.2f} ms/task; all at once: "
              f"{cost[args.tasks] * 1000:.2f} ms/task", flush=True)
        subs = folder / "subs"
        write_class(subs, args.n)
        runs = {"local": [], "cluster": []}
        for rnd in range(args.rounds):
            for kind in ("local", "cluster"):
                figures = batch(kind, subs, folder, rnd)
                runs[kind].append(figures)
                print(f"round {rnd + 1} {kind:7s}: wall {figures['wall']:.1f} s, batch wall/N {figures['per_sub']:.2f} s, "
                      f"steady {figures['steady']:.2f} s/submission" + (f"\n  {figures['summary']}" if figures['summary'] else ""),
                      flush=True)
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("wall", "per_sub", "steady")} for k, v in runs.items()}
    ratio = med["local"]["steady"] / med["cluster"]["steady"]
    ratio_wall = med["local"]["per_sub"] / med["cluster"]["per_sub"]
    print("\n| N = %d, %d round(s) | local --jobs 2 | cluster, 2 workers |" % (args.n, args.rounds))
    print("|---|---|---|")
    print(f"| batch wall / N | {med['local']['per_sub']:.2f} s | {med['cluster']['per_sub']:.2f} s |")
    print(f"| steady state per submission | {med['local']['steady']:.2f} s | {med['cluster']['steady']:.2f} s |")
    print(f"\nthroughput, cluster / local: steady state {ratio:.2f} (target >= {TARGET_RATIO}: "
          f"{'PASS' if ratio >= TARGET_RATIO else 'MISS'}); batch wall {ratio_wall:.2f}")
    print(f"scheduler cost per task: {cost[16] * 1000:.2f} ms (window 16)")
    per_core = med["cluster"]["steady"] * 2  # two one-core slots: one slot's seconds per submission
    print(f"one slot's seconds per submission here (steady state x 2 slots): {per_core:.1f} s")


if __name__ == "__main__":
    main()
