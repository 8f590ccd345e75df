"""GPU batch grading: N copies of the answer key with `autograder grade --device cuda`, on a machine with a GPU.

Prints submissions per minute (target: at least 100 for 64 copies on one H100/H200), the GPU memory each
sandbox used (sampled with nvidia-smi while the batch runs), and whether CUDA and CPU grading give the same
points for the sample submissions (every check, every student). Exit status 1 when a copy of the answer key
is not full marks or when the two devices disagree.

    MNIST_DIR=... python bench/gpu_batch.py [--n 64] [--jobs 8] [--compare samples/cnn_mnist] [--cpu-jobs 4]

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


def grade(folder: Path, out: Path, device: str, jobs: int) -> float:
    argv = [sys.executable, "-m", "autograder.cli", "grade", str(folder), "--assignment", "cnn_mnist", "--out", str(out),
            "--force", "--device", device, "--jobs", str(jobs)]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=8, help="sandboxes sharing the GPU (default 8)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--compare", type=Path, default=REPO / "samples" / "cnn_mnist",
                        help="submissions graded on both devices (default samples/cnn_mnist)")
    parser.add_argument("--cpu-jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    args = parser.parse_args()
    if not os.environ.get("MNIST_DIR"):
        parser.error("MNIST_DIR is not set")
    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    ok = True
    try:
        copies = tmp / "copies"
        copies.mkdir()
        for i in range(args.n):
            shutil.copy(KEY, copies / f"key{i:03d}.ipynb")
        with GpuMemory() as mem:
            wall = grade(copies, tmp / "out-copies", args.device, args.jobs)
        got = results(tmp / "out-copies")
        full = sum(r["status"] == "graded" and sum(r["parts"].values()) == sum(r["max_parts"].values())
                   for r in got.values())
        ok &= full == args.n
        print(f"command : {' '.join([sys.executable, *sys.argv])}")
        print(f"{args.n} copies of the answer key, --device {args.device} --jobs {args.jobs}: {wall:.1f} s, "
              f"{60 * args.n / wall:.1f} submissions/min (target >= 100 on one H100/H200); full marks {full}/{args.n}")
        if mem.per_process:
            print(f"GPU memory per sandbox (nvidia-smi, most one process held): {max(mem.per_process.values())} MiB; "
                  f"all at once, most: {mem.total} MiB; processes seen: {len(mem.per_process)}")
        on = {}
        for device, jobs in ((args.device, args.jobs), ("cpu", args.cpu_jobs)):
            grade(args.compare, tmp / f"out-{device}", device, jobs)
            on[device] = results(tmp / f"out-{device}")
        print(f"{'student':<24} {args.device:>8} {'cpu':>8}  same checks")
        for sid in sorted(on["cpu"]):
            a, b = on[args.device].get(sid), on["cpu"][sid]
            checks = lambda r: {(c["part"], c["name"]): round(c["points"], 4) for c in r.get("checks", [])}  # noqa: E731
            same = a is not None and checks(a) == checks(b) and a["status"] == b["status"]
            ok &= same
            total = lambda r: sum(r["parts"].values()) if r else float("nan")  # noqa: E731
            print(f"{sid:<24} {total(a):>8.2f} {total(b):>8.2f}  {'yes' if same else 'NO'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
