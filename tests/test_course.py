"""A course is a folder (autograder/course.py): found from the current directory or --course, its folders
renamed by course.toml, and the kit grading a copy of this course kept anywhere."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from autograder.config import ConfigError
from autograder.course import Course

from repo import COURSE, REPO_ROOT


def copy_of_this_course(root, labs="assignments"):
    shutil.copytree(REPO_ROOT / "assignments", root / labs)
    for folder in ("release", "solutions"):
        shutil.copytree(REPO_ROOT / folder, root / folder)
    return root


def test_the_folders_and_the_only_lab(tmp_path):
    course = Course.at(copy_of_this_course(tmp_path))
    assert (course.labs_dir, course.release_dir, course.solutions_dir) == (
        tmp_path / "assignments", tmp_path / "release", tmp_path / "solutions")
    assert course.labs() == ["cnn_mnist", "mlp_mnist"]
    assert course.lab("cnn_mnist").folder == tmp_path / "assignments" / "cnn_mnist"  # the copy, not this checkout
    shutil.rmtree(tmp_path / "assignments" / "mlp_mnist")
    assert course.labs() == ["cnn_mnist"] and course.lab().name == "cnn_mnist"  # one lab: no name needed


def test_course_toml_renames_the_folders(tmp_path):
    copy_of_this_course(tmp_path, labs="source")
    (tmp_path / "course.toml").write_text('source = "source"\n')
    assert Course.at(tmp_path).lab("cnn_mnist").folder == tmp_path / "source" / "cnn_mnist"
    (tmp_path / "course.toml").write_text('source = "source"\nreleases = "out"\n')
    with pytest.raises(ConfigError, match="unknown or empty keys releases"):
        Course.at(tmp_path)


def test_without_a_name_a_course_of_two_labs_asks_which(tmp_path):
    copy_of_this_course(tmp_path)
    shutil.copytree(tmp_path / "assignments" / "cnn_mnist", tmp_path / "assignments" / "lab2")
    with pytest.raises(ConfigError, match="name a lab with --assignment: .* holds cnn_mnist, lab2, mlp_mnist"):
        Course.at(tmp_path).lab()
    with pytest.raises(ConfigError, match="is .* a course folder"):
        Course.at(tmp_path / "assignments").lab()
    assert COURSE.lab("cnn_mnist").folder == REPO_ROOT / "assignments" / "cnn_mnist"


@pytest.mark.notebook
def test_release_check_passes_on_a_copy_of_the_course_elsewhere(tmp_path):
    course = copy_of_this_course(tmp_path / "course")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, args in ((course, []), (elsewhere, ["--course", str(course)])):
        run = subprocess.run([sys.executable, "-m", "autograder.cli", "release", "--check", *args],
                             capture_output=True, text=True, cwd=cwd)
        assert run.returncode == 0 and "up to date" in run.stdout, run.stdout + run.stderr
    run = subprocess.run([sys.executable, "-m", "autograder.cli", "release", "--check"], capture_output=True,
                         text=True, cwd=elsewhere)
    assert run.returncode == 2 and "a course folder? see --course" in run.stderr, run.stderr
