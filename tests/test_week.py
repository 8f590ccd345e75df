"""A TA's week through the real CLI: an LMS download and a roster in, grades and the LMS's own import files out.

Three downloads as TAs get them, each graded once per module by `autograder grade` with the real sandbox:
- Canvas's `submissions.zip` (flat files `<login>_[LATE_]<user id>_<attachment id>_<name>`, a resubmission
  `-1`, a file of a student not on the roster) with Canvas's gradebook export as the roster;
- Moodle's download as a folder (`<Full Name>_<participant id>_assignsubmission_file_/`) with Moodle's grading
  worksheet as the roster, whose "Last modified (submission)" times say who was late;
- an nbgrader course (`nbgrader_config.py`, `submitted/<student>/<lab>/` with `timestamp.txt`), after which
  nbgrader's own `generate_feedback` and `export` run on what the kit wrote.
The lab is a copy of cnn_mnist with a due date and 10 points off per started day, at most 30.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from autograder.results import ResultStore

import mutants
from repo import REPO_ROOT

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

CLI = [sys.executable, "-m", "autograder.cli"]
LATE = """
[late]
due = "2026-12-07T23:59:00+09:00"
penalty = "per_day"
points = 10
cap = 30
"""


def autograder(*args, mnist_dir, cwd=REPO_ROOT, returncode=0):
    run = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                         env={**os.environ, "MNIST_DIR": str(mnist_dir)})
    assert run.returncode == returncode, run.stdout + run.stderr
    return run


def grade_download(download: Path, lab: Path, roster: Path, tmp: Path, mnist_dir):
    """`autograder grade` on an LMS download with its roster, as a TA runs it: (the output folder, the run)."""
    out = tmp / "out"
    run = autograder("grade", download, "--assignment", lab, "--roster", roster, "--out", out, "--lang", "en",
                     "--jobs", "2", "--device", "cpu", mnist_dir=mnist_dir)
    return out, run


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = mutants.course_copy(tmp_path_factory.mktemp("lab"))
    with open(folder / "assignment.toml", "a", encoding="utf-8") as f:
        f.write(LATE)
    return folder


def notebook_bytes(nb: dict, tmp: Path, name: str) -> bytes:
    return mutants.write(nb, tmp / name).read_bytes()


# --- Canvas --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def canvas(lab, tmp_path_factory, mnist_dir):
    tmp = tmp_path_factory.mktemp("canvas")
    key = notebook_bytes(mutants.filled(), tmp, "key.ipynb")
    untouched = mutants.RELEASED.read_bytes()
    download = tmp / "submissions.zip"
    with zipfile.ZipFile(download, "w") as z:
        z.writestr("yamadataro_1001_5001_cnn_mnist.ipynb", untouched)  # first attempt
        z.writestr("yamadataro_1001_5009_cnn_mnist-1.ipynb", key)  # the resubmission: it wins
        z.writestr("suzukihanako_LATE_1002_5003_Copy of cnn_mnist.ipynb", key)  # Colab's copy, marked late
        z.writestr("satoujiro_1099_5004_cnn_mnist.ipynb", untouched)  # not on the roster
    roster = tmp / "canvas_gradebook.csv"
    roster.write_text(
        "Student,ID,SIS User ID,SIS Login ID,Section,CNN lab (777)\n"
        "    Points Possible,,,,,100\n"
        '"Yamada, Taro",1001,s1001,yamadataro,Lab A,\n'
        '"Suzuki, Hanako",1002,s1002,suzukihanako,Lab A,\n'
        '"Tanaka, Jiro",1003,s1003,tanakajiro,Lab B,\n', encoding="utf-8")
    out, run = grade_download(download, lab, roster, tmp, mnist_dir)
    results = {r.student_id: r for r in ResultStore(out).load_all()}
    return dict(out=out, run=run, results=results, roster=roster, key=key)


def test_canvas_ids_come_from_the_roster_and_the_resubmission_wins(canvas):
    results = canvas["results"]
    assert set(results) == {"yamadataro", "suzukihanako", "satoujiro"}  # one row per student, not per file
    yamada = results["yamadataro"]
    assert yamada.total == 100 and yamada.digest == hashlib.sha256(canvas["key"]).hexdigest()
    assert yamada.student["canvas_id"] == "1001" and yamada.student["section"] == "Lab A"


def test_canvas_late_mark_costs_the_first_day(canvas):
    rows = {r["student_id"]: r for r in read_csv(canvas["out"] / "grades.csv")}
    assert canvas["results"]["suzukihanako"].late_mark
    assert float(rows["suzukihanako"]["late_penalty"]) == 10 and float(rows["suzukihanako"]["score"]) == 90
    assert float(rows["yamadataro"]["late_penalty"] or 0) == 0 and float(rows["yamadataro"]["score"]) == 100


def test_canvas_summary_names_the_superseded_the_unmatched_and_the_missing(canvas):
    said = canvas["run"].stdout
    assert "5001" in said or "yamadataro_1001_5001_cnn_mnist.ipynb" in said  # the first attempt, not graded
    assert "satoujiro" in said and "tanakajiro" in said


def test_canvas_export_is_the_gradebook_canvas_imports(canvas, lab, mnist_dir):
    path = canvas["out"] / "canvas.csv"
    autograder("export", "--format", "canvas", "--assignment", lab, "--out", canvas["out"], "--roster",
               canvas["roster"], "--column", "CNN lab (777)", "-o", path, mnist_dir=mnist_dir)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    assert rows[0][:5] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
    assert rows[0][5] == "CNN lab (777)"
    by_id = {r[1]: r for r in rows[1:] if r[1]}
    assert float(by_id["1001"][5]) == 100 and float(by_id["1002"][5]) == 90  # after the late penalty
    assert by_id["1003"][5] == ""  # no submission: left for the TA, not a zero


def test_canvas_status_says_who_is_graded_missing_and_late(canvas, lab, mnist_dir):
    said = autograder("status", canvas["out"].parent / "submissions.zip", "--assignment", lab, "--out",
                      canvas["out"], "--roster", canvas["roster"], mnist_dir=mnist_dir).stdout
    lines = {line.split()[0]: line for line in said.splitlines() if line.strip()}
    assert "graded" in lines["yamadataro"] and "missing" in lines["tanakajiro"]
    assert "late" in lines["suzukihanako"]


# --- Moodle --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moodle(lab, tmp_path_factory, mnist_dir):
    tmp = tmp_path_factory.mktemp("moodle")
    download = tmp / "download"
    for folder, name, nb in [("Taro Yamada_2001_assignsubmission_file_", "cnn_mnist.ipynb", None),
                             ("Hanako Suzuki_2002_assignsubmission_file_", "cnn_mnist (1).ipynb", "key"),
                             ("Jiro Sato_2099_assignsubmission_file_", "cnn_mnist.ipynb", None)]:
        (download / folder).mkdir(parents=True)
        data = mutants.RELEASED.read_bytes() if nb is None else notebook_bytes(mutants.filled(), tmp, "key.ipynb")
        (download / folder / name).write_bytes(data)
    roster = tmp / "worksheet.csv"
    roster.write_text(
        "Identifier,Full name,Email address,Status,Grade,Maximum Grade,Grade can be changed,"
        "Last modified (submission),Last modified (grade),Feedback comments\n"
        "Participant 2001,Taro Yamada,taro@example.ac.jp,Submitted for grading,,100.00,Yes,"
        '"Monday, 7 December 2026, 10:00 AM",-,\n'
        "Participant 2002,Hanako Suzuki,hanako@example.ac.jp,Submitted for grading,,100.00,Yes,"
        '"Saturday, 12 December 2026, 10:00 AM",-,\n'
        "Participant 2003,Ichiro Tanaka,ichiro@example.ac.jp,No submission,,100.00,Yes,-,-,\n", encoding="utf-8")
    out, run = grade_download(download, lab, roster, tmp, mnist_dir)
    results = {r.student["moodle_id"]: r for r in ResultStore(out).load_all() if r.student.get("moodle_id")}
    return dict(out=out, run=run, results=results, roster=roster)


def test_moodle_folders_are_students_matched_by_participant_id(moodle):
    results = moodle["results"]
    assert set(results) == {"2001", "2002", "2099"}
    assert results["2002"].total == 100  # "cnn_mnist (1).ipynb": the only notebook in the folder counts
    said = moodle["run"].stdout
    assert "Jiro Sato" in said and "Ichiro Tanaka" in said  # not on the roster; no submission


def test_moodle_export_is_the_grading_worksheet(moodle, lab, mnist_dir):
    path = moodle["out"] / "moodle.csv"
    autograder("export", "--format", "moodle", "--assignment", lab, "--out", moodle["out"], "--roster",
               moodle["roster"], "-o", path, mnist_dir=mnist_dir)
    rows = read_csv(path)
    assert list(rows[0])[:5] == ["Identifier", "Full name", "Email address", "Status", "Grade"]
    by_id = {r["Identifier"]: r for r in rows}
    # Handed in more than four days late: 10 per started day, at most 30 off.
    assert float(by_id["Participant 2002"]["Grade"]) == 70
    assert float(by_id["Participant 2001"]["Grade"]) == 0


def test_gradescope_export_and_the_grade_it_cannot_place(moodle, lab, mnist_dir):
    """Gradescope matches students by email or SID: the student who is not on the roster has neither, so the
    export names that grade as not placed and fails, rather than losing it silently on upload."""
    path = moodle["out"] / "gradescope.csv"
    run = autograder("export", "--format", "gradescope", "--assignment", lab, "--out", moodle["out"], "--roster",
                     moodle["roster"], "-o", path, mnist_dir=mnist_dir, returncode=1)
    assert "NOT PLACED: Jiro Sato" in run.stdout
    rows = read_csv(path)
    assert {"Name", "Email"} <= set(rows[0])
    by_email = {r["Email"]: r for r in rows}
    score = next(k for k in rows[0] if "score" in k.lower())
    assert float(by_email["hanako@example.ac.jp"][score]) == 70


# --- nbgrader ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nbgrader_course(lab, tmp_path_factory, mnist_dir):
    root = tmp_path_factory.mktemp("nbcourse")
    (root / "nbgrader_config.py").write_text('c = get_config()\nc.CourseDirectory.course_id = "cnn101"\n')
    tmp = tmp_path_factory.mktemp("nbs")
    for student, nb, stamp in [("alice", mutants.filled(), "2026-12-10 15:00:00.000000 UTC"),  # 3 days 1 min late
                               ("bob", None, "2026-12-07 10:00:00.000000 UTC")]:
        folder = root / "submitted" / student / "cnn_mnist"
        folder.mkdir(parents=True)
        data = mutants.RELEASED.read_bytes() if nb is None else notebook_bytes(nb, tmp, "key.ipynb")
        (folder / "cnn_mnist.ipynb").write_bytes(data)
        (folder / "timestamp.txt").write_text(stamp)
    out = tmp / "out"
    run = autograder("grade", root, "--assignment", lab, "--out", out, "--lang", "en", "--jobs", "2",
                     "--device", "cpu", mnist_dir=mnist_dir)
    return dict(root=root, out=out, run=run, results={r.student_id: r for r in ResultStore(out).load_all()})


def test_nbgrader_timestamps_set_the_late_penalty(nbgrader_course):
    alice = nbgrader_course["results"]["alice"]
    assert alice.total == 100 and alice.submitted_at.startswith("2026-12-10T15:00:00")
    rows = {r["student_id"]: r for r in read_csv(nbgrader_course["out"] / "grades.csv")}
    assert float(rows["alice"]["late_penalty"]) == 30 and float(rows["alice"]["score"]) == 70
    assert float(rows["bob"]["late_penalty"] or 0) == 0


def nbgrader(*args, cwd):
    run = subprocess.run([str(Path(sys.executable).parent / "nbgrader"), *args], capture_output=True, text=True,
                         cwd=cwd)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def test_nbgrader_generate_feedback_and_export_show_the_kits_scores(nbgrader_course):
    root = nbgrader_course["root"]
    assert (root / "autograded" / "alice" / "cnn_mnist" / "cnn_mnist.ipynb").is_file()
    nbgrader("generate_feedback", "cnn_mnist", "--force", cwd=root)
    page = (root / "feedback" / "alice" / "cnn_mnist" / "cnn_mnist.html").read_text(encoding="utf-8")
    assert "100" in page
    nbgrader("export", cwd=root)
    rows = {r["student_id"]: r for r in read_csv(root / "grades.csv")}
    alice = rows["alice"]
    assert float(alice["raw_score"]) == 100 and float(alice["late_submission_penalty"]) == 30
    assert float(alice["score"]) == 70 and alice["timestamp"].startswith("2026-12-10 15:00:00")
    assert float(rows["bob"]["raw_score"]) == 0
