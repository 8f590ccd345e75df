"""Tests for autograder.intake: real-looking Canvas, Moodle and nbgrader downloads read into one submission per
student. Every download and roster is built here; nothing is graded."""

from __future__ import annotations

import logging
import os
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest

from autograder import submissions
from autograder.intake import Intake, gather, parse_nbgrader_timestamp
from autograder.roster import Student, read_roster
from autograder.submissions import Submission, SubmissionsError, collect

A = "cnn_mnist"
UTC = timezone.utc
JST = timezone(timedelta(hours=9))


def nb(tag: str) -> bytes:
    """A small notebook that says whose it is."""
    return nbformat.writes(nbformat.v4.new_notebook(metadata={"tag": tag})).encode()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def zip_of(folder: Path, out: Path, prefix: str = "") -> Path:
    """Zip a folder as the LMS would hand it out (member names relative, in UTF-8)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.writestr(prefix + p.relative_to(folder).as_posix(), p.read_bytes())
    return out


def by_id(intake: Intake) -> dict[str, Submission]:
    subs = intake.submissions
    assert len({s.student_id for s in subs}) == len(subs), subs
    return {s.student_id: s for s in subs}


def tag(sub: Submission) -> str:
    assert sub.notebook is not None, sub
    return nbformat.reads(sub.notebook.decode(), as_version=4).metadata["tag"]


# --- Canvas -----------------------------------------------------------------------------------------------------


def canvas_download(d: Path) -> Path:
    """A Canvas bulk download as it unzips: flat files named <login>_[LATE_]<userid>_<attachmentid>_<name>."""
    write(d / "doejane_12345_67890_cnn_mnist.ipynb", nb("jane, first"))
    write(d / "doejane_12345_67950_cnn_mnist-1.ipynb", nb("jane, resubmitted"))
    write(d / "yamadataro_LATE_12346_67891_Copy of cnn_mnist.ipynb", nb("taro, late"))
    write(d / "smithjo_12347_67892_cnn_mnist (1).ipynb", nb("jo smith"))
    write(d / "smithjo_12348_67893_cnn_mnist.ipynb", nb("joe smith"))  # same login, another student
    write(d / "山田花子_12349_67894_lab.ipynb", nb("hanako"))
    write(d / "strayperson_55555_67895_cnn_mnist.ipynb", nb("stray"))
    write(d / "leeann_12351_67896_report.pdf", b"%PDF-1.4")  # handed in the wrong thing
    return d


CANVAS_GRADEBOOK = """Student,ID,SIS User ID,SIS Login ID,Section,Lab 1 CNN (123456)
    Points Possible,,,,,10.00
