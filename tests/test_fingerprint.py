"""Results know what graded them: a result whose assignment config, hidden checks, source notebook or kit version
changed since is graded again on resume, said so, and never mixed with current ones in grades.csv or the
gradebook."""

from __future__ import annotations

import csv
import hashlib
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import autograder
from autograder import config, gradebook
from autograder.grade import Progress
from autograder.config import tomllib
from autograder.results import (UNRECORDED, UNREADABLE, Fingerprint, Message, ResultStore, SubmissionResult,
                                fingerprint, graded_again, invalid)

import mutants
from repo import REPO_ROOT


def test_the_kit_version_is_pyproject_s():
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        assert autograder.__version__ == tomllib.load(f)["project"]["version"]


def test_fingerprint_covers_config_hidden_checks_notebook_and_kit(tmp_path, monkeypatch):
    course = mutants.course_copy(tmp_path)
    moved = config.load(course)
    now = fingerprint(moved)
    # Where the course lies is not what graded a result: a copy elsewhere has the same fingerprint.
    assert fingerprint(config.load(shutil.copytree(course, tmp_path / "elsewhere"))) == now
    assert len(now.digest) == 64 and now.kit == autograder.__version__

    # Bytes the checks derive when imported are not part of it.
    (course / "hidden" / "__pycache__").mkdir(exist_ok=True)
    (course / "hidden" / "__pycache__" / "probes.cpython-311.pyc").write_bytes(b"\0cache")
    assert fingerprint(moved) == now

    def changed(path: Path, edit) -> set[str]:
        """What the fingerprint says changed when `edit` changes `path`; the file is put back after."""
        kept = path.read_bytes() if path.exists() else None
        edit()
        after = fingerprint(moved)
        path.write_bytes(kept) if kept is not None else path.unlink(missing_ok=True)
        assert fingerprint(moved) == now
        assert after.digest != now.digest
        return {f for f in ("config", "hidden", "notebook", "kit") if getattr(after, f) != getattr(now, f)}

    toml, probes, extra = course / "assignment.toml", course / "hidden" / "probes.py", course / "hidden" / "x.py"
    assert changed(toml, lambda: toml.write_text(toml.read_text().replace("evaluate = 10", "evaluate = 5"))) == {
        "config"}
    assert changed(probes, lambda: probes.write_text(probes.read_text() + "\n")) == {"hidden"}
    assert changed(extra, lambda: extra.write_text("")) == {"hidden"}  # a new file, even an empty one
    source = moved.source_notebook
    assert changed(source, lambda: source.write_bytes(source.read_bytes() + b" ")) == {"notebook"}
    monkeypatch.setattr("autograder.results.__version__", "0.2.0")
    newer = fingerprint(moved)
    assert newer.digest != now.digest and newer == dataclasses.replace(now, digest=newer.digest, kit="0.2.0")
    monkeypatch.undo()
    # A hidden file renamed, its bytes the same, is another set of checks.
    probes.rename(course / "hidden" / "probes2.py")
    assert fingerprint(moved).hidden != now.hidden


def test_stale_results_say_why(assignment):
    now = fingerprint(assignment)
    result = dataclasses.replace(invalid("s", Message("x", "x"), assignment.points), fingerprint=now)
    assert result.stale(now) is None
    older = dataclasses.replace(now, digest="0" * 64, config="1" * 64, kit="0.0.9")
    why = dataclasses.replace(result, fingerprint=older).stale(now)
    assert why == Message(f"採点後に設定（assignment.toml）と採点システムの版（0.0.9 → {now.kit}）が変わったため",
                          f"assignment.toml and the autograder's version (0.0.9 → {now.kit}) changed since grading")
    assert dataclasses.replace(result, fingerprint=None).stale(now) == UNRECORDED


