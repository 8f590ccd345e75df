"""What the hidden checks see and use: the `Context` of one submission, the trusted data, `fail`.

The checks live in ``assignments/<name>/hidden/checks_*.py`` (never released, never mounted in a sandbox) and
are run by `autograder.checks`. Everything here is computed in the grading process from data: the test
accuracy and the holdout loss come from the submission's weights put into the answer key's network, on images
whose labels never enter a sandbox.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from dataclasses import dataclass, field

import torch

from . import replay
from .budget import Budget
from .config import Assignment
from .observe import EVAL_IMAGES, Observations, tensors
from .results import Message
from .sandbox import RunResult
from .sanitize import Sanitized


class CheckFailed(AssertionError):
    def __init__(self, message: Message, fraction: float = 0.0):
        super().__init__(message.en)
        self.message, self.fraction = message, fraction


def fail(ja: str, en: str, *, fraction: float = 0.0):
    """Lose the check's points (all, or all but `fraction`), with a message for the student."""
    raise CheckFailed(Message(ja, en), fraction)


MAX_SHARED_OUTPUTS = 16  # 10,000 x 10 log-probabilities each, 0.4 MB


@dataclass
class Findings:
    """What the checks of one submission found that the grader acts on once they are done: typed values, not
    a dict the checks and the grader must agree on by key."""

    verdict: replay.Verdict | None = None  # the replay of the loop, once a check asked for it
    judge_timeout: bool = False  # the replay ran out of the judge's time: the row's status is "limit"
    accuracy: float | None = None  # the test accuracy a check measured: near the threshold, a second seed
    # ... and the confusion matrix of the same forward pass (rows the true class, columns the predicted one),
    # for the student's feedback: computed here on the test labels, which never enter a sandbox
    confusion: tuple[tuple[int, ...], ...] | None = None


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
    findings: Findings = field(default_factory=Findings)
    budget: Budget = field(default_factory=Budget)  # the judge's time on this submission (budget.py)
    # Trusted forward passes by (images, weights digest). The grader hands one dict to a whole batch: the
    # weights before training are the same for most students (same seed, same layers), so the holdout loss
    # of those is computed once per batch instead of once per student.
    outputs: dict = field(default_factory=dict)

    def cell_error(self, *grade_ids: str) -> Message | None:
        """Why a needed cell did not run, in the student's terms; None when all ran, or when the notebook has
        no such cell (what it should define may be elsewhere: the probe that needs it says if it is not)."""
        for gid in grade_ids:
            if not any(cell.grade_id == gid for cell in self.sanitized.cells):
                continue
            record = next((r for r in self.obs.all("cell") if r.get("id") == gid), None)
            if record is None:
                return Message(f"セル {gid} まで実行が進みませんでした（{self.stopped_why().ja}）。",
                               f"grading never reached the cell {gid} ({self.stopped_why().en}).")
            if not record.get("ok"):
                return self.describe(record.get("error"), f"セル {gid} の実行中に", f"running the cell {gid}")
        return None

    def describe(self, error: dict | None, where_ja: str, where_en: str) -> Message:
        """describe_error, knowing the names this notebook defines (for a NameError's likely meaning)."""
        return describe_error(error, where_ja, where_en, self.sanitized.defined)

    def record(self, kind: str, cell: str, name: str, *, need_ok: bool = True) -> dict:
        """The harness's record of `kind`, or lose the check saying why there is none (or why it failed)."""
        error = self.cell_error(cell)
        if error:
            fail(error.ja, error.en)
        record = self.obs.first(kind)
        if record is None and kind in self.obs.rejected:
            why = self.obs.rejected[kind]
            fail(f"{name} の記録を読み取れませんでした（{why}）。", f"the record of {name} could not be read ({why}).")
        if record is None:
            why = self.stopped_why()
            fail(f"{name} の確認まで到達しませんでした（{why.ja}）。", f"grading never reached {name} ({why.en}).")
        error = record.get("error") if isinstance(record.get("error"), dict) else {}
        never_ran = error.get("type") == "NameError" and error.get("where") is None  # the harness found no `name`
        if (need_ok or never_ran) and not record.get("ok"):
            error = self.describe(record.get("error"), f"{name} の実行中に", f"running {name}")
            fail(error.ja, error.en)
        return record

    def stopped_why(self) -> Message:
        run = self.run
        if run is not None and run.killed_for:
            return LIMITS.get(run.killed_for, ANY_LIMIT).hint
        return Message("プログラムが途中で終了しました", "the program stopped early")

    @property
    def model(self) -> type:
        """The answer key's network class (assignment.toml: model)."""
        return model_class(self.reference, self.assignment)

    def test_accuracy(self, state: dict) -> float | None:
        """Test accuracy of these weights; the same forward pass leaves its confusion matrix in the findings."""
        out = trusted_outputs(self.model, state, self.data.test_images, self.device)
        if out is None:
            return None
        labels = self.data.test_labels.to(out.device)
        predicted = out.argmax(1)
        classes = out.shape[1]
        counts = torch.bincount(labels * classes + predicted, minlength=classes * classes).view(classes, classes)
        self.findings.confusion = tuple(tuple(int(v) for v in row) for row in counts.tolist())
        return (predicted == labels).float().mean().item()

    def holdout_accuracy(self, state: dict) -> float | None:
        """Accuracy on the held-out images the student's evaluate() was given (observe.EVAL_IMAGES)."""
        return self.accuracy_of(state, self.data.eval_images, self.data.eval_labels)

    def trained_state(self) -> dict | None:
        record = self.obs.first("weights")
        return tensors(record.get("weights")) if record else None

    def initial_state(self) -> dict:
        """The weights every run starts training from (the lab's Probes.training, runtime.py), computed here."""
        return initial_weights(self.model, self.seed)

    def training_verdict(self) -> replay.Verdict:
        """Whether the loop's trace, replayed here, leads to the weights it sent back (replay.py). Once per
        submission: every training check asks."""
        if self.findings.verdict is None:
            record = self.obs.first("training") or {}
            setup = replay_setup(self.assignment, self.model, self.data, self.seed)
            snapshots = [(r.get("event"), tensors(r.get("state"))) for r in self.obs.all("snapshot")]
            if "snapshot" in self.obs.rejected:
                snapshots.append((None, None))  # a snapshot that could not be read: the chain is broken
            try:
                self.findings.verdict = replay.verify(setup, record.get("events", ""), snapshots,
                                                      self.trained_state(), self.budget)
            except replay.JudgeTimeout:
                self.findings.judge_timeout = True
                self.findings.verdict = replay.Verdict(False, Message(
                    "採点側で学習ループを再現しきれず、時間切れになりました。学習ループの記録は採点に使えません。",
                    "the grader could not replay the loop within its time limit, so nothing the loop reported counts."))
        return self.findings.verdict

    def _outputs(self, state: dict, images: torch.Tensor) -> torch.Tensor | None:
        # Several checks look at the same weights on the same images (the loss and the accuracy on the holdout
        # set): one forward pass each, keyed by the weights' bytes.
        key = (id(images), _digest(state))
        if key not in self.outputs:
            while len(self.outputs) >= MAX_SHARED_OUTPUTS:
                del self.outputs[next(iter(self.outputs))]  # the oldest
            self.outputs[key] = trusted_outputs(self.model, state, images, self.device)
        return self.outputs[key]

    def accuracy_of(self, state: dict, images: torch.Tensor, labels: torch.Tensor) -> float | None:
        out = self._outputs(state, images)
        return None if out is None else (out.argmax(1) == labels.to(out.device)).float().mean().item()

    def holdout_loss(self, state: dict) -> float | None:
        """Mean loss on the same held-out images as `holdout_accuracy`: one forward pass serves both, and
        2,500 images tell a falling loss (2.3 before training, about 0.2 after) as well as 10,000 would."""
        out = self._outputs(state, self.data.eval_images)
        if out is None:
            return None
        loss = torch.nn.functional.nll_loss(out, self.data.eval_labels.to(out.device)).item()
        return loss if math.isfinite(loss) else float("inf")


