"""Batch grading: submissions → sanitize → sandboxed run → hidden checks → recorded results.

Sandboxes run in worker threads (each is a separate process; the threads only wait). `--jobs N` sandboxes
run at once. On CPU, as root with bubblewrap, each is forked from the batch's fork server, which imported
torch and loaded the data once (forkserver.py); elsewhere each is a sandbox of its own, and one more waits
for its turn already warmed up (interpreter, torch, data: see "Turns" in sandbox/__init__.py), using only the CPU
the running ones leave idle. Judging happens in the main thread, one
submission at a time, as runs finish; each result is saved before the next is judged, so an interrupted
batch resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from . import forkserver, harness, observe, reference, replay
from .config import Assignment
from .budget import Budget
from .checks import ChecksTimedOut, CheckSession
from .judge import ANY_LIMIT, LIMITS, Context, Findings, TrustedData, describe_error
from .observe import DataDir, RunSettings
from .results import (CRASHED, GRADED, LIMIT, RESUBMITTED, STATUSES, Measures, Message, ResultStore, SubmissionResult,
                      came_with, fingerprint, graded_again, invalid, part_titles, resubmitted_digest)
from .forkserver import ForkServerGone
from .sandbox import RunResult, TurnCancelled
from .sanitize import Sanitized, UnusableNotebook, sanitize
from .submissions import Submission

log = logging.getLogger(__name__)

# A run that never started: the batch stopped while it waited for a free slot.
CANCELLED = RunResult(returncode=None, killed_for="cancelled", stdout="", stderr="", output_truncated=False,
                      seconds=0.0, peak_rss_mb=0.0, sandboxed=True, data=b"")


@dataclass(frozen=True)
class Options:
    device: str = "cpu"
    jobs: int = 0  # 0: one per core
    force: bool = False
    require_sandbox: bool = False
    fork_server: bool = True  # where it can (forkserver.usable): one warm-up per batch, not per submission
    threads: int = 0  # torch threads per sandbox; 0: sandbox_threads decides
    gpu_slots: int = 0  # sandboxes sharing the GPU, other graders' on the machine too (--cluster local); 0: jobs

    def __post_init__(self):
        if self.jobs < 0 or self.threads < 0:
            raise ValueError("--jobs and --threads take a positive number, or 0 for the default")
        if self.threads > (os.cpu_count() or 1):
            raise ValueError(f"--threads {self.threads} is more than this machine's {os.cpu_count()} cores: "
                             "more threads than cores only slow training down")

    @property
    def workers(self) -> int:
        return self.jobs or os.cpu_count() or 1


def sandbox_threads(jobs: int) -> int:
    """Torch threads per sandbox, unless --threads says otherwise. One core is left for the judge and, without
    a fork server, for the next sandbox's warm-up: torch's threads stall whenever anything else takes one of
    their cores. Two threads do train a --jobs 1 batch faster here when nothing else runs (README, "Speed":
    --threads 2); the trained weights depend on the count to the last bit, so a batch keeps one count."""
    return max(1, ((os.cpu_count() or 1) - 1) // max(jobs, 1))


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but this machine has no usable CUDA GPU; use --device cpu")
    return name


@dataclass(frozen=True)
class Observed:
    """What the worker-thread half (Grader.observe) hands the main thread's judge."""

    sub: Submission
    clean: Sanitized | None  # None when the notebook could not be used at all
    run: RunResult | None
    obs: observe.Observations | None
    unusable: Message | None  # why the notebook could not be used
    seconds: float  # sanitizing and the run's own time, not the time spent waiting for a turn


