"""MNIST from the four original IDX .gz files: verified, then loaded as uint8 tensors or as torchvision's dataset.

The folder comes from ``MNIST_DIR``. Only when that is unset does torchvision download into a cache folder,
and offline that fails with one message that says how to point the kit at the files instead.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# The published files, byte-identical to what torchvision.datasets.MNIST downloads.
FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
SPLITS = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000)}
MEAN, STD = 0.1307, 0.3081  # pixel statistics of the training set, as in the lecture's Normalize
SHAPE = (1, 28, 28)  # one image as a network takes it: channels, height, width
TRAIN_COUNT = SPLITS["train"][2]
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "autograder" / "mnist"


class MNISTError(RuntimeError):
    """MNIST is missing or damaged; the message names the file and what to do."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8, N x 28 x 28
    labels: torch.Tensor  # uint8, N


def mnist_dir() -> Path | None:
    value = os.environ.get("MNIST_DIR")
    return Path(value).expanduser().resolve() if value else None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(folder: Path, *, check_md5: bool = True) -> dict[str, Path]:
    """Return the four files' paths, after checking each exists and (by default) has the published md5."""
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise MNISTError(
            f"MNIST files missing in {folder}: {', '.join(missing)}. "
            f"MNIST_DIR must name a folder holding the four files {', '.join(FILES)}."
        )
    paths = {name: folder / name for name in FILES}
    if check_md5:
        for name, path in paths.items():
            got = _md5(path)
            if got != FILES[name]:
                raise MNISTError(
                    f"{path} has md5 {got}, expected {FILES[name]}: the file is damaged or not the "
                    f"original MNIST. Replace it with the original {name}."
                )
    return paths


def read_idx(path: Path, *, magic: int, count: int | None = None) -> np.ndarray:
    """Parse one gzip-compressed IDX file into a uint8 array, with errors that name the file."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise MNISTError(f"{path} is not a readable gzip file ({exc}); replace it with the original.") from exc
    if len(raw) < 8:
        raise MNISTError(f"{path} is too short to be an IDX file ({len(raw)} bytes); replace it with the original.")
    got_magic, n = struct.unpack(">II", raw[:8])
    if got_magic != magic:
        raise MNISTError(f"{path} has IDX magic number {got_magic}, expected {magic}: wrong or damaged file.")
    if count is not None and n != count:
        raise MNISTError(f"{path} holds {n} items, expected {count}: wrong or damaged file.")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else ()
    if len(dims) != ndim or (ndim == 3 and dims[1:] != (28, 28)):
        raise MNISTError(f"{path} has dimensions {dims}, expected (N, 28, 28) images or (N,) labels.")
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise MNISTError(f"{path} holds {len(raw)} bytes after decompression, expected {expected}: truncated or damaged.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_split(split: str, folder: Path | None = None, *, check_md5: bool = True) -> Split:
    """Load 'train' or 'test' as resident uint8 tensors from MNIST_DIR (or `folder`)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, not {split!r}")
    folder = Path(folder) if folder is not None else require_dir()
    paths = verify(folder, check_md5=check_md5)
    images_name, labels_name, count = SPLITS[split]
    images = read_idx(paths[images_name], magic=IMAGES_MAGIC, count=count)
    labels = read_idx(paths[labels_name], magic=LABELS_MAGIC, count=count)
    return Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.copy()))


def require_dir() -> Path:
    folder = mnist_dir()
    if folder is None:
        raise MNISTError(
            "MNIST_DIR is not set. Point it at a folder holding "
            f"{', '.join(FILES)} (for example: export MNIST_DIR=../shared/data/mnist)."
        )
    return folder


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x 28 x 28 -> float32 N x 1 x 28 x 28, scaled as ToTensor() + Normalize((MEAN,), (STD,))."""
    return images.to(torch.float32).div_(255).sub_(MEAN).div_(STD).unsqueeze(1)


def torchvision_dataset(train: bool, *, root: Path | None = None, transform=None):
    """torchvision.datasets.MNIST, built offline from MNIST_DIR when it is set, else downloaded into `root`."""
    from torchvision import datasets  # imported here: it costs seconds and most callers never need it

    folder = mnist_dir()
    root = Path(root) if root is not None else DEFAULT_CACHE
    if folder is not None:
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for name, path in verify(folder).items():
            target = raw / name
            if not target.exists():
                try:
                    target.symlink_to(path.resolve())
                except OSError:
                    shutil.copyfile(path, target)
    try:
        # With the verified files in raw/, torchvision checks their md5 and extracts them; no network is used.
        return datasets.MNIST(str(root), train=train, download=True, transform=transform)
    except Exception as exc:  # torchvision raises several types for "could not download"
        if folder is not None:
            raise
        raise MNISTError(
            f"Could not download MNIST into {root} ({exc}). Offline, set MNIST_DIR to a folder holding "
            f"{', '.join(FILES)}."
        ) from exc
