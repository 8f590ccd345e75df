"""One submission's sandboxed run: build the plan, run the harness under limits, read back what it observed.

What crosses back is data only: JSON lines, checked record by record against the shapes the harness writes
(`Observations`), with tensors as safetensors bytes. Anything malformed is dropped and noted, never executed.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import datasets
from .config import Assignment, ConfigError, runtime_sources
from .forkserver import ForkServer
from .sandbox import Limits, Mount, RunResult, run_sandboxed
from .sanitize import Cell

HARNESS = Path(__file__).with_name("harness.py")
# Records the engine's own side of a run writes, with the fields each must carry and how many it writes at
# most: the channel (start, ready, cells, a step's failure, done) and the training loop's trace, which the
# judge replays (replay.py). A lab adds the records of its own steps (its hidden/probes.py: RECORDS). A run's
# snapshots (harness.Spy.snapshot) are bounded by the plan's max_snapshots, which is at most MAX_SNAPSHOTS.
MAX_SNAPSHOTS = 400
ENGINE_RECORDS = {
    "start": ({"pid"}, 1),
    "ready": (set(), 1),
    "cell": ({"id", "ok"}, 64),
    "training": ({"ok"}, 1),
    "snapshot": ({"event", "state"}, MAX_SNAPSHOTS),
    "weights": ({"weights"}, 1),
    "step_error": ({"step", "error"}, 16),
    "done": (set(), 1),
}
MAX_TENSOR_BYTES = 8 << 20  # far above the lecture net's 29 kB of weights; a 10^9-parameter model is refused
# Bounds on everything a record may hold, whoever wrote it: the judge never meets a value it can not handle
# in bounded time (a 10^599-sized dimension, a list of millions, a tuple nested thousands deep).
MAX_DEPTH = 8  # of nested lists and objects, the record itself counted
MAX_ITEMS = 1024  # in any list or object
MAX_STRING = 4096  # characters of any string but the fields below
MAX_INT = 2**53  # in magnitude: what a float carries exactly
BIG_STRINGS = {  # fields that are long by nature, with their own caps
    "weights": MAX_TENSOR_BYTES * 4 // 3 + 4, "state": MAX_TENSOR_BYTES * 4 // 3 + 4,
    "output": MAX_TENSOR_BYTES * 4 // 3 + 4, "events": 1 << 20,
}


@dataclass
class Observations:
    records: dict[str, list[dict]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what only the submission's own writes produce
    rejected: dict[str, str] = field(default_factory=dict)  # kind -> why a record of it could not be used

    def first(self, kind: str) -> dict | None:
        found = self.records.get(kind)
        return found[0] if found else None

    def all(self, kind: str) -> list[dict]:
        return self.records.get(kind, [])

    @property
    def finished(self) -> bool:
        return "done" in self.records


def schema(lab_records: dict | None = None) -> dict:
    """The records a run of this lab may write: the engine's and the lab's (kind -> (fields, at most))."""
    merged = dict(ENGINE_RECORDS)
    for kind, (fields, most) in (lab_records or {}).items():
        merged.setdefault(kind, (set(fields), int(most)))
    return merged


def parse(data: bytes, records: dict | None = None) -> Observations:
    """JSON lines into records, each checked on its own against `records` (schema(); the engine's alone when
    None): one that breaks a bound is rejected (the checks that
    need it lose their points, saying why), and lines that the harness never writes (not JSON, an unknown
    kind, one record too many, anything after the end) are what only tampering with the channel produces."""
    obs, known = Observations(), records or ENGINE_RECORDS
    lines = data.split(b"\n")
    # The last line is unfinished when the run was killed mid-write: that is a crash, not tampering.
    for number, line in enumerate(lines[:-1], 1):
        try:
            record = json.loads(line)
        except RecursionError:
            kind = _kind_of(line, known)
            if kind is None:
                obs.problems.append(f"line {number}: not JSON")
            else:
                obs.rejected.setdefault(kind, "nested too deeply")
            continue
        except (ValueError, UnicodeDecodeError):  # ValueError: also an integer of more than 4,300 digits
            obs.problems.append(f"line {number}: not JSON")
            continue
        kind = record.get("kind") if isinstance(record, dict) else None
        if kind not in known:
            obs.problems.append(f"line {number}: unknown record")
            continue
        required, most = known[kind]
        seen = obs.records.setdefault(kind, [])
        if "done" in obs.records and kind != "done":
            obs.problems.append(f"line {number}: {kind} record after the end")
            continue
        if len(seen) >= most:
            obs.problems.append(f"line {number}: surplus {kind} record")
            continue
        why = (f"lacks {', '.join(sorted(required - record.keys()))}" if not required <= record.keys()
               else out_of_bounds(record))
        if why:
            obs.rejected.setdefault(kind, why)
            seen.append(None)  # counted, so a flood of rejected records is still surplus
            continue
        seen.append(record)
    for kind in obs.records:
        obs.records[kind] = [r for r in obs.records[kind] if r is not None]
    return obs


def _kind_of(line: bytes, known: dict) -> str | None:
    """The kind of a line json can not read, from its start as the harness writes it ({"kind": "...", ...})."""
    head = line[:40].decode("ascii", "replace")
    if head.startswith('{"kind": "'):
        kind = head[10:].split('"', 1)[0]
        return kind if kind in known else None
    return None


def out_of_bounds(value, depth: int = 1, key: str = "") -> str | None:
    """Why `value` breaks the bounds above, or None. Iterative in spirit: depth is capped before recursing."""
    if depth > MAX_DEPTH:
        return "nested too deeply"
    if isinstance(value, str):
        cap = BIG_STRINGS.get(key, MAX_STRING)
        return f"a string of {len(value)} characters in {key or 'a field'}" if len(value) > cap else None
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return None
    if isinstance(value, int):
        return f"a number too large in {key or 'a field'}" if abs(value) > MAX_INT else None
    if isinstance(value, (list, dict)):
        if len(value) > MAX_ITEMS:
            return f"{len(value)} items in {key or 'a field'}"
        items = value.items() if isinstance(value, dict) else ((key, v) for v in value)
        for k, v in items:
            if not isinstance(k, str):
                return "a key that is not text"
            why = out_of_bounds(v, depth + 1, k)
            if why:
                return why
        return None
    return "a value of an unknown type"


def tensors(b64: str | None) -> dict | None:
    """Decode safetensors bytes from a record; None when absent, too large or malformed."""
    if not isinstance(b64, str) or len(b64) > MAX_TENSOR_BYTES * 4 // 3 + 4:
        return None
    try:
        from safetensors.torch import load

        return load(base64.b64decode(b64, validate=True))
    except (binascii.Error, ValueError, RuntimeError, Exception):  # safetensors raises its own error type
        return None


@dataclass(frozen=True)
class RunSettings:
    device: str = "cpu"
    threads: int = 1
    require_sandbox: bool = False
    seed_offset: int = 0  # a second seed for submissions near the threshold
    gpu_memory_fraction: float = 1.0  # of the GPU's memory, per sandbox (CUDA only)


def load_probes(assignment: Assignment):
    """The lab's hidden probes module (assignments/<name>/hidden/probes.py), grader-side: RECORDS (the records
    its steps write: kind -> (fields, at most)), SANDBOX (what its steps are given, as the plan's "probes") and
    PROBES (the hidden inputs as its checks see them, with what only the checks may know)."""
    path = assignment.folder / "hidden" / "probes.py"
    for needed, what in ((path, "its hidden probe inputs"), (assignment.runtime, "its steps inside the sandbox")):
        if not needed.is_file():
            raise ConfigError(f"the lab {assignment.name} has no {needed.relative_to(assignment.folder)} ({what})")
    spec = importlib.util.spec_from_file_location(f"hidden_probes_{assignment.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, kind in (("RECORDS", dict), ("SANDBOX", dict), ("PROBES", dict)):
        if not isinstance(getattr(module, name, None), kind):
            raise ConfigError(f"{path} must define {name}, a dict (README, \"How to add a lab\")")
    return module


class DataDir:
    """The lab's training set as raw uint8 files, written once per batch and mounted read-only in every sandbox.

    Only the training set: the test images and labels never enter a sandbox (accuracy is measured outside).
    """

    def __init__(self, root: Path | None = None, dataset: str = "mnist"):
        self.provider = datasets.PROVIDERS[dataset]
        self.path = Path(tempfile.mkdtemp(prefix="autograder-data-", dir=root))
        train = self.provider.load_split("train")
        (self.path / "train-images.u8").write_bytes(train.images.numpy().tobytes())
        (self.path / "train-labels.u8").write_bytes(train.labels.numpy().tobytes())
        self.labels = train.labels.long()
        self.count = len(train.labels)
        _open_to_sandbox(self.path)

    def close(self):
        shutil.rmtree(self.path, ignore_errors=True)


def _open_to_sandbox(folder: Path) -> None:
    # The sandbox runs the student's code under an unprivileged uid: what it must read is made world-readable.
    folder.chmod(0o755)
    for p in folder.iterdir():
        p.chmod(0o644)


# The student's evaluate() is called on the first EVAL_IMAGES held-out images, in batches of EVAL_BATCH_SIZE:
# enough to tell a right accuracy from a wrong one to 1e-6 (the judge computes the truth on the same images),
# with a short last batch that catches dividing by batches times batch size, and a quarter of the time that
# all 10,000 would take (it lies on every submission's critical path).
EVAL_IMAGES, EVAL_BATCH_SIZE = 2500, 1000


# The loop sends a snapshot every SNAPSHOT_EVERY batches: the grader's replay (replay.py) compares stretches
# that short, over which float rounding stays far below any real difference (see replay.TOLERANCE).
SNAPSHOT_EVERY = 16


# The snapshots of one run carry at most this many bytes (base64): each holds the weights, the gradients and the
# optimizer's state, 16 bytes a parameter with SGD's momentum (21 with Adam's two averages). The CNN lab's 7,175 parameters fit a snapshot every 16
# batches easily; the MLP lab's 101,770 (1.6 MB a snapshot) get fewer, longer stretches.
SNAPSHOT_BYTES = 32 << 20


def snapshot_plan(assignment: Assignment, count: int) -> tuple[int, int]:
    """(every how many batches, how many at most) for this budget on `count` training images: about one per
    SNAPSHOT_EVERY batches and one at the end of each pass, with room for a few passes more (a loop that peeks
    at a batch first), within SNAPSHOT_BYTES."""
    t = assignment.training
    batches = -(-(count - t.holdout) // t.batch_size) * t.epochs
    floats = 3 if t.optimizer == "sgd" else 4  # weights, gradients, and momentum or Adam's two averages
    fit = max(8 * t.epochs + 8, SNAPSHOT_BYTES // (floats * 4 * 4 // 3 * max(parameters(assignment), 1)))
    budget = min(MAX_SNAPSHOTS, fit)
    every = max(SNAPSHOT_EVERY, -(-batches // (budget // 2 - t.epochs)))
    return every, min(budget, 2 * (-(-batches // every) + t.epochs) + 16)


_PARAMETERS: dict = {}


def parameters(assignment: Assignment) -> int:
    """The parameters of the lab's network (the answer key's), counted once per notebook and class."""
    from . import reference

    key = (str(assignment.source_notebook), assignment.module_cells, assignment.model)
    if key not in _PARAMETERS:
        net = getattr(reference.load(assignment), assignment.model)()
        _PARAMETERS[key] = sum(p.numel() for p in net.parameters())
    return _PARAMETERS[key]


def plan_for(assignment: Assignment, cells: list[Cell], probes: dict, settings: RunSettings, data: DataDir) -> dict:
    t = assignment.training
    every, most = snapshot_plan(assignment, data.count)
    return {
        "snapshot_every": every,
        "max_snapshots": most,
        "cells": [{"id": c.grade_id, "source": c.source, "added": c.added} for c in cells],
        "lab": runtime_sources(assignment),  # the lab's in-sandbox steps (harness.load_lab)
        "model": assignment.model,
        "threads": settings.threads,
        "device": settings.device,
        "gpu_memory_fraction": settings.gpu_memory_fraction,
        "seed": t.seed + settings.seed_offset,
        "cell_seconds": assignment.harness.cell_seconds,
        "call_seconds": assignment.harness.call_seconds,
        "train_seconds": assignment.harness.train_seconds,
        "probes": probes,  # the lab's probe inputs (its hidden/probes.py: SANDBOX)
        "net_probe_batch": 16,
        "eval_batch_size": EVAL_BATCH_SIZE,
        "eval_images": EVAL_IMAGES,
        "data": {"images": "/sandbox/data/train-images.u8", "labels": "/sandbox/data/train-labels.u8",
                 "count": data.count, "mean": data.provider.MEAN, "std": data.provider.STD,
                 "shape": list(data.provider.SHAPE)},
        "training": {"epochs": t.epochs, "batch_size": t.batch_size, "optimizer": t.optimizer, "lr": t.lr,
                     "momentum": t.momentum, "holdout": t.holdout},
    }


# glibc gives freed memory back to the system as soon as 128 KiB lie free at the top of the heap, and serves
# blocks from 128 KiB up with mmap. A training step allocates and frees a few such blocks (the convolutions'
# buffers): with the defaults every step page-faults them back in, zeroed by the kernel, ~1,200 faults per
# batch here with oneDNN's kernels, about a third of the epoch, ~200 and a sixth with torch's own
# (bench/epoch_in_sandbox.py shows it). Keeping up to 256 MiB free
# and serving blocks up to 32 MiB from the heap removes the faults; the arithmetic is untouched.
MALLOC_TUNABLES = "glibc.malloc.trim_threshold=268435456:glibc.malloc.mmap_threshold=33554432"


def _sandbox_env(settings: RunSettings) -> dict[str, str]:
    threads = str(settings.threads)
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
            "TORCHINDUCTOR_DETERMINISTIC": "1", "PYTHONHASHSEED": "0", "GLIBC_TUNABLES": MALLOC_TUNABLES}


def start_fork_server(assignment: Assignment, settings: RunSettings, data: DataDir) -> ForkServer:
    """A warmed-up sandbox that forks each run of this batch (forkserver.py). Raises ForkServerGone."""
    # One torch thread while warming up, whatever the runs will use: OpenMP's thread pool does not survive
    # fork(), and a pool the zygote started would deadlock every forked run in its first parallel operation.
    # Each run sets its own thread count and starts its own pool (zygote.py).
    warm_plan = plan_for(assignment, [], {}, replace(settings, threads=1), data)
    return ForkServer(warm_plan, mounts=[Mount(data.path, "/sandbox/data")], limits=assignment.limits,
                      env=_sandbox_env(settings))


def run(plan: dict, *, limits: Limits, data: DataDir, settings: RunSettings,
        turn: Callable[[], bool] | None = None, server: ForkServer | None = None,
        records: dict | None = None) -> tuple[RunResult, Observations]:
    """Run the harness on one plan in a fresh sandbox and parse what it reported.

    With `turn`, the sandbox starts at once and warms up (interpreter, torch, the training data) at the lowest
    priority, then waits: `turn` is polled until it returns True, and only then do the student's cells run
    and the time limit start (see `sandbox.run_sandboxed`). With `server`, the run is forked from that fork
    server at once instead (the caller waits for its turn); ForkServerGone: nothing of it ran. `records`: what
    the run may write (schema())."""
    if server is not None:
        result = server.run(plan, limits)
        return result, parse(result.data, records)
    work = Path(tempfile.mkdtemp(prefix="autograder-run-"))
    try:
        (work / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
        shutil.copy(HARNESS, work / "harness.py")
        _open_to_sandbox(work)
        mounts = [Mount(work, "/sandbox/run"), Mount(data.path, "/sandbox/data")]
        env = _sandbox_env(settings)
        result = run_sandboxed([sys.executable, "-I", "/sandbox/run/harness.py", "/sandbox/run/plan.json"],
                               mounts=mounts, limits=limits, env=env, require_sandbox=settings.require_sandbox,
                               gpu=settings.device == "cuda", turn=turn)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result, parse(result.data, records)
