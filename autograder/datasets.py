"""The datasets a lab can name (assignment.toml: dataset). A provider is a module with

- ``load_split("train" | "test")`` -> uint8 images (N x H x W) and labels, held resident;
- ``normalize(images)`` -> float32 N x C x H x W, as the lab's notebook normalises them;
- ``MEAN``, ``STD`` (the normalisation, which the sandbox applies to the raw bytes it is given), ``SHAPE``
  (C, H, W) and ``TRAIN_COUNT``.

The training images go to every sandbox as raw bytes (observe.DataDir); the test set never leaves the grading
process (judge.TrustedData).
"""

from __future__ import annotations

from . import mnist

PROVIDERS = {"mnist": mnist}
