"""Grades as an LMS imports them: Canvas's gradebook CSV, Moodle's offline grading worksheet, Gradescope's scores CSV.

One file per call, each in the form its LMS reads without editing, with the lab's late penalty applied
(late.final: the same number grades.csv and the feedback show). What could not be placed in that file (a result
without the id that LMS matches students by, two rows for the same LMS user) is returned to the caller, never
dropped silently and never written wrong.

Who a row is for comes from each result's `student` (roster.Student.ids(): what the roster or the file's name
said) and its student_id; a roster, when given, fills what a result lacks and adds the rostered students that
have no result. Every text taken from them is hostile: control and invisible formatting characters are removed,
and a cell that a spreadsheet would run as a formula gets report.py's leading quote. The quote is only ever put
on cells an importer does not match students by (names, sections, e-mail addresses shown for reading): an LMS
stores such a cell as it is, so an id with the quote would no longer match the student. An id that would need
the quote, or that holds control characters, is therefore treated as absent, and the row is placed by another
id or reported.

All three files are UTF-8 with a byte-order mark, as report.write_grades_csv writes: Excel (Japanese Windows in
particular) garbles Japanese names in a CSV without one, and each importer reads it (see each writer). Rows end
in CRLF (RFC 4180); numbers are plain, with a decimal point and two decimals at most (report._num).

The format rules each writer follows are the importers' own, read in their source where it is public (Canvas's
GradebookImporter, Moodle's assignfeedback_offline importer and csv_import_reader); each writer names them.
"""

from __future__ import annotations

import csv
import html
import io
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from . import late
from .config import Assignment
from .files import write_atomic
from .report import _FORMULA_START, _cell, _num, _printable
from .results import SubmissionResult
from .roster import Student

FORMATS = ("canvas", "moodle", "gradescope")

MAX_TEXT = 200  # characters kept of a name or section: a hostile result must not blow up the TA's upload
MAX_ID = 128  # longer "ids" are not ids any LMS issues


@dataclass(frozen=True)
class Unplaced:
    """A row the file could not hold, and why (English, for the TA: what is missing and where to add it)."""

    student_id: str
    why: str
    grade: str = ""  # the grade it would have carried; "" for a rostered student without a result


@dataclass(frozen=True)
class ExportReport:
    """What export() wrote, and what it could not place."""

    format: str
    path: Path
    column: str  # Canvas: the assignment column the grades went into; "" for the other formats
    graded: int  # rows written with a grade
    # Rostered students without a result: written with an empty grade (Canvas, Gradescope: the LMS keeps what it
    # has) or left out of the file (Moodle: see _moodle). Their ids, sorted.
    ungraded: tuple[str, ...]
    unplaced: tuple[Unplaced, ...]

    def lines(self) -> list[str]:
        """The report as lines for the TA's terminal (English; ids escaped, since they may hold control codes)."""
        where = f" in column {_printable(self.column)!r}" if self.column else ""
        out = [f"{self.format}: {self.graded} grade{'s' if self.graded != 1 else ''} written to {self.path}{where}"]
        if self.ungraded:
            how = {"canvas": "written with an empty grade, which Canvas reads as no change",
                   "moodle": "left out of the file, so Moodle keeps what it has"}.get(
                self.format, "written with an empty Total Score")
            out.append(f"{len(self.ungraded)} rostered student{'s' if len(self.ungraded) != 1 else ''} without a "
                       f"result ({how}): {', '.join(_printable(s) for s in self.ungraded)}")
        for u in self.unplaced:
            grade = f" (grade {u.grade})" if u.grade else " (no result)"
            out.append(f"NOT PLACED: {_printable(u.student_id)}{grade}: {u.why}")
        return out

    def summary(self) -> str:
        return "\n".join(self.lines())