class Grader:
    """Holds what every submission of one batch shares: the data, the probes, the reference, the settings."""

    def __init__(self, assignment: Assignment, options: Options):
        self.assignment, self.options = assignment, options
        self.device = torch.device(options.device)
        if self.device.type == "cpu":
            torch.set_num_threads(1)  # the judge's forward passes: one core at most, the sandboxes get the rest
        else:
            harness.exact_float32(torch)  # as in the sandboxes
        self.reference = reference.load(assignment)
        self.probes = observe.load_probes(assignment)
        self.records = observe.schema(self.probes.RECORDS)  # what a run of this lab may write
        self.data = DataDir(dataset=assignment.dataset)
        self.trusted = TrustedData.load(assignment, self.device)
        self.checks = CheckSession(assignment)
        self._outputs = {}  # trusted forward passes shared by the batch's contexts (judge.Context.outputs)
        self._slots = threading.BoundedSemaphore(options.workers)  # sandboxes past their turn
        self._cancelled = threading.Event()
        self._server_lock = threading.Lock()
        self._server = None  # the batch's fork server, started with the first run that can use it
        self._server_off = not (options.fork_server and forkserver.usable(options.device))
        # On a GPU, the running sandboxes and the one warming up share its memory evenly: one student's run that
        # takes all it may leaves every other its share.
        self.settings = RunSettings(device=options.device,
                                    threads=options.threads or sandbox_threads(options.workers),
                                    gpu_memory_fraction=round(0.95 / ((options.gpu_slots or options.workers) + 1), 3),
                                    require_sandbox=options.require_sandbox)

    def cancel(self):
        """The batch is stopping: sandboxes still waiting for their turn are killed (running ones finish)."""
        self._cancelled.set()

    def close(self):
        self._drop_server()
        self.checks.close()
        self.data.close()

    def _fork_server(self):
        with self._server_lock:
            if self._server is None and not self._server_off:
                try:
                    self._server = observe.start_fork_server(self.assignment, self.settings, self.data)
                except (ForkServerGone, OSError) as exc:
                    log.warning("no fork server, a sandbox per submission instead: %s", exc)
                    self._server_off = True
            return self._server

    def _drop_server(self, why: str = "") -> None:
        with self._server_lock:
            server, self._server = self._server, None
            if why:
                log.warning("the fork server failed, a sandbox per submission from now on: %s", why)
                self._server_off = True
        if server is not None:
            server.close()

    def observe(self, sub: Submission) -> Observed:
        """Worker-thread half: sanitize and run in the sandbox. Returns what the judge needs."""
        started = time.monotonic()
        try:
            clean = sanitize(sub.notebook, self.assignment)
        except UnusableNotebook as exc:
            return Observed(sub, None, None, None, exc.message, time.monotonic() - started)
        sanitized = time.monotonic() - started
        run, obs = self.sandboxed(clean, self.settings)
        return Observed(sub, clean, run, obs, None, sanitized + run.seconds)  # not the time spent waiting for a turn

    def sandboxed(self, clean, settings: RunSettings):
        """One sandboxed run of these cells under these settings: (RunResult, Observations)."""
        plan = observe.plan_for(self.assignment, list(clean.cells), self.probes.SANDBOX, settings, self.data)
        server = self._fork_server()
        if server is not None:
            while not self._slots.acquire(timeout=0.1):
                if self._cancelled.is_set():
                    return CANCELLED, observe.parse(b"")
            try:
                return observe.run(plan, limits=self.assignment.limits, data=self.data, settings=settings,
                                   server=server, records=self.records)
            except ForkServerGone as exc:  # nothing of the submission ran: it runs below instead
                self._drop_server(str(exc))
            finally:
                self._slots.release()
        taken = threading.Event()

        def turn() -> bool:
            if self._cancelled.is_set() and not taken.is_set():
                raise TurnCancelled
            if self._slots.acquire(blocking=False):
                taken.set()
            return taken.is_set()

        try:
            return observe.run(plan, limits=self.assignment.limits, data=self.data, settings=settings, turn=turn,
                               records=self.records)
        finally:
            if taken.is_set():
                self._slots.release()

    def judge(self, observed: Observed) -> SubmissionResult:
        """Main-thread half: the hidden checks, on data only."""
        sub, clean, run, obs = observed.sub, observed.clean, observed.run, observed.obs
        unusable, seconds = observed.unusable, observed.seconds
        points = self.assignment.points
        if unusable is not None:
            return invalid(sub.student_id, unusable, points, source=sub.source)
        if obs.problems:
            # Only code writing to the grader's private channel produces these: nothing of this run counts.
            log.warning("%s: observation channel tampered with: %s", sub.student_id, "; ".join(obs.problems[:5]))
            return invalid(sub.student_id, Message(
                "採点用の記録が提出物のコードによって書き換えられたため、この実行は採点できません。",
                "the grader's records were written to by the submission's code, so nothing of this run counts."),
                points, source=sub.source)
        limit = self.assignment.judge.seconds
        ctx = Context(assignment=self.assignment, sanitized=clean, run=run, obs=obs, reference=self.reference,
                      data=self.trusted, device=self.device, probes=self.probes.PROBES,
                      seed=self.assignment.training.seed + self.settings.seed_offset, outputs=self._outputs,
                      budget=Budget(limit))
        try:
            checks = self._checked(ctx)
            notes = list(clean.problems) + added_cell_notes(clean, obs)
            measured = ctx
            if self._near_threshold(ctx):
                checks, note, measured = self._second_seed(ctx, clean, checks)
                notes.append(note)
        except ChecksTimedOut:
            log.warning("%s: the hidden checks ran past the judge's %g s; a fresh check session takes over",
                        sub.student_id, limit)
            return SubmissionResult(student_id=sub.student_id, status=LIMIT, reason=judge_limit(limit),
                                    parts={p: 0.0 for p in points}, max_parts=dict(points),
                                    seconds=round(seconds, 2), source=sub.source)
        parts = {p: 0.0 for p in points}
        for check in checks:
            parts[check.part] += check.points
        parts = {p: round(v, 2) for p, v in parts.items()}  # sums of shares: 19.999999 is 20
        status, reason = status_of(run, obs)
        if status == GRADED and ctx.findings.judge_timeout:
            status, reason = LIMIT, judge_limit(limit)
        verdict = ctx.findings.verdict
        if verdict is not None and verdict.verified and verdict.worst > 0:
            notes.append(Message(
                f"学習ループを採点側で再現した結果と、あなたのループの重みは丸め誤差の範囲で一致しました"
                f"（最大の相対差 {verdict.worst:.1e}、許容 {replay.TOLERANCE['param']:g}）。",
                f"the grader replayed your loop: its weights agree with the replay up to rounding (largest relative "
                f"difference {verdict.worst:.1e}, allowed {replay.TOLERANCE['param']:g})."))
        training = obs.first("training")
        if training and training.get("substituted_net"):
            model = self.assignment.model
            notes.append(Message(f"あなたの {model} は課題の {model} と一致しなかったため、学習ループと正解率は課題の {model} で確かめました。",
                                 f"your {model} differs from the lab's, so the loop and the accuracy were checked with "
                                 f"the lab's {model} in its place."))
        if not run.sandboxed:
            notes.append(Message("サンドボックスなしで採点されました。", "graded without a sandbox."))
        return SubmissionResult(student_id=sub.student_id, status=status, reason=reason, parts=parts,
                                max_parts=dict(points), checks=tuple(checks), notes=tuple(notes),
                                seconds=round(seconds, 2), source=sub.source, measures=measures_of(measured))

    def _checked(self, ctx: Context):
        """The hidden checks on one context, within the judge's limit (a little past its budget: the replay
        stops itself when the budget is spent; the margin is for whatever else might not). A session that overran is
        abandoned and a new one started for the rest of the batch."""
        try:
            return self.checks.run(ctx, ctx.budget, grace=JUDGE_GRACE)
        except ChecksTimedOut:
            self.checks = CheckSession(self.assignment)
            raise

    def _near_threshold(self, ctx: Context) -> bool:
        a, accuracy = self.assignment.accuracy, ctx.findings.accuracy
        return accuracy is not None and a.margin > 0 and a.threshold - a.margin <= accuracy < a.threshold

    def _second_seed(self, ctx: Context, clean, checks):
        """Within the calibrated margin below the threshold, a seed's bad luck must not cost points: train again
        with another seed and keep the better accuracy check."""
        run, obs = self.sandboxed(clean, replace(self.settings, seed_offset=self.settings.seed_offset + 1))
        ctx2 = replace(ctx, run=run, obs=obs, seed=ctx.seed + 1, findings=Findings(),
                       budget=Budget(self.assignment.judge.seconds))
        again = self._checked(ctx2)
        second = {c.name: c for c in again}
        better = "accuracy" in second and any(c.name == "accuracy" and second["accuracy"].points > c.points
                                              for c in checks)
        kept = [second[c.name] if c.name == "accuracy" and better else c for c in checks]
        return kept, Message(f"テスト正解率 {ctx.findings.accuracy:.4f} が基準に近かったため、別のシードでもう一度学習し、"
                             "良い方を採用しました。",
                             f"the test accuracy {ctx.findings.accuracy:.4f} was close to the threshold, so the network "
                             "was trained again with another seed and the better result kept."), \
            ctx2 if better else ctx


