"""The notebooks run as students and instructors run them: executed top to bottom with nbclient."""

from __future__ import annotations

import re

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from autograder.notebook import grade_id

from repo import REPO_ROOT

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def execute(path, cwd, monkeypatch, mnist_dir):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    return nb, client


def test_answer_key_passes_the_graded_threshold_in_the_graded_epochs_on_cpu(assignment, tmp_path, monkeypatch, mnist_dir):
    nb, client = execute(REPO_ROOT / "solutions" / assignment.name / assignment.notebook, tmp_path, monkeypatch,
                         mnist_dir)
    client.execute()  # raises on any failing cell, visible tests included
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    epochs = re.findall(r"epoch (\d+): loss [\d.]+, test accuracy ([\d.]+)", text)
    # The notebook trains as grading does (assignment.toml [claims] keeps the two in step).
    assert [int(e) for e, _ in epochs] == list(range(1, assignment.training.epochs + 1))
    assert float(epochs[-1][1]) >= assignment.accuracy.threshold, text


def test_released_notebook_fails_first_at_a_stub(assignment, tmp_path, monkeypatch, mnist_dir):
    nb, client = execute(REPO_ROOT / "release" / assignment.name / assignment.notebook, tmp_path, monkeypatch,
                         mnist_dir)
    with pytest.raises(CellExecutionError) as err:
        client.execute()
    assert err.value.ename == "NotImplementedError"
    errored = [c for c in nb.cells if c.cell_type == "code"
               and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert [grade_id(c) for c in errored] == ["test_shapes"]
    # Every code cell before it ran cleanly: the setup and the stub definitions.
    first = nb.cells.index(errored[0])
    ran = [c for c in nb.cells[:first] if c.cell_type == "code"]
    assert ran and all(c.get("execution_count") for c in ran)
