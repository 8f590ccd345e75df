"""The fairness corpus (tests/fairness.py), graded in one batch through the real CLI: every honest habit
earns exactly its points, every slip costs only what depends on it, and the report says why."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from autograder import config, release
from autograder.results import ResultStore

import fairness
import mutants
from repo import COURSE


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, mnist_dir):
    work = tmp_path_factory.mktemp("fairness")
    folder = work / "class"
    folder.mkdir()
    for name, (nb, _, _) in fairness.notebooks().items():
        fairness.write(nb, folder / f"{name}.ipynb")
    run = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", str(folder), "--course", str(COURSE.root), "--assignment", "cnn_mnist",
                          "--out", str(work / "out"), "--lang", "en", "--jobs", "2", "--device", "cpu"],
                         capture_output=True, text=True, cwd=work, env={**os.environ, "MNIST_DIR": str(mnist_dir)})
    assert run.returncode == 0, run.stderr[-3000:]
    return {r.student_id: r for r in ResultStore(work / "out").load_all()}


def said(result) -> str:
    """Everything the report tells the student, in English."""
    messages = [c.message.en for c in result.checks if c.message] + [n.en for n in result.notes]
    return " | ".join(messages + ([result.reason.en] if result.reason else []))


@pytest.mark.sandbox
@pytest.mark.slow
@pytest.mark.parametrize("name", list(fairness.CORPUS))
def test_each_notebook_earns_exactly_its_points(corpus, name):
    _, expected, phrase = fairness.CORPUS[name]
    result = corpus[name]
    assert result.status == "graded", (result.status, said(result))
    assert result.parts == expected, said(result)
    if phrase:
        assert phrase in said(result), said(result)


def test_the_corpus_is_the_one_the_issue_asks_for():
    assert len(fairness.CORPUS) >= 15


def test_release_check_fails_when_the_notebook_and_the_config_drift_apart(tmp_path):
    course = mutants.course_copy(tmp_path, {"threshold = 0.90": "threshold = 0.92"})
    with pytest.raises(release.ReleaseError) as caught:
        release.check_source(config.load(course))
    assert "test_accuracy >= 0.92" in str(caught.value) and "[claims]" in str(caught.value)
    release.check_source(COURSE.lab("cnn_mnist"))  # the course as committed says what grading does