JUDGE_GRACE = 10.0  # seconds past the judge's budget before a check session is given up
MAX_CURVE_POINTS = 1000  # a loss curve kept in a result: enough for a picture, small enough for a results file


def thinned(values: list[float], most: int = MAX_CURVE_POINTS) -> tuple[float, ...]:
    """At most `most` points, each the mean of a run of consecutive values (a curve keeps its shape)."""
    if len(values) <= most:
        return tuple(values)
    step = len(values) / most
    return tuple(sum(chunk) / len(chunk) for i in range(most)
                 for chunk in [values[round(i * step):round((i + 1) * step)]] if chunk)


def measures_of(ctx: Context) -> Measures:
    """What the judge measured for the pictures: the accuracy and confusion of the trained weights, computed
    here, and the loss per batch as the replay computed it (only when the replay believed the loop)."""
    verdict = ctx.findings.verdict
    losses = [loss for _, loss in verdict.losses] if verdict is not None and verdict.verified else []
    accuracy = ctx.findings.accuracy
    return Measures(accuracy=accuracy, threshold=ctx.assignment.accuracy.threshold if accuracy is not None else None,
                    losses=thinned(losses), confusion=ctx.findings.confusion or ())


def added_cell_notes(clean, obs) -> list[Message]:
    """A note for each cell the student added that failed: it costs only what needed it, which the checks
    that lost say themselves."""
    notes = []
    for cell in clean.cells:
        record = next((r for r in obs.all("cell") if r.get("id") == cell.grade_id), None) if cell.added else None
        if record is not None and not record.get("ok"):
            why = describe_error(record.get("error"), f"{cell.grade_id}（あなたが追加したセル）の実行中に",
                                 f"running {cell.grade_id}, a cell you added", clean.defined)
            notes.append(Message(f"{why.ja} このセルの結果を使う部分だけが影響を受けます。",
                                 f"{why.en} Only what needs this cell's results is affected."))
    return notes