"Doe, Jane",12345,S-1001,jdoe,A,
"Yamada, Taro",12346,S-1002,tyamada,A,
"Smith, Jo",12347,S-1003,jsmith,B,
"Smith, Joe",12348,S-1004,jsmith2,B,
"山田, 花子",12349,S-1005,hyamada,B,
"Lee, Ann",12351,S-1006,alee,B,
"""


def test_canvas_folder_without_roster(tmp_path, caplog):
    d = canvas_download(tmp_path / "submissions")
    with caplog.at_level(logging.INFO, logger="autograder.submissions"):
        intake = gather(d, assignment=A)
    assert intake.kind == {"canvas"}
    s = by_id(intake)
    assert sorted(s) == ["doejane", "smithjo_12347", "smithjo_12348", "strayperson", "yamadataro", "山田花子"]
    # The resubmission wins; the first attempt is listed, not graded, not read.
    assert tag(s["doejane"]) == "jane, resubmitted" and not s["doejane"].late_mark
    [(old, graded)] = intake.superseded
    assert (old.student_id, old.notebook) == ("doejane", None)
    assert old.source == str(d / "doejane_12345_67890_cnn_mnist.ipynb")
    assert graded == str(d / "doejane_12345_67950_cnn_mnist-1.ipynb")
    assert tag(s["yamadataro"]) == "taro, late" and s["yamadataro"].late_mark
    assert s["yamadataro"].student == Student("yamadataro", login="yamadataro", canvas_id="12346")
    assert tag(s["smithjo_12347"]) == "jo smith" and tag(s["smithjo_12348"]) == "joe smith"
    assert s["smithjo_12348"].student == Student("smithjo_12348", login="smithjo", canvas_id="12348")
    assert tag(s["山田花子"]) == "hanako"
    assert all(sub.problem is None and sub.submitted_at is None for sub in s.values())
    # Without a roster nothing can be missing or unmatched, but the PDF is said out loud.
    assert intake.unmatched == [] and intake.missing == []
    assert [(i.source, i.why) for i in intake.ignored] == [(str(d / "leeann_12351_67896_report.pdf"), "not a notebook")]
    assert "report.pdf" in caplog.text


def test_canvas_zip_with_gradebook_roster(tmp_path):
    z = zip_of(canvas_download(tmp_path / "dl"), tmp_path / "submissions.zip")
    roster = read_roster(write(tmp_path / "grades.csv", "\ufeff" + CANVAS_GRADEBOOK))
    before = set(tmp_path.rglob("*"))
    intake = gather(z, assignment=A, roster=roster)
    assert set(tmp_path.rglob("*")) == before  # nothing extracted
    s = by_id(intake)
    assert sorted(s) == ["hyamada", "jdoe", "jsmith", "jsmith2", "strayperson", "tyamada"]
    assert tag(s["jdoe"]) == "jane, resubmitted" and s["jdoe"].student is roster.by_canvas_id("12345")
    assert tag(s["jsmith"]) == "jo smith" and tag(s["jsmith2"]) == "joe smith"  # matched by user id, not login
    assert s["tyamada"].late_mark and s["tyamada"].source == f"{z}:yamadataro_LATE_12346_67891_Copy of cnn_mnist.ipynb"
    assert tag(s["hyamada"]) == "hanako"
    # A file of nobody in the roster is still graded, under the name's id, and reported.
    assert [u.student_id for u in intake.unmatched] == ["strayperson"]
    assert s["strayperson"].student == Student("strayperson", login="strayperson", canvas_id="55555")
    assert [st.student_id for st in intake.missing] == ["alee"]
    [(old, graded)] = intake.superseded
    assert old.student_id == "jdoe" and graded.endswith("doejane_12345_67950_cnn_mnist-1.ipynb")
    lines = intake.summary_lines()
    text = "\n".join(lines)
    assert "1 earlier submission not graded" in text and "doejane_12345_67890_cnn_mnist.ipynb (jdoe;" in text
    assert "1 file matching no student in the roster" in text
    assert "strayperson_55555_67895_cnn_mnist.ipynb → strayperson" in text
    assert "1 student in the roster without a submission:" in text and "  alee (Lee, Ann)" in lines
    assert "leeann_12351_67896_report.pdf: not a notebook" in text
    ja = "\n".join(intake.summary_lines("ja"))
    assert "提出のない名簿の学生 1 人" in ja and "alee (Lee, Ann)" in ja


def test_canvas_order_is_attachment_then_attempt(tmp_path):
    """Canvas numbers attachments in upload order; a student's own "lab-2.ipynb" uploaded first is not later."""
    d = tmp_path / "dl"
    write(d / "kim_7_800_lab-1.ipynb", nb("attempt 1"))
    write(d / "kim_7_900_lab.ipynb", nb("attempt 2"))
    write(d / "kim_7_100_lab-2.ipynb", nb("attempt 0"))
    write(d / "lee_8_300_a.ipynb", nb("lee, earlier"))
    write(d / "lee_8_301_b.ipynb", nb("lee, later"))
    intake = gather(d, assignment=A)
    s = by_id(intake)
    assert tag(s["kim"]) == "attempt 2" and tag(s["lee"]) == "lee, later"
    assert sorted(o.source.rsplit("/", 1)[1] for o, _ in intake.superseded) == [
        "kim_7_100_lab-2.ipynb", "kim_7_800_lab-1.ipynb", "lee_8_300_a.ipynb"]


