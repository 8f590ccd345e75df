"""Scores land in nbgrader's gradebook, and nbgrader's own `nbgrader export` shows them."""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import gradebook
from autograder.results import GRADED, LIMIT, Message, SubmissionResult, invalid

from repo import COURSE

pytest.importorskip("nbgrader")

ALICE, YAMADA, HOSTILE = "alice", "山田 太郎", "<script>alert(1)</script> $(rm -rf ~)"


POINTS = COURSE.lab("cnn_mnist").points  # shapes 20, net 25, device 10, training 35, evaluate 10


def result(student_id, parts, status=GRADED, maxima=None):
    """A result graded out of `maxima` (default: today's points of its parts), as grade() records them."""
    return SubmissionResult(student_id=student_id, status=status, reason=None, parts=parts,
                            max_parts=dict(maxima) if maxima is not None else {p: POINTS.get(p, 0.0) for p in parts})


@pytest.fixture
def points(assignment):
    return dict(assignment.points)  # shapes 20, net 25, device 10, training 35, evaluate 10


def batch(points, *, alice_net=25.0):
    partial = {p: 0.0 for p in points} | {"shapes": 20.0, "net": alice_net, "evaluate": 7.5}
    return [result(ALICE, partial, LIMIT), result(YAMADA, dict(points)),
            # The parts an invalid row carries never count: it is recorded with 0s whatever they say.
            dataclasses.replace(invalid(HOSTILE, Message("読めません", "unreadable"), points), parts=dict(points))]


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory, assignment) -> Path:
    """A gradebook made once by record() itself (which must find `alembic` without an activated venv), copied
    for each test: creating one runs `alembic heads` in a subprocess, which takes seconds."""
    folder = tmp_path_factory.mktemp("template")
    gradebook.record(gradebook.default_db_url(folder), dataclasses.replace(assignment, points={}), [])
    return folder / gradebook.DB_NAME


@pytest.fixture
def db_url(tmp_path, empty_db) -> str:
    shutil.copy(empty_db, tmp_path / gradebook.DB_NAME)
    return gradebook.default_db_url(tmp_path)


