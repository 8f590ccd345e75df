"""Grading a batch on a Dask cluster: `autograder grade ... --cluster ADDRESS` (a running scheduler) or
`--cluster slurm` (workers started as Slurm jobs through dask-jobqueue, from the course's [cluster] table).

Dask does the scheduling; this module only feeds it and takes the results back. Each submission is one task
(slot.grade_one) that asks for one grading slot (slot.RESOURCE), which a worker offers only after passing its
checks (slot.refusal), so a worker without bubblewrap never gets a submission. A worker that dies holding a
task (node failure, preemption, walltime) has Dask run the task again on another worker; the client saves each
result once, as it comes back, exactly as a local batch does (grade.grade), so resume, --force, fingerprints
and the gradebook do not know where a result was computed.

Tasks go out in a window a few times the cluster's slots: the scheduler holds a few notebooks at a time, not
a whole course's, and a worker that joins late gets work at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from .results import Message, SubmissionResult, digest, fingerprint

log = logging.getLogger(__name__)

TICK = 1.0  # seconds between looks at the cluster (workers joining, leaving, refusing)
POLL = 0.05  # seconds between looks for finished tasks: nothing next to a submission's seconds
ADDRESS_WAIT = 60.0  # --cluster ADDRESS: how long to wait for a worker that can grade
WINDOW_PER_SLOT = 3  # tasks in flight per grading slot
MIN_WINDOW = 8


class ClusterError(RuntimeError):
    """The cluster cannot grade this batch (no worker can, or none came); the message says what to do."""


@dataclass
class _Worker:
    address: str
    host: str
    slots: int
    joined: float  # time.monotonic() when first seen
    left: float | None = None
    graded: int = 0
    busy: float = 0.0  # seconds spent grading (sandbox and judge)


class ClusterPool:
    """Grades on a Dask cluster's workers (grade.grade's `pool`). Use `connect`."""

    def __init__(self, client, *, expected: int = 0, wait_seconds: float = ADDRESS_WAIT, gpu_slots: int = 0):
        # expected: the workers the Slurm jobs start (0: a running cluster's, however many it has). gpu_slots: the
        # grading slots that share one GPU (--cluster local: all of them); 0: each worker's own.
        self.client, self.expected, self.wait_seconds, self.gpu_slots = client, expected, wait_seconds, gpu_slots
        self._workers: dict[str, _Worker] = {}
        self._refused: dict[str, str] = {}  # worker address -> why
        self._left: list[Message] = []  # submissions not graded, and why
        self._started = self._ended = 0.0

    @classmethod
    @contextlib.contextmanager
    def connect(cls, spec: str, course=None, logs: Path | None = None, jobs: int = 0):
        """A pool on the cluster `spec` names: "slurm" (the course's [cluster] table), "local" (`jobs` worker
        processes on this machine, one per core by default) or a scheduler's address (tcp://host:8786). Slurm
        jobs and local workers this started are stopped on the way out."""
        from distributed import Client

        if spec == "local":
            from distributed import LocalCluster

            # One grading slot per process: a judge each, which is the point. No Dask memory limit: the workers
            # hold only the grader (the sandboxes have their own limits), and Dask's would count the machine's
            # memory as theirs to share. Dask's own logs below errors: a worker stopped at the end is expected.
            n = jobs or os.cpu_count() or 1
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, memory_limit=0,
                                   dashboard_address=None, silence_logs=logging.ERROR)
            try:
                with Client(cluster) as client:
                    yield cls(client, gpu_slots=n)
            finally:
                cluster.close()
            return
        if spec == "slurm":
            settings = course.cluster
            cluster = slurm_cluster(settings, logs)
            try:
                cluster.scale(jobs=settings.jobs)
                with Client(cluster) as client:
                    yield cls(client, expected=settings.jobs * (settings.processes or settings.cores),
                              wait_seconds=settings.wait_seconds)
            finally:
                cluster.close()
            return
        try:
            client = Client(spec, timeout=10)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"no Dask scheduler answers at {spec}: {exc}. Start one ('dask scheduler') and its "
                               f"workers ('dask worker {spec} --nthreads 1 --nworkers N'), or leave out --cluster "
                               "to grade on this machine") from None
        with client:
            yield cls(client)

    def results(self, assignment, todo, options, progress=None):
        """Grade `todo` on the cluster; yield each result as it comes back (grade.grade saves it)."""
        from distributed import as_completed
        from distributed.client import FutureCancelledError

        from . import slot

        now = fingerprint(assignment).digest
        lab = slot.LabCopy.of(assignment, now)
        settings = {"device": options.device, "threads": options.threads or 1, "fork_server": options.fork_server,
                    "gpu_slots": self.gpu_slots}
        batch = secrets.token_hex(4)
        queue = list(reversed(todo))
        owner = {}
        self._started = looked = time.monotonic()
        try:
            # Every worker, those that join later too, checks itself before it offers a slot (slot.GradingSlot).
            self.client.register_plugin(slot.GradingSlot(options.device, slot.kit_digest(), (assignment.dataset,)),
                                        name=slot.PLUGIN)
            finished = as_completed(loop=self.client.loop)  # this client's, not dask's default (a caller may hold another)
            while queue or owner:
                while queue and len(owner) < self._window():
                    sub = queue.pop()
                    key = f"grade-{assignment.name}-{batch}-{_short(sub.student_id, sub.notebook)}"
                    future = self.client.submit(slot.grade_one, lab, settings, sub.student_id, sub.notebook,
                                                sub.source, key=key, resources={slot.RESOURCE: 1}, pure=False)
                    owner[future] = sub
                    finished.add(future)
                done = finished.next_batch(block=False)
                if time.monotonic() - looked >= TICK or not owner:
                    self._look(progress)
                    looked = time.monotonic()
                if not done:
                    time.sleep(POLL)
                for future in done:
                    sub = owner.pop(future)
                    try:
                        outcome = self._outcome(future, sub)
                    except FutureCancelledError:
                        outcome = None
                        self._not_graded(sub, "its task was cancelled on the cluster")
                    finally:
                        future.release()
                    if outcome is not None:
                        yield outcome
        except OSError as exc:  # distributed's CommClosedError too: the scheduler went away mid-batch
            raise ClusterError(f"lost the Dask scheduler ({type(exc).__name__}: {exc}). Nothing was lost: the "
                               "results saved so far are kept; run the same command again to grade the rest") from None
        finally:
            self._ended = time.monotonic()
            try:
                for future in owner:
                    future.cancel()
                self._look(None, final=True)
            except Exception as exc:  # noqa: BLE001 - a last look must not hide why the batch ended
                log.warning("the cluster could not be asked how it ended: %s", exc)

    def _outcome(self, future, sub) -> SubmissionResult | None:
        from distributed import KilledWorker

        try:
            payload = future.result()
        except KilledWorker as exc:
            # Dask gave up after allowed-failures + 1 workers died holding it (a node failing again and again, or
            # something in the run that takes its worker down): the TA looks, and the same command tries again.
            last = getattr(exc.last_worker, "address", exc.last_worker)
            self._not_graded(sub, f"{exc.allowed_failures + 1} workers died while grading it, the last {last}")
            return None
        except Exception as exc:  # the worker failed before it could judge (its copy of the lab, its kit)
            self._not_graded(sub, f"{type(exc).__name__}: {exc}")
            return None
        worker = self._workers.get(payload["address"])
        if worker is not None:
            worker.graded += 1
            worker.busy += float(payload["seconds"])
        result = SubmissionResult.from_json(payload["result"])
        return replace(result, ran_on=f"{payload['host']} ({payload['worker']})")

    def _not_graded(self, sub, why: str) -> None:
        from .report import _printable

        log.warning("%s not graded on the cluster: %s", sub.student_id, why)
        self._left.append(Message(f"採点されていません: {_printable(sub.student_id)}: {why}（同じコマンドをもう一度実行してください）",
                                  f"not graded: {_printable(sub.student_id)}: {why} (run the same command again "
                                  "to grade it)"))

    def _window(self) -> int:
        slots = sum(w.slots for a, w in self._workers.items() if w.left is None and a not in self._refused)
        return max(MIN_WINDOW, WINDOW_PER_SLOT * slots)

    def _look(self, progress, final: bool = False) -> None:
        """Workers joining, leaving and refusing; the progress bar's workers and pace; a batch no worker can
        grade ends with the reasons."""
        from . import slot

        clock = time.monotonic()
        for _, verdict in self.client.get_events(slot.EVENTS):
            if verdict.get("refused"):
                self._refused[verdict["worker"]] = verdict["refused"]
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        for address, w in info.items():
            if address not in self._workers:
                self._workers[address] = _Worker(address, w.get("host", ""), int(w.get("nthreads", 1)), clock)
        for address, worker in self._workers.items():
            if address not in info and worker.left is None:
                worker.left = clock
        grading = [a for a, w in info.items() if w.get("resources", {}).get(slot.RESOURCE)]
        if progress is not None:
            progress.cluster(len(grading), len(self._refused))
        if not grading and not final:
            self._give_up_when_no_worker_can(clock, info)

    def _give_up_when_no_worker_can(self, clock: float, info: dict) -> None:
        waited = clock - self._started
        undecided = [a for a in info if a not in self._refused]
        refused_all = self._refused and not undecided
        if self.expected:
            # Slurm: the queue may hold the jobs for hours; give up only when every job's workers refused.
            if refused_all and len(self._refused) >= self.expected:
                raise ClusterError(self._no_worker("every worker the Slurm jobs started refused"))
            if self.wait_seconds and waited > self.wait_seconds:
                raise ClusterError(self._no_worker(f"no worker could grade after {self.wait_seconds:g} s "
                                                   "([cluster] wait_seconds)"))
            return
        if refused_all and waited > 2 * TICK:
            raise ClusterError(self._no_worker("every worker of the cluster refused"))
        if waited > self.wait_seconds:
            raise ClusterError(self._no_worker(f"no worker could grade after {self.wait_seconds:g} s"))

    def _no_worker(self, what: str) -> str:
        reasons = "; ".join(f"{a}: {why}" for a, why in sorted(self._refused.items())) or "no worker joined"
        return (f"{what} ({reasons}). Nothing was lost: the results saved so far are kept; fix the workers and run "
                "the same command again")

    def notes(self) -> list[Message]:
        """The TA's summary of the cluster: where the submissions ran, how long the workers were held, the
        workers that refused and why, and any submission left ungraded."""
        wall = max(0.0, self._ended - self._started)
        used = [w for w in self._workers.values() if w.graded]
        held = sum(((w.left or self._ended) - max(w.joined, self._started)) for w in self._workers.values()
                   if w.address not in self._refused)
        busy = sum(w.busy for w in self._workers.values())
        graded = sum(w.graded for w in used)
        lines = []
        if graded:
            hosts = Counter()
            for w in used:
                hosts[w.host] += w.graded
            where = ", ".join(f"{host} {n}" for host, n in hosts.most_common())
            lines.append(Message(
                f"クラスタ: {graded} 件を {len(used)} ワーカー（{where}）で採点、{_span(wall)}（{graded / wall * 60:.1f} 件/分）。"
                f"ワーカーの保持時間の合計 {_span(held)}、うち採点中 {_span(busy)}（{busy / held:.0%}）",
                f"cluster: graded {graded} on {len(used)} worker(s) ({where}) in {_span(wall)} "
                f"({graded / wall * 60:.1f}/min); workers held {_span(held)} in all, busy grading {_span(busy)} "
                f"({busy / held:.0%})") if wall > 0 and held > 0 else Message(
                f"クラスタ: {graded} 件を採点", f"cluster: graded {graded}"))
        for address, why in sorted(self._refused.items()):
            lines.append(Message(f"採点を断ったワーカー {address}: {why}", f"worker refused to grade: {address}: {why}"))
        return lines + self._left


def _short(student_id: str, notebook: bytes | None) -> str:
    """A task key's tail: which student and which bytes, without putting a student's id into the scheduler's
    logs and dashboard."""
    return hashlib.sha256(f"{student_id}\0{digest(notebook)}".encode()).hexdigest()[:16]


def _span(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def slurm_cluster(settings, logs: Path | None):
    """dask-jobqueue's SLURMCluster from the course's [cluster] table (config.Cluster): each job runs
    `processes` Dask workers of one thread each, with the job's cores and memory shared among them."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ClusterError("--cluster slurm needs dask-jobqueue: pip install dask-jobqueue") from None
    processes = settings.processes or settings.cores
    directives = list(settings.directives)
    if settings.gpus:
        directives.append(f"--gres=gpu:{settings.gpus}")
    scheduler = {"dashboard_address": None}
    if settings.host:
        scheduler["host"] = settings.host
    kwargs = dict(queue=settings.queue or None, account=settings.account or None, cores=settings.cores,
                  processes=processes, memory=settings.memory, walltime=settings.walltime,
                  job_extra_directives=directives, job_script_prologue=list(settings.prologue),
                  python=settings.python or sys.executable, scheduler_options=scheduler,
                  # The nanny would restart a worker whose memory grows past its share; the sandboxes have limits
                  # of their own (the lab's [limits]), and the job's --mem is Slurm's.
                  worker_extra_args=["--memory-limit", "0"])
    if settings.interface:
        kwargs["interface"] = settings.interface
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
        kwargs["log_directory"] = str(logs)
    return SLURMCluster(**kwargs)