def judge_limit(seconds: float) -> Message:
    return Message(f"採点側の確認が制限時間（{seconds:g} 秒）を超えたため停止しました",
                   f"stopped: checking this submission took longer than the grader's limit of {seconds:g} s")


def status_of(run, obs) -> tuple[str, Message | None]:
    if run.killed_for:
        return LIMIT, LIMITS.get(run.killed_for, ANY_LIMIT).reason
    if not obs.finished:
        return CRASHED, Message(f"実行が途中で終了しました（終了コード {run.returncode}）",
                                f"the run ended early (exit code {run.returncode})")
    return GRADED, None


def grade(assignment: Assignment, submissions: list[Submission], out: Path, options: Options,
          progress=None, pool=None) -> list[SubmissionResult]:
    """Grade every submission not yet recorded under `out` by this assignment as it is now (all of them with
    force); return every result under `out` that it graded. A recorded result whose fingerprint differs (the
    config, the hidden checks, the source notebook or the kit changed since) is graded again, and the progress
    line says how many and why. `pool` (cluster.ClusterPool) grades on a cluster's workers instead of here."""
    store = ResultStore(out)
    now = fingerprint(assignment)
    titles = part_titles(assignment)
    handed_in = {sub.student_id: sub for sub in submissions}

    def save(result: SubmissionResult) -> SubmissionResult:
        result = replace(result, fingerprint=now, part_titles=titles, **came_with(handed_in.get(result.student_id)))
        store.save(result)
        return result

    todo, again = [], Counter()  # again: why -> how many recorded results are graded again for it
    for sub in submissions:
        if store.has(sub.student_id) and not options.force:
            why = store.stale(sub.student_id, now) or resubmitted(store, sub)
            if why is None:
                continue
            again[why] += 1
        if sub.problem or sub.notebook is None:
            save(invalid(sub.student_id, Message(f"提出物を読めません: {sub.problem}",
                                                  f"the submission cannot be used: {sub.problem}"),
                         assignment.points, source=sub.source))
            continue
        todo.append(sub)
    if progress:
        progress.start(len(todo))
    if todo:
        # Where the runs happen: this machine's pool, or a cluster's workers (cluster.py). Either way each
        # result comes back here, is saved at once, and the next one is taken.
        runs = pool.results(assignment, todo, options, progress) if pool else local_results(assignment, todo, options)
        with contextlib.closing(runs):
            for result in runs:
                result = save(result)
                if progress:
                    progress.advance(result)
    if progress:
        progress.finish()
        for why, n in again.items():
            progress.note(graded_again(n, why))
        for line in pool.notes() if pool else ():
            progress.note(line)
    return store.load_all(now)  # results of another fingerprint (students not in this batch) never mix in