def test_same_attachment_twice_cannot_be_ordered(tmp_path):
    # Two downloads unzipped into one folder under different wrapper names would do this.
    z = tmp_path / "dl.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("kim_7_900_lab.ipynb", nb("one"))
        zf.writestr("kim_7_900_lab copy.ipynb", nb("two"))
    subs = gather(z, assignment=A).submissions
    assert [s.student_id for s in subs] == ["kim", "kim"]
    assert all(s.problem.startswith("duplicate student id: also in ") and s.notebook is None for s in subs)


def test_canvas_file_beside_a_plain_file_of_the_same_student_is_a_duplicate(tmp_path):
    d = tmp_path / "dl"
    write(d / "jdoe_12345_1_lab.ipynb", nb("canvas"))
    write(d / "jdoe.ipynb", nb("plain"))
    intake = gather(d, assignment=A)
    assert [(s.source, s.problem, s.notebook) for s in intake.submissions] == [
        (str(d / "jdoe.ipynb"), f"duplicate student id: also in {d / 'jdoe_12345_1_lab.ipynb'}", None),
        (str(d / "jdoe_12345_1_lab.ipynb"), f"duplicate student id: also in {d / 'jdoe.ipynb'}", None),
    ]
    assert intake.kind == {"canvas", "plain"} and intake.superseded == []


def test_roster_id_wins_over_an_lms_looking_name(tmp_path):
    d = tmp_path / "dl"
    write(d / "st_2024_0001_lab.ipynb", nb("student number with underscores"))
    roster = read_roster(write(tmp_path / "r.csv", "student_id\nst_2024_0001_lab\n"))
    [sub] = gather(d, assignment=A, roster=roster).submissions
    assert sub.student_id == "st_2024_0001_lab" and sub.student == Student("st_2024_0001_lab")
    [sub] = gather(d, assignment=A).submissions  # without a roster it reads as Canvas
    assert sub.student_id == "st" and sub.student.canvas_id == "2024"


def test_login_fallback_is_refused_for_another_canvas_user(tmp_path):
    d = tmp_path / "dl"
    write(d / "jdoe_99999_1_lab.ipynb", nb("someone else called jdoe"))
    write(d / "alee_777_2_lab.ipynb", nb("ann, by login"))
    roster = read_roster(write(tmp_path / "r.csv", "student_id,login,canvas_id\ns1,jdoe,12345\ns2,alee,\n"))
    intake = gather(d, assignment=A, roster=roster)
    s = by_id(intake)
    assert sorted(s) == ["jdoe", "s2"]  # graded under the name's login, but not as s1
    assert s["jdoe"].student == Student("jdoe", login="jdoe", canvas_id="99999")
    assert tag(s["s2"]) == "ann, by login" and s["s2"].student == Student("s2", login="alee")
    assert [u.student_id for u in intake.unmatched] == ["jdoe"]
    assert [st.student_id for st in intake.missing] == ["s1"]


def test_unmatched_id_does_not_take_a_rostered_students_id(tmp_path):
    d = tmp_path / "dl"
    write(d / "s1_424242_1_lab.ipynb", nb("a stranger whose login is s1"))
    write(d / "s1.ipynb", nb("the real s1"))
    roster = read_roster(write(tmp_path / "r.csv", "student_id\ns1\n"))
    s = by_id(gather(d, assignment=A, roster=roster))
    assert tag(s["s1"]) == "the real s1" and tag(s["s1_424242"]) == "a stranger whose login is s1"


def test_invalid_id_from_a_canvas_name_is_a_problem_row(tmp_path):
    z = tmp_path / "dl.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ev\x1bil_5_6_lab.ipynb", nb("evil"))
        zf.writestr("../../escape_5_7_lab.ipynb", nb("escape"))
        zf.writestr("ok_1_2_lab.ipynb", nb("ok"))
    s = by_id(gather(z, assignment=A))
    assert s["ev\\x1bil"].problem == "invalid student id: contains control character U+001B"
    assert s["ev\\x1bil"].notebook is None
    assert s["../../escape_5_7_lab.ipynb"].problem == "unsafe path in archive ('..' in path)"
    assert tag(s["ok"]) == "ok"


