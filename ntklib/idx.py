"""The IDX file format of MNIST and FashionMNIST: read one file into a checked NumPy array.

An IDX file is a header and a C-ordered array, all integers big-endian::

    bytes 0–1   0x00 0x00
    byte  2     element type (0x08: unsigned byte, the only type MNIST and FashionMNIST use)
    byte  3     number of dimensions r
    bytes 4 …   r sizes n_1 … n_r, each an unsigned 32-bit integer
    then        n_1 · … · n_r elements

So the *magic number* (the first four bytes as one integer) is 2049 = 0x0801 for a label file
(r = 1, shape (N,)) and 2051 = 0x0803 for an image file (r = 3, shape (N, 28, 28)). Files may be
gzipped (``*.gz``, as published and as Debian ships them).

:func:`read_idx` checks the magic number, that the data is exactly as long as the header says
(a truncated or overlong file is an error) and optionally the number of dimensions and the shape.
Every error is an :class:`IdxError` (a ValueError) whose message names the file.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

UBYTE = 0x08
"""Element type code of unsigned bytes."""

LABELS_MAGIC = 0x00000801
"""The magic number 2049 of a 1-d unsigned-byte file (the labels)."""

IMAGES_MAGIC = 0x00000803
"""The magic number 2051 of a 3-d unsigned-byte file (the images)."""


class IdxError(ValueError):
    """A file that is not a well-formed IDX file of the expected kind; the message names it."""


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped if it starts with the gzip magic (whatever its suffix)."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise IdxError(f"{path}: corrupt or truncated gzip stream ({err})") from err


def read_idx(path: str | Path, *, ndim: int | None = None, shape: tuple[int | None, ...] | None = None) -> np.ndarray:
    """Read the unsigned-byte IDX file ``path`` (gzipped or not) into a uint8 array.

    Args:
        path: the file.
        ndim: the expected number of dimensions (1 for labels, 3 for images); None: any.
        shape: the expected shape, None entries unchecked (e.g. ``(None, 28, 28)``); None: any.

    Returns:
        (n_1, …, n_r) uint8 array, as the header says.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        IdxError: naming ``path`` for a wrong magic number, an element type other than unsigned
            byte, a header or data shorter or longer than declared, or a shape other than ``shape``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path} does not exist")
    data = _read_bytes(path)
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise IdxError(f"{path}: not an IDX file (magic number {data[:4].hex() or 'missing'}, expected 0000 08 0r)")
    dtype_code, r = data[2], data[3]
    if dtype_code != UBYTE:
        raise IdxError(f"{path}: element type 0x{dtype_code:02x}, only unsigned bytes (0x08) are supported")
    if ndim is not None and r != ndim:
        expected = LABELS_MAGIC if ndim == 1 else IMAGES_MAGIC if ndim == 3 else (UBYTE << 8) | ndim
        raise IdxError(
            f"{path}: magic number {int.from_bytes(data[:4], 'big')} has {r} dimension(s); "
            f"expected {ndim} (magic number {expected})"
        )
    header = 4 + 4 * r
    if len(data) < header:
        raise IdxError(f"{path}: truncated header ({len(data)} bytes, {r} sizes need {header})")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=r, offset=4))
    if shape is not None and (
        len(shape) != r or any(s is not None and s != d for s, d in zip(shape, dims, strict=True))
    ):
        raise IdxError(f"{path}: shape {dims}, expected {tuple('N' if s is None else s for s in shape)}")
    size = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != size:
        what = "truncated" if len(data) - header < size else "too long"
        raise IdxError(
            f"{path}: {what}: header declares {dims} = {size} bytes of data, file holds {len(data) - header}"
        )
    return np.frombuffer(data, np.uint8, count=size, offset=header).reshape(dims).copy()
