"""IDX reader (ntklib.idx) and the data sources (ntklib.sources) behind ntklib.data: files the tests
write, and the real FashionMNIST files of the Debian package ``dataset-fashion-mnist`` where it is
installed."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ntklib import sources
from ntklib.data import balanced_batches, load_dataset, steps_per_epoch
from ntklib.idx import IMAGES_MAGIC, LABELS_MAGIC, IdxError, read_idx
from ntklib.sources import DEBIAN_DATA_DIRS, IDX_FILES, DatasetNotPreparedError, load_idx_split


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """A naive IDX encoder: magic (0x0000 08 r), r big-endian uint32 sizes, the uint8 data."""
    array = np.asarray(array, np.uint8)
    magic = (0x08 << 8) | array.ndim if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_split(root: Path, split: str, images, labels, *, gz: bool = True) -> None:
    for stem, array in zip(IDX_FILES[split], (images, labels), strict=True):
        payload = idx_bytes(array)
        (root / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(payload) if gz else payload)


def random_split(rng, n: int):
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.permutation(np.arange(n) % 10).astype(np.uint8)


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"train": random_split(rng, 50), "test": random_split(rng, 20)}
    write_split(tmp_path, "train", *arrays["train"], gz=True)
    write_split(tmp_path, "test", *arrays["test"], gz=False)  # one split gzipped, one raw
    return tmp_path, arrays


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("shape", [(7,), (5, 28, 28), (3, 4, 2, 6)])
def test_read_idx_round_trip(tmp_path, gz, shape):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / ("a.gz" if gz else "a")
    path.write_bytes(gzip.compress(idx_bytes(array)) if gz else idx_bytes(array))
    out = read_idx(path, ndim=len(shape))
    assert out.dtype == np.uint8 and out.shape == shape
    np.testing.assert_array_equal(out, array)
    assert IMAGES_MAGIC == 2051 and LABELS_MAGIC == 2049


def test_read_idx_rejects_bad_files(tmp_path):
    images = np.zeros((4, 28, 28), np.uint8)
    cases = {
        "text": b"this is not an IDX file",
        "float": idx_bytes(images, magic=0x0D03),  # element type float32
        "labels_as_images": idx_bytes(np.zeros(4, np.uint8)),
        "truncated": idx_bytes(images)[:-1],
        "too_long": idx_bytes(images) + b"\x00",
        "short_header": idx_bytes(images)[:9],
        "shape": idx_bytes(np.zeros((4, 27, 28), np.uint8)),
        "gzip_cut": gzip.compress(idx_bytes(images))[:-12],
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(IdxError, match=str(tmp_path / name)):
            read_idx(tmp_path / name, ndim=3, shape=(None, 28, 28))
    with pytest.raises(IdxError, match="truncated"):
        read_idx(tmp_path / "truncated")
    with pytest.raises(IdxError, match="magic number 2049 has 1 dimension.*expected 3 .*2051"):
        read_idx(tmp_path / "labels_as_images", ndim=3)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_idx(tmp_path / "nowhere")


def test_load_idx_dataset(idx_dir):
    root, arrays = idx_dir
    ds = load_dataset("fashion_mnist", data_dir=str(root))
    assert ds.source == str(root) and ds.name == "fashion_mnist" and ds.num_classes == 10
    for images, labels, (raw_images, raw_labels) in (
        (ds.train_images, ds.train_labels, arrays["train"]),
        (ds.test_images, ds.test_labels, arrays["test"]),
    ):
        assert images.dtype == np.float32 and images.shape == (len(raw_labels), 28, 28, 1)
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(images[..., 0], raw_images / np.float32(255))  # pixels / 255, file order
        np.testing.assert_array_equal(labels, raw_labels)
    vgg = load_dataset("mnist", data_dir=root, image_size=32)  # VGG's input size
    assert vgg.train_images.shape == (50, 32, 32, 1) and vgg.train_images.dtype == np.float32


def test_subset(idx_dir):
    root, arrays = idx_dir
    ds = load_dataset("fashion_mnist", data_dir=root)
    small = ds.subset(2, 1)
    np.testing.assert_array_equal(np.bincount(small.train_labels, minlength=10), np.full(10, 2))
    np.testing.assert_array_equal(np.bincount(small.test_labels, minlength=10), np.full(10, 1))
    # naive reference: walk the training set in order, keep a sample while its class has < 2
    kept, seen = [], np.zeros(10, int)
    for i, label in enumerate(ds.train_labels):
        if seen[label] < 2:
            kept.append(i)
            seen[label] += 1
    np.testing.assert_array_equal(small.train_images, ds.train_images[kept])
    assert len(ds.subset(2).test_labels) == len(ds.test_labels)
    with pytest.raises(ValueError, match="train_per_class=1000"):
        ds.subset(1000)
    with pytest.raises(ValueError, match="test_per_class=0"):
        ds.subset(1, 0)


def test_load_idx_errors_name_the_file(idx_dir):
    root, arrays = idx_dir
    (root / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", data_dir=root)
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte.*tfds build mnist"):
        load_dataset("mnist", data_dir=root)
    # count mismatch between the images and the labels of one split
    images, labels = arrays["test"]
    (root / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:-1]))
    with pytest.raises(IdxError, match=r"t10k-images-idx3-ubyte holds 20 images but .*t10k-labels-idx1-ubyte holds 19"):
        load_idx_split("fashion_mnist", "test", root)
    # a label outside [0, 10)
    (root / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(20, 10, np.uint8)))
    with pytest.raises(IdxError, match=r"t10k-labels-idx1-ubyte: label 10"):
        load_idx_split("fashion_mnist", "test", root)
    # a corrupt gzipped file is named
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images))[:100])
    with pytest.raises(IdxError, match=r"train-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        load_idx_split("fashion_mnist", "train", root)


def test_idx_equals_tfds_route(tmp_path):
    """The same uint8 data through tfds (mocked) and through IDX files gives identical arrays."""
    tfds_dir, idx_root = tmp_path / "tfds", tmp_path / "idx"
    idx_root.mkdir()
    with tfds.testing.mock_data(num_examples=30, policy=tfds.testing.MockPolicy.USE_CODE):
        via_tfds = load_dataset("fashion_mnist", data_dir=str(tfds_dir), image_size=32)
    assert via_tfds.source == "tfds"
    for split in ("train", "test"):
        with np.load(tfds_dir / "ntklib_cache" / f"fashion_mnist_{split}.npz") as raw:
            write_split(idx_root, split, raw["images"][..., 0], raw["labels"])
    via_idx = load_dataset("fashion_mnist", data_dir=str(idx_root), image_size=32)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        a, b = getattr(via_tfds, field), getattr(via_idx, field)
        assert a.dtype == b.dtype and a.shape == b.shape, field
        np.testing.assert_array_equal(a, b, err_msg=field)
    assert via_idx.num_classes == via_tfds.num_classes == 10


def test_default_location_then_tfds(tmp_path, monkeypatch, idx_dir):
    root, arrays = idx_dir
    monkeypatch.setitem(DEBIAN_DATA_DIRS, "fashion_mnist", str(root))
    assert load_dataset("fashion_mnist").source == str(root)  # no data_dir: the Debian directory
    monkeypatch.setitem(DEBIAN_DATA_DIRS, "fashion_mnist", str(tmp_path / "absent"))
    assert sources.idx_data_dir("fashion_mnist", None) is None  # falls back to tfds
    with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
        assert load_dataset("fashion_mnist", data_dir=str(tmp_path / "t")).source == "tfds"
    assert sources.idx_data_dir("cifar10", root) is None  # CIFAR-10 has no IDX route


def test_tfds_failure_says_how_to_get(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(sources, "_read_tfds_split", fail)
    with pytest.raises(
        DatasetNotPreparedError, match=r"no IDX files and no prepared tfds dataset in .*dataset-fashion-mnist"
    ):
        load_dataset("fashion_mnist", data_dir=str(tmp_path))
    with pytest.raises(DatasetNotPreparedError, match=r"'cifar10' is not prepared .*tfds build cifar10"):
        load_dataset("cifar10", data_dir=str(tmp_path))


REAL_DIR = Path(DEBIAN_DATA_DIRS["fashion_mnist"])


@pytest.mark.skipif(
    not sources.has_idx_files(REAL_DIR),
    reason=f"FashionMNIST IDX files not in {REAL_DIR} (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist():
    ds = load_dataset("fashion_mnist")
    assert ds.source == str(REAL_DIR)
    assert ds.train_images.shape == (60_000, 28, 28, 1) and ds.test_images.shape == (10_000, 28, 28, 1)
    assert ds.train_images.dtype == np.float32
    for images in (ds.train_images, ds.test_images):
        assert images.min() == 0.0 and images.max() == 1.0
        # 8-bit pixels: every value is k / 255
        np.testing.assert_array_equal(np.round(images[:500] * 255) / np.float32(255), images[:500])
    # FashionMNIST is exactly balanced: 6,000 train and 1,000 test images per class
    np.testing.assert_array_equal(np.bincount(ds.train_labels, minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(ds.test_labels, minlength=10), np.full(10, 1000))
    # the published files' first labels (ankle boot, T-shirt/top, T-shirt/top, dress, ...)
    np.testing.assert_array_equal(ds.train_labels[:5], [9, 0, 0, 3, 0])
    np.testing.assert_array_equal(ds.test_labels[:5], [9, 2, 1, 1, 6])
    # the paper's batches: 12 per class, 6000 // 12 = 500 steps per epoch
    assert steps_per_epoch(ds.train_labels, batch_size=120, num_classes=10) == 500
    idx = balanced_batches(ds.train_labels, batch_size=120, num_classes=10, seed=0, epoch=1)
    assert idx.shape == (500, 120) and len(np.unique(idx)) == 60_000
