"""Tests for autograder.roster: the three roster shapes, the lookups, and the errors a TA can act on.

Every CSV is written here, laid out as the kit, Canvas (Grades > Export) and Moodle (Download grading worksheet)
write them.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from autograder.roster import Roster, RosterError, Student, parse_lms_time, read_roster

JST = timezone(timedelta(hours=9))


def write(path: Path, text: str, *, bom: bool = False, encoding: str = "utf-8") -> Path:
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode(encoding))
    return path


# --- The kit's own shape ----------------------------------------------------------------------------------------


KIT = """student_id,name,email,sis_id,login,section,canvas_id,moodle_id
s001,Student One,one@example.edu,S-1,one,A,12345,501
s002,山田 太郎,yamada@example.edu,,,B,12346,
s003,,,,,,,
"""


@pytest.mark.parametrize("bom", [False, True])
def test_kit_roster_with_and_without_bom(tmp_path, bom):
    roster = read_roster(write(tmp_path / "roster.csv", KIT, bom=bom))
    assert roster.kind == "kit" and len(roster) == 3
    assert roster.students[0] == Student("s001", "Student One", "one@example.edu", "S-1", "one", "A", "12345", "501")
    assert roster.students[1] == Student("s002", "山田 太郎", "yamada@example.edu", section="B", canvas_id="12346")
    assert roster.students[2] == Student("s003")
    assert roster.submitted_at == {} and roster.notes == ()


def test_kit_roster_needs_only_student_id_and_takes_columns_in_any_order(tmp_path):
    roster = read_roster(write(tmp_path / "r.csv", "email,Student_ID\na@x.edu,alice\n\n,bob\n"))
    assert list(roster) == [Student("alice", email="a@x.edu"), Student("bob")]


def test_lookups(tmp_path):
    roster = read_roster(write(tmp_path / "roster.csv", KIT))
    s1, s2 = roster.students[:2]
    assert roster.by_student_id("S001") is s1  # people type ids in any case
    assert roster.by_email("ONE@example.edu") is s1
    assert roster.by_login("one") is s1 and roster.by_sis_id("S-1") is s1
    assert roster.by_canvas_id("12345") is s1 and roster.by_moodle_id("501") is s1
    assert roster.by_canvas_id("99999") is None and roster.by_student_id("") is None
    assert roster.by_name("student   one") is s1
    assert roster.by_name("山田_太郎") is s2  # Moodle writes "_" in a name as a space, and back
    assert roster.by_name("") is None


def test_a_name_shared_by_two_students_finds_neither():
    roster = Roster([Student("a", name="Taro Yamada"), Student("b", name="taro  yamada"), Student("c", name="Hanako")])
    assert roster.by_name("Taro Yamada") is None
    assert roster.by_name("Hanako").student_id == "c"


def test_kit_roster_unknown_column_is_named(tmp_path):
    path = write(tmp_path / "r.csv", "student_id,name,grade,Nickname\ns1,A,3,x\n")
    with pytest.raises(RosterError) as e:
        read_roster(path)
    msg = str(e.value)
    assert "line 1" in msg and "'grade'" in msg and "'Nickname'" in msg and "student_id,name,email" in msg


def test_kit_roster_repeated_column(tmp_path):
    with pytest.raises(RosterError, match="line 1: column.* email appear twice"):
        read_roster(write(tmp_path / "r.csv", "student_id,email,Email\ns1,a,b\n"))


@pytest.mark.parametrize(
    "text, line, what",
    [
        ("student_id,name\ns1,A\ns2,B\nS1,C\n", 4, "student_id 'S1' is also the student_id of line 2"),
        ("student_id,email\ns1,a@x\ns2,A@X\n", 3, "email 'A@X' is also the email of line 2"),
        ("student_id,canvas_id\ns1,5\ns2,6\ns3,5\n", 4, "canvas_id '5' is also the canvas_id of line 2"),
        ("student_id,name\ns1,A\n,B\n", 3, "no student id"),
        ("student_id,name\ns1,A\n s2 ,B\n", 3, None),  # spreadsheet padding around a cell is not part of the id
        ("student_id,name\ns1,A\na/b,B\n", 3, "path separator"),
        ("student_id,name\ns1,A,extra\n", 2, "3 values but the header has 2 columns"),
    ],
)
def test_kit_roster_errors_name_the_line(tmp_path, text, line, what):
    path = write(tmp_path / "r.csv", text)
    if what is None:
        assert read_roster(path).students[1].student_id == "s2"
        return
    with pytest.raises(RosterError) as e:
        read_roster(path)
    assert f"{path}, line {line}:" in str(e.value) and what in str(e.value)


def test_control_characters_in_an_id_are_escaped_in_the_message(tmp_path):
    with pytest.raises(RosterError) as e:
        read_roster(write(tmp_path / "r.csv", "student_id\nev\x1bil\n"))
    assert "ev\\x1bil" in str(e.value) and "\x1b" not in str(e.value)


def test_roster_built_in_code_refuses_duplicates():
    with pytest.raises(RosterError, match="student 2: moodle_id '7' is also the moodle_id of student 1"):
        Roster([Student("a", moodle_id="7"), Student("b", moodle_id="7")])


# --- Canvas gradebook export ------------------------------------------------------------------------------------


CANVAS = """Student,ID,SIS User ID,SIS Login ID,Section,Lab 1 (123456),Current Score
    Points Possible,,,,,10.00,(read only)