@dataclass(frozen=True)
class TrustedData:
    """MNIST as the grading process holds it, loaded once per batch. The test labels never enter a sandbox."""

    test_images: torch.Tensor  # normalised N x 1 x 28 x 28, on the grading device
    test_labels: torch.Tensor
    eval_images: torch.Tensor  # the first training images kept out of training, which evaluate() gets
    eval_labels: torch.Tensor
    # The images the sandbox trains on, for the replay of each loop (replay.py): contiguous and on the CPU,
    # normalised by the same operations as the harness's, so that the replay computes what the run computed.
    train_images: torch.Tensor | None = None
    train_labels: torch.Tensor | None = None

    @classmethod
    def load(cls, assignment: Assignment, device: torch.device) -> TrustedData:
        from . import datasets

        provider = datasets.PROVIDERS[assignment.dataset]
        test, train = provider.load_split("test"), provider.load_split("train")
        holdout = assignment.training.holdout

        def images(raw):
            return provider.normalize(raw).to(device).contiguous(memory_format=torch.channels_last)

        start = len(train.images) - holdout  # the harness holds out the same images (the lab's Probes.training, runtime.py)
        return cls(images(test.images), test.labels.long().to(device),
                   images(train.images[start:start + EVAL_IMAGES]),
                   train.labels[start:start + EVAL_IMAGES].long().to(device),
                   provider.normalize(train.images[:start]).contiguous(), train.labels[:start].long())


_INITIAL: dict = {}


def model_class(reference, assignment: Assignment) -> type:
    """The answer key's network class, which the config names (reference.load has checked that it exists)."""
    return getattr(reference, assignment.model)


def initial_weights(model: type, seed: int) -> dict:
    """The lab's network as torch.manual_seed(seed) builds it: what every run trains from. Computed without
    disturbing this process's own random state."""
    key = (id(model), seed)
    if key not in _INITIAL:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _INITIAL[key] = {k: v.detach().clone() for k, v in model().state_dict().items()}
    return _INITIAL[key]