def test_json_keeps_order_titles_and_fingerprint(tmp_path, assignment):
    """The parts stay in the assignment's (the notebook's) order through saving; results written before results
    had fingerprints still load, as results to grade again."""
    now = fingerprint(assignment)
    points = dict(reversed(list(assignment.points.items())))  # not alphabetical either way
    result = SubmissionResult(student_id="s", status="graded", reason=None, parts={p: 1.0 for p in points},
                              max_parts=points, fingerprint=now,
                              part_titles={"net": Message("ネットワーク", "The network")})
    store = ResultStore(tmp_path)
    store.save(result)
    loaded = store.load("s")
    assert loaded == result and list(loaded.parts) == list(loaded.max_parts) == list(points)
    assert store.stale("s", now) is None

    old = json.loads(store.path("s").read_text(encoding="utf-8"))
    del old["fingerprint"], old["part_titles"]
    store.path("s").write_text(json.dumps(old), encoding="utf-8")
    assert store.load("s").fingerprint is None and store.stale("s", now) == UNRECORDED
    assert store.load_all() == [dataclasses.replace(result, fingerprint=None, part_titles={})]
    assert store.load_all(now) == []  # only results of today's fingerprint count
    store.path("s").write_text('{"student_id": "s"', encoding="utf-8")
    assert store.stale("s", now) == UNREADABLE and store.load_all() == []


@pytest.mark.parametrize("lang, line", [
    ("en", "2 results were graded again: assignment.toml changed since grading"),
    ("ja", "2 件の結果を採点し直しました: 採点後に設定（assignment.toml）が変わったため")])
def test_the_batch_line_in_the_chosen_language(lang, line):
    old, now = Fingerprint("a", "1", "h", "n", "k"), Fingerprint("b", "2", "h", "n", "k")
    stream = io.StringIO()
    Progress(stream, lang=lang).note(graded_again(2, old.changes(now)))
    assert stream.getvalue() == line + "\n"
    assert graded_again(1, UNRECORDED).en == ("1 result was graded again: recorded by an earlier version of the kit, "
                                              "without what graded them")


# ------------------------------------------------------------------------------------------- through the CLI

CLI = [sys.executable, "-m", "autograder.cli"]


def grade(folder: Path, out: Path, env, *assignment: str):
    return subprocess.run([*CLI, "grade", str(folder), *assignment, "--out", str(out), "--lang", "en",
                           "--jobs", "1", "--device", "cpu"], capture_output=True, text=True, cwd=REPO_ROOT, env=env)


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (out / "results").glob("*.json")}


@pytest.fixture(scope="module")
def regraded(tmp_path_factory, mnist_dir):
    """A tiny class graded with a copy of cnn_mnist; again with a copy of that course elsewhere; then, with the
    same --out, with a copy whose [points] give evaluate 5 instead of 10, one result's fingerprint removed as an
    older kit would have left it. (Copies of one copy: an edit to assignments/ meanwhile changes none of them.)"""
    work = tmp_path_factory.mktemp("fingerprint")
    folder = work / "class"
    folder.mkdir()
    (folder / "untouched.ipynb").write_bytes(mutants.RELEASED.read_bytes())  # runs, scores 0: quick
    (folder / "broken.ipynb").write_text('{"cells": [', encoding="utf-8")  # never runs
    out = work / "out"
    env = {**os.environ, "MNIST_DIR": str(mnist_dir)}
    course = mutants.course_copy(work / "first")
    first = grade(folder, out, env, "--assignment", str(course))
    assert first.returncode == 0, first.stderr[-3000:]
    before = files(out)

    moved = shutil.copytree(course, work / "moved")
    same = grade(folder, out, env, "--assignment", str(moved))
    assert same.returncode == 0, same.stderr[-3000:]
    after_same = files(out)

    broken = out / "results" / "broken.json"
    old = json.loads(broken.read_text(encoding="utf-8"))
    del old["fingerprint"]
    broken.write_text(json.dumps(old, ensure_ascii=False), encoding="utf-8")
    edited = shutil.copytree(course, work / "edited")
    toml = (edited / "assignment.toml").read_text(encoding="utf-8")
    assert "\nevaluate = 10\n" in toml
    (edited / "assignment.toml").write_text(toml.replace("\nevaluate = 10\n", "\nevaluate = 5\n"), encoding="utf-8")
    regrade = grade(folder, out, env, "--assignment", str(edited))
    assert regrade.returncode == 0, regrade.stderr[-3000:]
    return {"out": out, "before": before, "same": same, "after_same": after_same, "edited": regrade,
            "course": config.load(edited)}


