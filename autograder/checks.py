"""Run an assignment's hidden pytest checks against one submission after another, in one pytest session.

A check is a pytest test in ``assignments/<name>/hidden/checks_*.py`` marked
``@pytest.mark.check(part, title_ja, title_en, weight=1)``; it takes the fixture ``ctx`` (a `judge.Context`)
and calls `judge.fail` with a bilingual message when the student loses its points. A part's points are shared
among its checks by weight, or fixed per check in the assignment's ``[check_points]``. An unexpected exception
in a check is our bug, not the student's: it costs the check's points with a neutral message and never shows
the check's code.

Why one session for a whole batch: a fresh ``pytest.main`` per submission cost about 0.7 s here
(configuration, collection, and two ``gc.collect()`` at exit), minutes over a class. So `CheckSession` runs
``pytest.main`` once, in a thread of its own; its run-test loop collects the checks once and then re-runs every
item on each submission's Context as it arrives (pytest supports re-running an item: it is how
pytest-rerunfailures works). Fixtures are torn down after each submission, so nothing carries over.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import sys
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout  # not the builtin before Python 3.11
from pathlib import Path

import pytest
from _pytest.runner import runtestprotocol

from .budget import Budget
from .config import Assignment
from .judge import CheckFailed, Context
from .results import CheckResult, Message

# pytest's plugins that act on the whole process (warning filters, log handlers, thread and unraisable
# exception hooks) would also catch what the grader's other threads do while the session stays open.
_ARGS = ["-p", "no:cacheprovider", "-p", "no:terminal", "-p", "no:warnings", "-p", "no:logging",
         "-p", "no:unraisableexception", "-p", "no:threadexception", "-p", "no:faulthandler",
         "-p", "no:stepwise", "--assert=plain", "--capture=no", "--import-mode=importlib",
         "-o", "python_files=checks_*.py", "-o", "python_functions=check_*", "-o", "addopts=", "-c", "/dev/null"]
NEUTRAL = Message("このチェックを実行できませんでした。担当 TA に連絡してください。",
                  "this check could not be completed; please tell your TA.")


_POLL_SECONDS = 0.25  # how often a waiting grader looks at the judge's budget


class HiddenChecksError(RuntimeError):
    """The hidden checks themselves are broken (they do not import, or a check lacks its mark)."""


class ChecksTimedOut(RuntimeError):
    """The checks of one submission ran past their time limit. The session is abandoned (its thread may still
    be stuck in a check): start a new one for the next submission."""


class CheckSession:
    """``with CheckSession(assignment) as checks: checks.run(ctx)``, from any thread, one Context at a time."""

    def __init__(self, assignment: Assignment):
        self.assignment = assignment
        self._plugin = _Plugin()
        self._lock = threading.Lock()
        self._abandoned = False
        self._exit_code = None
        self._thread = threading.Thread(target=self._main, name=f"hidden-checks-{assignment.name}", daemon=True)
        self._thread.start()
        self._plugin.ready.wait()
        if self._plugin.broken:
            self._thread.join()
            raise HiddenChecksError(f"the hidden checks of {assignment.name} cannot run: {self._plugin.broken}")

    def _main(self) -> None:
        # Judging must not slow the sandboxes down: two torch threads training on two cores run several
        # times slower whenever another thread wants a core. At nice +19 this thread (and the forward passes
        # it computes) uses what the sandboxes leave idle; with nothing else running it runs at full speed.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        folder = self.assignment.folder.resolve() / "hidden"
        # rootdir "/" names each check module after its whole path (pytest's importlib mode reuses a module of
        # the same name already imported): two assignments' checks_net.py never meet. conftest.py files are
        # read from the hidden folder only, never from the folders above it.
        args = [str(folder), "--rootdir", "/", "--confcutdir", str(folder), *_ARGS]
        try:
            self._exit_code = pytest.main(args, plugins=[self._plugin])
        except BaseException as exc:  # noqa: BLE001 - reported to whoever waits
            self._plugin.broken = self._plugin.broken or f"{type(exc).__name__}: {exc}"
        finally:
            if not self._plugin.ready.is_set():
                self._plugin.broken = self._plugin.broken or f"pytest exited with {self._exit_code}"
                self._plugin.ready.set()
            self._plugin.stop_waiting()
            _forget_modules(folder)  # a later session (edited checks) imports them afresh

    def run(self, ctx: Context, budget: Budget | None = None, grace: float = 0.0) -> list[CheckResult]:
        """Every hidden check on this Context, as points. The checks' thread starts `budget` (the judge's own
        time, budget.py) as it takes the Context; ChecksTimedOut once they have spent `grace` seconds past it:
        a thread can not be stopped, so this session then takes no more work."""
        budget = budget or Budget()
        with self._lock:
            if self._abandoned or not self._thread.is_alive():
                raise HiddenChecksError(f"the hidden-check session of {self.assignment.name} has ended")
            done: Future = Future()
            self._plugin.jobs.put((ctx, budget, done))
            while True:
                try:
                    outcomes = done.result(timeout=_POLL_SECONDS)
                    break
                except FutureTimeout:
                    if budget.over(grace):
                        self._abandoned = True
                        self._plugin.jobs.put(None)  # once the stuck check returns, the session ends
                        raise ChecksTimedOut(f"the checks took longer than {budget.seconds + grace:g} s") from None
        return score(outcomes, self.assignment)

    def close(self) -> None:
        if self._abandoned:
            return  # its thread is a daemon, stuck or ending on its own: never wait for it
        self._plugin.jobs.put(None)
        self._thread.join()

    def __enter__(self) -> CheckSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Plugin:
    def __init__(self):
        self._context = None  # not "ctx": pytest reads a plugin's attributes as fixtures
        self.jobs: queue.Queue = queue.Queue()
        self.ready = threading.Event()
        self.broken: str | None = None
        self.outcomes: list[tuple[pytest.Item, float, Message | None]] = []
        self._collect_errors: list[str] = []

    @pytest.fixture
    def ctx(self):
        return self._context

    def pytest_configure(self, config):
        config.addinivalue_line("markers", "check(part, title_ja, title_en, weight=1, observed=False): one graded "
                                "hidden check; observed=True when it can only observe the run, not recompute")

    def pytest_collectreport(self, report):
        if report.failed:
            self._collect_errors.append(f"{report.nodeid}: {report.longreprtext.strip().splitlines()[-1:]}")

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session):
        items = list(session.items)
        unmarked = [item.name for item in items if item.get_closest_marker("check") is None]
        if self._collect_errors or not items or unmarked:
            self.broken = ("; ".join(self._collect_errors) or
                           (f"{', '.join(unmarked)} lack @pytest.mark.check(part, title_ja, title_en)" if unmarked
                            else "no check_* functions were found"))
            self.ready.set()
            return True
        self.ready.set()
        while (job := self.jobs.get()) is not None:
            self._context, budget, done = job
            budget.start()  # the judge's time on this submission counts from here, in this thread
            self.outcomes = []
            try:
                for i, item in enumerate(items):
                    # nextitem None after the last check tears every fixture down: nothing outlives a submission.
                    runtestprotocol(item, log=False, nextitem=items[i + 1] if i + 1 < len(items) else None)
                done.set_result(list(self.outcomes))
            except BaseException as exc:  # noqa: BLE001 - the waiting grader turns it into that student's row
                done.set_exception(exc)
            finally:
                self._context = None
        return True

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.when == "call" or (report.when == "setup" and report.failed):
            if report.passed:
                self.outcomes.append((item, 1.0, None))
            else:
                exc = call.excinfo.value if call.excinfo else None
                if isinstance(exc, CheckFailed):
                    self.outcomes.append((item, exc.fraction, exc.message))
                else:
                    self.outcomes.append((item, 0.0, NEUTRAL))

    def stop_waiting(self) -> None:
        """The session is over: whoever still waits gets an error, not a hang."""
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job[-1].set_exception(HiddenChecksError("the hidden-check session ended"))


def _forget_modules(folder: Path) -> None:
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and Path(file).resolve().is_relative_to(folder):
            del sys.modules[name]


def check_name(item) -> str:
    return item.name.removeprefix("check_")


def score(outcomes, assignment: Assignment) -> list[CheckResult]:
    """Turn (item, fraction kept, message) outcomes into points: fixed in [check_points], or a weight's share
    of what the part has left."""
    fixed = assignment.check_points
    weights: dict[str, float] = {}
    for item, _, _ in outcomes:
        mark = item.get_closest_marker("check")
        if f"{mark.args[0]}.{check_name(item)}" not in fixed:
            weights[mark.args[0]] = weights.get(mark.args[0], 0.0) + mark.kwargs.get("weight", 1.0)
    results = []
    for item, fraction, message in outcomes:
        mark = item.get_closest_marker("check")
        part, title_ja, title_en = mark.args
        key = f"{part}.{check_name(item)}"
        if key in fixed:
            max_points = fixed[key]
        else:
            left = assignment.points[part] - sum(v for k, v in fixed.items() if k.split(".")[0] == part)
            max_points = left * mark.kwargs.get("weight", 1.0) / weights[part]
        fraction = min(max(fraction if math.isfinite(fraction) else 0.0, 0.0), 1.0)
        results.append(CheckResult(name=check_name(item), part=part, title=Message(title_ja, title_en),
                                   points=max_points * fraction, max_points=max_points, message=message,
                                   observed=bool(mark.kwargs.get("observed", False))))
    return results
