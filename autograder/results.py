"""What grading produces: one result per check, one per student, and the folder that records them.

Each student's result is written the moment it is judged, atomically (temp file + rename), so a batch
stopped by Ctrl-C or kill -9 resumes with every finished student kept and none counted twice.

Results know what graded them: each records a Fingerprint of the assignment config, the hidden checks, the
source notebook and the kit's version. A batch resumes only from results whose fingerprint is today's; the
others are graded again (grade.grade), never mixed with current ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from . import __version__
from .files import write_atomic

if TYPE_CHECKING:
    from .config import Assignment
    from .submissions import Submission

log = logging.getLogger(__name__)

# Row statuses, from best to worst.
GRADED = "graded"  # the harness ran to the end; points are what the checks gave
LIMIT = "limit"  # a limit (time, memory, processes) stopped the run; what was observed before is judged
CRASHED = "crashed"  # the run died on its own (exit, signal); what was observed before is judged
INVALID = "invalid"  # no usable notebook: nothing ran, no points
STATUSES = (GRADED, LIMIT, CRASHED, INVALID)


@dataclass(frozen=True)
class Message:
    """Feedback in both languages. Never holds hidden test code or a hidden input's expected value."""

    ja: str
    en: str

    def get(self, lang: str) -> str:
        return self.ja if lang == "ja" else self.en


@dataclass(frozen=True)
class CheckResult:
    name: str  # stable id, e.g. "shapes.conv_stride"
    part: str  # the assignment part it belongs to, e.g. "shapes"
    title: Message  # what the check looks at, for the report
    points: float
    max_points: float
    message: Message | None = None  # why points were lost: expected, observed, a hint; None when passed
    # True for a check the grader can only observe inside the run (modes, no_grad, .to() calls), not recompute:
    # the report says so (README, "Threat model").
    observed: bool = False

    @property
    def passed(self) -> bool:
        return self.points >= self.max_points


@dataclass(frozen=True)
class Measures:
    """What the judge measured for the pictures and the class report: numbers it recomputed itself, never what
    the run reported."""

    accuracy: float | None = None  # test accuracy of the trained weights; None when not measured
    threshold: float | None = None  # the lab's threshold for full points, when the accuracy was measured
    losses: tuple[float, ...] = ()  # the training loss per batch as the judge's replay computed it (thinned)
    confusion: tuple[tuple[int, ...], ...] = ()  # test set: rows the true class, columns the predicted one


@dataclass(frozen=True)
class Fingerprint:
    """What graded a result. `digest` covers the other four; they say what changed when it no longer matches."""

    digest: str
    config: str  # sha256 of assignment.toml
    hidden: str  # sha256 of every file under hidden/ (each with its path relative to hidden/) and of the runtime
    notebook: str  # sha256 of the source notebook
    kit: str  # autograder.__version__

    def changes(self, now: Fingerprint) -> Message:
        """What differs between this fingerprint and `now`, as the end of "... graded again: <this>"."""
        what = [(ja, en) for name, ja, en in (("config", "設定（assignment.toml）", "assignment.toml"),
                                              ("hidden", "隠しテスト", "the hidden checks"),
                                              ("notebook", "元のノートブック", "the source notebook"))
                if getattr(self, name) != getattr(now, name)]
        if self.kit != now.kit:
            what.append((f"採点システムの版（{self.kit} → {now.kit}）",
                         f"the autograder's version ({self.kit} → {now.kit})"))
        if not what:  # the same parts under another digest: a kit that combined them differently recorded it
            what = [("結果の記録方法", "how results record what graded them")]
        en = [e for _, e in what]
        en = en[0] if len(en) == 1 else ", ".join(en[:-1]) + " and " + en[-1]
        return Message(f"採点後に{'と'.join(j for j, _ in what)}が変わったため", f"{en} changed since grading")


# Why other recorded results are graded again (phrased to follow "N result(s) ... graded again: ").
UNRECORDED = Message("何で採点されたかが記録されていない（以前の版の記録）ため",
                     "recorded by an earlier version of the kit, without what graded them")
UNREADABLE = Message("記録を読めなかったため", "the recorded file could not be read")


def graded_again(n: int, why: Message) -> Message:
    """The batch's line for `n` recorded results graded again for one reason."""
    return Message(f"{n} 件の結果を採点し直しました: {why.ja}",
                   f"{n} result{'s were' if n != 1 else ' was'} graded again: {why.en}")