def export(fmt: str, results: list[SubmissionResult], assignment: Assignment, path: str | os.PathLike[str], *,
           roster: list[Student] | None = None, column: str | None = None,
           now: datetime | None = None) -> ExportReport:
    """Write `results` (with the late penalty of `assignment.late` applied) to `path` in the import format of
    `fmt` (one of FORMATS); return what was written and what could not be placed.

    `roster` fills the LMS ids a result lacks and adds rostered students without a result. `column` is the Canvas
    assignment column; by default the assignment's name. Canvas matches a column to an existing assignment by the
    id in "Name (123)" (the form its own export writes), else by its exact title, else it creates a new
    assignment: pass the column as Canvas's export shows it to grade an existing one. `now` is the time written
    as Moodle's "Last modified (grade)" (default: the current time).

    Raises ValueError for an unknown format or a Canvas column Canvas would not read as an assignment."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    rows = _rows(results, assignment, roster or [])
    extra: list[list[str]] = []
    if fmt == "canvas":
        column = _canvas_column(assignment.name if column is None else column)
        header = [*CANVAS_STUDENT_COLUMNS, column]
        extra = [[CANVAS_POINTS_ROW, "", "", "", "", _num(assignment.total_points)]]
        place = _canvas
    elif fmt == "moodle":
        stamp = (now or datetime.now(timezone.utc).astimezone()).isoformat(timespec="seconds")
        header, column = list(MOODLE_HEADER), ""
        place = lambda row: _moodle(row, assignment, stamp)  # noqa: E731
    else:
        header, column, place = list(GRADESCOPE_HEADER), "", _gradescope

    candidates: list[tuple[_Row, list[str], list[tuple[str, str]]]] = []
    unplaced: list[Unplaced] = []
    for row in rows:
        if row.result is None and fmt == "moodle":
            continue  # left out (see _moodle), and listed as ungraded
        got = place(row)
        if isinstance(got, str):
            unplaced.append(Unplaced(row.student.student_id, got, row.grade))
        else:
            candidates.append((row, *got))

    # Two rows for one LMS user: the importer would keep one of them (Canvas the last, whatever it holds, so an
    # empty row could undo a grade). Neither is written: which one is right is the TA's call.
    counts = Counter(key for _, _, keys in candidates for key in keys)
    written: list[tuple[_Row, list[str]]] = []
    for row, cells, keys in candidates:
        shared = next((key for key in keys if counts[key] > 1), None)
        if shared is None:
            written.append((row, cells))
            continue
        others = sorted(r.student.student_id for r, _, k in candidates if shared in k and r is not row)
        unplaced.append(Unplaced(row.student.student_id,
                                 f"another row has the same {shared[0]} {_printable(shared[1])!r} "
                                 f"({', '.join(_printable(o) for o in others)}): fix the roster and export again",
                                 row.grade))

    buf = io.StringIO()
    writer = csv.writer(buf)  # CRLF, fields quoted where needed (RFC 4180)
    writer.writerow(header)
    writer.writerows(extra)
    writer.writerows(cells for _, cells in written)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buf.getvalue(), encoding="utf-8-sig")
    ungraded = [row.student.student_id for row in rows if row.result is None] if fmt == "moodle" else \
        [row.student.student_id for row, _ in written if row.result is None]
    return ExportReport(format=fmt, path=path, column=column,
                        graded=sum(1 for row, _ in written if row.result is not None),
                        ungraded=tuple(sorted(ungraded)), unplaced=tuple(sorted(unplaced, key=lambda u: u.student_id)))


# --------------------------------------------------------------------------------------------------------------
# Who each row is for, and the grade it carries


@dataclass(frozen=True)
class _Row:
    student: Student  # the result's ids, with the roster's where the result has none
    result: SubmissionResult | None  # None: a rostered student without a result
    grade: str  # the score after the late penalty, as written; "" without a result
    lateness: late.Lateness | None


def _rows(results: list[SubmissionResult], assignment: Assignment, roster: list[Student]) -> list[_Row]:
    rostered: dict[str, Student] = {}
    for s in roster:
        rostered.setdefault(s.student_id, s)  # a roster listing an id twice: its reader reports that; first wins
    names = [f.name for f in fields(Student) if f.name != "student_id"]
    rows = []
    seen = set()
    for r in results:
        base = rostered.get(r.student_id)
        ids = {n: str(r.student.get(n, "") or (getattr(base, n) if base else "")) for n in names}
        lateness = late.assess(assignment.late, r)
        rows.append(_Row(Student(r.student_id, **ids), r, _num(late.final(r, lateness)), lateness))
        seen.add(r.student_id)
    rows += [_Row(s, None, "", None) for sid, s in rostered.items() if sid not in seen]
    return sorted(rows, key=lambda row: row.student.student_id)


# --------------------------------------------------------------------------------------------------------------
# Hostile text in, cells out

_JOINERS = "\u200c\u200d"  # zero-width (non-)joiners: some scripts need them in names


def _clean(value: str) -> str:
    """Control characters (and line/paragraph separators) become spaces; invisible formatting characters (bidi
    overrides such as U+202E, a stray BOM) go; the ends are stripped. Japanese text is left as it is."""
    out = []
    for c in str(value)[:4 * MAX_TEXT]:
        category = unicodedata.category(c)
        if category in ("Cc", "Zl", "Zp"):
            out.append(" ")
        elif category != "Cf" or c in _JOINERS:
            out.append(c)
    return "".join(out).strip()


def _text(value: str) -> str:
    """A cell an importer only shows (a name, a section): cleaned, bounded, and guarded against formulas."""
    return _cell(_clean(value)[:MAX_TEXT])


def _id(value: str) -> tuple[str, str]:
    """(the id, "") when `value` can be written as an id as it is; ("", why not) otherwise; ("", "") when empty."""
    value = str(value).strip()
    if not value:
        return "", ""
    if len(value) > MAX_ID:
        return "", f"is longer than {MAX_ID} characters"
    if _clean(value) != value:
        return "", "holds control or invisible formatting characters"
    if value.startswith(_FORMULA_START):
        # A spreadsheet would run it; with report.py's quote the LMS would store "'=..." and match nobody.
        return "", "starts with a character spreadsheets read as a formula"
    return value, ""


def _number_id(value: str) -> tuple[str, str]:
    """An id an LMS issues as a number (Canvas user id, Moodle participant id): ASCII digits only."""
    value, why = _id(value)
    if value and not re.fullmatch(r"[0-9]{1,20}", value):
        return "", "is not a number"
    return value, why


_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _email(value: str) -> tuple[str, str]:
    value, why = _id(value)
    if value and not _EMAIL.fullmatch(value):
        return "", "is not an e-mail address"
    return value, why


def _problems(checked: list[tuple[str, str, str]]) -> str:
    """"; its canvas_id 'x' is not a number" for each id that was given but cannot be used."""
    bad = [f"its {name} {_printable(raw[:40])!r} {why}" for name, raw, why in checked if why]
    return ("; " + "; ".join(bad)) if bad else ""


# --------------------------------------------------------------------------------------------------------------
# Canvas: Grades > Import, the gradebook CSV
#
# Canvas's GradebookImporter reads a header row whose first cell contains "Student" and second "ID", then "SIS
# User ID" and "SIS Login ID", then "Section" as the last student column; every column after it is an
# assignment: "Name (123)" matches assignment 123, else a title matches exactly, else a new assignment is
# created. A row whose first cell contains "Points Possible" gives the points (Canvas's own export writes one).
# A student row is matched by ID (the Canvas user id) first, then SIS User ID, then SIS Login ID, and by name only
# when none of those matches: a name match can pick the wrong student, so a row without one of the three ids is
# reported instead. A blank grade (or "-") means "no change": a rostered student without a result gets a blank,
# never 0, and keeps whatever Canvas holds. A byte-order mark is fine: Canvas's own export writes one when the
# user's "Include Byte-Order Mark" setting is on, and the header is matched by substring. Numbers go through a
# converter that reads "1,5" as 1.5, so numbers are written with a plain decimal point and no grouping.
#
# Student is the name as the roster gives it: Canvas shows "Last, First" (its sortable name) but only falls back
# to the name when no id matched, which the rows written here never need.

CANVAS_STUDENT_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
# Headers Canvas reads as something other than an assignment: its student columns, and (anywhere in a header)
# the totals its export appends, which the importer drops.
_CANVAS_RESERVED = CANVAS_STUDENT_COLUMNS + ("LastName", "FirstName", "Integration ID", "Root Account")
_CANVAS_TOTALS = ("Current Score", "Current Points", "Current Grade", "Final Score", "Final Points", "Final Grade",
                  "Override Score", "Override Grade", "Override Status")
CANVAS_POINTS_ROW = "    Points Possible"  # as Canvas's export writes it; the importer looks for the words


def _canvas_column(column: str) -> str:
    name = str(column).strip()
    problem = ""
    if not name:
        problem = "is empty"
    elif _clean(name) != name:
        problem = "holds control or invisible formatting characters"
    elif name.startswith(_FORMULA_START):
        problem = "starts with a character spreadsheets read as a formula"
    elif name in _CANVAS_RESERVED:
        problem = "is one of Canvas's student columns"
    elif any(total in name for total in _CANVAS_TOTALS):
        problem = "contains the name of a Canvas total column, which Canvas's import ignores"
    elif "Points Possible" in name:
        problem = "contains 'Points Possible'"
    if problem:
        raise ValueError(f"the Canvas column {name!r} {problem}: pass --column with the assignment as Canvas's "
                         f"gradebook export names it, e.g. 'CNN on MNIST (12345)'")
    return name


def _canvas_converts(value: str) -> bool:
    """Whether Canvas's decimal-comma converter would change this cell: it reads any cell made only of digits,
    '.', ',' (and a trailing '%') as a number, keeps the last separator as the decimal point and drops the others
    ("1,234" -> "1.234", "2024.01.5" -> "202401.5"). An id it changes would match nobody."""
    if not re.fullmatch(r"-?[0-9.,]+%?", value):
        return False
    *head, last = re.split(r"[,.]", value)
    return (("".join(head) + "." + last) if head else last) != value


def _canvas_id(value: str) -> tuple[str, str]:
    value, why = _id(value)
    if value and _canvas_converts(value):
        return "", "would be read by Canvas as a number and changed"
    return value, why


def _canvas(row: _Row) -> tuple[list[str], list[tuple[str, str]]] | str:
    s = row.student
    canvas_id, why_id = _number_id(s.canvas_id)
    sis, why_sis = _canvas_id(s.sis_id)
    login, why_login = _canvas_id(s.login)
    keys = [("Canvas ID", canvas_id), ("SIS User ID", sis), ("SIS Login ID", login.lower())]
    keys = [(label, value) for label, value in keys if value]
    if not keys:
        return ("no Canvas ID, SIS User ID or SIS Login ID to match the student by" +
                _problems([("canvas_id", s.canvas_id, why_id), ("sis_id", s.sis_id, why_sis),
                           ("login", s.login, why_login)]) +
                ": add canvas_id, sis_id or login to the roster")
    name = _text(s.name)
    if "points possible" in name.lower():
        name = ""  # Canvas would read the row as the points row; the ids place it without the name
    return [name, canvas_id, sis, login, _text(s.section), row.grade], keys


# --------------------------------------------------------------------------------------------------------------
# Moodle: Assignment > View all submissions > "Upload grading worksheet" (the offline grading worksheet)
#
# Moodle's importer (assignfeedback_offline) finds its columns by their headers, which must equal its own strings
# exactly: "Identifier", "Grade" and "Last modified (grade)" are required, the others are read by nothing but
# "Feedback comments". The identifier is "Participant <id>": Moodle strips the word "Participant " and looks up
# the number, the assignment's participant id (the number in the folders of Moodle's submission download, not
# the user id). The headers and the word are Moodle's English strings, which the importer compares in the
# uploading user's language: upload with Moodle's interface in English.
#
# The grade is parsed by unformat_float: a decimal point always works. Moodle skips (silently, so they are
# reported here instead) a row without a participant id; it also skips a blank grade, a grade above the Moodle
# assignment's maximum, and a grade whose "Last modified (grade)" is older than Moodle's own record of it unless
# the TA ticks "Allow updating records that have been modified more recently in Moodle than in the
# spreadsheet". The export time is written there, so a grade changed by hand in Moodle after the export is kept,
# as with the worksheet Moodle itself hands out.
#
# "Feedback comments" replaces the comment Moodle holds for the student whenever it differs, so this file writes
# the kit's one-line summary (score, late penalty) for every graded row, and leaves out the rostered students
# without a result: their row would carry a blank grade (skipped anyway) and a blank comment (which would erase a
# comment a TA wrote). The comment is HTML to Moodle: it holds only the kit's own text, escaped.
#
# Moodle removes a byte-order mark before parsing (csv_import_reader) and requires every row to have the header's
# number of cells. It parses with PHP's fgetcsv, whose backslash escape can split a field at `\"`: a backslash in
# a shown cell is replaced by a full-width one (＼).

MOODLE_HEADER = ("Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                 "Grade can be changed", "Last modified (submission)", "Last modified (grade)", "Feedback comments")
MOODLE_PARTICIPANT = "Participant "


def _moodle_text(value: str) -> str:
    return _text(value).replace("\\", "＼")


def _moodle(row: _Row, assignment: Assignment, stamp: str) -> tuple[list[str], list[tuple[str, str]]] | str:
    s = row.student
    participant, why = _number_id(s.moodle_id)
    if not participant:
        return ("no Moodle participant id" + _problems([("moodle_id", s.moodle_id, why)]) +
                ": add moodle_id to the roster (the number in the student's folder of Moodle's download, "
                "'Full Name_<id>_assignsubmission_file_')")
    result, lateness = row.result, row.lateness
    assert result is not None and lateness is not None  # rows without a result are left out before
    submitted = late.submitted_at(result)
    return ([MOODLE_PARTICIPANT + participant, _moodle_text(s.name), _moodle_text(s.email), "Submitted for grading",
             row.grade, _num(assignment.total_points), "Yes",
             submitted.isoformat(timespec="seconds") if submitted else "", stamp,
             _moodle_comment(row.grade, assignment, lateness)],
            [("Moodle participant id", participant)])


def _moodle_comment(grade: str, assignment: Assignment, lateness: late.Lateness) -> str:
    total = _num(assignment.total_points)
    ja, en = f"自動採点: {grade} / {total} 点。", f"Autograder: {grade} / {total} points."
    if lateness.message:
        said = lateness.message.en
        ja, en = f"{ja}{lateness.message.ja}", f"{en} {said[:1].upper()}{said[1:]}"
    return f"{html.escape(ja)}<br>{html.escape(en)}".replace("\\", "＼")


# --------------------------------------------------------------------------------------------------------------
# Gradescope: the scores CSV of an assignment
#
# Name, SID, Email, Total Score: the first columns of the scores CSV Gradescope itself exports for an assignment
# (Download Grades), which is the form it reads scores back in. Gradescope matches a student by Email (unique in
# its roster) or by SID (the student id column of the roster, here the roster's sis_id); the name is only shown.
# A row with neither is reported. A student without a result gets a blank Total Score, as Gradescope's own export
# shows a missing submission, never 0. The byte-order mark: Gradescope asks for rosters "saved as CSV UTF-8"
# (what Excel writes, with the mark), and the first column, Name, is not one it matches by.

GRADESCOPE_HEADER = ("Name", "SID", "Email", "Total Score")


def _gradescope(row: _Row) -> tuple[list[str], list[tuple[str, str]]] | str:
    s = row.student
    email, why_email = _email(s.email)
    sid, why_sid = _id(s.sis_id)
    keys = [(label, value) for label, value in (("Email", email.lower()), ("SID", sid)) if value]
    if not keys:
        return ("no e-mail address or SID to match the student by" +
                _problems([("email", s.email, why_email), ("sis_id", s.sis_id, why_sid)]) +
                ": add email or sis_id to the roster")
    return [_text(s.name), sid, email, row.grade], keys
