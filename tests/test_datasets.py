"""The IDX reader and the embedded MNIST."""

from __future__ import annotations

import gzip
import hashlib
import struct
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from qucnn.datasets import IDX_DTYPES, load_dataset, load_embedded_mnist, load_idx_dir, read_idx, subset


def write_idx(path: Path, array: np.ndarray, code: int, gz: bool = False, extra: bytes = b"") -> Path:
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(IDX_DTYPES[code]).tobytes() + extra
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


@pytest.mark.parametrize("code", sorted(IDX_DTYPES))
@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path, code, gz):
    rng = np.random.default_rng(code)
    array = (rng.random((3, 4, 5)) * 100).astype(np.dtype(IDX_DTYPES[code]).newbyteorder("="))
    got = read_idx(write_idx(tmp_path / "a-idx3-ubyte", array, code, gz))
    assert got.shape == (3, 4, 5) and np.array_equal(got, array)


def test_reader_errors(tmp_path):
    good = write_idx(tmp_path / "ok", np.zeros((2, 3), np.uint8), 0x08)
    raw = good.read_bytes()
    (tmp_path / "short").write_bytes(raw[:-2])
    with pytest.raises(ValueError, match=r"truncated: shape \(2, 3\) needs 18 bytes, found 16"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(raw + b"\x00")
    with pytest.raises(ValueError, match="1 unexpected trailing bytes"):
        read_idx(tmp_path / "long")
    (tmp_path / "magic").write_bytes(b"\x00\x00\x07\x02" + raw[4:])
    with pytest.raises(ValueError, match="bad IDX magic number 0x00000702"):
        read_idx(tmp_path / "magic")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ValueError, match="too short for an IDX header"):
        read_idx(tmp_path / "empty")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(raw)[:-8])
    with pytest.raises(ValueError, match="not a readable gzip file"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        read_idx(tmp_path / "missing")


def test_embedded_mnist_is_the_documented_set():
    data = load_embedded_mnist()
    assert data.train_images.shape == (8000, 1, 28, 28) and data.test_images.shape == (2000, 1, 28, 28)
    assert data.train_images.dtype == torch.float32 and data.train_labels.dtype == torch.int64
    assert float(data.train_images.min()) == 0.0 and float(data.train_images.max()) == 1.0
    counts = torch.bincount(torch.cat([data.train_labels, data.test_labels])).tolist()
    assert counts == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert data.num_classes == 10 and set(data.test_labels.tolist()) == set(range(10))
    folder = resources.files("qucnn").joinpath("data")
    digests = {name: hashlib.sha256(folder.joinpath(name).read_bytes()).hexdigest()
               for name in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz")}
    assert digests["images-idx3-ubyte.gz"] == "a1a078f72e2ff08e2110b69684edfa73b9bc1516017c2ba2b5de0378b524d23d"
    assert digests["labels-idx1-ubyte.gz"] == "9b5bbee447401d4c1a0ac16bea0b7275b0a9329fe6f82340f314b77f60ef4880"


def fake_mnist(folder: Path, n_train=6, n_test=4, gz=True) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), 0x08, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8), 0x08, gz)
    return folder


def test_load_idx_dir_standard_layout(tmp_path):
    data = load_dataset(fake_mnist(tmp_path / "mnist", gz=False))
    assert data.train_images.shape == (6, 1, 28, 28) and data.test_labels.shape == (4,)
    assert float(data.train_images.max()) <= 1.0
    small = subset(data, 2, 1)
    assert small.train_images.shape[0] == 2 and small.test_images.shape[0] == 1


def test_load_idx_dir_single_pair_splits_80_20(tmp_path):
    folder = tmp_path / "pair"
    folder.mkdir()
    write_idx(folder / "images-idx3-ubyte", np.zeros((10, 4, 4), np.uint8), 0x08, gz=True)
    write_idx(folder / "labels-idx1-ubyte", np.arange(10, dtype=np.uint8), 0x08, gz=True)
    data = load_idx_dir(folder)
    assert data.train_labels.tolist() == list(range(8)) and data.test_labels.tolist() == [8, 9]


def test_load_idx_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="data directory not found"):
        load_idx_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"looked for train-images-idx3-ubyte\[.gz\]"):
        load_idx_dir(tmp_path / "empty")
    folder = fake_mnist(tmp_path / "mismatch")
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8), 0x08, gz=True)
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        load_idx_dir(folder)
    folder = fake_mnist(tmp_path / "wrongdim")
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((6, 28), np.uint8), 0x08, gz=True)
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(N, H, W\)"):
        load_idx_dir(folder)