,,,,,Muted,
"Doe, Jane",12345,S-1001,jdoe,Section A,8.00,80.00
"Yamada, Taro",12346,S-1002,,Section B,,0.00
"Student, Test",12350,,,Section A,,
Student,,,,,,
"""


def test_canvas_gradebook_export(tmp_path):
    roster = read_roster(write(tmp_path / "grades.csv", CANVAS, bom=True))
    assert roster.kind == "canvas"
    assert list(roster) == [
        Student("jdoe", "Doe, Jane", sis_id="S-1001", login="jdoe", section="Section A", canvas_id="12345"),
        Student("S-1002", "Yamada, Taro", sis_id="S-1002", section="Section B", canvas_id="12346"),
        Student("12350", "Student, Test", section="Section A", canvas_id="12350"),
    ]
    assert roster.by_canvas_id("12346").student_id == "S-1002"


def test_canvas_export_with_the_old_points_possible_row(tmp_path):
    text = 'Student,ID,SIS User ID,SIS Login ID,Section,Lab 1\nPoints Possible,,,,,10\n"Doe, Jane",12345,,jdoe,A,\n'
    assert [s.student_id for s in read_roster(write(tmp_path / "g.csv", text))] == ["jdoe"]


def test_canvas_export_with_a_bad_id(tmp_path):
    path = write(tmp_path / "g.csv", 'Student,ID,SIS User ID,SIS Login ID,Section\n"Doe, Jane",12x45,,jdoe,A\n')
    with pytest.raises(RosterError, match=r"line 2: the ID '12x45' is not a Canvas user id"):
        read_roster(path)


def test_canvas_export_with_duplicate_login(tmp_path):
    text = 'Student,ID,SIS User ID,SIS Login ID,Section\n"A, B",1,,same,A\n"C, D",2,,same,A\n'
    with pytest.raises(RosterError, match="line 3: student_id 'same' is also the student_id of line 2"):
        read_roster(write(tmp_path / "g.csv", text))


# --- Moodle grading worksheet -----------------------------------------------------------------------------------


MOODLE = """Identifier,"Full name","Email address",Status,Grade,"Maximum Grade","Grade can be changed","Last modified (submission)","Last modified (grade)","Feedback comments"
"Participant 12345","Student One",one@example.edu,"Submitted for grading",,100.00,Yes,"Monday, 7 December 2026, 11:59 PM",-,
"Participant 12346","山田 太郎",yamada@example.edu,"Submitted for grading",,100.00,Yes,"2026年 12月 8日(火曜日) 09:30",-,
"Participant 12347","No Mail",,"No submission",,100.00,Yes,-,-,
"Participant 12348","Odd Time",odd@example.edu,"Submitted for grading",,100.00,Yes,"sometime last week",-,
"""


def test_moodle_worksheet(tmp_path):
    path = write(tmp_path / "worksheet.csv", MOODLE, bom=True)
    roster = read_roster(path, tz=JST)
    assert roster.kind == "moodle"
    assert list(roster) == [
        Student("one@example.edu", "Student One", "one@example.edu", moodle_id="12345"),
        Student("yamada@example.edu", "山田 太郎", "yamada@example.edu", moodle_id="12346"),
        # Without an email, the worksheet's own identifier: stable within the assignment at least.
        Student("Participant 12347", "No Mail", moodle_id="12347"),
        Student("odd@example.edu", "Odd Time", "odd@example.edu", moodle_id="12348"),
    ]
    assert roster.submitted_at == {
        "one@example.edu": datetime(2026, 12, 7, 23, 59, tzinfo=JST),
        "yamada@example.edu": datetime(2026, 12, 8, 9, 30, tzinfo=JST),
    }
    [note] = roster.notes
    assert f"{path}, line 5" in note and "'sometime last week'" in note and "odd@example.edu" in note


def test_moodle_worksheet_prefers_the_id_number(tmp_path):
    text = 'Identifier,Full name,ID number,Email address,Last modified (submission)\nParticipant 7,A B,2026001,a@x.edu,-\n'
    [student] = read_roster(write(tmp_path / "w.csv", text))
    assert student == Student("2026001", "A B", "a@x.edu", sis_id="2026001", moodle_id="7")


def test_moodle_times_default_to_this_machines_zone(tmp_path):
    text = 'Identifier,Full name,Email address,Last modified (submission)\nParticipant 7,A B,a@x.edu,"Thursday, 1 January 2026, 9:05 AM"\n'
    roster = read_roster(write(tmp_path / "w.csv", text))
    when = roster.submitted_at["a@x.edu"]
    assert when.tzinfo is not None and when.replace(tzinfo=None) == datetime(2026, 1, 1, 9, 5)
    assert when.utcoffset() == datetime(2026, 1, 1, 9, 5).astimezone().utcoffset()


def test_moodle_worksheet_with_a_bad_identifier(tmp_path):
    path = write(tmp_path / "w.csv", "Identifier,Full name,Email address\nParticipant 1,A,a@x\nsomeone,B,b@x\n")
    with pytest.raises(RosterError, match=r"line 3: the Identifier 'someone' does not end in a participant number"):
        read_roster(path)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Monday, 7 December 2026, 11:59 PM", datetime(2026, 12, 7, 23, 59, tzinfo=JST)),
        ("2026年 12月 7日(月曜日) 23:59", datetime(2026, 12, 7, 23, 59, tzinfo=JST)),
        ("2026-12-07T23:59:00+00:00", datetime(2026, 12, 7, 23, 59, tzinfo=timezone.utc)),
        ("12", None),  # dateutil would make this the 12th of this month
        ("Monday", None),
        ("2026年 2月 31日 10:00", None),
        ("", None),
        ("9" * 500, None),
    ],
)
def test_parse_lms_time(text, expected):
    assert parse_lms_time(text, JST) == expected


# --- Files that are not rosters ---------------------------------------------------------------------------------


def test_not_utf8_says_how_to_save_it(tmp_path):
    path = write(tmp_path / "r.csv", "student_id,name\ns1,A\ns2,山田\n", encoding="cp932")
    with pytest.raises(RosterError) as e:
        read_roster(path)
    assert f"{path}, line 3: not UTF-8" in str(e.value) and "CSV UTF-8" in str(e.value)


def test_unknown_header(tmp_path):
    path = write(tmp_path / "r.csv", "id,score\n1,2\n")
    with pytest.raises(RosterError) as e:
        read_roster(path)
    assert "line 1" in str(e.value) and "(id,score)" in str(e.value) and "Canvas" in str(e.value)


@pytest.mark.parametrize("text", ["", "\n\n ,\n"])
def test_empty_roster(tmp_path, text):
    with pytest.raises(RosterError, match="is empty"):
        read_roster(write(tmp_path / "r.csv", text))


def test_missing_file(tmp_path):
    with pytest.raises(RosterError, match="cannot read the roster"):
        read_roster(tmp_path / "nope.csv")


def test_nul_bytes_are_a_csv_error_with_a_line(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"student_id\ns1\ns\x002\n")
    with pytest.raises(RosterError, match="line 3"):
        read_roster(path)


def test_too_large(tmp_path, monkeypatch):
    from autograder import roster as roster_module

    monkeypatch.setattr(roster_module, "MAX_ROSTER_BYTES", 100)
    with pytest.raises(RosterError, match="larger than"):
        read_roster(write(tmp_path / "r.csv", "student_id\n" + "s\n" * 100))


def test_error_is_a_value_error():
    assert issubclass(RosterError, ValueError)
