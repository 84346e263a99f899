"""The IDX reader, the embedded MNIST, the torch datasets and the label checks."""

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
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from qucnn.datasets import (
    IDX_DTYPES,
    EmbeddedMNIST,
    IDXDataset,
    ImageDataset,
    ImageSplits,
    check_labels,
    load_dataset,
    load_embedded_mnist,
    load_idx_dir,
    read_idx,
    subset,
)


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
        # labels 0..n-1 in a random order: class indices without gaps, as real label files have
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", (rng.permutation(n) % 10).astype(np.uint8), 0x08, gz)
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
    assert ImageSplits(x, y, x[:0], y[:0], "tiny").num_classes == 5
    assert ImageSplits(x[:0], y[:0], x[:0], y[:0], "none").num_classes == 0
    assert ImageSplits(x, y, x[:0], y[:0], "declared", classes=7).num_classes == 7


# -- torch datasets ----------------------------------------------------------------------------------------
def test_embedded_mnist_is_a_torch_dataset_of_unit_images_and_int_labels():
    train, test = EmbeddedMNIST(train=True), EmbeddedMNIST(train=False)
    assert isinstance(train, TorchDataset) and len(train) == 8000 and len(test) == 2000
    splits = load_embedded_mnist()
    for ds, images, labels in ((train, splits.train_images, splits.train_labels),
                               (test, splits.test_images, splits.test_labels)):
        for i in (0, 17, len(ds) - 1, np.int64(3)):
            image, label = ds[i]
            assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and type(label) is int
            assert torch.equal(image, images[int(i)]) and label == int(labels[int(i)])
    assert float(train[0][0].min()) == 0.0 and float(train[0][0].max()) == 1.0
    assert train.num_classes == 10 and "8000 images" in repr(train)
    train.data[0] = 0  # each instance owns its tensors: editing one does not change later loads
    assert not torch.equal(EmbeddedMNIST(train=True).data[0], train.data[0])
    with pytest.raises(TypeError, match="train must be True or False, got str 'test'"):
        EmbeddedMNIST(train="test")


def test_transforms_and_data_loader_batches():
    ds = EmbeddedMNIST(train=False, transform=lambda x: x[:, ::2, ::2], target_transform=lambda y: y + 100)
    image, label = ds[5]
    assert image.shape == (1, 14, 14) and label == int(EmbeddedMNIST(train=False).targets[5]) + 100
    images, labels = next(iter(DataLoader(EmbeddedMNIST(), batch_size=32, shuffle=True,
                                          generator=torch.Generator().manual_seed(0))))
    assert images.shape == (32, 1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.int64
    with pytest.raises(TypeError, match="transform must be callable or None, got int"):
        EmbeddedMNIST(transform=3)


def test_idx_dataset_reads_a_pair_of_files(tmp_path):
    folder = fake_mnist(tmp_path / "mnist", n_train=10)
    ds = IDXDataset(folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz")
    raw = read_idx(folder / "train-images-idx3-ubyte.gz")
    assert isinstance(ds, TorchDataset) and len(ds) == 10 and ds.num_classes == 10
    image, label = ds[3]
    assert torch.equal(image[0], torch.from_numpy(raw[3]).float() / 255) and label == int(ds.targets[3])
    assert IDXDataset(folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz",
                      num_classes=12).num_classes == 12
    x, y = ds.tensors()
    assert x.shape == (10, 1, 28, 28) and torch.equal(y, ds.targets)
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        IDXDataset(folder / "nope", folder / "train-labels-idx1-ubyte.gz")
    write_idx(tmp_path / "float-labels", np.zeros(10), 0x0D)
    with pytest.raises(ValueError, match="float-labels: expected integer labels of shape"):
        IDXDataset(folder / "train-images-idx3-ubyte.gz", tmp_path / "float-labels")


# -- labels are class indices ------------------------------------------------------------------------------
def test_a_label_byte_of_200_names_the_file_and_the_value(tmp_path):
    folder = fake_mnist(tmp_path / "bad-train", n_train=10)
    labels = np.arange(10, dtype=np.uint8)
    labels[7] = 200
    write_idx(folder / "train-labels-idx1-ubyte", labels, 0x08, gz=True)
    where = re.escape(str(folder / "train-labels-idx1-ubyte.gz"))
    with pytest.raises(ValueError, match=where + r": the labels skip classes 7, 10\.\.199 \(largest label 200, at "
                                              r"index 7\).*pass num_classes=201"):
        load_dataset(folder)
    assert load_idx_dir(folder, num_classes=201).num_classes == 201  # a gap that is meant
    with pytest.raises(ValueError, match=where + r": label 200 at index 7 is not a class index in 0\.\.9"):
        load_idx_dir(folder, num_classes=10)

    folder = fake_mnist(tmp_path / "bad-test", n_train=10)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.array([0, 1, 200, 3], np.uint8), 0x08, gz=True)
    with pytest.raises(ValueError, match=re.escape(str(folder / "t10k-labels-idx1-ubyte.gz"))
                       + r": label 200 at index 2 is not a class index in 0\.\.9"):
        load_idx_dir(folder)


def test_label_checks():
    assert check_labels(np.array([2, 0, 1, 1])) == 3 and check_labels(np.array([], np.int64)) == 0
    assert check_labels(torch.tensor([0, 1]), num_classes=np.int64(5)) == 5
    with pytest.raises(ValueError, match=r"lab: label -1 at index 1 is negative"):
        check_labels(np.array([0, -1, 1], np.int8), where="lab")
    with pytest.raises(ValueError, match=r"skip classes 1, 3\.\.5, 7 \(largest label 8"):
        check_labels(np.array([0, 2, 6, 8]))
    with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
        check_labels(np.array([0]), num_classes=0)
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(N, H, W\), got torch.float32"):
        ImageDataset(torch.zeros(2, 3, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="expected integer labels"):
        ImageDataset(torch.zeros(2, 3, 3, dtype=torch.uint8), torch.tensor([0.0, 1.0]))


def test_the_class_count_survives_subsets_and_the_old_name_still_imports():
    full = load_dataset(None, num_classes=12)
    assert full.num_classes == 12 and subset(full, 10, 10).num_classes == 12
    small = subset(load_embedded_mnist(), 5, 5)
    assert small.num_classes == 10  # declared by the data set, not read off the 10 labels kept
    with pytest.raises(ValueError, match="label 9 at index"):
        load_dataset(None, num_classes=9)
    with pytest.raises(ImportError):  # an unpublished version's name: gone
        from qucnn.datasets import Dataset  # noqa: F401
