"""Judge one submission's observations with the assignment's hidden pytest checks, in the grading process.

The checks live in ``assignments/<name>/hidden/checks_*.py`` (never released, never mounted in a sandbox).
Each is a pytest test marked ``@pytest.mark.check(part, title_ja, title_en, weight=1)`` that takes the
fixture ``ctx`` (a `Context`) and calls `fail` with a bilingual message when the student loses the points.
A part's points are shared among its checks by weight. An unexpected exception in a check is our bug, not
the student's: it costs the check's points with a neutral message and never shows the check's code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from .config import Assignment
from .observe import Observations, tensors
from .results import CheckResult, Message
from .sandbox import RunResult
from .sanitize import Sanitized


class CheckFailed(AssertionError):
    def __init__(self, message: Message, fraction: float = 0.0):
        super().__init__(message.en)
        self.message, self.fraction = message, fraction


def fail(ja: str, en: str, *, fraction: float = 0.0):
    """Lose the check's points (all, or all but `fraction`), with a message for the student."""
    raise CheckFailed(Message(ja, en), fraction)


@dataclass
class Context:
    """Everything a hidden check may look at. Built in the grading process; nothing here came in as code."""

    assignment: Assignment
    sanitized: Sanitized
    run: RunResult | None
    obs: Observations
    reference: object  # the answer key as a module (autograder.reference)
    data: "TrustedData"
    device: torch.device
    probes: dict  # the hidden probe inputs, by function: [(group, args, kwargs), ...]
    seed: int  # the seed the sandboxed run used
    cache: dict = field(default_factory=dict)

    def cell_error(self, *grade_ids: str) -> Message | None:
        """Why a needed cell did not run, in the student's terms; None when all ran."""
        for gid in grade_ids:
            if gid in self.sanitized.missing:
                return self.sanitized.missing[gid]
            record = next((r for r in self.obs.all("cell") if r.get("id") == gid), None)
            if record is None:
                return Message(f"セル {gid} まで実行が進みませんでした（{self.stopped_why().ja}）。",
                               f"grading never reached the cell {gid} ({self.stopped_why().en}).")
            if not record.get("ok"):
                return describe_error(record.get("error"), f"セル {gid} の実行中に", f"running the cell {gid}")
        return None

    def record(self, kind: str, cell: str, name: str, *, need_ok: bool = True) -> dict:
        """The harness's record of `kind`, or lose the check saying why there is none (or why it failed)."""
        error = self.cell_error(cell)
        if error:
            fail(error.ja, error.en)
        record = self.obs.first(kind)
        if record is None:
            why = self.stopped_why()
            fail(f"{name} の確認まで到達しませんでした（{why.ja}）。", f"grading never reached {name} ({why.en}).")
        if need_ok and not record.get("ok"):
            error = describe_error(record.get("error"), f"{name} の実行中に", f"running {name}")
            fail(error.ja, error.en)
        return record

    def stopped_why(self) -> Message:
        run = self.run
        if run is not None and run.killed_for:
            return LIMIT_MESSAGES.get(run.killed_for, LIMIT_MESSAGES["time"])
        return Message("プログラムが途中で終了しました", "the program stopped early")

    def test_accuracy(self, state: dict) -> float | None:
        return trusted_accuracy(self.reference, state, self.data, self.device)

    def holdout_accuracy(self, state: dict) -> float | None:
        return self.accuracy_of(state, self.data.holdout_images, self.data.holdout_labels)

    def trained_state(self) -> dict | None:
        record = self.obs.first("weights")
        return tensors(record.get("weights")) if record else None

    def _outputs(self, state: dict, images: torch.Tensor) -> torch.Tensor | None:
        return trusted_outputs(self.reference, state, images, self.device)

    def accuracy_of(self, state: dict, images: torch.Tensor, labels: torch.Tensor) -> float | None:
        out = self._outputs(state, images)
        return None if out is None else (out.argmax(1) == labels.to(out.device)).float().mean().item()

    def holdout_loss(self, state: dict) -> float | None:
        out = self._outputs(state, self.data.holdout_images)
        if out is None:
            return None
        loss = torch.nn.functional.nll_loss(out, self.data.holdout_labels.to(out.device)).item()
        return loss if math.isfinite(loss) else float("inf")


@dataclass(frozen=True)
class TrustedData:
    """MNIST as the grading process holds it, loaded once per batch. The test labels never enter a sandbox."""

    test_images: torch.Tensor  # normalised N x 1 x 28 x 28, on the grading device
    test_labels: torch.Tensor
    holdout_images: torch.Tensor  # the training images kept out of training, for checking evaluate()
    holdout_labels: torch.Tensor

    @classmethod
    def load(cls, assignment: Assignment, device: torch.device) -> TrustedData:
        from . import mnist

        test, train = mnist.load_split("test"), mnist.load_split("train")
        holdout = assignment.training.holdout
        return cls(mnist.normalize(test.images).to(device), test.labels.long().to(device),
                   mnist.normalize(train.images[len(train.images) - holdout:]).to(device),
                   train.labels[len(train.labels) - holdout:].long().to(device))


