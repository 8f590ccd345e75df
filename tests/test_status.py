"""`autograder status` from what would be graded and what was recorded: no grading, no sandbox."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from types import SimpleNamespace

from autograder import status
from autograder.config import Late
from autograder.results import Message, ResultStore, came_with, fingerprint, invalid
from autograder.roster import Student
from autograder.submissions import Submission


def test_each_student_graded_stale_not_graded_unusable_missing_and_late(tmp_path, assignment):
    lab = dataclasses.replace(assignment, late=Late(due="2026-12-07T23:59:00+09:00", penalty="per_day", points=10))
    late = datetime(2026, 12, 7, 16, 59, tzinfo=timezone.utc)  # 2 h after the due date (14:59 UTC)
    subs = [Submission("graded", b"nb-1", "graded.ipynb", submitted_at=late),
            Submission("resubmitted", b"nb-2 again", "resubmitted.ipynb"),
            Submission("new", b"nb-3", "new.ipynb"),
            Submission("broken", None, "broken.ipynb", problem="not a notebook"),
            Submission("cut", b"{", "cut.ipynb")]
    store, now = ResultStore(tmp_path), fingerprint(lab)
    full = {p: v for p, v in lab.points.items()}

    def recorded(sub, notebook=None, **fields):
        result = dataclasses.replace(invalid(sub.student_id, None, lab.points), status="graded", parts=dict(full),
                                     fingerprint=now, **came_with(sub), **fields)
        if notebook is not None:
            result = dataclasses.replace(result, **came_with(dataclasses.replace(sub, notebook=notebook)))
        store.save(result)

    recorded(subs[0])
    recorded(subs[1], notebook=b"nb-2")  # graded the first version
    store.save(dataclasses.replace(invalid("cut", Message("壊れています", "the file is cut short"), lab.points),
                                   fingerprint=now, **came_with(subs[4])))
    found = SimpleNamespace(submissions=subs, missing=[Student("absent", name="A. Bsent")])
    rows = {r[0]: r for r in status.rows(lab, found, tmp_path)}
    assert rows["graded"][1:4] == ("graded", "100 - 10", "2.0 h late")
    assert rows["resubmitted"][1] == "stale" and "handed in again" in rows["resubmitted"][4]
    assert rows["new"][1] == "not graded" and rows["broken"][1:] == ("unusable", "", "", "not a notebook")
    assert rows["cut"][1] == "graded" and rows["cut"][4] == "invalid: the file is cut short"
    assert rows["absent"][1] == "missing"
    table = status.table(lab, found, tmp_path)
    assert "graded 2, stale 1, not graded 1, unusable 1, missing 1" in table and "late: 1" in table
