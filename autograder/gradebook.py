"""Record a batch's scores in nbgrader's gradebook, through nbgrader's own API, so formgrader and `nbgrader export`
show them as if nbgrader's autograder had run.

The structure (assignment, notebook, one code grade cell `test_<part>` per part with the part's points, and a
solution cell per answer cell of the source notebook) is made with the Gradebook's update_or_create_* calls rather
than by running generate_assignment on the source notebook: it needs only the config, not a course folder or a
notebook conversion, and on a course database that generate_assignment already filled it finds the same names and
only confirms the points. The solution cells are there for nbgrader's own readers of the autograded notebooks
(nbcourse.py): generate_feedback and formgrader look up a comment for every solution cell they meet.

Each submission gets what nbgrader's autograder would give it: the time it was handed in, the lab's due date (from
[late], when it has one) and the late penalty that late.py's policy gives, so `nbgrader export` shows timestamp,
raw_score, late_submission_penalty and score as nbgrader itself would.

nbgrader (and SQLAlchemy under it) is imported inside the functions: importing it takes seconds, and the CLI
must start fast for every other command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from . import late
from .config import due_date
from .results import INVALID

if TYPE_CHECKING:
    from .config import Assignment
    from .results import SubmissionResult

DB_NAME = "gradebook.db"


class GradebookError(ValueError):
    """The results cannot be recorded as they are; the message says why."""


def default_db_url(output_folder: str | os.PathLike[str]) -> str:
    """A SQLite gradebook.db in the output folder (absolute, so it does not depend on the working directory)."""
    return f"sqlite:///{Path(output_folder).resolve() / DB_NAME}"


def grade_cell_name(part: str) -> str:
    return f"test_{part}"


def record(db_url: str, assignment: Assignment, results: list[SubmissionResult], *,
           course_id: str = "default_course") -> None:
    """Store every result as an nbgrader submission with one auto_score per part; a rerun updates in place.

    `db_url` is any SQLAlchemy URL. Invalid submissions are recorded with 0 for every part (a row still shows
    them in the export). A score a TA set by hand in formgrader (manual_score) is kept and wins, as with
    nbgrader's own autograder; the grade is then flagged for manual review.

    With the result's `submitted_at`, the submission's timestamp is set (one unknown leaves the recorded one
    alone); with a due date in [late], the assignment's due date is set (without one, a due date a TA set in
    nbgrader stays); and the notebook's late_submission_penalty is what late.assess gives, as nbgrader's
    AssignLatePenalties would store it.
    """
    _check_results(assignment, results)
    from nbgrader.api import Gradebook  # slow import: see the module docstring

    from .release import _venv_on_path  # Gradebook() runs `alembic` from PATH when it creates the database

    notebook = Path(assignment.notebook).stem
    _stamp_new_database(db_url)
    with _venv_on_path(), _quiet_nbgrader(), Gradebook(db_url, course_id=course_id) as gb:
        cells, answers = _ensure_structure(gb, assignment, notebook)
        for result in results:
            gb.update_or_create_student(result.student_id)
            when = late.submitted_at(result)
            # A known time is set on every run (a resubmission moves it); nbgrader stores naive UTC and converts.
            gb.update_or_create_submission(assignment.name, result.student_id,
                                           **({"timestamp": when} if when is not None else {}))
            for part, cell in cells.items():
                grade = _grade(gb, cell, notebook, assignment.name, result.student_id)
                grade.auto_score = 0.0 if result.status == INVALID else float(result.parts.get(part, 0.0))
                # As nbgrader's SaveAutoGrades: a human's score takes precedence and needs a look.
                grade.needs_manual_grade = grade.manual_score is not None
            for cell in answers:
                _comment(gb, cell, notebook, assignment.name, result.student_id)
            gb.db.commit()  # one student at a time: a failure later keeps the students already recorded
            _assign_late_penalty(gb, assignment, result, notebook)


def _assign_late_penalty(gb, assignment: Assignment, result: SubmissionResult, notebook: str) -> None:
    """The notebook's late_submission_penalty, as nbgrader's AssignLatePenalties stores it: None when on time or
    when the policy takes nothing off ("none"), else the points off, never more than the notebook's score.

    The penalty is taken from the score nbgrader shows (a TA's manual scores included, 0 for an invalid row),
    which is the kit's total unless a TA changed a grade: the policy's cap and "zero" then apply to that score."""
    submitted = gb.find_submission_notebook(notebook, assignment.name, result.student_id)
    score = float(submitted.score)  # read after the grades' commit: nbgrader computes it in SQL
    lateness = late.assess(assignment.late, result)
    if lateness.late and abs(score - result.total) > 1e-9:
        lateness = late.assess(assignment.late, dataclasses.replace(result, parts={"score": score}))
    penalty = None
    if lateness.late and assignment.late.penalty != "none":
        penalty = min(max(lateness.penalty, 0.0), score)
    submitted.late_submission_penalty = penalty
    gb.db.commit()


def _stamp_new_database(db_url: str) -> None:
    """Give a new database the alembic version table nbgrader's Gradebook() would create.

    Gradebook() asks for the current migration head by running the `alembic heads` command (about 4.5 s
    here, every new batch); alembic's own API reads the same head from nbgrader's migration scripts in the
    process. A database that already has tables is left alone, as Gradebook() leaves it."""
    import nbgrader
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(db_url, future=True)
    try:
        if inspect(engine).get_table_names():
            return
        head = ScriptDirectory(str(Path(nbgrader.__file__).parent / "alembic")).get_current_head()
        with engine.begin() as db:
            db.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
            db.execute(text("INSERT INTO alembic_version (version_num) VALUES (:head)"), {"head": head})
    finally:
        engine.dispose()


@contextlib.contextmanager
def _quiet_nbgrader():
    """Gradebook.add_submission builds its objects before adding them to the session, which makes SQLAlchemy
    warn (harmlessly: they are added right after) once per new submission; keep that noise off the TA's screen."""
    from sqlalchemy.exc import SAWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*not in session, add operation along", category=SAWarning)
        yield


def _check_results(assignment: Assignment, results: list[SubmissionResult]) -> None:
    """Refuse results that would record something other than they say, before anything is written."""
    problems = []
    twice = sorted(sid for sid, n in Counter(r.student_id for r in results).items() if n > 1)
    if twice:
        problems.append(f"students with more than one result: {', '.join(map(repr, twice))}")
    for r in results:
        unknown = sorted(set(r.parts) - set(assignment.points))
        if unknown:  # results of another config: their points have no grade cell to go to
            problems.append(f"{r.student_id!r} has points for parts not in {assignment.name}: {', '.join(unknown)}")
        elif r.max_parts != assignment.points:  # graded under other points: its scores are out of other maxima
            now = assignment.points
            then = [f"{p} out of {v:g} (now {f'{now[p]:g}' if p in now else 'no such part'})"
                    for p, v in r.max_parts.items() if now.get(p) != v]
            then += [f"no {p} (now out of {v:g})" for p, v in now.items() if p not in r.max_parts]
            problems.append(f"{r.student_id!r} was graded under other points than {assignment.name}'s assignment.toml "
                            f"({', '.join(then)}): grade it again")
    if problems:
        raise GradebookError("; ".join(problems))


def _ensure_structure(gb, assignment: Assignment, notebook: str) -> tuple[dict, list]:
    """The assignment (with [late]'s due date when it has one), its notebook, a grade cell per part with today's
    points and a solution cell per answer cell; (part -> GradeCell, [SolutionCell])."""
    from nbgrader.api import MissingEntry

    due = due_date(assignment.late)
    # Without a due date in the config, no field is passed: a due date a TA set in nbgrader is kept.
    gb.update_or_create_assignment(assignment.name, **({"duedate": due} if due is not None else {}))
    gb.update_or_create_notebook(notebook, assignment.name)
    wanted = {grade_cell_name(p): p for p in assignment.points}
    try:
        extra = sorted(c.name for c in gb.find_notebook(notebook, assignment.name).grade_cells
                       if c.name not in wanted)
    except MissingEntry:  # pragma: no cover - created just above
        extra = []
    if extra:
        # A grade cell no part fills would count in every student's max_score; deleting it would delete grades.
        raise GradebookError(f"the gradebook's notebook {assignment.name}/{notebook} has grade cells that are not "
                             f"parts of assignment.toml: {', '.join(extra)}; remove them (or the database) first, "
                             "or record elsewhere with --db (the results are saved: grading again is instant)")
    cells = {part: gb.update_or_create_grade_cell(name, notebook, assignment.name,
                                                  max_score=float(assignment.points[part]), cell_type="code")
             for name, part in wanted.items()}
    answers = [gb.update_or_create_solution_cell(name, notebook, assignment.name)
               for name in solution_cell_names(assignment)]
    return cells, answers


def solution_cell_names(assignment: Assignment) -> list[str]:
    """The grade_ids of the source notebook's answer cells (nbgrader "solution" cells), in notebook order.

    nbgrader's GetGrades (generate_feedback, formgrader) looks up a comment for each such cell of an autograded
    notebook, and fails on one the gradebook does not know."""
    from .notebook import grade_id, read_notebook

    names = []
    for cell in read_notebook(assignment.source_notebook).cells:
        meta = cell.get("metadata", {}).get("nbgrader")
        if isinstance(meta, dict) and meta.get("solution") is True and (gid := grade_id(cell)) and gid not in names:
            names.append(gid)
    return names


def _grade(gb, cell, notebook: str, assignment: str, student: str):
    """The student's Grade for a cell. add_submission makes one per cell that existed then; a part added to the
    config since has none yet, so it is made here (and its submitted notebook, should that be missing too)."""
    from nbgrader.api import Grade, MissingEntry, SubmittedNotebook

    try:
        return gb.find_grade(cell.name, notebook, assignment, student)
    except MissingEntry:
        pass
    try:
        submitted = gb.find_submission_notebook(notebook, assignment, student)
    except MissingEntry:
        submitted = SubmittedNotebook(notebook=cell.notebook, assignment=gb.find_submission(assignment, student))
        gb.db.add(submitted)
    grade = Grade(cell_id=cell.id, notebook=submitted)
    gb.db.add(grade)
    return grade


def _comment(gb, cell, notebook: str, assignment: str, student: str):
    """The student's Comment on a solution cell. add_submission makes one per solution cell that existed then; a
    submission recorded before the gradebook knew the cell gets it here (empty: comments are the TA's to write)."""
    from nbgrader.api import Comment, MissingEntry

    try:
        return gb.find_comment(cell.name, notebook, assignment, student)
    except MissingEntry:
        pass
    comment = Comment(cell_id=cell.id, notebook=gb.find_submission_notebook(notebook, assignment, student))
    gb.db.add(comment)
    return comment
