"""What grading produces: one result per check, one per student, and the folder that records them.

Each student's result is written the moment it is judged, atomically (temp file + rename), so a batch
stopped by Ctrl-C or kill -9 resumes with every finished student kept and none counted twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

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

    @property
    def passed(self) -> bool:
        return self.points >= self.max_points


@dataclass(frozen=True)
class SubmissionResult:
    student_id: str
    status: str
    reason: Message | None  # one line for the grades table; None when nothing went wrong
    parts: dict[str, float]  # part -> points earned
    max_parts: dict[str, float]
    checks: tuple[CheckResult, ...] = ()
    notes: tuple[Message, ...] = ()  # things the student should know that cost no points
    seconds: float = 0.0
    source: str = ""  # where the notebook came from

    @property
    def total(self) -> float:
        return round(sum(self.parts.values()), 4)

    @property
    def max_total(self) -> float:
        return round(sum(self.max_parts.values()), 4)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SubmissionResult:
        d = json.loads(text)
        msg = lambda m: Message(**m) if m else None  # noqa: E731
        checks = tuple(CheckResult(name=c["name"], part=c["part"], title=Message(**c["title"]), points=c["points"],
                                   max_points=c["max_points"], message=msg(c["message"])) for c in d["checks"])
        return cls(student_id=d["student_id"], status=d["status"], reason=msg(d["reason"]), parts=d["parts"],
                   max_parts=d["max_parts"], checks=checks, notes=tuple(Message(**n) for n in d["notes"]),
                   seconds=d["seconds"], source=d["source"])


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
        path = self.path(result.student_id)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.write(result.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: a reader sees the old result or the new one, never half

    def load(self, student_id: str) -> SubmissionResult:
        return SubmissionResult.from_json(self.path(student_id).read_text(encoding="utf-8"))

    def load_all(self) -> list[SubmissionResult]:
        results = [SubmissionResult.from_json(p.read_text(encoding="utf-8")) for p in self._dir.glob("*.json")]
        return sorted(results, key=lambda r: r.student_id)
