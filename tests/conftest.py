"""Shared fixtures: the real assignment, and the real MNIST when MNIST_DIR names it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autograder import config

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def assignment():
    return config.find("cnn_mnist")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST. Tests that claim accuracy or check the real files need it; CI sets MNIST_DIR."""
    value = os.environ.get("MNIST_DIR")
    if not value:
        pytest.fail("MNIST_DIR is not set: point it at the folder with the four MNIST .gz files "
                    "(../shared/data/mnist here); the README's test command does this")
    return Path(value).resolve()  # notebook kernels run elsewhere: a relative path would not reach them