def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        h.update(name.encode() + b"\0" + str(tuple(value.shape)).encode() + str(value.dtype).encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def replay_setup(assignment: Assignment, model: type, data: TrustedData, seed: int) -> replay.Setup:
    """What a replay of training under the lab's budget needs, all of it the grader's own."""
    t = assignment.training
    return replay.Setup(net_class=model, initial=initial_weights(model, seed), images=data.train_images,
                        labels=data.train_labels, batch_size=t.batch_size, seed=seed, optimizer=t.optimizer,
                        lr=t.lr, momentum=t.momentum)


def trusted_outputs(model: type, state: dict, images: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """Log-probabilities of the answer key's network with these weights, computed here in the grading process.

    `images` are expected channels-last (`TrustedData` keeps them so): for narrow convolutions (the CNN lab's
    one, two and three channels) that layout is about 3x faster on CPU than the default one; the values are
    the same function of the same weights.
    """
    net = model()
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError):
        return None
    net.to(device, memory_format=torch.channels_last).eval()
    with torch.inference_mode():
        return torch.cat([net(images[i:i + 2000]) for i in range(0, len(images), 2000)])


def trusted_accuracy(model: type, state: dict, data: TrustedData, device: torch.device) -> float | None:
    """Test accuracy of these weights, on the test images whose labels never enter a sandbox."""
    out = trusted_outputs(model, state, data.test_images, device)
    return None if out is None else (out.argmax(1) == data.test_labels.to(out.device)).float().mean().item()


@dataclass(frozen=True)
class Limit:
    """What a limit the watchdog enforced means, in the one table of them (LIMITS)."""

    reason: Message  # the grades table's one line for the run
    hint: Message  # what a check that the stop kept from its record tells the student


LIMITS = {
    "time": Limit(Message("制限時間を超えたため停止しました", "stopped: time limit exceeded"),
                  Message("制限時間を超えました。無限ループや長すぎる処理がないか確認してください",
                          "it ran past the time limit: look for an endless loop or far too much work")),
    "memory": Limit(Message("メモリの上限を超えたため停止しました", "stopped: memory limit exceeded"),
                    Message("メモリの上限を超えました。大きすぎるテンソルやリストを作っていないか確認してください",
                            "it used more memory than allowed: look for huge tensors or lists")),
    "processes": Limit(Message("プロセス数の上限を超えたため停止しました", "stopped: too many processes"),
                       Message("プロセス数の上限を超えました。プロセスやスレッドを作りすぎていないか確認してください",
                               "it started too many processes or threads")),
}
ANY_LIMIT = Limit(Message("制限を超えたため停止しました", "stopped: a limit was exceeded"), LIMITS["time"].hint)


def number(encoded) -> float | int | str | None:
    """The number a returned value holds, whatever its type (harness.encode): a float or an int as itself, a
    0-d tensor or a numpy scalar by the number it holds ("nan" and "inf" by name); None for anything else.
    A value check judges this; only a type check minds the type."""
    if not isinstance(encoded, dict):
        return None
    if encoded.get("type") in ("float", "int"):
        return encoded.get("value")
    held = encoded.get("number") if encoded.get("type") == "other" else None
    return held if isinstance(held, (int, float, str)) and not isinstance(held, bool) else None


def type_name(encoded) -> str:
    """What the report calls a returned value's type: its class for anything but a plain number."""
    encoded = encoded if isinstance(encoded, dict) else {}
    return str(encoded.get("class") or encoded.get("type") or "nothing")[:60]


def describe_error(error: dict | None, where_ja: str, where_en: str, defined: frozenset[str] = frozenset()) -> Message:
    """An error of the run in the student's terms. `defined`: the names the notebook defines, for the names
    a NameError may have meant."""
    error = error if isinstance(error, dict) else {}
    kind, text = str(error.get("type", "Error"))[:60], str(error.get("message", ""))[:300]
    where = error.get("where")
    line = f" ({where[0]}, line {where[1]})" if isinstance(where, list) and len(where) == 2 else ""
    missing = re.fullmatch(r"(?:name ')?([^\s']+)'? is not defined", text) if kind == "NameError" else None
    if missing:
        name = missing.group(1)
        close = difflib.get_close_matches(name, sorted(defined - {name}), n=2, cutoff=0.6)
        if close:
            shown = "、".join(close), ", ".join(close)
            return Message(f"{name} が見つかりません{line}。名前を変えましたか？（ノートブックには {shown[0]} があります）",
                           f"{name} was not found{line}: did you rename it? ({shown[1]} is defined in your notebook)")
        return Message(f"{name} が見つかりません{line}。名前を変えたか、定義したセルを消していませんか？",
                       f"{name} was not found{line}: did you rename it, or delete the cell that defined it?")
    if kind == "NotImplementedError":
        return Message(f"まだ実装されていません（{where_ja} NotImplementedError）。",
                       f"not implemented yet (NotImplementedError while {where_en}).")
    if kind == "Timeout":
        return Message(f"{where_ja}制限時間を超えました{line}。", f"it took too long while {where_en}{line}.")
    return Message(f"{where_ja}エラー {kind}: {text}{line}", f"{kind} while {where_en}: {text}{line}")