# What importing the checks writes into hidden/: derived from the files there, so left out of the fingerprint.
_DERIVED = ("__pycache__", ".pytest_cache")


def _config_digest(path: Path) -> str:
    """sha256 of assignment.toml as read, less its [late] table: a due date or late policy changes only the
    penalty, which every report applies afresh (late.py), so moving it must not send a class back to training."""
    from .config import tomllib  # tomli before Python 3.11

    table = tomllib.loads(path.read_text(encoding="utf-8"))
    table.pop("late", None)
    return hashlib.sha256(json.dumps(table, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def fingerprint(assignment: Assignment) -> Fingerprint:
    """Today's fingerprint of an assignment: its assignment.toml, hidden/ and source notebook, and this kit."""
    from .config import CONFIG_NAME

    config = _config_digest(assignment.folder / CONFIG_NAME)
    hidden = hashlib.sha256()
    root = assignment.folder / "hidden"
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file()
                   and not any(part in _DERIVED for part in p.relative_to(root).parts) and p.suffix != ".pyc")
    framed = [(name, path.read_bytes()) for name, path in files]
    # The lab's steps inside the sandbox decide what the checks see: they count as the checks' own code.
    from .config import runtime_sources

    sources = runtime_sources(assignment)
    framed.append(("../runtime.py", sources["runtime"].encode()))
    framed += [(f"module:{name}", source.encode()) for name, source in sources["modules"].items()]
    for name, data in framed:
        # Path and length framed: moving bytes from one file to the next, or renaming a file, changes the digest.
        hidden.update(f"{name}\0{len(data)}\0".encode())
        hidden.update(data)
    notebook = hashlib.sha256(assignment.source_notebook.read_bytes()).hexdigest()
    parts = {"config": config, "hidden": hidden.hexdigest(), "notebook": notebook, "kit": __version__}
    digest = hashlib.sha256("".join(f"{k}={v}\n" for k, v in parts.items()).encode()).hexdigest()
    return Fingerprint(digest=digest, **parts)


@dataclass(frozen=True)
class SubmissionResult:
    student_id: str
    status: str
    reason: Message | None  # one line for the grades table; None when nothing went wrong
    parts: dict[str, float]  # part -> points earned, in the assignment's (the notebook's) order
    max_parts: dict[str, float]
    checks: tuple[CheckResult, ...] = ()
    notes: tuple[Message, ...] = ()  # things the student should know that cost no points
    seconds: float = 0.0
    source: str = ""  # where the notebook came from
    fingerprint: Fingerprint | None = None  # what graded it; None: recorded before results kept that
    part_titles: dict[str, Message] = field(default_factory=dict)  # part -> its name in the reports, if it has one
    # What came with the notebook (submissions.Submission): when it was handed in, whether the LMS marked it late,
    # who it is for the LMS (roster.Student.ids()), and the notebook's sha256 (a resubmission is graded again).
    submitted_at: str = ""  # ISO 8601 with offset; "" when unknown
    late_mark: bool = False
    student: dict[str, str] = field(default_factory=dict)
    digest: str = ""
    measures: Measures | None = None
    ran_on: str = ""  # the cluster worker that graded it ("host (address)"); "" for this machine's own pool

    @property
    def total(self) -> float:
        return round(sum(self.parts.values()), 4)

    @property
    def max_total(self) -> float:
        return round(sum(self.max_parts.values()), 4)

    def to_json(self) -> str:
        # No sort_keys: parts, maxima and titles keep the assignment's order (JSON objects keep theirs when read).
        return json.dumps(asdict(self), ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> SubmissionResult:
        d = json.loads(text)
        msg = lambda m: Message(**m) if m else None  # noqa: E731
        checks = tuple(CheckResult(name=c["name"], part=c["part"], title=Message(**c["title"]), points=c["points"],
                                   max_points=c["max_points"], message=msg(c["message"]),
                                   observed=c.get("observed", False)) for c in d["checks"])
        graded_by = d.get("fingerprint")
        return cls(student_id=d["student_id"], status=d["status"], reason=msg(d["reason"]), parts=d["parts"],
                   max_parts=d["max_parts"], checks=checks, notes=tuple(Message(**n) for n in d["notes"]),
                   seconds=d["seconds"], source=d["source"],
                   fingerprint=Fingerprint(**graded_by) if graded_by else None,
                   part_titles={p: Message(**m) for p, m in d.get("part_titles", {}).items()},
                   submitted_at=d.get("submitted_at", ""), late_mark=d.get("late_mark", False),
                   student=dict(d.get("student", {})), digest=d.get("digest", ""),
                   measures=_measures(d.get("measures")), ran_on=str(d.get("ran_on", "")))

    def stale(self, now: Fingerprint) -> Message | None:
        """Why this result must be graded again under `now` (None: it still counts). A resubmitted notebook is
        the caller's to compare (`digest`)."""
        if self.fingerprint is None:
            return UNRECORDED
        return None if self.fingerprint.digest == now.digest else self.fingerprint.changes(now)


def _measures(d: dict | None) -> Measures | None:
    if not d:
        return None
    return Measures(accuracy=d.get("accuracy"), threshold=d.get("threshold"), losses=tuple(d.get("losses", ())),
                    confusion=tuple(tuple(row) for row in d.get("confusion", ())))


RESUBMITTED = Message("提出物が採点後に差し替えられたため", "the notebook was handed in again since grading")


def digest(notebook: bytes | None) -> str:
    return hashlib.sha256(notebook).hexdigest() if notebook is not None else ""


def came_with(sub: Submission | None) -> dict:
    """What a result records of the submission it graded: when, the LMS's late mark, who, which bytes."""
    if sub is None:
        return {}
    return {"submitted_at": sub.submitted_at.isoformat() if sub.submitted_at else "", "late_mark": sub.late_mark,
            "student": sub.student.ids() if sub.student else {}, "digest": digest(sub.notebook)}


def resubmitted_digest(recorded: SubmissionResult, sub: Submission) -> Message | None:
    """RESUBMITTED when `recorded` graded other bytes than `sub` holds."""
    return RESUBMITTED if recorded.digest and recorded.digest != digest(sub.notebook) else None


def part_titles(assignment: Assignment) -> dict[str, Message]:
    """The parts' names from [part_names], in the order of [points]; "" where a language has none."""
    names = assignment.part_names
    return {p: Message(names[p].ja, names[p].en) for p in assignment.points if p in names}


def invalid(student_id: str, reason: Message, max_parts: dict[str, float], *, source: str = "") -> SubmissionResult:
    """A row for a submission that could not run at all: zero points, one reason."""
    return SubmissionResult(student_id=student_id, status=INVALID, reason=reason,
                            parts={p: 0.0 for p in max_parts}, max_parts=dict(max_parts), source=source)


def file_stem(student_id: str) -> str:
    """A file name for any id: percent-encoded (no '/'), and hashed past what file systems allow (255 bytes)."""
    stem = quote(student_id, safe="")
    if len(stem) > 120:  # a Japanese character is 9 bytes encoded: long names would not fit
        stem = f"{stem[:80]}~{hashlib.sha256(student_id.encode()).hexdigest()[:16]}"
    return stem


@dataclass
class ResultStore:
    """results/<student>.json under the output folder; the file name is the id, percent-encoded."""

    folder: Path
    _dir: Path = field(init=False)

    def __post_init__(self):
        self._dir = Path(self.folder) / "results"
        self._dir.mkdir(parents=True, exist_ok=True)

    def path(self, student_id: str) -> Path:
        return self._dir / f"{file_stem(student_id)}.json"

    def has(self, student_id: str) -> bool:
        return self.path(student_id).is_file()

    def save(self, result: SubmissionResult) -> None:
        write_atomic(self.path(result.student_id), result.to_json())  # a reader sees the old or the new, never half

    def load(self, student_id: str) -> SubmissionResult:
        return SubmissionResult.from_json(self.path(student_id).read_text(encoding="utf-8"))

    def stale(self, student_id: str, now: Fingerprint) -> Message | None:
        """Why the recorded result of `student_id` must be graded again (None: it counts as it is)."""
        try:
            return self.load(student_id).stale(now)
        except (OSError, ValueError, KeyError, TypeError):  # cut short, or written by something else
            return UNREADABLE

    def load_all(self, now: Fingerprint | None = None) -> list[SubmissionResult]:
        """Every readable result, by student id; with `now`, only those it graded (the others are stale)."""
        results = []
        for path in self._dir.glob("*.json"):
            try:
                result = SubmissionResult.from_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("%s cannot be read (%s): left out", path, exc)
                continue
            if now is None or result.stale(now) is None:
                results.append(result)
        return sorted(results, key=lambda r: r.student_id)
