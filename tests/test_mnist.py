"""MNIST access: every error path on tiny IDX files written here, and the real data via MNIST_DIR."""

from __future__ import annotations

import gzip
import struct

import pytest
import torch

from autograder import mnist


def write_idx(path, *, magic, dims, payload=None, compress=True):
    body = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims)
    n = 1
    for d in dims:
        n *= d
    body += bytes(payload if payload is not None else (i % 256 for i in range(n)))
    data = gzip.compress(body) if compress else body
    path.write_bytes(data)
    return path


def tiny_split(folder, n=3, split="train"):
    images, labels, _ = mnist.SPLITS[split]
    write_idx(folder / images, magic=2051, dims=(n, 28, 28))
    write_idx(folder / labels, magic=2049, dims=(n,), payload=[5, 0, 4][:n])


def test_read_idx_parses_images_and_labels(tmp_path):
    tiny_split(tmp_path)
    images = mnist.read_idx(tmp_path / "train-images-idx3-ubyte.gz", magic=2051, count=3)
    labels = mnist.read_idx(tmp_path / "train-labels-idx1-ubyte.gz", magic=2049, count=3)
    assert images.shape == (3, 28, 28) and images.dtype.name == "uint8"
    assert images[0, 0, 1] == 1
    assert labels.tolist() == [5, 0, 4]


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b"not gzip at all"), "not a readable gzip"),
    (lambda p: p.write_bytes(gzip.compress(b"\x00\x00")), "too short"),
    (lambda p: write_idx(p, magic=2049, dims=(3, 28, 28)), "magic number 2049, expected 2051"),
    (lambda p: write_idx(p, magic=2051, dims=(4, 28, 28)), "holds 4 items, expected 3"),
    (lambda p: write_idx(p, magic=2051, dims=(3, 28, 27)), "dimensions"),
    (lambda p: p.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 3, 28, 28) + bytes(100))), "truncated"),
    (lambda p: p.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 3, 28, 28) + bytes(3 * 784))[:-20]),
     "not a readable gzip"),
])
def test_bad_idx_files_name_the_file(tmp_path, make, message):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    make(path)
    with pytest.raises(mnist.MNISTError) as err:
        mnist.read_idx(path, magic=2051, count=3)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_files_are_listed(tmp_path):
    tiny_split(tmp_path)
    with pytest.raises(mnist.MNISTError) as err:
        mnist.verify(tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in str(err.value) and "MNIST_DIR" in str(err.value)
    assert f"{tmp_path}: t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz." in str(err.value)


def test_wrong_checksum_names_the_file(tmp_path):
    for name in mnist.FILES:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(mnist.MNISTError, match="train-images-idx3-ubyte.gz has md5"):
        mnist.verify(tmp_path)


def test_unset_mnist_dir_says_what_to_do(monkeypatch):
    monkeypatch.delenv("MNIST_DIR", raising=False)
    with pytest.raises(mnist.MNISTError, match="MNIST_DIR is not set"):
        mnist.load_split("test")


def test_offline_download_failure_names_mnist_dir(monkeypatch, tmp_path):
    import torchvision.datasets

    def no_network(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.delenv("MNIST_DIR", raising=False)
    monkeypatch.setattr(torchvision.datasets, "MNIST", no_network)
    with pytest.raises(mnist.MNISTError) as err:
        mnist.torchvision_dataset(True, root=tmp_path)
    for name in ["MNIST_DIR", *mnist.FILES]:
        assert name in str(err.value)


def test_real_mnist_counts_and_first_labels(mnist_dir):
    train = mnist.load_split("train", mnist_dir)
    test = mnist.load_split("test", mnist_dir)
    assert train.images.shape == (60_000, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10_000, 28, 28)
    assert train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(train.labels.long()).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(test.labels.long()).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    pixels = train.images.float() / 255
    assert pixels.mean().item() == pytest.approx(mnist.MEAN, abs=1e-4)
    assert pixels.std().item() == pytest.approx(mnist.STD, abs=1e-4)


def test_real_mnist_as_torchvision_dataset_offline(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_DIR", str(mnist_dir))
    dataset = mnist.torchvision_dataset(False, root=tmp_path)
    assert len(dataset) == 10_000
    image, label = dataset[0]
    assert label == 7 and image.size == (28, 28)
    resident = mnist.load_split("test", mnist_dir)
    assert torch.equal(dataset.data, resident.images)
