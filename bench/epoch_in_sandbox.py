"""Where does the training epoch lose time inside the grader? The answer key's epoch four ways, alternating:

1. the harness in a bubblewrap sandbox of its own, and forked by the fork server (what grading does on CPU
   as root; forkserver.py),
2. the same harness through the sandbox module's fallback (same shim, nice value, environment and limits;
   no namespaces),
3. the floor: the lecture's Net, the answer key's loop, the same data and batches, in a plain Python
   process of its own, with the convolution kernels the sandbox uses (harness.use_small_conv_kernels), once
   with the allocator settings the sandbox gets (observe.MALLOC_TUNABLES) and once with glibc's defaults, to
   show what those settings are worth, and once with torch's default kernels (oneDNN), as an ordinary loop
   runs, to show what the kernel choice is worth;
4. as many floors as there are cores, training at the same moment: how much slower each epoch gets when
   the cores are all busy, which caps what --jobs can gain on this machine, whatever the grader does.

    MNIST_DIR=... .venv/bin/python bench/epoch_in_sandbox.py [--rounds 3] [--threads 1]

Prints each round's seconds and the medians. Figures on a shared machine drift within minutes: only the
alternation makes them comparable.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORES = os.cpu_count() or 1
sys.path.insert(0, str(REPO))

from autograder import forkserver, harness, mnist, observe, reference, sandbox  # noqa: E402
from autograder.course import Course  # noqa: E402
from autograder.sanitize import sanitize  # noqa: E402


def harness_epoch(assignment, clean, probes, data, threads: int, bwrap: bool, server=None) -> float:
    """The harness's epoch seconds: in a sandbox of its own (bwrap or the fallback), or forked by `server`."""
    settings = observe.RunSettings(threads=threads)
    plan = observe.plan_for(assignment, list(clean.cells), probes.SANDBOX, settings, data)
    real = sandbox.launch.bwrap_available
    if not bwrap:
        sandbox.launch.bwrap_available = lambda: False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the fallback's loud warning, expected here
            sandbox.launch.log.disabled = not bwrap  # and its log line
            run, obs = observe.run(plan, limits=assignment.limits, data=data, settings=settings, server=server,
                                   records=observe.schema(probes.RECORDS))
    finally:
        sandbox.launch.bwrap_available = real
        sandbox.launch.log.disabled = False
    if run.sandboxed != bwrap or not obs.first("training"):
        raise SystemExit(f"the run did not train as expected: sandboxed={run.sandboxed}\n{run.stderr[-2000:]}")
    return obs.first("training")["seconds"]


def floor_epoch(assignment, threads: int, ready=None, default_kernels: bool = False) -> tuple[float, float]:
    """Seconds of the epoch, and minor page faults per batch while it ran. `ready` is called when all is set
    up and the epoch is about to start (floors_at_once starts several epochs together)."""
    import resource

    import torch

    torch.set_num_threads(threads)
    if not default_kernels:
        harness.use_small_conv_kernels(torch)
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
    if ready:
        ready()
    faults, started = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    ref.train_one_epoch(net, loader, opt, torch.device("cpu"))
    seconds = time.perf_counter() - started
    return seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / len(loader)


FAULTS = {True: [], False: []}  # minor page faults per batch in the floor, by allocator settings (tuned or not)


def floor_in_child(threads: int, tuned: bool, default_kernels: bool = False) -> float:
    """The floor in a fresh process: glibc reads GLIBC_TUNABLES only when a process starts."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tuned:
        env["GLIBC_TUNABLES"] = observe.MALLOC_TUNABLES
    argv = [sys.executable, __file__, "--floor-child", "--threads", str(threads)]
    out = subprocess.run(argv + ["--default-kernels"] * default_kernels, env=env,
                         capture_output=True, text=True, check=True).stdout
    seconds, faults = map(float, out.split()[-2:])
    if not default_kernels:
        FAULTS[tuned].append(faults)
    return seconds


def floors_at_once(count: int, threads: int) -> float:
    """Mean epoch seconds of `count` floors (sandbox allocator settings) training at the same moment, each in
    its own process: what the machine gives parallel epochs, whatever the grader does around them. With
    `count` = cores, cores x (one floor alone) / this is the most any --jobs can scale on this machine."""
    env = dict(os.environ, GLIBC_TUNABLES=observe.MALLOC_TUNABLES)
    argv = [sys.executable, __file__, "--floor-child", "--wait-go", "--threads", str(threads)]
    children = [subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for _ in range(count)]
    try:
        for child in children:  # each has imported torch and built its batches
            if child.stdout.readline().strip() != "ready":
                raise SystemExit("a parallel floor failed before its epoch")
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        seconds = [float(child.communicate()[0].split()[-2]) for child in children]
    finally:
        for child in children:
            child.kill()
    return statistics.mean(seconds)


def _wait_for_go() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--floor-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--wait-go", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--default-kernels", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_child:
        print(*floor_epoch(Course.at(REPO).lab("cnn_mnist"), args.threads, _wait_for_go if args.wait_go else None,
                           args.default_kernels))
        return 0
    assignment = Course.at(REPO).lab("cnn_mnist")
    clean = sanitize((REPO / "solutions" / "cnn_mnist" / "cnn_mnist.ipynb").read_bytes(), assignment)
    probes = observe.load_probes(assignment)
    data = observe.DataDir()
    server = None
    if forkserver.usable("cpu"):
        server = observe.start_fork_server(assignment, observe.RunSettings(threads=args.threads), data)
    ways = {"harness in bwrap": lambda: harness_epoch(assignment, clean, probes, data, args.threads, True),
            **({"harness, forked": lambda: harness_epoch(assignment, clean, probes, data, args.threads, True, server)}
               if server else {}),
            "harness, fallback": lambda: harness_epoch(assignment, clean, probes, data, args.threads, False),
            "floor": lambda: floor_in_child(args.threads, tuned=True),
            "floor, glibc malloc": lambda: floor_in_child(args.threads, tuned=False),
            "floor, oneDNN": lambda: floor_in_child(args.threads, tuned=True, default_kernels=True),
            f"{CORES} floors at once": lambda: floors_at_once(CORES, args.threads)}
    seconds = {name: [] for name in ways}
    try:
        for rnd in range(1, args.rounds + 1):
            for name, way in ways.items():
                seconds[name].append(way())
                print(f"round {rnd}: {name:<19} {seconds[name][-1]:6.2f} s", flush=True)
    finally:
        if server:
            server.close()
        data.close()
    print(f"\n{args.threads} torch thread(s), {args.rounds} rounds, median epoch seconds:")
    floor = statistics.median(seconds["floor"])
    for name, values in seconds.items():
        print(f"  {name:<19} {statistics.median(values):6.2f} s  ({statistics.median(values) / floor:.2f}x the floor)")
    print(f"minor page faults per batch in the floor, median: {statistics.median(FAULTS[True]):.2f} with the sandbox's "
          f"allocator settings, {statistics.median(FAULTS[False]):.0f} with glibc's defaults")
    together = statistics.median(seconds[f"{CORES} floors at once"])
    print(f"{CORES} floors training at once, each {args.threads} thread(s): {together:.2f} s each, so {CORES} jobs can "
          f"at most scale {CORES * floor / together:.2f}x over one on this machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
