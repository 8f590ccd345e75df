"""GPU batch grading: N copies of the answer key with `autograder grade --device cuda`, on a machine with a GPU.

Prints submissions per minute (target: at least 100 for 64 copies on one H100/H200), the GPU memory each
sandbox used (sampled with nvidia-smi while the batch runs), and whether CUDA and CPU grading give the same
points, part by part and check by check, for the sample submissions and the one-mistake mutants of
tests/mutants.py. Exit status 1 when a copy of the answer key is not full marks or when the two devices disagree.

    MNIST_DIR=... python bench/gpu_batch.py [--n 64] [--jobs 8] [--compare FOLDER] [--cpu-jobs 4]

Not a test: CI has no GPU. `--device cpu` runs the same script without one (to try it out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KEY = REPO / "solutions" / "cnn_mnist" / "cnn_mnist.ipynb"


def grade(folder: Path, out: Path, device: str, jobs: int, *more: str) -> float:
    argv = [sys.executable, "-m", "autograder.cli", "grade", str(folder), "--assignment", "cnn_mnist", "--out", str(out),
            "--force", "--device", device, "--jobs", str(jobs), *more]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):  # 1: some submission lost points, still a finished batch
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall


def results(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "results").glob("*.json"))}


class GpuMemory:
    """Samples nvidia-smi's per-process GPU memory while a batch runs: the most one process held, and the most
    all of them held at once."""

    def __init__(self):
        self.per_process, self.total, self._stop = {}, 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.wait(0.5):
            try:
                text = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                       "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout
            except OSError:
                return
            now = 0
            for line in text.strip().splitlines():
                pid, mb = (x.strip() for x in line.split(","))
                self.per_process[pid] = max(self.per_process.get(pid, 0), int(mb))
                now += int(mb)
            self.total = max(self.total, now)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def samples_and_mutants(folder: Path) -> Path:
    """The lab's bundled samples and every one-mistake mutant of tests/mutants.py, in one folder."""
    sys.path.insert(0, str(REPO / "tests"))
    import mutants  # noqa: E402 - the tests' own builders, read-only

    folder.mkdir(parents=True)
    for nb in sorted((REPO / "samples" / "cnn_mnist").glob("*.ipynb")):
        shutil.copy(nb, folder / nb.name)
    for m in mutants.MUTANTS:
        if m.lab == "cnn_mnist":
            mutants.write(mutants.mutant_notebook(m), folder / f"mutant_{m.name}.ipynb")
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=8, help="sandboxes sharing the GPU (default 8)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--compare", type=Path, default=None,
                        help="submissions graded on both devices (default: samples/cnn_mnist and the mutants)")
    parser.add_argument("--cpu-jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--pool-n", type=int, default=0,
                        help="copies for this machine's own pool when --cluster-jobs comes first (default: --n)")
    parser.add_argument("--cluster-jobs", type=int, default=0,
                        help="also grade the copies with --cluster local --jobs N: N grading processes, a judge "
                             "each (0: not)")
    args = parser.parse_args()
    if not os.environ.get("MNIST_DIR"):
        parser.error("MNIST_DIR is not set")
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    ok = True
    print(f"command : {' '.join([sys.executable, *sys.argv])}")
    # The pool with a judge per process first, then the comparison, then this machine's own pool (one judge):
    # on a GPU machine the device time is short, and what comes last is what a time limit cuts.
    pools = [("--cluster local", args.cluster_jobs, ("--cluster", "local"))] if args.cluster_jobs else []
    pools.append(("this machine's pool", args.jobs, ()))
    try:
        copies = tmp / "copies"
        copies.mkdir()
        for i in range(args.n):
            shutil.copy(KEY, copies / f"key{i:03d}.ipynb")

        def batch(label: str, jobs: int, more: tuple, n: int) -> None:
            nonlocal ok
            out, folder = tmp / f"out-copies-{len(more)}", tmp / f"copies-{len(more)}"
            folder.mkdir()
            for nb in sorted(copies.iterdir())[:n]:
                shutil.copy(nb, folder / nb.name)
            with GpuMemory() as mem:
                wall = grade(folder, out, args.device, jobs, *more)
            got = results(out)
            full = sum(r["status"] == "graded" and sum(r["parts"].values()) == sum(r["max_parts"].values())
                       for r in got.values())
            ok &= full == n
            print(f"{n} copies of the answer key, --device {args.device} --jobs {jobs}, {label}: {wall:.1f} s, "
                  f"{60 * n / wall:.1f} submissions/min (target >= 100 on one H100/H200); full marks {full}/{n}")
            if mem.per_process:
                print(f"  GPU memory (nvidia-smi): most one process held {max(mem.per_process.values())} MiB; all at "
                      f"once, most: {mem.total} MiB; processes seen: {len(mem.per_process)}")

        batch(*pools[0], args.n)
        compare = args.compare or samples_and_mutants(tmp / "compare")
        more = pools[0][2]
        runs = [(args.device, pools[0][1]), ("cpu", args.cpu_jobs)]
        graded, walls = [], []
        for i, (device, jobs) in enumerate(runs):
            walls.append(grade(compare, tmp / f"out-{i}", device, jobs, *more))
            graded.append(results(tmp / f"out-{i}"))
        print(f"\n{len(graded[1])} notebooks graded with --device {args.device} --jobs {runs[0][1]} ({walls[0]:.1f} s) "
              f"and --device cpu --jobs {args.cpu_jobs} ({walls[1]:.1f} s){', ' + pools[0][0] if more else ''}:")
        parts = list(next(iter(graded[1].values()))["max_parts"])
        print(f"{'student':<28} {'device':<7}" + "".join(f"{p:>10}" for p in parts) + f"{'total':>8}  same")
        checks = lambda r: {(c["part"], c["name"]): round(c["points"], 4) for c in r.get("checks", [])}  # noqa: E731
        for sid in sorted(graded[1]):
            a, b = graded[0].get(sid), graded[1][sid]
            same = a is not None and checks(a) == checks(b) and a["status"] == b["status"]
            ok &= same
            for i, ((device, _), r) in enumerate(zip(runs, (a, b))):
                cells = "".join(f"{r['parts'][p]:>10.2f}" if r else f"{'-':>10}" for p in parts)
                total = f"{sum(r['parts'].values()):>8.2f}" if r else f"{'-':>8}"
                print(f"{sid if i == 0 else '':<28} {device:<7}{cells}{total}  "
                      f"{('yes' if same else 'NO') if i == 0 else ''}")
            if not same and a is not None:
                for key in sorted(set(checks(a)) | set(checks(b))):
                    if checks(a).get(key) != checks(b).get(key):
                        print(f"    {key[1]}: {args.device} {checks(a).get(key)}, cpu {checks(b).get(key)}")
        if len(pools) > 1:
            print()
            batch(*pools[1], args.pool_n or args.n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
