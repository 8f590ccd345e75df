"""What lateness costs: the lab's [late] policy applied to one result, with nbgrader's semantics.

The penalty is never stored in a result: every report (grades.csv, the feedback, the gradebook, the LMS
exports) asks `assess` afresh, so a TA who moves the due date re-scores the class by running the reports
again, without training anyone again (results.fingerprint leaves [late] out).

nbgrader's built-in methods are "none" (lateness is recorded, no points off) and "zero" (a late submission
scores 0); its documentation shows points off per hour as the plugin to write. Here "per_hour" and "per_day"
take `points` off for each *started* hour or day past the due date (plus `grace_minutes`), at most `cap`,
and never more than the score itself: nbgrader's final score is max(0, score - penalty) too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from .config import Late, due_date
from .results import Message, SubmissionResult

_UNIT_SECONDS = {"per_hour": 3600, "per_day": 86400}


@dataclass(frozen=True)
class Lateness:
    late: bool
    seconds: float | None  # how late; None when on time, or when only the LMS's mark says it was late
    penalty: float  # points off, between 0 and the score
    message: Message | None  # one line for the feedback and the summary; None when on time

    @property
    def hours(self) -> float | None:
        return None if self.seconds is None else self.seconds / 3600


ON_TIME = Lateness(False, None, 0.0, None)


def submitted_at(result: SubmissionResult) -> datetime | None:
    try:
        return datetime.fromisoformat(result.submitted_at) if result.submitted_at else None
    except ValueError:  # written by hand or by something else: treated as unknown, not as on time silently
        return None


def assess(late: Late, result: SubmissionResult) -> Lateness:
    """How late `result` was handed in under `late`, and what it costs of `result.total`."""
    due, when = due_date(late), submitted_at(result)
    if due is None:
        return ON_TIME
    if when is not None:
        seconds = (when - due).total_seconds() - late.grace_minutes * 60
        if seconds <= 0:
            return ON_TIME
    elif result.late_mark:
        seconds = None  # late by the LMS's word; by how much it did not say
    else:
        return ON_TIME  # no time and no mark: nothing says it was late
    penalty = _penalty(late, seconds, result.total)
    return Lateness(True, seconds, penalty, _message(late, seconds, penalty))


def final(result: SubmissionResult, lateness: Lateness) -> float:
    """The score after the late penalty: what the LMS gets."""
    return round(max(0.0, result.total - lateness.penalty), 2)


def _penalty(late: Late, seconds: float | None, score: float) -> float:
    if late.penalty == "none":
        return 0.0
    if late.penalty == "zero":
        return round(score, 2)
    # Unknown lateness (an LMS's mark only) costs the first started unit: the least that is certainly owed.
    units = 1 if seconds is None else math.ceil(seconds / _UNIT_SECONDS[late.penalty])
    return round(min(units * late.points, late.cap, score), 2)


def _how_late(seconds: float | None) -> tuple[str, str]:
    if seconds is None:
        return "提出が遅れました（LMS の記録による。遅れた時間は不明）", "handed in late (the LMS marked it; it did not say by how much)"
    if seconds < 3600:
        minutes = max(1, math.ceil(seconds / 60))
        return f"締切から {minutes} 分遅れて提出されました", f"handed in {minutes} min after the due date"
    hours = seconds / 3600
    if hours < 48:
        return f"締切から {hours:.1f} 時間遅れて提出されました", f"handed in {hours:.1f} h after the due date"
    return f"締切から {hours / 24:.1f} 日遅れて提出されました", f"handed in {hours / 24:.1f} days after the due date"


def _message(late: Late, seconds: float | None, penalty: float) -> Message:
    ja, en = _how_late(seconds)
    points = f"{penalty:.2f}".rstrip("0").rstrip(".")
    if late.penalty == "none":
        return Message(f"{ja}（減点なし）。", f"{en} (no points off).")
    if late.penalty == "zero":
        return Message(f"{ja}。遅れた提出は 0 点です（-{points} 点）。", f"{en}: late work scores 0 (-{points} points).")
    unit_ja, unit_en = ("時間", "hour") if late.penalty == "per_hour" else ("日", "day")
    rule_ja = f"遅れ 1 {unit_ja}（開始ごと）につき {late.points:g} 点減点"
    rule_en = f"{late.points:g} points off per started {unit_en} late"
    if math.isfinite(late.cap):
        rule_ja += f"、上限 {late.cap:g} 点"
        rule_en += f", at most {late.cap:g}"
    return Message(f"{ja}。{rule_ja}: -{points} 点。", f"{en}; {rule_en}: -{points} points.")
