"""Where does the training epoch lose time inside the grader? The answer key's epoch three ways, alternating:

1. the harness in a bubblewrap sandbox (what grading does),
2. the same harness through the sandbox module's fallback (same shim, nice value, environment and limits;
   no namespaces),
3. in this process: the lecture's Net, the answer key's loop, the same data and batches (the floor).

    MNIST_DIR=... .venv/bin/python bench/epoch_in_sandbox.py [--rounds 3] [--threads 1]

Prints each round's seconds and the medians. Figures on a shared machine drift within minutes: only the
alternation makes them comparable.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from autograder import config, mnist, observe, reference, sandbox  # noqa: E402
from autograder.sanitize import sanitize  # noqa: E402


def harness_epoch(assignment, clean, probes, data, threads: int, bwrap: bool) -> float:
    settings = observe.RunSettings(threads=threads)
    plan = observe.plan_for(assignment, list(clean.cells), probes.SHAPE_PROBES, settings, data)
    real = sandbox.bwrap_available
    if not bwrap:
        sandbox.bwrap_available = lambda: False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallback's loud warning, expected here
            run, obs = observe.run(plan, limits=assignment.limits, data=data, settings=settings)
    finally:
        sandbox.bwrap_available = real
    if run.sandboxed != bwrap or not obs.first("training"):
        raise SystemExit(f"the run did not train as expected: sandboxed={run.sandboxed}\n{run.stderr[-2000:]}")
    return obs.first("training")["seconds"]


def floor_epoch(assignment, threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    t = assignment.training
    ref = reference.load(assignment)
    train = mnist.load_split("train")
    n = len(train.labels) - t.holdout
    images, labels = mnist.normalize(train.images[:n]).contiguous(), train.labels[:n].long()
    torch.manual_seed(t.seed)
    net = ref.Net()
    opt = torch.optim.SGD(net.parameters(), lr=t.lr, momentum=t.momentum)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(t.seed))
    loader = [(images[order[s:s + t.batch_size]], labels[order[s:s + t.batch_size]]) for s in range(0, n, t.batch_size)]
    started = time.perf_counter()
    ref.train_one_epoch(net, loader, opt, torch.device("cpu"))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    assignment = config.find("cnn_mnist")
    clean = sanitize((REPO / "solutions" / "cnn_mnist" / "cnn_mnist.ipynb").read_bytes(), assignment)
    probes = observe.load_probes(assignment)
    data = observe.DataDir()
    ways = {"harness in bwrap": lambda: harness_epoch(assignment, clean, probes, data, args.threads, True),
            "harness, fallback": lambda: harness_epoch(assignment, clean, probes, data, args.threads, False),
            "floor, in-process": lambda: floor_epoch(assignment, args.threads)}
    seconds = {name: [] for name in ways}
    try:
        for rnd in range(1, args.rounds + 1):
            for name, way in ways.items():
                seconds[name].append(way())
                print(f"round {rnd}: {name:<18} {seconds[name][-1]:6.2f} s", flush=True)
    finally:
        data.close()
    print(f"\n{args.threads} torch thread(s), {args.rounds} rounds, median epoch seconds:")
    floor = statistics.median(seconds["floor, in-process"])
    for name, values in seconds.items():
        print(f"  {name:<18} {statistics.median(values):6.2f} s  ({statistics.median(values) / floor:.2f}x the floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
