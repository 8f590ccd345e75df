"""nbgrader's own flow after a batch: the kit writes autograded/ and feedback/ into an nbgrader course, and the
TA's `nbgrader generate_feedback`, `export` and `release_feedback` then work and show the kit's scores."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import pytest

from autograder import gradebook, nbcourse
from autograder.config import Late
from autograder.notebook import grade_cells
from autograder.results import GRADED, CheckResult, Message, SubmissionResult, invalid
from autograder.submissions import Submission

from repo import REPO_ROOT

pytest.importorskip("nbgrader")

LAB = "cnn_mnist"
RELEASE = REPO_ROOT / "release" / LAB / f"{LAB}.ipynb"
DUE = "2026-12-07T23:59:00+09:00"  # 14:59 UTC
ON_TIME = "2026-12-07 10:00:00.250000 UTC"  # nbgrader's own timestamp.txt format
THREE_DAYS_LATE = "2026-12-10 12:00:00.000000 UTC"  # 2 d 21 h late: three started days
FORGED = "All tests passed! 100/100"
SCRIPT = "<script>alert('formgrader')</script>"


@pytest.fixture
def lab(assignment):
    """cnn_mnist, due DUE, 10 points off per started day late."""
    return dataclasses.replace(assignment, late=Late(due=DUE, penalty="per_day", points=10.0))


def released() -> dict:
    return json.loads(RELEASE.read_text(encoding="utf-8"))


def cell_of(nb: dict, gid: str) -> dict:
    return next(c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == gid)


def alice_notebook() -> bytes:
    """A student who answered, then tampered: a test cell rewritten with a forged output, hostile HTML in an
    output, a cell of her own, a copy of an answer cell above the real one, and a cell claiming a grade cell id."""
    nb = released()
    cell_of(nb, "net")["source"] = "class Net(nn.Module):\n    pass  # alice's answer\n"
    test = cell_of(nb, "test_net")
    test["source"] = "assert True"
    test["metadata"]["nbgrader"]["points"] = 1000
    test["outputs"] = [{"output_type": "stream", "name": "stdout", "text": FORGED}]
    answer = cell_of(nb, "get_device")
    answer["outputs"] = [{"output_type": "display_data", "metadata": {}, "data": {"text/html": SCRIPT}}]
    stale = copy.deepcopy(cell_of(nb, "evaluate"))
    stale["source"] = "# an older attempt\n"
    stale["id"] = "stale-copy"
    nb["cells"].insert(3, stale)
    mine = {"cell_type": "code", "execution_count": 3, "id": "alice-own", "source": "print('my experiment')",
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "hello"}],
            "metadata": {"nbgrader": {"grade": True, "grade_id": "bonus", "points": 50, "solution": False,
                                      "locked": False, "schema_version": 3}}}
    nb["cells"].append(mine)
    nb["cells"].append({"cell_type": "raw", "id": "alice-own", "source": "same id again", "metadata": {}})
    nb["metadata"]["kernelspec"] = {"name": "evil", "display_name": "evil", "language": "python"}
    return json.dumps(nb).encode()


def bob_notebook() -> bytes:
    """A student who deleted the device test cell and the device answer."""
    nb = released()
    nb["cells"] = [c for c in nb["cells"]
                   if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") not in ("test_device", "get_device")]
    return json.dumps(nb).encode()


def check(part, name, points, most, message=None):
    return CheckResult(name=f"{part}.{name}", part=part, title=Message(f"{name} の確認", f"checks {name}"),
                       points=points, max_points=most, message=message)


def graded(student, lab, lost_net: float, *, submitted_at: str = "") -> SubmissionResult:
    """A result as grade() makes them: every part full but `net`, which lost `lost_net` on one check."""
    checks = []
    for part, most in lab.points.items():
        if part == "net":
            checks += [check(part, "layers", 15 - lost_net, 15,
                             Message("conv1 の出力チャネル数が違います（期待 2、実際 4）",
                                     "conv1 has the wrong number of output channels (expected 2, got 4)")),
                       check(part, "forward", 10, 10)]
        else:
            checks.append(check(part, "all", most, most))
    parts = {p: sum(c.points for c in checks if c.part == p) for p in lab.points}
    return SubmissionResult(student_id=student, status=GRADED, reason=None, parts=parts,
                            max_parts=dict(lab.points), checks=tuple(checks), submitted_at=submitted_at)


def iso(nbgrader_time: str) -> str:
    return datetime.strptime(nbgrader_time, "%Y-%m-%d %H:%M:%S.%f UTC").replace(tzinfo=timezone.utc).isoformat()


def make_course(root: Path, *, exchange: Path | None = None) -> None:
    """An nbgrader course as a TA has it after `nbgrader collect`: its config, source/ and release/ of the lab,
    and submitted/<student>/<lab>/ with timestamp.txt and submission_secret.txt (carol's notebook is broken)."""
    root.mkdir(parents=True, exist_ok=True)
    config = ['c = get_config()', 'c.CourseDirectory.course_id = "ml101"',
              'c.CourseDirectory.feedback_directory = "returned"']
    if exchange is not None:
        config.append(f"c.Exchange.root = {str(exchange)!r}")
    (root / "nbgrader_config.py").write_text("\n".join(config) + "\n", encoding="utf-8")
    for step in ("source", "release"):
        (root / step / LAB).mkdir(parents=True)
    shutil.copy(REPO_ROOT / "assignments" / LAB / f"{LAB}.ipynb", root / "source" / LAB)
    shutil.copy(RELEASE, root / "release" / LAB)
    for student, data, stamp in (("alice", alice_notebook(), ON_TIME), ("bob", bob_notebook(), THREE_DAYS_LATE),
                                 ("carol", b'{"cells": [', ON_TIME)):
        folder = root / "submitted" / student / LAB
        folder.mkdir(parents=True)
        (folder / f"{LAB}.ipynb").write_bytes(data)
        (folder / "timestamp.txt").write_text(stamp, encoding="utf-8")
        (folder / "submission_secret.txt").write_text(f"secret-of-{student}", encoding="utf-8")


def batch(root: Path, lab):
    """The batch's submissions and results, as grade() would have them for make_course's students."""
    subs = [Submission(s, (root / "submitted" / s / LAB / f"{LAB}.ipynb").read_bytes(), f"submitted/{s}")
            for s in ("alice", "bob", "carol")]
    results = [graded("alice", lab, 5.0, submitted_at=iso(ON_TIME)),  # 95, on time
               graded("bob", lab, 0.0, submitted_at=iso(THREE_DAYS_LATE)),  # 100, 30 off
               dataclasses.replace(invalid("carol", Message("ノートブックを読み込めません", "the notebook cannot be read"),
                                           lab.points), submitted_at=iso(ON_TIME))]
    return subs, results


def nbgrader(root: Path, *args: str) -> subprocess.CompletedProcess:
    """The real `nbgrader` command of this virtual environment, run in the course folder as a TA runs it."""
    env = dict(os.environ, PYTHONUTF8="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")  # nbgrader runs `alembic`
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, f"nbgrader {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


# --------------------------------------------------------------------------------------------------------------
# The whole flow, with nbgrader's own commands


@pytest.mark.notebook
def test_nbgrader_commands_work_on_the_kits_grades(tmp_path, lab):
    started = time.monotonic()
    root, exchange = tmp_path / "course", tmp_path / "exchange"
    exchange.mkdir()
    make_course(root, exchange=exchange)
    course = nbcourse.find(root / "submitted")
    assert course is not None and (course.root, course.course_id, course.feedback) == (root, "ml101", "returned")
    assert course.db_url == f"sqlite:///{root / 'gradebook.db'}"

    subs, results = batch(root, lab)
    gradebook.record(course.db_url, lab, results, course_id=course.course_id)
    written = nbcourse.write_autograded(course, lab, results, subs, lang="en")
    assert [(w.student_id, w.path is not None) for w in written] == [("alice", True), ("bob", True), ("carol", True)]
    assert "could not be read" in written[2].note
    from nbgrader.nbgraderformat import MetadataValidator  # nbgrader's own check of what its readers rely on

    for w in written:
        MetadataValidator().validate_nb(nbformat.read(w.path, as_version=4))
    # The kit's own page for alice only: generate_feedback keeps it, and renders nbgrader's page for the others.
    [page] = nbcourse.write_feedback(course, lab, results[:1], lang="en")
    kit_page = page.path.read_text(encoding="utf-8")
    assert page.path == root / "returned" / "alice" / LAB / f"{LAB}.html"

    nbgrader(root, "generate_feedback", LAB)
    assert page.path.read_text(encoding="utf-8") == kit_page
    assert (page.path.parent / "timestamp.txt").read_text() == ON_TIME

    bob = (root / "returned" / "bob" / LAB / f"{LAB}.html").read_text(encoding="utf-8")
    assert "(Score: 70.0 / 100.0)" in bob  # nbgrader's heading: the score after the penalty
    assert "Late submission penalty (Score: -30.0)" in bob
    assert "Autograder result: 25 / 25 points" in bob  # the kit's result under each test cell
    assert "This cell was missing from the submission" in bob  # the answer cell bob deleted
    carol = (root / "returned" / "carol" / LAB / f"{LAB}.html").read_text(encoding="utf-8")
    assert "(Score: 0.0 / 100.0)" in carol and "The submitted notebook could not be read" in carol
    assert "Why: the notebook cannot be read" in carol

    # --force: nbgrader's rendering of alice's autograded notebook, with the kit's explanation in it.
    nbgrader(root, "generate_feedback", "--force", "--student=alice", LAB)
    alice = page.path.read_text(encoding="utf-8")
    assert "(Score: 95.0 / 100.0)" in alice and "Late submission penalty" not in alice
    assert "Autograder result: 20 / 25 points" in alice
    assert "conv1 has the wrong number of output channels (expected 2, got 4)" in alice
    assert FORGED not in alice and "alert(&#39;formgrader&#39;)" not in alice and SCRIPT not in alice
    assert "alice&#39;s answer" in alice or "alice's answer" in alice  # her answer is what the TA sees

    def export():
        nbgrader(root, "export", "--to=grades.csv")
        with (root / "grades.csv").open(encoding="utf-8", newline="") as f:
            return {row["student_id"]: row for row in csv.DictReader(f)}

    def release_feedback():
        nbgrader(root, "release_feedback", LAB)
        return sorted(p.name for p in (exchange / "ml101" / "feedback").glob("*.html"))

    with ThreadPoolExecutor(2) as pool:  # two nbgrader start-ups at once: they read, and write apart
        rows, released_pages = pool.submit(export), pool.submit(release_feedback)
        rows, released_pages = rows.result(), released_pages.result()
    shown = {sid: (r["timestamp"], float(r["raw_score"]), float(r["late_submission_penalty"]), float(r["score"]),
                   float(r["max_score"])) for sid, r in rows.items()}
    assert shown == {"alice": ("2026-12-07 10:00:00.250000", 95.0, 0.0, 95.0, 100.0),
                     "bob": ("2026-12-10 12:00:00", 100.0, 30.0, 70.0, 100.0),
                     "carol": ("2026-12-07 10:00:00.250000", 0.0, 0.0, 0.0, 100.0)}
    assert {r["duedate"] for r in rows.values()} == {"2026-12-07 14:59:00"}
    assert len(released_pages) == 3  # one page per student, named after their submission secret

    # formgrader lists a submission only when its autograded notebook is there, and calls it autograded when
    # the gradebook's timestamp is submitted/'s.
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.course_id = "ml101"
    config.Exchange.root = str(exchange)
    api = NbGraderAPI(config=config)
    assert api.get_autograded_students(LAB) == {"alice", "bob", "carol"}
    assert len(api.get_notebook_submissions(LAB, LAB)) == 3
    print(f"nbgrader flow: {time.monotonic() - started:.1f} s")


# --------------------------------------------------------------------------------------------------------------
# The autograded notebook


def test_autograded_notebook_is_the_sanitised_submission(lab):
    nb, note = nbcourse.autograded_notebook(nbformat.read(RELEASE, as_version=4), alice_notebook(),
                                            graded("alice", lab, 5.0), lab, lang="ja")
    assert note is None
    nbformat.validate(nb)
    cells = grade_cells(nb)
    release = grade_cells(nbformat.read(RELEASE, as_version=4))
    # Test cells as released, with the part's points and the kit's result as their only output.
    assert cells["test_net"].source == release["test_net"].source
    assert cells["test_net"].metadata["nbgrader"]["points"] == 25.0
    [out] = cells["test_net"].outputs
    assert out.output_type == "stream" and out.text.startswith("自動採点の結果: 20 / 25 点\n")
    assert "conv1 の出力チャネル数が違います" in out.text and "✓ forward の確認: 10 / 10" in out.text
    assert all(len(cells[f"test_{p}"].outputs) == 1 for p in lab.points)
    # The student's answer, under the release's metadata; the last copy of an answer cell is the one kept.
    assert "alice's answer" in cells["net"].source
    assert cells["evaluate"].source == release["evaluate"].source
    assert cells["net"].metadata == release["net"].metadata
    # Her own cell stays, without what she claimed for it; no output of hers survives.
    own = [c for c in nb.cells if "my experiment" in c.source]
    assert len(own) == 1 and own[0].metadata == {} and own[0].outputs == []
    outputs = json.dumps([c.get("outputs", []) for c in nb.cells], ensure_ascii=False)
    assert FORGED not in outputs and "script" not in outputs and "hello" not in outputs
    assert nb.metadata["kernelspec"]["name"] == "python3"
    # Only the parts' test cells are grade cells; the order of the released cells is kept.
    grades = [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert grades == [f"test_{p}" for p in lab.points]
    assert len({c.id for c in nb.cells}) == len(nb.cells)


@pytest.mark.notebook
def test_a_students_markdown_and_raw_cells_cannot_put_markup_in_the_pages_nbgrader_renders(lab):
    """nbgrader's feedback and formgrader render the autograded notebook with nbconvert, unsanitised; formgrader runs
    in the TA's Jupyter server. The student's markdown keeps its text and formatting but no tag and no script link;
    an untyped raw cell, which nbconvert's HTML copies as it is, is given a format no exporter includes."""
    from nbconvert import HTMLExporter

    nb = released()
    nb["cells"] += [
        {"cell_type": "markdown", "id": "m1", "metadata": {},
         "source": "**My notes** <script>alert('md')</script> <img src=x onerror=alert(2)> "
                   "[click](javascript:alert(3)) [ok](https://example.org) if x < 3"},
        {"cell_type": "raw", "id": "r1", "metadata": {}, "source": "<script>alert('raw')</script>"},
        {"cell_type": "raw", "id": "r2", "metadata": {"raw_mimetype": "text/html"},
         "source": "<iframe src=javascript:alert(4)></iframe>"},
    ]
    answer = cell_of(nb, "net")
    answer["cell_type"] = "markdown"  # an answer cell turned into markdown keeps its grade_id: still the student's
    answer["source"] = "<svg onload=alert(5)>"
    auto, _ = nbcourse.autograded_notebook(nbformat.read(RELEASE, as_version=4), json.dumps(nb).encode(),
                                            graded("mallory", lab, 0.0), lab, lang="en")
    page, _ = HTMLExporter().from_notebook_node(auto)
    for markup in ("<script>alert", "<img src=x", 'href="javascript:', "<iframe", "<svg onload"):
        assert markup not in page, markup
    assert "<strong>My notes</strong>" in page and 'href="https://example.org"' in page
    assert "&lt;script&gt;alert" in page and "if x &lt; 3" in page  # shown as the text it is


def test_deleted_cells_come_back_after_the_cell_they_followed(lab):
    nb, _ = nbcourse.autograded_notebook(nbformat.read(RELEASE, as_version=4), bob_notebook(),
                                         graded("bob", lab, 0.0), lab, lang="en")
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]
    released_ids = [c.metadata["nbgrader"]["grade_id"] for c in nbformat.read(RELEASE, as_version=4).cells]
    assert ids == released_ids
    cells = grade_cells(nb)
    assert cells["get_device"].source.startswith("# This cell was missing from the submission")
    assert "Autograder result: 10 / 10 points" in cells["test_device"].outputs[0].text


@pytest.mark.parametrize("data", [b'{"cells": [', b"\xff\xfe", None, b'{"nbformat": 4, "cells": 7}'])
def test_an_unreadable_notebook_gets_the_release_with_the_kits_results(lab, data):
    result = invalid("carol", Message("読めません <b>", "unreadable <b>"), lab.points)
    nb, note = nbcourse.autograded_notebook(nbformat.read(RELEASE, as_version=4), data, result, lab, lang="en")
    nbformat.validate(nb)
    assert note.startswith("the submitted notebook could not be read")
    assert nb.cells[0].cell_type == "markdown" and "could not be read" in nb.cells[0].source
    assert "<b>" not in nb.cells[0].source  # the reason is never rendered as markdown
    assert "Autograder result: 0 / 25 points\nWhy: unreadable <b>\nNo checks of this part were run." in \
        grade_cells(nb)["test_net"].outputs[0].text
    assert len(nb.cells) == 1 + len(nbformat.read(RELEASE, as_version=4).cells)


def test_part_text_escapes_control_characters(lab):
    r = graded("alice", lab, 5.0)
    hostile = dataclasses.replace(r.checks[1], message=Message("\x1b[2J消えた\u202e", "\x1b[2Jgone\u202e"))
    r = dataclasses.replace(r, checks=(r.checks[0], hostile, *r.checks[2:]))
    text = nbcourse.part_text(r, "net", lang="en")
    assert "\x1b" not in text and "\u202e" not in text and "\\x1b[2Jgone\\u202e" in text


# --------------------------------------------------------------------------------------------------------------
# Finding the course, and what is written where


def test_find_reads_the_course_config(tmp_path):
    root = tmp_path / "course"
    (root / "collected").mkdir(parents=True)
    (root / "nbgrader_config.py").write_text(
        'c = get_config()\nc.CourseDirectory.submitted_directory = "collected"\n'
        'c.CourseDirectory.autograded_directory = "checked"\nc.CourseDirectory.course_id = " ml101 "\n'
        'c.CourseDirectory.db_url = "sqlite:////srv/nbgrader/ml101.db"\n', encoding="utf-8")
    for where in (root, root / "collected"):
        course = nbcourse.find(where)
        assert (course.root, course.submitted, course.autograded, course.feedback, course.course_id,
                course.db_url, course.config_file) == (root, "collected", "checked", "feedback", "ml101",
                                                       "sqlite:////srv/nbgrader/ml101.db", root / "nbgrader_config.py")
    assert course.folder(course.autograded, "alice", LAB) == root / "checked" / "alice" / LAB

    # A root elsewhere, relative to the course folder as `nbgrader` run there takes it.
    (root / "nbgrader_config.py").write_text('c = get_config()\nc.CourseDirectory.root = "../real"\n')
    course = nbcourse.find(root)
    assert course.root == tmp_path / "real" and course.db_url == f"sqlite:///{tmp_path / 'real' / 'gradebook.db'}"

    (root / "nbgrader_config.py").write_text("c = get_config()\nc.CourseDirectory.root = 3\n")
    with pytest.raises(nbcourse.NbgraderCourseError, match="must be text"):
        nbcourse.find(root)
    (root / "nbgrader_config.py").write_text("raise RuntimeError('broken')\n")
    with pytest.raises(nbcourse.NbgraderCourseError, match="cannot be read"):
        nbcourse.find(root)


def test_find_without_a_config_uses_nbgraders_defaults(tmp_path):
    (tmp_path / "course" / "submitted").mkdir(parents=True)
    for where in (tmp_path / "course", tmp_path / "course" / "submitted"):
        course = nbcourse.find(where)
        assert (course.root, course.submitted, course.autograded, course.feedback, course.course_id,
                course.db_url, course.config_file) == (tmp_path / "course", "submitted", "autograded", "feedback", "",
                                                       f"sqlite:///{tmp_path / 'course' / 'gradebook.db'}", None)
    (tmp_path / "download.zip").write_bytes(b"PK")
    (tmp_path / "canvas").mkdir()
    assert [nbcourse.find(p) for p in (tmp_path / "canvas", tmp_path / "download.zip", tmp_path / "nowhere")] == \
        [None, None, None]


def test_untrusted_ids_and_small_files(tmp_path, lab):
    root = tmp_path / "course"
    make_course(root)
    (root / "submitted" / "alice" / LAB / "timestamp.txt").write_text("the day after tomorrow")
    (root / "submitted" / "bob" / LAB / "submission_secret.txt").write_bytes(b"x" * 5000)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "autograded").mkdir()
    (root / "autograded" / "carol").symlink_to(outside)
    course = nbcourse.find(root)
    subs, results = batch(root, lab)
    results += [invalid("../escape", Message("x", "x"), lab.points)]
    written = {w.student_id: w for w in nbcourse.write_autograded(course, lab, results, subs)}

    # A time nbgrader cannot read is not copied (it would stop generate_feedback); the batch's time is written.
    alice = root / "autograded" / "alice" / LAB
    assert "is not a time nbgrader reads" in written["alice"].note
    assert (alice / "timestamp.txt").read_text() == "2026-12-07 10:00:00.250000 UTC"
    assert (alice / "submission_secret.txt").read_text() == "secret-of-alice"
    assert not (root / "autograded" / "bob" / LAB / "submission_secret.txt").exists()
    assert "not a short line of text" in written["bob"].note
    # Nothing is written through a link out of the course, nor for an id that is no folder name.
    assert written["carol"].path is None and "outside the course" in written["carol"].note
    assert not any(outside.iterdir())
    assert written["../escape"].path is None and "path separator" in written["../escape"].note
    assert not (tmp_path / "escape").exists()

    # Without any time: no timestamp.txt, and the TA is told what release_feedback will need.
    (root / "submitted" / "alice" / LAB / "timestamp.txt").unlink()
    [w] = nbcourse.write_autograded(course, lab, [dataclasses.replace(results[0], submitted_at="")], subs)
    assert not (alice / "timestamp.txt").exists() and "release_feedback needs timestamp.txt" in w.note


def test_write_feedback_lays_out_pages_as_generate_feedback(tmp_path, lab):
    root = tmp_path / "course"
    make_course(root)
    course = nbcourse.find(root)
    subs, results = batch(root, lab)
    pages = nbcourse.write_feedback(course, lab, results, render=lambda r: f"<p>{r.student_id}</p>")
    for w in pages:
        folder = root / "returned" / w.student_id / LAB
        assert w.path == folder / f"{LAB}.html" and w.path.read_text() == f"<p>{w.student_id}</p>"
        assert (folder / "submission_secret.txt").read_text() == f"secret-of-{w.student_id}"
    assert (root / "returned" / "bob" / LAB / "timestamp.txt").read_text() == THREE_DAYS_LATE
    default = nbcourse.write_feedback(course, lab, results[:1], lang="en")[0].path.read_text(encoding="utf-8")
    assert "cnn_mnist" in default and "conv1 has the wrong number of output channels" in default