def local_results(assignment: Assignment, todo: list[Submission], options: Options):
    """This machine's pool: sandboxes in worker threads, the judge here, results in the order runs finish."""
    grader = Grader(assignment, options)
    try:
        # One thread more than slots: its sandbox warms up and waits for the next free slot.
        pool = ThreadPoolExecutor(max_workers=options.workers + 1)
        try:
            owner = {pool.submit(grader.observe, sub): sub for sub in todo}
            pending = set(owner)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield judged(grader, future.result, owner[future])
        except BaseException:  # Ctrl-C, the caller stopping, or our own failure: stop soon, keep what is saved
            grader.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
    finally:
        grader.close()


def resubmitted(store: ResultStore, sub: Submission) -> Message | None:
    """RESUBMITTED when the recorded result graded other bytes than the notebook handed in now. A result that
    recorded no digest (an earlier kit) is stale by its fingerprint anyway."""
    try:
        recorded = store.load(sub.student_id)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # store.stale said UNREADABLE already
    if resubmitted_digest(recorded, sub):
        return RESUBMITTED
    if recorded.submitted_at != came_with(sub)["submitted_at"] or recorded.late_mark != sub.late_mark:
        # Same bytes handed in at another time: only the record changes, nothing needs training again.
        store.save(replace(recorded, **came_with(sub)))
    return None


def cache_dir() -> Path:
    """Where the kit keeps what it can compute again: $AUTOGRADER_CACHE, else $XDG_CACHE_HOME/autograder, else
    ~/.cache/autograder."""
    from .cli import _cache_root

    return _cache_root()


