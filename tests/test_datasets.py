"""The IDX reader and the embedded MNIST."""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from qucnn.datasets import IDX_DTYPES, Dataset, load_dataset, load_embedded_mnist, load_idx_dir, read_idx, subset


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
    with pytest.raises(ValueError, match="1 unexpected trailing bytes: shape \\(2, 3\\) needs 18 bytes, found 19"):
        read_idx(tmp_path / "long")
    (tmp_path / "magic").write_bytes(b"\x00\x00\x07\x02" + raw[4:])
    with pytest.raises(ValueError, match="bad IDX magic number 0x00000702"):
        read_idx(tmp_path / "magic")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ValueError, match="empty file"):
        read_idx(tmp_path / "empty")
    (tmp_path / "tiny").write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="2 bytes is too short for an IDX header"):
        read_idx(tmp_path / "tiny")
    (tmp_path / "header").write_bytes(raw[:6])
    with pytest.raises(ValueError, match="truncated header: 2 dimensions need 12 bytes, found 6"):
        read_idx(tmp_path / "header")
    # A corrupt huge shape must be reported as truncation, not wrap around to a small byte count.
    (tmp_path / "huge").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1))
    with pytest.raises(ValueError, match="truncated: shape"):
        read_idx(tmp_path / "huge")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(raw)[:-8])
    with pytest.raises(ValueError, match="not a readable gzip file"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(FileNotFoundError, match="IDX file not found: .*missing"):
        read_idx(tmp_path / "missing")
    for name in ("short", "long", "magic", "empty", "bad.gz"):  # every message names the file
        with pytest.raises(ValueError, match=re.escape(str(tmp_path / name))):
            read_idx(tmp_path / name)


def test_gzip_is_detected_by_content(tmp_path):
    raw = write_idx(tmp_path / "plain", np.arange(6, dtype=np.uint8).reshape(2, 3), 0x08).read_bytes()
    (tmp_path / "renamed").write_bytes(gzip.compress(raw))
    assert read_idx(tmp_path / "renamed").tolist() == [[0, 1, 2], [3, 4, 5]]


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
    assert data.train_images.dtype == torch.float32 and data.train_labels.dtype == torch.int64
    assert float(data.train_images.max()) <= 1.0 and data.name == "mnist"
    raw = read_idx(tmp_path / "mnist" / "train-images-idx3-ubyte")
    assert torch.equal(data.train_images[:, 0], torch.from_numpy(raw).float() / 255)
    assert "train=(6, 1, 28, 28)" in repr(data) and data == data and data != subset(data)
    small = subset(data, 2, 1)
    assert small.train_images.shape[0] == 2 and small.test_images.shape[0] == 1


def test_load_idx_dir_accepts_dotted_names(tmp_path):
    folder = fake_mnist(tmp_path / "dotted", gz=True)
    for path in list(folder.iterdir()):
        path.rename(folder / path.name.replace("-idx", ".idx"))
    assert load_idx_dir(folder).test_images.shape == (4, 1, 28, 28)


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
    folder = fake_mnist(tmp_path / "size")
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((4, 14, 14), np.uint8), 0x08, gz=True)
    with pytest.raises(ValueError, match=r"train images are \(28, 28\) but test images are \(14, 14\)"):
        load_idx_dir(folder)
    folder = fake_mnist(tmp_path / "labels2d")
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros((6, 2), np.uint8), 0x08, gz=True)
    with pytest.raises(ValueError, match=r"expected integer labels of shape \(N,\)"):
        load_idx_dir(folder)


def test_load_idx_dir_reports_what_is_missing(tmp_path):
    folder = fake_mnist(tmp_path / "partial")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="found only.*train-images-idx3-ubyte.gz"):
        load_idx_dir(folder)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_dataset(tmp_path / "file")
    pair = tmp_path / "one"
    pair.mkdir()
    write_idx(pair / "images-idx3-ubyte", np.zeros((1, 4, 4), np.uint8), 0x08)
    write_idx(pair / "labels-idx1-ubyte", np.zeros(1, np.uint8), 0x08)
    with pytest.raises(ValueError, match="1 images are too few for an 80/20 split"):
        load_idx_dir(pair)


def test_num_classes_of_an_empty_split():
    x, y = torch.zeros(3, 1, 2, 2), torch.tensor([0, 4, 1])
    assert Dataset(x, y, x[:0], y[:0], "tiny").num_classes == 5
    assert Dataset(x[:0], y[:0], x[:0], y[:0], "none").num_classes == 0