def trusted_outputs(reference, state: dict, images: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """Log-probabilities of the answer key's Net with these weights, computed here in the grading process."""
    net = reference.Net()
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError):
        return None
    net.to(device).eval()
    with torch.no_grad():
        return torch.cat([net(images[i:i + 2000]) for i in range(0, len(images), 2000)])


def trusted_accuracy(reference, state: dict, data: TrustedData, device: torch.device) -> float | None:
    """Test accuracy of these weights, on the 10,000 test images whose labels never enter a sandbox."""
    out = trusted_outputs(reference, state, data.test_images, device)
    return None if out is None else (out.argmax(1) == data.test_labels.to(out.device)).float().mean().item()


LIMIT_MESSAGES = {
    "time": Message("制限時間を超えました。無限ループや長すぎる処理がないか確認してください",
                    "it ran past the time limit: look for an endless loop or far too much work"),
    "memory": Message("メモリの上限を超えました。大きすぎるテンソルやリストを作っていないか確認してください",
                      "it used more memory than allowed: look for huge tensors or lists"),
    "processes": Message("プロセス数の上限を超えました。プロセスやスレッドを作りすぎていないか確認してください",
                         "it started too many processes or threads"),
}


def describe_error(error: dict | None, where_ja: str, where_en: str) -> Message:
    error = error if isinstance(error, dict) else {}
    kind, text = str(error.get("type", "Error"))[:60], str(error.get("message", ""))[:300]
    where = error.get("where")
    line = f" ({where[0]}, line {where[1]})" if isinstance(where, list) and len(where) == 2 else ""
    if kind == "NotImplementedError":
        return Message(f"まだ実装されていません（{where_ja} NotImplementedError）。",
                       f"not implemented yet (NotImplementedError while {where_en}).")
    if kind == "Timeout":
        return Message(f"{where_ja}制限時間を超えました{line}。", f"it took too long while {where_en}{line}.")
    return Message(f"{where_ja}エラー {kind}: {text}{line}", f"{kind} while {where_en}: {text}{line}")


class _Plugin:
    def __init__(self, ctx: Context, assignment: Assignment):
        self._context, self._assignment = ctx, assignment  # not "ctx": pytest reads plugin attributes as fixtures
        self.outcomes: list[tuple[pytest.Item, float, Message | None]] = []
        self.items: list[pytest.Item] = []

    @pytest.fixture
    def ctx(self):
        return self._context

    def pytest_configure(self, config):
        config.addinivalue_line("markers", "check(part, title_ja, title_en, weight=1): one graded hidden check")

    def pytest_collection_modifyitems(self, items):
        self.items = list(items)

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
                    self.outcomes.append((item, 0.0, Message(
                        "このチェックを実行できませんでした。担当 TA に連絡してください。",
                        "this check could not be completed; please tell your TA.")))


def check_name(item) -> str:
    return item.name.removeprefix("check_")


def checks_dir(assignment: Assignment) -> Path:
    return assignment.folder / "hidden"


def run_checks(ctx: Context) -> list[CheckResult]:
    """Run every hidden check against `ctx` and turn outcomes into points."""
    assignment = ctx.assignment
    plugin = _Plugin(ctx, assignment)
    args = [str(checks_dir(assignment)), "-p", "no:cacheprovider", "-p", "no:terminal", "--import-mode=importlib",
            "-o", "python_files=checks_*.py", "-o", "python_functions=check_*", "-o", "addopts=",
            "--rootdir", str(checks_dir(assignment)), "-c", "/dev/null", "--capture=no", "-W", "ignore"]
    code = pytest.main(args, plugins=[plugin])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) or not plugin.outcomes:
        raise RuntimeError(f"the hidden checks of {assignment.name} did not run (pytest exit {code})")
    marks = {}
    for item, fraction, message in plugin.outcomes:
        mark = item.get_closest_marker("check")
        if mark is None:
            raise RuntimeError(f"hidden check {item.name} has no @pytest.mark.check(part, title_ja, title_en)")
        marks[item.nodeid] = (item, mark, fraction, message)
    # A check's points: fixed in [check_points], or its weight's share of what the part has left.
    fixed = assignment.check_points
    weights: dict[str, float] = {}
    for item, mark, _, _ in marks.values():
        if f"{mark.args[0]}.{check_name(item)}" not in fixed:
            weights[mark.args[0]] = weights.get(mark.args[0], 0.0) + mark.kwargs.get("weight", 1.0)
    results = []
    for item, mark, fraction, message in marks.values():
        part, title_ja, title_en = mark.args
        key = f"{part}.{check_name(item)}"
        if key in fixed:
            max_points = fixed[key]
        else:
            left = assignment.points[part] - sum(v for k, v in fixed.items() if k.split(".")[0] == part)
            max_points = left * mark.kwargs.get("weight", 1.0) / weights[part]
        fraction = min(max(fraction if math.isfinite(fraction) else 0.0, 0.0), 1.0)
        results.append(CheckResult(name=check_name(item), part=part, title=Message(title_ja, title_en),
                                   points=max_points * fraction, max_points=max_points, message=message))
    return results
