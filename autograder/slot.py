"""A grading slot on a cluster worker (Dask): the checks it passes before it takes work, its copy of the lab,
and grading one submission there as a local batch does.

The worker is the TA's machine, trusted like the grading process at home: student code runs only inside the
sandboxes it starts, the hidden checks and the test labels stay in the worker's own process, and what goes back
to the client is the judged result as JSON (results.SubmissionResult), never anything of the student's.

A worker takes work only once it has passed `refusal` (GradingSlot.setup): bubblewrap and a probe sandbox work
there, the lab's data set is there with its checksums, CUDA is there when the batch asks for it, and its kit is
the client's to the byte. Then it gets the resource RESOURCE, which every grading task asks for, so the
scheduler never places a submission on a worker that cannot grade it; a refused worker says why in an event
(topic EVENTS) that the client prints in the TA's summary.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from distributed.core import Status
from distributed.diagnostics.plugin import WorkerPlugin

log = logging.getLogger(__name__)

RESOURCE = "grading"  # what a task asks for: one slot of a worker that passed the checks
EVENTS = "autograder-workers"  # the scheduler's event topic: each worker's verdict on itself
PLUGIN = "autograder-grading-slot"
MAX_LAB_BYTES = 20 << 20  # a lab folder is tens of kB; anything near this is not a lab


@lru_cache(maxsize=1)
def kit_digest() -> str:
    """sha256 of this installation's engine and shared lab code (autograder/, labkit/): a worker grades only
    with the client's kit, byte for byte, or two students' grades could come from two different kits."""
    import autograder
    import labkit

    digest = hashlib.sha256()
    for package in (autograder, labkit):
        root = Path(package.__file__).parent
        for path in sorted(root.rglob("*.py")):
            name = f"{package.__name__}/{path.relative_to(root).as_posix()}"
            data = path.read_bytes()
            digest.update(f"{name}\0{len(data)}\0".encode())
            digest.update(data)
    return digest.hexdigest()


@dataclass(frozen=True)
class LabCopy:
    """The lab's folder as bytes, with the fingerprint the client computed of it: what a worker grades with
    when it does not share the course's folder. It is a few tens of kB and travels with each task, so a
    worker that joins late or replaces a dead one has it too."""

    name: str
    files: dict[str, bytes] = field(repr=False)
    fingerprint: str  # results.fingerprint(assignment).digest on the client

    @classmethod
    def of(cls, assignment, fingerprint: str) -> LabCopy:
        from .results import _DERIVED

        root = assignment.folder
        files, size = {}, 0
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not any(part in _DERIVED for part in rel.parts) and path.suffix != ".pyc":
                files[rel.as_posix()] = data = path.read_bytes()
                size += len(data)
                if size > MAX_LAB_BYTES:
                    raise ValueError(f"{root} holds more than {MAX_LAB_BYTES >> 20} MB: a lab folder sent to "
                                     "cluster workers must hold only the lab (data sets come from MNIST_DIR)")
        return cls(assignment.name, files, fingerprint)

    def unpack(self, root: Path):
        """Write the files under root/<lab> and load the lab from there; its fingerprint must be the client's
        (the same config, hidden checks, notebook and lab runtime as the client graded with)."""
        from . import config
        from .results import fingerprint

        folder = root / self.name
        for rel, data in self.files.items():
            path = (folder / rel).resolve()
            if folder.resolve() not in path.parents:
                raise ValueError(f"the lab copy names a file outside its folder: {rel!r}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        assignment = config.load(folder)
        here = fingerprint(assignment).digest
        if here != self.fingerprint:
            raise RuntimeError(f"the lab {self.name} unpacked on {socket.gethostname()} has fingerprint "
                               f"{here[:12]}, the client's is {self.fingerprint[:12]}: the worker's kit differs "
                               "from the client's (install the same version on both)")
        return assignment


def refusal(device: str, kit: str, datasets: tuple[str, ...]) -> str | None:
    """Why this worker cannot grade (None: it can). Each check is what a local batch would find out only when
    its first submission ran."""
    from . import datasets as providers
    from .sandbox import launch

    if kit != kit_digest():
        return ("its autograder kit differs from the client's (install the same version of the kit on the workers "
                "as where 'autograder grade' runs)")
    why = launch.probe()
    if why is not None:
        return f"no working sandbox: {why} (install bubblewrap: apt-get install bubblewrap)"
    for name in datasets:
        try:
            providers.PROVIDERS[name].load_split("test")
        except Exception as exc:  # noqa: BLE001 - the reason goes to the TA as it is
            return f"the data set {name} cannot be read here: {exc}"
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "no usable CUDA GPU here, and the batch grades with --device cuda"
    return None


def allocator_as_in_sandboxes() -> bool:
    """glibc's malloc in this worker process set as the sandboxes have it (observe.MALLOC_TUNABLES).

    Dask's nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536 (distributed.nanny.pre-spawn-environ), which
    hands memory back to the system at every large free: the judge's replay of a training loop then page-faults
    on every batch and runs at half speed. mallopt at run time undoes it however the worker was started
    (dask worker, dask-jobqueue, a LocalCluster). False where this is not glibc."""
    import ctypes

    from .observe import MALLOC_TUNABLES

    wanted = dict(item.split("=") for item in MALLOC_TUNABLES.split(":"))
    options = {-1: wanted["glibc.malloc.trim_threshold"], -3: wanted["glibc.malloc.mmap_threshold"]}  # M_TRIM_, M_MMAP_
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(option, int(value)) == 1 for option, value in options.items())


class GradingSlot(WorkerPlugin):
    """Registered by the client on every worker, those that join later included (Dask runs setup there)."""

    name = PLUGIN

    def __init__(self, device: str, kit: str, datasets: tuple[str, ...]):
        self.device, self.kit, self.datasets = device, kit, datasets

    async def setup(self, worker):
        started = time.monotonic()
        allocator_as_in_sandboxes()
        # Dask's statistical profiler walks every thread's stack 100 times a second, the judge's replay included:
        # a few per cent of a grading worker's CPU, for a dashboard page nobody grading needs.
        for name in ("profile", "profile-cycle"):
            if name in worker.periodic_callbacks:
                worker.periodic_callbacks[name].stop()
        why = await asyncio.to_thread(refusal, self.device, self.kit, self.datasets)
        verdict = {"worker": worker.address, "host": socket.gethostname(), "slots": worker.state.nthreads,
                   "refused": why, "seconds": round(time.monotonic() - started, 2)}
        worker.log_event(EVENTS, verdict)
        if why is None:
            await worker.set_resources(**{RESOURCE: worker.state.nthreads})
            # The scheduler places tasks that waited for a slot ("no-worker") only when a worker joins or starts
            # running, not when one gains a resource: a pause and a resume tell it to look again, so a batch
            # submitted before this worker passed its checks starts on it at once.
            if worker.status == Status.running:
                worker.status = Status.paused
                worker.status = Status.running
        else:
            log.warning("this worker refuses to grade: %s", why)

    def teardown(self, worker):
        _close_graders()


# One Grader per lab and settings in each worker process: its fork server stays warm from one task to the next.
_graders: dict[tuple, tuple] = {}
_graders_lock = threading.Lock()


def _grader(lab: LabCopy, options: dict, slots: int, where: str | None = None):
    from .grade import Grader, Options

    key = (lab.fingerprint, tuple(sorted(options.items())), slots)
    with _graders_lock:
        if key not in _graders:
            # In the worker's own folder, which Dask removes when the worker ends, killed ones included (the next
            # worker on the node clears it). The sandboxes never see it: they bind only what a run needs.
            root = Path(tempfile.mkdtemp(prefix="autograder-lab-", dir=where))
            assignment = lab.unpack(root)
            grader = Grader(assignment, Options(**options, jobs=slots, require_sandbox=True))
            _graders[key] = (grader, threading.Lock(), root)
        return _graders[key]


def _close_graders() -> None:
    with _graders_lock:
        held = list(_graders.values())
        _graders.clear()
    for grader, _, root in held:
        grader.close()
        shutil.rmtree(root, ignore_errors=True)


def grade_one(lab: LabCopy, options: dict, student_id: str, notebook: bytes, source: str) -> dict:
    """The task a worker runs for one submission: sanitize, run in a sandbox, judge, as a local batch does
    (grade.Grader). Returns the result as JSON with where it ran; the client saves it."""
    from distributed import get_worker

    from .grade import judged
    from .submissions import Submission

    worker = get_worker()
    grader, judge_lock, _ = _grader(lab, options, max(1, worker.state.nthreads), worker.local_directory)
    sub = Submission(student_id=student_id, notebook=notebook, source=source)
    started = time.monotonic()
    try:
        observed, failure = grader.observe(sub), None
    except Exception as exc:  # our own failure: judged() turns it into this submission's row, as locally
        observed, failure = None, exc

    def outcome():
        if failure is not None:
            raise failure
        return observed

    with judge_lock:  # the judge's forward passes and hidden-check session take one submission at a time
        result = judged(grader, outcome, sub)
    job = os.environ.get("SLURM_JOB_ID")  # a worker that Slurm started says which job it is
    return {"result": result.to_json(), "worker": worker.address + (f", Slurm job {job}" if job else ""),
            "address": worker.address, "host": socket.gethostname(),
            "pid": os.getpid(), "seconds": round(time.monotonic() - started, 2)}
