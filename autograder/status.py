"""`autograder status`: where each student of a lab stands, without grading anyone.

Read from what `grade` would be given (intake.gather) and what it recorded (results/): graded, stale (the lab
changed since, or the notebook was handed in again), not graded yet, unusable, or missing from the download;
and how late each one was under the lab's [late] policy as it is now.
"""

from __future__ import annotations

from pathlib import Path

from . import late
from .config import Assignment, due_date
from .report import _num, _pad, _printable, _truncate, _width
from .results import ResultStore, SubmissionResult, came_with, fingerprint, invalid, resubmitted_digest

GRADED, STALE, TODO, UNUSABLE, MISSING = "graded", "stale", "not graded", "unusable", "missing"
STATES = (GRADED, STALE, TODO, UNUSABLE, MISSING)


def rows(assignment: Assignment, found, out: Path) -> list[tuple[str, str, str, str, str]]:
    """(student, state, score, late, why) for every submission and every rostered student without one."""
    store, now = ResultStore(out), fingerprint(assignment)
    table = []
    for sub in found.submissions:
        result, why, score = _recorded(store, sub.student_id), "", ""
        if sub.problem or sub.notebook is None:
            state, why = UNUSABLE, sub.problem or "no notebook"
        elif result is None:
            state = TODO
        else:
            stale = result.stale(now) or resubmitted_digest(result, sub)
            state = STALE if stale else GRADED
            # A row that did not run to the end says how it ended: "invalid: the notebook is not valid JSON".
            ended = f"{result.status}: {result.reason.en}" if result.status != "graded" and result.reason else ""
            why = stale.en if stale else ended
            score = _num(result.total)
        lateness = _lateness(assignment, sub, result)
        if lateness.penalty and score:
            score = f"{score} - {_num(lateness.penalty)}"
        table.append((sub.student_id, state, score, _late_text(lateness), why))
    for student in found.missing:
        table.append((student.student_id, MISSING, "", "", "no submission in the download"))
    return table


def table(assignment: Assignment, found, out: Path) -> str:
    body = [(_truncate(_printable(a), 32), b, c, d, _printable(e)) for a, b, c, d, e in rows(assignment, found, out)]
    header = ("student", "state", "score", "late", "why")
    widths = [max(_width(r[i]) for r in [header, *body]) for i in range(4)]
    lines = ["  ".join(_pad(cell, w) for cell, w in zip(r[:4], widths)) + "  " + r[4] for r in [header, *body]]
    counts = {s: sum(1 for r in body if r[1] == s) for s in STATES}
    lines += ["", ", ".join(f"{s} {n}" for s, n in counts.items() if n) or "nothing handed in"]
    due = due_date(assignment.late)
    if due is not None:
        lines.append(f"due {due.isoformat()}, late policy {assignment.late.penalty!r}; "
                     f"late: {sum(1 for r in body if r[3])}")
    return "\n".join(line.rstrip() for line in lines)


def _recorded(store: ResultStore, student_id: str) -> SubmissionResult | None:
    try:
        return store.load(student_id) if store.has(student_id) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _lateness(assignment: Assignment, sub, result: SubmissionResult | None) -> late.Lateness:
    from dataclasses import replace

    # What the submission says now (its time and mark), on the recorded result's score when there is one.
    base = result or invalid(sub.student_id, None, assignment.points)
    return late.assess(assignment.late, replace(base, **{k: v for k, v in came_with(sub).items()
                                                         if k in ("submitted_at", "late_mark")}))


def _late_text(lateness: late.Lateness) -> str:
    if not lateness.late:
        return ""
    return "late (LMS mark)" if lateness.hours is None else f"{lateness.hours:.1f} h late"
