"""The second lab, mlp_mnist, graded by the same engine through the real CLI and sandbox: its answer key scores
full marks, its untouched release 0, and each one-mistake mutant loses only its own part, saying why. The
batch runs once for the module and the tests read its results."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from autograder.results import ResultStore

import mutants
from repo import COURSE, REPO_ROOT

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

LAB = "mlp_mnist"

# Honest ways to write the same answers, each rounding a little differently from the answer key: the replay
# (autograder/replay.py), which compares stretches of the MLP's epoch longer than the CNN's (its snapshots are
# 14 times larger: observe.SNAPSHOT_BYTES), must believe every one of them.
HONEST = {
    "cross_entropy_on_log_probs": ("train_one_epoch", "F.nll_loss(model(images), labels)",
                                   "F.cross_entropy(model(images), labels)"),
    "log_of_softmax": ("net", "return F.log_softmax(self.fc2(x), dim=1)",
                       "return torch.log(F.softmax(self.fc2(x), dim=1))"),
    "view_flatten": ("net", "x = x.flatten(1)", "x = x.view(-1, 28 * 28)"),
}


def honest(name: str) -> dict:
    cell, old, new = HONEST[name]
    code = mutants.answers(LAB)[cell]
    assert old in code, f"{name}: {old!r} is not in the answer key any more"
    return mutants.filled({cell: code.replace(old, new, 1)}, LAB)


@pytest.fixture(scope="module")
def lab():
    return COURSE.lab(LAB)


@pytest.fixture(scope="module")
def batch(tmp_path_factory, mnist_dir):
    folder = tmp_path_factory.mktemp("mlp_submissions")
    mutants.write(mutants.filled(lab=LAB), folder / "key.ipynb")
    (folder / "untouched.ipynb").write_bytes(mutants.released(LAB).read_bytes())
    for m in mutants.MLP_MUTANTS:
        mutants.write(mutants.mutant_notebook(m), folder / f"{m.name}.ipynb")
    for name in HONEST:
        mutants.write(honest(name), folder / f"{name}.ipynb")
    out = tmp_path_factory.mktemp("mlp_out")
    run = subprocess.run([sys.executable, "-m", "autograder.cli", "grade", str(folder), "--assignment", LAB,
                          "--out", str(out), "--lang", "en", "--jobs", "2", "--device", "cpu"],
                         capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, "MNIST_DIR": str(mnist_dir)})
    assert run.returncode == 0, run.stdout + run.stderr
    return {r.student_id: r for r in ResultStore(out).load_all()}


def test_answer_key_gets_full_marks(batch, lab):
    key = batch["key"]
    assert key.status == "graded" and key.total == lab.total_points == 100
    assert all(c.passed for c in key.checks), [c.message.en for c in key.checks if not c.passed]
    assert key.notes == ()  # the replay agreed, the network is the lab's: nothing to say


@pytest.mark.parametrize("name", list(HONEST))
def test_an_honest_variant_earns_full_marks(batch, name):
    result = batch[name]
    assert result.total == 100, [c.message.en for c in result.checks if not c.passed]


def test_untouched_release_scores_zero_with_not_implemented(batch, lab):
    untouched = batch["untouched"]
    assert untouched.status == "graded"
    assert untouched.parts == {part: 0.0 for part in lab.points}
    for part in lab.points:
        messages = [c.message.en for c in untouched.checks if c.part == part]
        assert messages and all("not implemented" in m or "never returned" in m for m in messages), (part, messages)


@pytest.mark.parametrize("mutant", mutants.MLP_MUTANTS, ids=lambda m: m.name)
def test_one_mistake_costs_only_its_part(batch, lab, mutant):
    mutants.assert_costs_only_its_part(batch[mutant.name], lab.points, mutant)


def test_a_linear_layer_by_torch_loses_only_the_observed_check(batch, lab):
    """F.linear gives the right numbers: only the check that it was written by hand fails, and it says it
    was only observed."""
    result = batch["calls_F_linear"]
    failed = [c for c in result.checks if not c.passed]
    assert [(c.part, c.name, c.observed) for c in failed] == [("linear", "by_hand", True)]