def export(db_url: str, folder: Path, *, cli: bool) -> dict[str, dict[str, str]]:
    """nbgrader's CSV export of the database: student_id -> its row. With cli, the real `nbgrader export` command
    (seconds to start); without, the same exporter class called in-process."""
    out = folder / "export.csv"
    if cli:
        # Run from another folder: nbgrader's default database is <cwd>/gradebook.db, so this proves --db is used.
        elsewhere = folder / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        env = dict(os.environ, PYTHONUTF8="1")  # nbgrader writes the CSV in the locale's encoding
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # nbgrader runs `alembic`
        proc = subprocess.run([sys.executable, "-m", "nbgrader", "export", f"--db={db_url}", f"--to={out}"],
                              cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    else:
        from nbgrader.api import Gradebook
        from nbgrader.plugins import CsvExportPlugin

        with Gradebook(db_url) as gb:
            CsvExportPlugin(to=str(out)).export(gb)
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    by_id = {row["student_id"]: row for row in rows}
    assert len(by_id) == len(rows), "a student appears twice in the export"
    return by_id


def scores(db_url, assignment, student):
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        return {g.name: g.auto_score for g in
                gb.find_submission_notebook("cnn_mnist", assignment.name, student).grades}


@pytest.mark.notebook
def test_record_then_export_and_rerun(tmp_path, db_url, assignment, points):
    assert db_url == f"sqlite:///{tmp_path.resolve() / 'gradebook.db'}"
    gradebook.record(db_url, assignment, batch(points))

    rows = export(db_url, tmp_path, cli=True)
    assert set(rows) == {ALICE, YAMADA, HOSTILE}
    assert {sid: (float(r["score"]), float(r["max_score"])) for sid, r in rows.items()} == {
        ALICE: (52.5, 100.0), YAMADA: (100.0, 100.0), HOSTILE: (0.0, 100.0)}
    assert rows[ALICE]["assignment"] == "cnn_mnist"
    assert scores(db_url, assignment, ALICE) == {
        "test_shapes": 20.0, "test_net": 25.0, "test_device": 0.0, "test_training": 0.0,
        "test_evaluate": 7.5}

    # A regrade with other points updates the same rows: no second student, submission or grade.
    gradebook.record(db_url, assignment, batch(points, alice_net=5.0))
    rows = export(db_url, tmp_path, cli=False)
    assert {sid: float(r["score"]) for sid, r in rows.items()} == {ALICE: 32.5, YAMADA: 100.0, HOSTILE: 0.0}
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        assert len(gb.students) == 3
        assert gb.find_assignment("cnn_mnist").num_submissions == 3
        grades = gb.find_submission_notebook("cnn_mnist", "cnn_mnist", ALICE).grades
        assert len(grades) == len(points) and not any(g.needs_manual_grade for g in grades)
        cells = gb.find_notebook("cnn_mnist", "cnn_mnist").grade_cells
        assert {c.name: (c.max_score, c.cell_type) for c in cells} == {
            f"test_{p}": (v, "code") for p, v in points.items()}


def test_manual_score_survives_a_regrade(db_url, assignment, points):
    from nbgrader.api import Gradebook

    gradebook.record(db_url, assignment, batch(points))
    with Gradebook(db_url) as gb:
        gb.find_grade("test_net", "cnn_mnist", "cnn_mnist", ALICE).manual_score = 20.0  # a TA's override
        gb.db.commit()
    gradebook.record(db_url, assignment, batch(points, alice_net=5.0))
    with Gradebook(db_url) as gb:
        grade = gb.find_grade("test_net", "cnn_mnist", "cnn_mnist", ALICE)
        assert (grade.auto_score, grade.manual_score, grade.score, grade.needs_manual_grade) == (5.0, 20.0, 20.0, True)


def test_new_part_gets_grades_for_existing_submissions(db_url, assignment, points):
    fewer = dataclasses.replace(assignment, points={"shapes": 20.0})
    gradebook.record(db_url, fewer, [result(ALICE, {"shapes": 20.0})])
    gradebook.record(db_url, assignment, [result(ALICE, dict(points))])
    assert scores(db_url, assignment, ALICE) == {f"test_{p}": v for p, v in points.items()}


def test_refuses_what_would_record_wrong_scores(tmp_path, db_url, assignment, points):
    nowhere = gradebook.default_db_url(tmp_path / "new")
    with pytest.raises(gradebook.GradebookError, match="bonus"):
        gradebook.record(nowhere, assignment, [result(ALICE, {"bonus": 5.0})])
    with pytest.raises(gradebook.GradebookError, match="more than one result"):
        gradebook.record(nowhere, assignment, [result(ALICE, {}), result(ALICE, {})])
    assert not (tmp_path / "new").exists()  # checked before anything was written

    gradebook.record(db_url, assignment, [result(ALICE, dict(points))])
    fewer = dataclasses.replace(assignment, points={p: v for p, v in points.items() if p != "evaluate"})
    with pytest.raises(gradebook.GradebookError, match="test_evaluate"):  # it would inflate max_score
        gradebook.record(db_url, fewer, [result(ALICE, {"shapes": 1.0}, maxima=fewer.points)])


def test_refuses_results_graded_out_of_other_maxima(tmp_path, assignment, points):
    """A result graded before [points] changed holds scores out of the old maxima (evaluate 10 of 5): recording
    it would show them against today's. grade() grades such results again; record() refuses any that slip by."""
    halved = dataclasses.replace(assignment, points=points | {"evaluate": 5.0})
    nowhere = gradebook.default_db_url(tmp_path / "new")
    with pytest.raises(gradebook.GradebookError, match=r"'alice' was graded under other points than cnn_mnist's "
                                                       r"assignment.toml \(evaluate out of 10 \(now 5\)\)"):
        gradebook.record(nowhere, halved, [result(ALICE, dict(points))])
    with pytest.raises(gradebook.GradebookError, match=r"no evaluate \(now out of 5\)"):
        gradebook.record(nowhere, halved, [result(ALICE, {p: 0.0 for p in points if p != "evaluate"})])
    assert not (tmp_path / "new").exists()


# --------------------------------------------------------------------------------------------------------------
# When it was handed in, when it was due, and what lateness cost (issue 16)

DUE = "2026-12-07T23:59:00+09:00"  # 14:59 UTC


def late_lab(assignment, **late):
    from autograder.config import Late

    return dataclasses.replace(assignment, late=Late(**({"due": DUE, "penalty": "per_day", "points": 10.0} | late)))


def handed_in(student_id, parts, when="", *, late_mark=False):
    return dataclasses.replace(result(student_id, parts), submitted_at=when, late_mark=late_mark)


def submission_rows(db_url, assignment):
    """student -> (timestamp, late_submission_penalty of the notebook, score) as nbgrader stores them."""
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        return {s.student.id: (s.timestamp, gb.find_submission_notebook("cnn_mnist", assignment.name,
                                                                        s.student.id).late_submission_penalty,
                               s.score) for s in gb.find_assignment(assignment.name).submissions}


def test_timestamps_due_date_and_late_penalties(tmp_path, db_url, assignment, points):
    from datetime import datetime

    from nbgrader.api import Gradebook

    lab = late_lab(assignment)
    gradebook.record(db_url, lab, [
        handed_in(ALICE, dict(points), "2026-12-07T23:58:59.500000+09:00"),  # on time, in Tokyo's time
        handed_in(YAMADA, dict(points), "2026-12-10T12:00:00+00:00"),  # 2 d 21 h late: 3 started days
        handed_in(HOSTILE, dict(points), late_mark=True)])  # late by the LMS's word only: the first day
    assert submission_rows(db_url, lab) == {
        ALICE: (datetime(2026, 12, 7, 14, 58, 59, 500000), None, 100.0),
        YAMADA: (datetime(2026, 12, 10, 12, 0), 30.0, 100.0),
        HOSTILE: (None, 10.0, 100.0)}
    with Gradebook(db_url) as gb:
        assert gb.find_assignment("cnn_mnist").duedate == datetime(2026, 12, 7, 14, 59)

    rows = export(db_url, tmp_path, cli=False)
    assert {sid: (r["timestamp"], r["raw_score"], r["late_submission_penalty"], r["score"], r["duedate"])
            for sid, r in rows.items()} == {
        ALICE: ("2026-12-07 14:58:59.500000", "100.0", "0.0", "100.0", "2026-12-07 14:59:00"),
        YAMADA: ("2026-12-10 12:00:00", "100.0", "30.0", "70.0", "2026-12-07 14:59:00"),
        HOSTILE: ("", "100.0", "10.0", "90.0", "2026-12-07 14:59:00")}

    # The due date moved a week on: the same results are on time, and no time already recorded is lost.
    gradebook.record(db_url, late_lab(assignment, due="2026-12-14T23:59:00+09:00"),
                     [handed_in(YAMADA, dict(points), "2026-12-10T12:00:00+00:00"), handed_in(ALICE, dict(points))])
    assert submission_rows(db_url, lab)[YAMADA] == (datetime(2026, 12, 10, 12, 0), None, 100.0)
    assert submission_rows(db_url, lab)[ALICE][0] == datetime(2026, 12, 7, 14, 58, 59, 500000)


def test_a_due_date_set_in_nbgrader_stays_unless_the_config_has_one(db_url, assignment, points):
    from datetime import datetime

    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        gb.update_or_create_assignment("cnn_mnist", duedate="2026-12-01 12:00:00 UTC")  # the TA's, in nbgrader
    gradebook.record(db_url, assignment, [handed_in(ALICE, dict(points), "2026-12-03T00:00:00+00:00")])
    with Gradebook(db_url) as gb:
        assert gb.find_assignment("cnn_mnist").duedate == datetime(2026, 12, 1, 12, 0)
    # No [late] policy in the config: nbgrader shows the lateness, the kit takes nothing off (nbgrader's "none").
    assert submission_rows(db_url, assignment)[ALICE][1] is None
    gradebook.record(db_url, late_lab(assignment), [handed_in(ALICE, dict(points), "2026-12-03T00:00:00+00:00")])
    with Gradebook(db_url) as gb:
        assert gb.find_assignment("cnn_mnist").duedate == datetime(2026, 12, 7, 14, 59)


def test_the_penalty_is_taken_from_the_score_nbgrader_shows(db_url, assignment, points):
    """A TA's manual score changes the score the policy applies to, as nbgrader's AssignLatePenalties sees it."""
    from nbgrader.api import Gradebook

    late = "2026-12-08T00:00:00+00:00"  # 9 h late
    partial = {p: 0.0 for p in points} | {"shapes": 20.0}
    zero = late_lab(assignment, penalty="zero", points=0.0)
    gradebook.record(db_url, zero, [handed_in(ALICE, partial, late)])
    assert submission_rows(db_url, zero)[ALICE][1:] == (20.0, 20.0)
    with Gradebook(db_url) as gb:
        gb.find_grade("test_net", "cnn_mnist", "cnn_mnist", ALICE).manual_score = 25.0
        gb.db.commit()
    gradebook.record(db_url, zero, [handed_in(ALICE, partial, late)])
    assert submission_rows(db_url, zero)[ALICE][1:] == (45.0, 45.0)  # "zero" takes all of the 45 nbgrader shows
    capped = late_lab(assignment, penalty="per_hour", points=5.0, cap=40.0)
    gradebook.record(db_url, capped, [handed_in(ALICE, partial, late)])
    assert submission_rows(db_url, capped)[ALICE][1:] == (40.0, 45.0)  # 9 h x 5 = 45, capped at 40


def test_every_solution_cell_has_a_comment_for_nbgraders_readers(db_url, assignment, points):
    """generate_feedback and formgrader look up a comment for each answer cell of an autograded notebook."""
    from nbgrader.api import Gradebook

    answers = gradebook.solution_cell_names(assignment)
    assert answers == [*assignment.module_cells[1:], *assignment.experiment_cells]  # "setup" is locked, not an answer
    with gradebook._quiet_nbgrader(), Gradebook(db_url) as gb:  # recorded before the gradebook knew the answers
        gb.update_or_create_assignment("cnn_mnist")
        gb.update_or_create_notebook("cnn_mnist", "cnn_mnist")
        gb.update_or_create_student(YAMADA)
        gb.update_or_create_submission("cnn_mnist", YAMADA)
    gradebook.record(db_url, assignment, batch(points))
    with Gradebook(db_url) as gb:
        for student in (ALICE, YAMADA, HOSTILE):
            assert [gb.find_comment(name, "cnn_mnist", "cnn_mnist", student).comment for name in answers] == \
                [None] * len(answers)
        assert sorted(c.name for c in gb.find_notebook("cnn_mnist", "cnn_mnist").solution_cells) == sorted(answers)
