"""Release: nbgrader's generate_assignment output is committed, up to date and idempotent."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import nbformat
import pytest

from autograder import release
from autograder.course import Course

from repo import COURSE, REPO_ROOT

# Lines that only the instructor's solution contains: none may reach the student notebook.
SOLUTION_LINES = [
    "self.conv1 = nn.Conv2d(1, 2, 3)",
    "side = pool2d_output_size(conv2d_output_size(conv2d_output_size(28, 3), 3), 2, 2)",
    "return F.log_softmax(self.fc2(x), dim=1)",
    "(n + 2 * p - d * (k - 1) - 1) // s + 1",
    "o -= 1  # the last window would start in the padding: PyTorch drops it",
    "optimizer.zero_grad()",
    "if use_gpu and torch.cuda.is_available():",
    "correct += (model(images).argmax(dim=1) == labels).sum().item()",
]


def code_of(path):
    nb = nbformat.read(path, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_solution_lines_are_in_the_source(assignment):
    source = code_of(assignment.source_notebook)
    for line in SOLUTION_LINES:
        assert line in source, f"update SOLUTION_LINES: {line!r} is no longer in the source"


def test_released_notebook_has_no_solution_code_and_no_outputs(assignment):
    released = REPO_ROOT / "release" / assignment.name / assignment.notebook
    code = code_of(released)
    for line in SOLUTION_LINES:
        assert line not in code
    nb = nbformat.read(released, as_version=4)
    solution = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    stubs = [c for c in solution if c.metadata["nbgrader"]["grade_id"] not in assignment.experiment_cells]
    assert len(stubs) == 6 and all("raise NotImplementedError()" in c.source for c in stubs)
    # The experiment is the student's to run and edit as it is: released whole, never run by the grader.
    assert [c.metadata["nbgrader"]["grade_id"] for c in solution if c not in stubs] == list(assignment.experiment_cells)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    locked = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("locked")]
    assert locked and all(c.metadata["nbgrader"].get("checksum") for c in locked)
    assert all(c.metadata.get("deletable") is False for c in locked)


@pytest.mark.notebook
def test_release_check_passes_on_the_committed_tree():
    run = subprocess.run([sys.executable, "-m", "autograder.cli", "release", "--check"], capture_output=True,
                         text=True, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "up to date" in run.stdout


@pytest.mark.notebook
def test_release_twice_changes_nothing(assignment, tmp_path):
    shutil.copytree(REPO_ROOT / "release", tmp_path / "release")
    shutil.copytree(REPO_ROOT / "solutions", tmp_path / "solutions")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.ipynb")}
    outcomes = release.run(assignment, Course.at(tmp_path))
    assert [o.changed for o in outcomes] == [False, False]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.ipynb")} == before


@pytest.mark.notebook
def test_check_names_stale_files(assignment, tmp_path):
    folder = tmp_path / assignment.name
    shutil.copytree(assignment.folder, folder)
    nb = json.loads((folder / assignment.notebook).read_text())
    nb["cells"][0]["source"] = ["# changed title\n"]
    (folder / assignment.notebook).write_text(json.dumps(nb))
    changed = dataclasses.replace(assignment, folder=folder)
    outcomes = release.run(changed, COURSE, check=True)
    assert [o.changed for o in outcomes] == [True, True]
    assert outcomes[0].path == REPO_ROOT / "release" / assignment.name / assignment.notebook
    assert not (tmp_path / "release").exists()  # check writes nothing


def test_points_must_agree_with_the_notebook(assignment):
    wrong = dataclasses.replace(assignment, points={**assignment.points, "net": 30.0})
    with pytest.raises(release.ReleaseError, match="'test_net' has 25 points in the notebook but 30"):
        release.check_source(wrong)