def test_superseded_notebooks_are_not_read(tmp_path):
    d = tmp_path / "dl"
    write(d / "kim_7_100_lab.ipynb", b"x" * 5000)
    write(d / "kim_7_200_lab-1.ipynb", nb("small"))
    intake = gather(d, assignment=A, max_total_bytes=3000)
    assert tag(by_id(intake)["kim"]) == "small"
    with pytest.raises(SubmissionsError, match="max_total_bytes"):
        gather(d, assignment=A, max_total_bytes=len(nb("small")) - 1)


# --- Moodle -----------------------------------------------------------------------------------------------------


def moodle_download(d: Path) -> Path:
    """Moodle's "Download all submissions": a folder per student and plugin."""
    write(d / "Student One_12345_assignsubmission_file_" / "cnn_mnist.ipynb", nb("one"))
    write(d / "Student One_12345_assignsubmission_onlinetext_" / "onlinetext.html", "<p>see file</p>")
    write(d / "山田 太郎_12346_assignsubmission_file_" / "Copy of cnn_mnist.ipynb", nb("taro"))
    # Two notebooks: the one named like the lab is graded.
    write(d / "Ann Lee_12347_assignsubmission_file_" / "scratch.ipynb", nb("ann scratch"))
    write(d / "Ann Lee_12347_assignsubmission_file_" / "CNN_MNIST (1).ipynb", nb("ann"))
    # Two notebooks, neither named like the lab: the TA decides.
    write(d / "Bo Chen_12348_assignsubmission_file_" / "a.ipynb", nb("bo a"))
    write(d / "Bo Chen_12348_assignsubmission_file_" / "b.ipynb", nb("bo b"))
    # Only a PDF: a problem row, not a silently missing student.
    write(d / "Cy Dee_12349_assignsubmission_file_" / "report.pdf", b"%PDF")
    # Two students of the same name.
    write(d / "Taro Sato_12350_assignsubmission_file_" / "cnn_mnist.ipynb", nb("sato 1"))
    write(d / "Taro Sato_12351_assignsubmission_file_" / "lab.ipynb", nb("sato 2"))
    # Older Moodle: flat.
    write(d / "Old Form_12352_assignsubmission_file_lab_1_2_v3.ipynb", nb("old form"))  # not Canvas's 1 and 2
    return d


def check_moodle(intake: Intake, where: str) -> None:
    s = by_id(intake)
    assert intake.kind == {"moodle"}
    assert sorted(s) == ["Ann Lee", "Bo Chen", "Cy Dee", "Old Form", "Student One", "Taro Sato_12350",
                         "Taro Sato_12351", "山田 太郎"]
    assert tag(s["Student One"]) == "one"
    assert s["Student One"].student == Student("Student One", name="Student One", moodle_id="12345")
    assert tag(s["山田 太郎"]) == "taro"
    assert tag(s["Ann Lee"]) == "ann"
    assert s["Bo Chen"].problem.startswith("several notebooks in submission (a.ipynb, b.ipynb)")
    assert s["Cy Dee"].problem == "no notebook in submission (found report.pdf)"
    assert tag(s["Taro Sato_12350"]) == "sato 1" and tag(s["Taro Sato_12351"]) == "sato 2"
    assert tag(s["Old Form"]) == "old form"
    [ignored] = intake.ignored
    assert ignored.why == "Moodle online text, not a notebook"
    assert ignored.source.startswith(where) and "Student One_12345_assignsubmission_onlinetext_" in ignored.source


def test_moodle_folder(tmp_path):
    d = moodle_download(tmp_path / "dl")
    check_moodle(gather(d, assignment=A), str(d))


def test_moodle_zip(tmp_path):
    z = zip_of(moodle_download(tmp_path / "dl"), tmp_path / "CS101-Lab 1-12345.zip")
    check_moodle(gather(z, assignment=A), str(z))


def test_moodle_zip_in_a_wrapper_folder(tmp_path):
    z = zip_of(moodle_download(tmp_path / "dl"), tmp_path / "w.zip", prefix="Lab 1/")
    check_moodle(gather(z, assignment=A), str(z))