def reference_losses(assignment: Assignment) -> list[float]:
    """The answer key's loss per batch under the lab's budget (replay.lecture_losses), thinned as a result's
    curve is: what each feedback page draws beside the student's. Computed once per lab and fingerprint (an
    epoch of training in this process: about as long as one submission's replay) and kept in cache_dir()."""
    from .files import write_atomic
    from .judge import model_class, replay_setup

    now = fingerprint(assignment).digest
    path = cache_dir() / "reference" / f"{assignment.name}-{now[:32]}.json"
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        if kept.get("fingerprint") == now and all(isinstance(v, float) for v in kept.get("losses", [None])):
            return kept["losses"]
    except (OSError, ValueError, AttributeError):
        pass
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    try:
        data = TrustedData.load(assignment, torch.device("cpu"))
        model = model_class(reference.load(assignment), assignment)
        setup = replay_setup(assignment, model, data, assignment.training.seed)
        losses = list(thinned(replay.lecture_losses(setup, assignment.training.epochs)))
    finally:
        torch.set_num_threads(threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"fingerprint": now, "losses": losses}))
    return losses


def judged(grader: Grader, observed, sub: Submission) -> SubmissionResult:
    """grader.judge(observed()), with our own failure on one submission turned into its row."""
    try:
        return grader.judge(observed())
    except Exception as exc:  # our own failure on one submission must not sink the batch: it becomes its row
        log.exception("internal error while grading %s", sub.student_id)
        return SubmissionResult(student_id=sub.student_id, status=CRASHED,
                                reason=Message(f"採点システムの内部エラー（TA に連絡してください）: {type(exc).__name__}",
                                               f"internal grader error (tell your TA): {type(exc).__name__}"),
                                parts={p: 0.0 for p in grader.assignment.points},
                                max_parts=dict(grader.assignment.points), source=sub.source)


class Progress:
    """The batch's progress bar on stderr (tqdm): the count, the time left at the current pace, and how many
    rows so far have each status, with the notebooks that scored nothing counted apart from those that failed
    to run (a 0-point notebook ran; the TA should look at both)."""

    def __init__(self, stream=sys.stderr, lang: str = "en"):
        self.stream, self.lang, self.bar = stream, lang, None
        self.counts: Counter = Counter()
        self.workers = ""  # on a cluster: how many workers grade (and refused), and the pace

    def start(self, total: int):
        from tqdm import tqdm  # only a batch draws a bar: the rest of the CLI does not pay for the import

        if total:
            self.bar = tqdm(total=total, file=self.stream, unit="nb", dynamic_ncols=True, smoothing=0.1,
                            desc="grading" if self.lang == "en" else "採点中",
                            bar_format="{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining}{postfix}")

    def advance(self, result: SubmissionResult):
        self.counts[result.status] += 1
        if result.status == GRADED and result.total == 0:
            self.counts["0 points"] += 1
        if self.bar is not None:
            self.bar.set_postfix_str(self.line(), refresh=False)
            self.bar.update(1)

    def cluster(self, grading: int, refused: int) -> None:
        """The cluster's workers as the bar shows them, with the pace so far (notebooks per minute)."""
        rate = ""
        if self.bar is not None and self.bar.n:
            elapsed = self.bar.format_dict["elapsed"]
            rate = f", {self.bar.n / elapsed * 60:.1f} nb/min" if elapsed > 0 else ""
        word = "workers" if self.lang == "en" else "ワーカー"
        self.workers = f"{word} {grading}" + (f" (refused {refused})" if refused else "") + rate
        if self.bar is not None:
            self.bar.set_postfix_str(self.line())

    def line(self) -> str:
        """Counts by status, the statuses in their order: "graded 12 (0 points: 1), limit 1"."""
        parts = []
        for status in STATUSES:
            if self.counts[status]:
                zero = self.counts["0 points"] if status == GRADED else 0
                parts.append(f"{status} {self.counts[status]}" + (f" (0 points: {zero})" if zero else ""))
        return ", ".join(parts + ([self.workers] if self.workers else []))

    def finish(self):
        if self.bar is not None:
            self.bar.close()

    def note(self, message: Message):
        """One line about the batch, after the progress bar (in --lang)."""
        self.stream.write(message.get(self.lang) + "\n")
        self.stream.flush()
