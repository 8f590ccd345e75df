"""The kit installed as a package (not editable) into a fresh virtual environment, run from a copy of this
course in a folder of its own: nothing of it refers to this checkout. Its dependencies (torch and the rest,
5 GB) come from the project's environment through a .pth file, as a shared site folder would; the kit itself
is built and installed from a copy of its source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import mutants
from repo import REPO_ROOT

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("install")
    env = root / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = Path(subprocess.run([str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for package in ("autograder", "labkit"):
        shutil.copytree(REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           str(source)], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.rmtree(source)  # nothing may run from the source copy either
    course = root / "course"
    for folder in ("assignments", "release", "solutions"):
        shutil.copytree(REPO_ROOT / folder, course / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return env, course


def run(env: Path, course: Path, *args: str, mnist: Path | None = None):
    # The dependencies' own commands (nbgrader runs alembic) come with them, after the environment's own.
    path = os.pathsep.join([str(env / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]])
    return subprocess.run([str(env / "bin" / "autograder"), *args], capture_output=True, text=True, cwd=course,
                          env={**os.environ, "PATH": path, **({"MNIST_DIR": str(mnist)} if mnist else {})})


def test_the_kit_runs_from_its_own_environment(installed):
    env, _ = installed
    where = subprocess.run([str(env / "bin" / "python"), "-c", "import autograder, labkit; "
                            "print(autograder.__file__); print(labkit.__file__)"],
                           check=True, capture_output=True, text=True, cwd="/").stdout.split()
    assert all(Path(p).is_relative_to(env) for p in where), where


def test_release_check_passes_for_every_lab(installed):
    env, course = installed
    done = run(env, course, "release", "--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "release and answer key of cnn_mnist are up to date" in done.stdout
    assert "release and answer key of mlp_mnist are up to date" in done.stdout


@pytest.mark.parametrize("lab, lab_mutants", [("cnn_mnist", mutants.MUTANTS), ("mlp_mnist", mutants.MLP_MUTANTS)])
def test_both_labs_grade_from_the_course_folder(installed, mnist_dir, lab, lab_mutants):
    """The issue's acceptance, run from the installed kit: the answer key 100, the untouched release 0, and
    every one-mistake mutant of the lab losing only its own part."""
    env, course = installed
    submissions = course / "submitted" / lab
    submissions.mkdir(parents=True)
    mutants.write(mutants.filled(lab=lab), submissions / "key.ipynb")
    shutil.copy(course / "release" / lab / f"{lab}.ipynb", submissions / "untouched.ipynb")
    for mutant in lab_mutants:
        mutants.write(mutants.mutant_notebook(mutant), submissions / f"{mutant.name}.ipynb")
    done = run(env, course, "grade", str(submissions), "--assignment", lab, "--jobs", "2", "--lang", "en",
               mnist=mnist_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    results = {p.stem: json.loads(p.read_text()) for p in (course / "out" / lab / "results").glob("*.json")}
    assert set(results) == {"key", "untouched", *(m.name for m in lab_mutants)}
    total = {sid: sum(r["parts"].values()) for sid, r in results.items()}
    assert total["key"] == 100 and total["untouched"] == 0, total
    points = results["key"]["max_parts"]
    for mutant in lab_mutants:
        lost = {part for part, got in results[mutant.name]["parts"].items() if got < points[part]}
        assert lost == {mutant.part}, (mutant.name, results[mutant.name]["parts"])