def test_one_student_moodle_zip_is_not_taken_for_a_wrapper(tmp_path):
    d = tmp_path / "dl"
    write(d / "Student One_12345_assignsubmission_file_" / "anything.ipynb", nb("one"))
    [sub] = gather(zip_of(d, tmp_path / "one.zip"), assignment=A).submissions
    assert (sub.student_id, tag(sub)) == ("Student One", "one")


def test_collect_still_refuses_moodle_folders(tmp_path):
    """collect keeps today's contract; only gather knows Moodle."""
    d = tmp_path / "dl"
    write(d / "Student One_12345_assignsubmission_file_" / "cnn_mnist.ipynb", nb("one"))
    write(d / "Student Two_12346_assignsubmission_file_" / "cnn_mnist.ipynb", nb("two"))
    with pytest.raises(SubmissionsError, match="no submissions"):
        collect(d, assignment=A)


MOODLE_WORKSHEET = """Identifier,Full name,Email address,Status,Grade,Maximum Grade,Grade can be changed,Last modified (submission),Last modified (grade),Feedback comments
Participant 12345,Student One,one@example.edu,Submitted for grading,,100.00,Yes,"Monday, 7 December 2026, 11:59 PM",-,
Participant 12346,山田 太郎,yamada@example.edu,Submitted for grading,,100.00,Yes,"Tuesday, 8 December 2026, 9:30 AM",-,
Participant 22222,Ann Lee,ann@example.edu,Submitted for grading,,100.00,Yes,-,-,
Participant 12360,Dee Missing,dee@example.edu,No submission,,100.00,Yes,-,-,
Participant 99999,Taro Sato,sato@example.edu,Submitted for grading,,100.00,Yes,-,-,
"""


def test_moodle_with_worksheet_roster(tmp_path):
    d = tmp_path / "dl"
    write(d / "Student One_12345_assignsubmission_file_" / "cnn_mnist.ipynb", nb("one"))
    write(d / "山田 太郎_12346_assignsubmission_file_" / "cnn_mnist.ipynb", nb("taro"))
    # The worksheet numbers Ann 22222 (a worksheet of another lab, say): her name still finds her.
    write(d / "Ann Lee_12347_assignsubmission_file_" / "cnn_mnist.ipynb", nb("ann by name"))
    # The rostered Taro Sato is 99999 and is in the download: the other Taro Sato is not him.
    write(d / "Taro Sato_99999_assignsubmission_file_" / "cnn_mnist.ipynb", nb("rostered sato"))
    write(d / "Taro Sato_12350_assignsubmission_file_" / "cnn_mnist.ipynb", nb("another sato"))
    roster = read_roster(write(tmp_path / "worksheet.csv", MOODLE_WORKSHEET), tz=JST)
    z = zip_of(d, tmp_path / "dl.zip")
    intake = gather(z, assignment=A, roster=roster)
    s = by_id(intake)
    assert sorted(s) == ["Taro Sato", "ann@example.edu", "one@example.edu", "sato@example.edu", "yamada@example.edu"]
    # The worksheet's times are the submissions' times; Moodle's file names carry none.
    assert s["one@example.edu"].submitted_at == datetime(2026, 12, 7, 23, 59, tzinfo=JST)
    assert s["yamada@example.edu"].submitted_at == datetime(2026, 12, 8, 9, 30, tzinfo=JST)
    assert s["yamada@example.edu"].student is roster.by_moodle_id("12346")
    assert tag(s["ann@example.edu"]) == "ann by name" and s["ann@example.edu"].submitted_at is None
    assert tag(s["sato@example.edu"]) == "rostered sato"
    assert tag(s["Taro Sato"]) == "another sato"
    assert s["Taro Sato"].student == Student("Taro Sato", name="Taro Sato", moodle_id="12350")
    assert [u.student_id for u in intake.unmatched] == ["Taro Sato"]
    assert [st.student_id for st in intake.missing] == ["dee@example.edu"]
    [note] = intake.notes
    assert note.startswith("1 Moodle submission(s) matched to the roster by full name") and "Ann Lee_12347" in note
    assert any("Dee Missing" in line for line in intake.summary_lines())


