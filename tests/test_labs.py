"""Every lab of this course is a plug-in of the same engine: its folder holds what the README's "How to add a
lab" lists, its runtime's network is the answer key's, and the engine names no lab."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from autograder import observe, reference
from autograder.config import ConfigError, runtime_sources
from repo import COURSE, REPO_ROOT

LABS = COURSE.labs()


def test_the_course_holds_both_labs():
    assert LABS == ["cnn_mnist", "mlp_mnist"]


def test_the_engine_names_no_lab_no_layer_and_no_graded_function():
    """The issue's own grep, and the graded names of both labs: only the labs' folders and labkit know them."""
    pattern = re.compile(r"cnn_mnist|mlp_mnist|conv1|LectureNet|LabMLP|linear_forward|train_one_epoch|"
                         r"get_device|conv2d_output_size|pool2d_output_size")
    found = [f"{p.relative_to(REPO_ROOT)}:{n}" for p in sorted((REPO_ROOT / "autograder").rglob("*.py"))
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert found == []


@pytest.mark.parametrize("name", LABS)
def test_a_lab_folder_holds_its_parts(name):
    lab = COURSE.lab(name)
    assert lab.source_notebook.is_file() and lab.runtime.is_file()
    probes = observe.load_probes(lab)  # RECORDS, SANDBOX and PROBES, or a ConfigError naming what is missing
    assert {"device", "net", "evaluate"} <= set(probes.RECORDS)  # the standard steps' records (labkit)
    assert sorted(p.name for p in (lab.folder / "hidden").glob("checks_*.py"))
    # labkit.steps is listed; labkit.records, which it imports, comes first without being listed
    assert list(runtime_sources(lab)["modules"]) == ["labkit.records", "labkit.steps"] == ["labkit.records",
                                                                                         *lab.runtime_modules]
    assert (COURSE.release_dir / name / lab.notebook).is_file() and (COURSE.solutions_dir / name / lab.notebook).is_file()


# Loads each lab's runtime as the sandbox does (harness.load_lab) in a fresh interpreter of its own, seeds it as
# a run does, and prints the network's weights and its output on a probe: what the grader's replay and checks
# assume the answer key's network computes.
RUNTIME_NETWORK = """
import json, sys, torch
from autograder import harness
lab = harness.load_lab(json.load(sys.stdin))
torch.manual_seed(int(sys.argv[1]))
net = lab.Probes.network(torch)
x = torch.randn(4, *json.loads(sys.argv[2]), generator=torch.Generator().manual_seed(3))
print(json.dumps({"state": {k: v.tolist() for k, v in net.state_dict().items()}, "out": net(x).tolist()}))
"""


@pytest.mark.parametrize("name", LABS)
def test_the_runtime_network_is_the_answer_keys(name):
    """One definition of the network: the copy the sandbox trains from (and substitutes for an unusable one)
    starts from the same weights under the same seed as the answer key's class and computes the same function."""
    lab = COURSE.lab(name)
    shape = list(observe.datasets.PROVIDERS[lab.dataset].SHAPE)
    done = subprocess.run([sys.executable, "-c", RUNTIME_NETWORK, "5", json.dumps(shape)], check=True,
                          input=json.dumps(runtime_sources(lab)), capture_output=True, text=True)
    sandboxed = json.loads(done.stdout)
    torch.manual_seed(5)
    net = getattr(reference.load(lab), lab.model)()
    state = net.state_dict()
    assert list(sandboxed["state"]) == list(state)
    for key, value in state.items():
        assert torch.equal(torch.tensor(sandboxed["state"][key]), value), key
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(torch.tensor(sandboxed["out"]), net(x), atol=1e-6)


def test_a_notebook_tells_which_lab_it_belongs_to():
    """`autograder validate NOTEBOOK` without --assignment: the lab whose graded cells the notebook holds."""
    for name in LABS:
        released = (COURSE.release_dir / name / f"{name}.ipynb").read_bytes()
        assert COURSE.lab_of(released).name == name
    with pytest.raises(ConfigError, match="name a lab with --assignment"):
        COURSE.lab_of(b'{"cells": [')
    assert COURSE.lab_of(b"", "mlp_mnist").name == "mlp_mnist"