@pytest.mark.sandbox
@pytest.mark.slow
def test_an_unchanged_course_reuses_every_result(regraded):
    assert "graded again" not in regraded["same"].stderr
    assert regraded["after_same"] == regraded["before"]


@pytest.mark.sandbox
@pytest.mark.slow
def test_results_of_other_points_are_graded_again_and_said_so(regraded):
    course, out = regraded["course"], regraded["out"]
    stderr = regraded["edited"].stderr
    assert "1 result was graded again: assignment.toml changed since grading" in stderr
    assert ("1 result was graded again: recorded by an earlier version of the kit, without what graded them"
            in stderr)
    assert files(out)["untouched.json"] != regraded["before"]["untouched.json"]
    results = ResultStore(out).load_all()
    assert [r.student_id for r in results] == ["broken", "untouched"]
    for r in results:
        assert r.fingerprint == fingerprint(course)
        assert r.max_parts == course.points and r.max_parts["evaluate"] == 5 and r.max_total == 95
    assert results[1].status == "graded" and results[1].checks  # really run again, not only relabelled


@pytest.mark.sandbox
@pytest.mark.slow
def test_grades_csv_and_gradebook_show_only_today_s_maxima(regraded):
    course, out = regraded["course"], regraded["out"]
    with (out / "grades.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = {row["student_id"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"broken", "untouched"}
    assert {row["max_total"] for row in rows.values()} == {"95"}
    assert all(float(row["evaluate"]) <= 5 for row in rows.values())

    from nbgrader.api import Gradebook

    with Gradebook(gradebook.default_db_url(out)) as gb:
        cells = {c.name: c.max_score for c in gb.find_notebook("cnn_mnist", "cnn_mnist").grade_cells}
        assert cells == {f"test_{p}": v for p, v in course.points.items()} and cells["test_evaluate"] == 5
        for sid in rows:
            submission = gb.find_submission("cnn_mnist", sid)
            assert submission.max_score == 95
            grades = gb.find_submission_notebook("cnn_mnist", "cnn_mnist", sid).grades
            assert all(g.score <= g.max_score for g in grades)


def test_the_late_policy_is_not_what_graded_a_result(tmp_path):
    """Moving the due date re-scores a class (late.py, at report time) without training anyone again."""
    course = mutants.course_copy(tmp_path)
    now = fingerprint(config.load(course))
    toml = course / "assignment.toml"
    toml.write_text(toml.read_text() + '\n[late]\ndue = "2026-12-07T23:59:00+09:00"\npenalty = "zero"\n')
    assert fingerprint(config.load(course)) == now
    toml.write_text(toml.read_text().replace("evaluate = 10", "evaluate = 5"))
    assert fingerprint(config.load(course)).config != now.config  # the rest of the file still counts


def test_a_notebook_handed_in_again_is_graded_again_and_only_that_one(tmp_path, assignment):
    """A result records the sha256 of the bytes it graded; a resubmission with other bytes is graded again
    (and said so), the same bytes at another time only update when it was handed in. Unusable notebooks take
    the same path as runnable ones here, without a sandbox."""
    from datetime import datetime, timezone

    from autograder import grade
    from autograder.results import RESUBMITTED
    from autograder.submissions import Submission

    when = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    subs = [Submission("a", b"{not a notebook", "a.ipynb", submitted_at=when),
            Submission("b", b"{not one either", "b.ipynb")]
    out = tmp_path / "out"
    first = {r.student_id: r for r in grade.grade(assignment, subs, out, grade.Options())}
    assert first["a"].submitted_at == when.isoformat() and first["a"].digest == hashlib.sha256(b"{not a notebook").hexdigest()

    later = when.replace(day=2)
    again = [Submission("a", b"{still not a notebook", "a.ipynb", submitted_at=later),
             dataclasses.replace(subs[1], submitted_at=later)]
    stream = io.StringIO()
    second = {r.student_id: r for r in grade.grade(assignment, again, out, grade.Options(),
                                                     progress=Progress(stream))}
    assert second["a"].digest == hashlib.sha256(b"{still not a notebook").hexdigest()
    assert graded_again(1, RESUBMITTED).en in stream.getvalue()
    # b: the same bytes, handed in at another time: the record says when, nothing was graded again for it.
    assert second["b"].submitted_at == later.isoformat() and "2 results" not in stream.getvalue()