def test_kit_roster_matches_moodle_by_name_and_plain_by_email(tmp_path):
    d = tmp_path / "dl"
    write(d / "Student One_12345_assignsubmission_file_" / "cnn_mnist.ipynb", nb("one"))
    write(d / "two@example.edu.ipynb", nb("two"))
    roster = read_roster(write(tmp_path / "r.csv", "student_id,name,email\ns1,Student One,one@x\ns2,,two@example.edu\n"))
    intake = gather(d, assignment=A, roster=roster)
    s = by_id(intake)
    assert tag(s["s1"]) == "one" and tag(s["s2"]) == "two"
    assert intake.unmatched == intake.missing == intake.notes == []
    assert intake.kind == {"moodle", "plain"}


# --- nbgrader and plain folders ---------------------------------------------------------------------------------


def nbgrader_course(root: Path) -> Path:
    sub = root / "submitted"
    write(sub / "alice" / A / f"{A}.ipynb", nb("alice"))
    write(sub / "alice" / A / "timestamp.txt", "2026-12-07 14:59:03.123456 UTC")
    write(sub / "bob" / A / f"{A}.ipynb", nb("bob"))
    write(sub / "bob" / A / "timestamp.txt", "2026-12-08 10:00:00")  # naive: UTC, as nbgrader reads it
    write(sub / "carol" / A / f"{A}.ipynb", nb("carol"))
    write(sub / "carol" / A / "timestamp.txt", "next tuesday")
    write(sub / "dave" / A / f"{A}.ipynb", nb("dave"))  # no timestamp.txt
    write(sub / "山田太郎" / A / f"{A}.ipynb", nb("yamada"))
    write(sub / "山田太郎" / A / "timestamp.txt", "2026-12-07 23:00:00 +32400")  # offset in seconds
    write(sub / "erin" / "other_lab" / "other_lab.ipynb", nb("erin, another lab"))
    write(root / "source" / A / f"{A}.ipynb", nb("source"))
    return root


def check_nbgrader(intake: Intake, where: str) -> None:
    assert intake.kind == {"nbgrader"}
    s = by_id(intake)
    assert sorted(s) == ["alice", "bob", "carol", "dave", "山田太郎"]
    assert all(tag(sub) == sid for sid, sub in s.items() if sid != "山田太郎")
    assert s["alice"].submitted_at == datetime(2026, 12, 7, 14, 59, 3, 123456, tzinfo=UTC)
    assert s["bob"].submitted_at == datetime(2026, 12, 8, 10, 0, tzinfo=UTC)
    assert s["山田太郎"].submitted_at == datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
    assert s["carol"].submitted_at is None and s["dave"].submitted_at is None
    assert all(sub.student is None and not sub.late_mark and sub.problem is None for sub in s.values())
    [note] = intake.notes
    assert note.startswith(where) and "carol" in note and "'next tuesday' is not a date and time" in note
    [erin] = intake.ignored
    assert erin.source.startswith(where) and erin.why == f"no {A}/ folder in it"


def test_nbgrader_course_with_timestamps(tmp_path):
    root = nbgrader_course(tmp_path / "course")
    check_nbgrader(gather(root, assignment=A), str(root))
    assert gather(root / "submitted", assignment=A) == gather(root, assignment=A)


def test_nbgrader_course_zip(tmp_path):
    z = zip_of(nbgrader_course(tmp_path / "course"), tmp_path / "course.zip", prefix="course/")
    check_nbgrader(gather(z, assignment=A), str(z))


