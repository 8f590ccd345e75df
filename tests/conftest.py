"""Shared fixtures: the real assignment, and the real MNIST when MNIST_DIR names it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autograder import forkserver
from autograder.grade import Grader, Options

from repo import COURSE

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def assignment():
    return COURSE.lab("cnn_mnist")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST. Tests that claim accuracy or check the real files need it; CI sets MNIST_DIR."""
    value = os.environ.get("MNIST_DIR")
    if not value:
        pytest.fail("MNIST_DIR is not set: point it at the folder with the four MNIST .gz files "
                    "(../shared/data/mnist here); the README's test command does this")
    return Path(value).resolve()  # notebook kernels run elsewhere: a relative path would not reach them


@pytest.fixture(scope="module")
def grader(assignment, mnist_dir):
    """A real Grader as a batch has it (one job, sandbox required), for tests that run submissions through it."""
    if not forkserver.usable("cpu"):
        pytest.fail("the fork server needs root and bubblewrap here, as CI has (.ci/run installs bubblewrap)")
    mp = pytest.MonkeyPatch()
    mp.setenv("MNIST_DIR", str(mnist_dir))
    g = Grader(assignment, Options(jobs=1, require_sandbox=True))
    yield g
    g.close()
    mp.undo()


@pytest.fixture(scope="module")
def server(grader):
    """That grader's fork server."""
    s = grader._fork_server()
    assert s is not None, "the grader did not start its fork server"
    return s