def test_nbgrader_with_kit_roster(tmp_path):
    root = nbgrader_course(tmp_path / "course")
    write(root / "submitted" / "frank@example.edu" / A / f"{A}.ipynb", nb("frank"))
    roster = read_roster(write(tmp_path / "r.csv", "student_id,name,email\nALICE,Alice A,\nf01,Frank,frank@example.edu\n"
                                                   "g01,Gina,g@example.edu\n"))
    intake = gather(root, assignment=A, roster=roster)
    s = by_id(intake)
    assert sorted(s) == ["ALICE", "bob", "carol", "dave", "f01", "山田太郎"]
    assert s["ALICE"].student == Student("ALICE", "Alice A") and tag(s["ALICE"]) == "alice"
    assert tag(s["f01"]) == "frank"
    assert sorted(u.student_id for u in intake.unmatched) == ["bob", "carol", "dave", "山田太郎"]
    assert [st.student_id for st in intake.missing] == ["g01"]


def test_latest_by_submission_time(tmp_path):
    # Folders of one student in two spellings (a case-folding file system would merge them), all timed.
    sub = tmp_path / "submitted"

    def hand_in(folder: str, tag_: str, when: str) -> str:
        write(sub / folder / A / "timestamp.txt", when)
        return str(write(sub / folder / A / f"{A}.ipynb", nb(tag_)))

    alice_late = hand_in("alice", "alice later", "2026-12-08 00:00:00 UTC")
    alice_early = hand_in("Alice", "alice earlier", "2026-12-07 23:00:00 +3600")  # 22:00 UTC
    bob = [hand_in("bob", "bob 1", "2026-12-07 00:00:00 UTC"), hand_in("Bob", "bob 2", "2026-12-07 09:00:00 +32400")]
    hand_in("carol", "carol 1", "2026-12-07 00:00:00 UTC")
    carol_2 = hand_in("Carol", "carol 2", "2026-12-07 09:00:00 JST")  # unknown zone: UTC, so 9 hours later
    intake = gather(tmp_path, assignment=A)
    s = {(x.student_id, x.source): x for x in intake.submissions}
    assert sorted(s) == sorted([("alice", alice_late), ("bob", bob[0]), ("Bob", bob[1]), ("Carol", carol_2)])
    assert tag(s["alice", alice_late]) == "alice later"
    assert ("Alice", alice_early) in {(o.student_id, o.source) for o, _ in intake.superseded}
    assert dict((o.source, by) for o, by in intake.superseded)[alice_early] == alice_late
    # The same instant twice: which is the latest cannot be told.
    assert s["bob", bob[0]].problem == f"duplicate student id: also in {bob[1]}"
    assert s["Bob", bob[1]].problem == f"duplicate student id: also in {bob[0]}"
    assert tag(s["Carol", carol_2]) == "carol 2"
    assert any("'JST', which is unknown" in n for n in intake.notes)


def test_plain_folder_as_today(tmp_path):
    d = tmp_path / "subs"
    write(d / "alice.ipynb", nb("alice"))
    write(d / "山田 太郎.ipynb", nb("yamada"))
    write(d / " lead.ipynb", nb("lead"))
    intake = gather(d, assignment=A)
    assert intake.kind == {"plain"}
    s = by_id(intake)
    assert tag(s["alice"]) == "alice" and tag(s["山田 太郎"]) == "yamada"
    assert s[" lead"].problem == "invalid student id: leading or trailing whitespace"
    assert [(x.student_id, x.notebook, x.problem) for x in collect(d, assignment=A)] == [
        (x.student_id, x.notebook, x.problem) for x in intake.submissions]


def test_mixed_download(tmp_path):
    d = tmp_path / "dl"
    canvas_download(d)
    write(d / "Student One_12345_assignsubmission_file_" / "cnn_mnist.ipynb", nb("moodle one"))
    write(d / "zed" / A / f"{A}.ipynb", nb("zed"))
    write(d / "plainperson.ipynb", nb("plain"))
    intake = gather(d, assignment=A)
    assert intake.kind == {"canvas", "moodle", "nbgrader", "plain"}
    s = by_id(intake)
    assert tag(s["Student One"]) == "moodle one" and tag(s["zed"]) == "zed" and tag(s["plainperson"]) == "plain"
    assert tag(s["doejane"]) == "jane, resubmitted"


def test_nothing_found(tmp_path):
    d = tmp_path / "dl"
    write(d / "leeann_12351_67896_report.pdf", b"%PDF")
    with pytest.raises(SubmissionsError, match="no submissions for assignment 'cnn_mnist'"):
        gather(d, assignment=A)


def test_summary_is_empty_when_all_is_well(tmp_path):
    d = tmp_path / "dl"
    write(d / "alice.ipynb", nb("alice"))
    assert gather(d, assignment=A).summary_lines() == []


def test_summary_escapes_control_characters(tmp_path):
    d = tmp_path / "dl"
    write(d / "x\x1b[2J_5_6_lab.pdf", b"%PDF")
    write(d / "alice.ipynb", nb("alice"))
    lines = gather(d, assignment=A).summary_lines()
    assert lines and all("\x1b" not in line for line in lines) and any("\\x1b[2J" in line for line in lines)


# --- nbgrader's timestamp.txt -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected, note",
    [
        (b"2026-12-07 14:59:03.123456 UTC", datetime(2026, 12, 7, 14, 59, 3, 123456, tzinfo=UTC), None),
        (b"2026-12-07 14:59:03.123456", datetime(2026, 12, 7, 14, 59, 3, 123456, tzinfo=UTC), None),
        (b"2026-12-07 23:59:03 Asia/Tokyo", datetime(2026, 12, 7, 14, 59, 3, tzinfo=UTC), None),
        (b"2026-12-07 23:59:03 +32400", datetime(2026, 12, 7, 14, 59, 3, tzinfo=UTC), None),
        (b"2026-12-07T23:59:03+09:00\n", datetime(2026, 12, 7, 14, 59, 3, tzinfo=UTC), None),
        (b"2026-12-07 23:59:03 XYZ", datetime(2026, 12, 7, 23, 59, 3, tzinfo=UTC), "'XYZ', which is unknown"),
        (b"2026-12-07 23:59:03 ../../etc/passwd", datetime(2026, 12, 7, 23, 59, 3, tzinfo=UTC), "unknown"),
        (b"12", None, "'12' is not a date and time"),
        (b"2026-13-45 99:99:99", None, "is not a date and time"),
        (b"\xff\xfe", None, "is not text"),
        (b"", None, "is not a date and time"),
    ],
)
def test_parse_nbgrader_timestamp(text, expected, note):
    when, got_note = parse_nbgrader_timestamp(text)
    assert when == expected
    assert (got_note is None) if note is None else (note in got_note)


def test_oversized_timestamp_is_a_note(tmp_path):
    sub = tmp_path / "submitted"
    write(sub / "alice" / A / f"{A}.ipynb", nb("alice"))
    write(sub / "alice" / A / "timestamp.txt", "2026-12-07 00:00:00 UTC" + " " * submissions.MAX_TIMESTAMP_BYTES)
    intake = gather(tmp_path, assignment=A)
    [sub_] = intake.submissions
    assert sub_.submitted_at is None and tag(sub_) == "alice"
    [note] = intake.notes
    assert f"timestamp.txt is larger than {submissions.MAX_TIMESTAMP_BYTES} bytes" in note


@pytest.mark.skipif(not hasattr(os, "symlink") or sys.platform == "win32", reason="needs symlinks")
def test_links_in_moodle_folders_stay_in_the_students_folder(tmp_path):
    d = tmp_path / "dl"
    write(d / "Bob B_2_assignsubmission_file_" / "cnn_mnist.ipynb", nb("bob"))
    mallory = d / "Mallory M_3_assignsubmission_file_"
    mallory.mkdir()
    (mallory / "cnn_mnist.ipynb").symlink_to(Path("..") / "Bob B_2_assignsubmission_file_" / "cnn_mnist.ipynb")
    write(tmp_path / "secret" / "x.ipynb", nb("secret"))
    (d / "Eve E_4_assignsubmission_file_").symlink_to(tmp_path / "secret", target_is_directory=True)
    s = by_id(gather(d, assignment=A))
    assert tag(s["Bob B"]) == "bob"
    assert s["Mallory M"].problem == "symbolic link pointing outside the student's folder"
    assert s["Eve E"].problem == "symbolic link pointing outside the submissions folder"
    assert s["Mallory M"].notebook is None and s["Eve E"].notebook is None
