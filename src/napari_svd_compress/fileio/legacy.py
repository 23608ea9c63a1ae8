"""Safe reader for the ``.pkl`` files of the old "SVD_image_compression" scripts.

Those scripts pickled a list with one ``[U, S, Vt]`` entry per channel.  Unpickling runs
whatever a file asks for, so a plain :func:`pickle.load` of a file from elsewhere can run
arbitrary code.  Here the unpickler admits only the few numpy globals needed to rebuild plain
numeric arrays, and even those are replaced by stand-ins that validate their arguments and
build the arrays themselves (numpy's own ``__setstate__`` never sees data from the file).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
import re
from typing import Any, BinaryIO

import numpy as np

from napari_svd_compress.errors import LegacyError

__all__ = ["load_legacy", "sniff_legacy"]

_MAX_SIDE = 1 << 17  # rows or columns per channel
_MAX_PIXELS = 1 << 28  # H * W per channel (1 GiB of float32)
# Real factors are far smaller (|U|, |Vt| <= 1, S <= 255 * sqrt(H * W)); the bound keeps the
# float32 reconstruction free of overflow.
_MAX_ABS = 1e9
_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA
_DTYPE_STR = re.compile(r"[<>|=]?[biufc]\d{1,2}")  # how numpy pickles plain dtypes: 'f8', 'u1'


class _Refused(Exception):
    """Internal: raised inside the unpickler, turned into LegacyError by load_legacy."""


class _Global:
    """A stand-in for an admitted global; the pickle can call it but not modify it."""

    __slots__ = ("_fn", "_name")

    def __init__(self, name: str, fn: Any) -> None:
        self._name = name
        self._fn = fn

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __setstate__(self, state: Any) -> None:
        raise _Refused(f"the pickle tries to modify {self._name}")


class _Dtype:
    """Plain numeric dtype rebuilt from ``numpy.dtype(str, align, copy)`` + BUILD state."""

    __slots__ = ("_built", "dtype")

    def __init__(self, spec: Any, *_flags: Any) -> None:
        if not isinstance(spec, str) or not _DTYPE_STR.fullmatch(spec):
            raise _Refused(
                f"the pickle asks for numpy dtype {spec!r}; only plain numbers are allowed"
            )
        try:
            dtype = np.dtype(spec)
        except TypeError:
            raise _Refused(f"the pickle asks for unknown numpy dtype {spec!r}") from None
        if dtype.kind not in "biufc" or dtype.hasobject:
            raise _Refused(
                f"the pickle asks for numpy dtype {spec!r}; only plain numbers are allowed"
            )
        self.dtype = dtype
        self._built = False

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, subarray, names, fields, elsize, alignment, flags): only the
        # byte order matters for a plain number; sub-arrays and fields would make it structured.
        if self._built:
            raise _Refused("the pickle sets a dtype's state twice")
        self._built = True
        if not isinstance(state, tuple) or len(state) < 2:
            raise _Refused("malformed numpy dtype state")
        order = state[1]
        if order not in ("<", ">", "|", "="):
            raise _Refused(f"malformed numpy dtype byte order {order!r}")
        if any(part is not None for part in state[2:5]):
            raise _Refused(
                "the pickle asks for a structured numpy dtype; only plain numbers are allowed"
            )
        if order in "<>":
            self.dtype = self.dtype.newbyteorder(order)


def _as_dtype(value: Any) -> np.dtype:
    if not isinstance(value, _Dtype):
        raise _Refused(f"expected a numpy dtype, got {type(value).__name__}")
    return value.dtype


def _as_buffer(data: Any) -> bytes:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):  # Python 2 pickles, read with encoding="latin1"
        return data.encode("latin1")
    raise _Refused(
        f"array data must be bytes, got {type(data).__name__} (object arrays are refused)"
    )


def _as_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > 3:
        raise _Refused(f"bad array shape {shape!r}")
    if not all(
        isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= _MAX_PIXELS for n in shape
    ):
        raise _Refused(f"bad array shape {shape!r}")
    return tuple(shape)


def _build_array(data: Any, dtype: np.dtype, shape: tuple[int, ...], fortran: bool) -> np.ndarray:
    buf = _as_buffer(data)
    count = math.prod(shape)
    if len(buf) != count * dtype.itemsize:
        raise _Refused(
            f"array data has {len(buf)} bytes; shape {shape} of {dtype} needs "
            f"{count * dtype.itemsize}"
        )
    flat = np.frombuffer(buf, dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


class _Array:
    """An ndarray under construction: ``_reconstruct(ndarray, (0,), b'b')`` then BUILD."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray | None = None) -> None:
        self.array = array

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise _Refused("the pickle sets an array's state twice")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("malformed numpy array state")
        if len(state) == 5:
            if state[0] != 1:
                raise _Refused(f"unsupported numpy array state version {state[0]!r}")
            state = state[1:]
        shape, dtype, fortran, data = state
        if not isinstance(fortran, (bool, int)):
            raise _Refused("malformed numpy array state")
        self.array = _build_array(data, _as_dtype(dtype), _as_shape(shape), bool(fortran))


_NDARRAY = _Global("numpy.ndarray", lambda *a: None)


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> _Array:
    if cls is not _NDARRAY:
        raise _Refused("the pickle rebuilds an array of a type other than numpy.ndarray")
    if typecode not in (b"b", "b") or shape not in ((0,), [0]):
        raise _Refused("malformed numpy array header")
    return _Array()


def _frombuffer(data: Any, dtype: Any, shape: Any, order: Any) -> _Array:
    # numpy's pickle protocol 5 path: (buffer, dtype, shape, order)
    if order not in ("C", "F"):
        raise _Refused(f"bad array order {order!r}")
    return _Array(_build_array(data, _as_dtype(dtype), _as_shape(shape), order == "F"))


def _scalar(dtype: Any, data: Any = None) -> Any:
    arr = _build_array(data, _as_dtype(dtype), (), False)
    return arr.item()  # a Python number: nothing left for the pickle to BUILD on


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Python 3 pickles bytes this way for protocols 0-2; only the latin-1 form is needed.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("the pickle asks for _codecs.encode with unexpected arguments")
    return text.encode("latin1")


_ADMITTED: dict[tuple[str, str], _Global] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Global("numpy.dtype", _Dtype),
    ("_codecs", "encode"): _Global("_codecs.encode", _codecs_encode),
}
for _module in ("numpy.core", "numpy._core"):
    _ADMITTED[(f"{_module}.multiarray", "_reconstruct")] = _Global("_reconstruct", _reconstruct)
    _ADMITTED[(f"{_module}.multiarray", "scalar")] = _Global("scalar", _scalar)
    _ADMITTED[(f"{_module}.numeric", "_frombuffer")] = _Global("_frombuffer", _frombuffer)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        admitted = _ADMITTED.get((module, name))
        if admitted is None:
            raise _Refused(
                f"the pickle asks for {module}.{name}, which a legacy SVD file never needs"
            )
        return admitted

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("the pickle uses persistent ids, which a legacy SVD file never needs")


def _read_input(source: Any, max_bytes: int) -> tuple[bytes, str]:
    """Return the pickle bytes and a name for messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        name = repr(os.path.basename(path) or path)
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size > max_bytes:
                    raise LegacyError(
                        f"legacy file {name} is {size} bytes, over the {max_bytes} limit"
                    )
                data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise LegacyError(f"cannot read legacy file {name}: {exc.strerror or exc}") from None
    elif hasattr(source, "read"):
        name = "<stream>"
        try:
            data = source.read(max_bytes + 1)
        except (OSError, ValueError) as exc:
            raise LegacyError(f"cannot read legacy stream: {exc}") from None
        if not isinstance(data, bytes):
            raise LegacyError("legacy stream must be opened in binary mode")
    else:
        raise LegacyError(f"expected a path or bytes, got {type(source).__name__}")
    if len(data) > max_bytes:
        raise LegacyError(f"legacy data {name} is over the {max_bytes}-byte limit")
    if not data:
        raise LegacyError(f"legacy file {name} is empty")
    return data, name


def _plain_array(value: Any, where: str, ndim: int) -> np.ndarray:
    if not isinstance(value, _Array) or value.array is None:
        raise LegacyError(f"{where} is {type(value).__name__}, expected a numpy array")
    arr = value.array
    if arr.ndim != ndim:
        raise LegacyError(f"{where} has shape {arr.shape}, expected {ndim} dimension(s)")
    if arr.dtype.kind not in "iuf":
        raise LegacyError(f"{where} has dtype {arr.dtype}, expected real numbers")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise LegacyError(f"{where} contains NaN or infinite values")
    if arr.size and np.abs(arr).max() > _MAX_ABS:
        raise LegacyError(f"{where} has values beyond +-{_MAX_ABS:g}, not an SVD of an image")
    return arr


def _check_factors(entries: Any) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Validate the unpickled structure; return per-channel (U, S, Vt) with matching k."""
    if not isinstance(entries, (list, tuple)):
        raise LegacyError(f"expected a list of [U, S, Vt] entries, got {type(entries).__name__}")
    if len(entries) not in _CHANNELS:
        raise LegacyError(f"expected 1, 3 or 4 channel entries, got {len(entries)}")
    factors = []
    size: tuple[int, int] | None = None
    for c, entry in enumerate(entries):
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            kind = (
                f"{len(entry)} items" if isinstance(entry, (list, tuple)) else type(entry).__name__
            )
            raise LegacyError(f"channel {c}: expected [U, S, Vt], got {kind}")
        u = _plain_array(entry[0], f"channel {c} U", 2)
        s = _plain_array(entry[1], f"channel {c} S", 1)
        vt = _plain_array(entry[2], f"channel {c} Vt", 2)
        (height, ku), k, (kv, width) = u.shape, s.shape[0], vt.shape
        if height == 0 or width == 0 or k == 0:
            raise LegacyError(f"channel {c}: empty factors U {u.shape}, S {s.shape}, Vt {vt.shape}")
        if (ku, kv) == (height, width) and k == min(height, width) and ku != kv:
            # np.linalg.svd's default full_matrices=True output: keep the first k vectors.
            u, vt = u[:, :k], vt[:k]
        elif not ku == k == kv:
            raise LegacyError(
                f"channel {c}: inconsistent shapes U {u.shape}, S {s.shape}, Vt {vt.shape}"
            )
        if k > min(height, width):
            raise LegacyError(f"channel {c}: rank {k} exceeds the image size {height}x{width}")
        if max(height, width) > _MAX_SIDE or height * width > _MAX_PIXELS:
            raise LegacyError(f"channel {c}: image size {height}x{width} is over the limit")
        if size is not None and (height, width) != size:
            raise LegacyError(f"channel {c} is {height}x{width}, channel 0 is {size[0]}x{size[1]}")
        size = (height, width)
        factors.append((u, s, vt))
    return factors


def load_legacy(
    path_or_bytes: str | os.PathLike[str] | bytes | BinaryIO, *, max_bytes: int = 2**31
) -> np.ndarray:
    """Decode a legacy SVD ``.pkl`` file to an 8-bit image, without running code from it.

    Parameters
    ----------
    path_or_bytes : str, os.PathLike, bytes or binary file object
        The pickle: a path, its contents, or an open binary stream.
    max_bytes : int, optional
        Largest input accepted, in bytes.

    Returns
    -------
    numpy.ndarray
        uint8 image ``sum_k U[:, k] S[k] Vt[k, :]`` per channel, clipped to [0, 255]; shape
        (H, W) for one channel, (H, W, 3) or (H, W, 4) for three or four.

    Raises
    ------
    LegacyError
        If the input cannot be read, is not a pickle, is truncated, asks for anything but
        plain numeric numpy arrays (the offending global is named), or does not hold a list
        of 1, 3 or 4 consistent, finite ``[U, S, Vt]`` triples.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise LegacyError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    data, name = _read_input(path_or_bytes, max_bytes)
    try:
        # A dry pass over the opcodes catches lengths that point past the end of the data:
        # CPython's unpickler allocates such a length before noticing the data is short.
        for _ in pickletools.genops(data):
            pass
    except Exception as exc:  # pickletools raises ValueError and others
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise LegacyError(f"{name} is not a valid legacy pickle ({detail})") from None
    try:
        # latin1 is what numpy needs for array data in Python 2 pickles.
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _Refused as exc:
        raise LegacyError(f"{name} refused: {exc}") from None
    except MemoryError:
        raise LegacyError(f"{name}: not enough memory to read the pickle") from None
    except RecursionError:
        raise LegacyError(f"{name}: the pickle is nested too deeply") from None
    except Exception as exc:  # malformed pickles fail in many ways
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise LegacyError(
            f"{name} is not a valid legacy pickle ({type(exc).__name__}: {detail})"
        ) from None

    try:
        factors = _check_factors(obj)
    except LegacyError as exc:
        raise LegacyError(f"{name}: {exc}") from None
    height, width = factors[0][0].shape[0], factors[0][2].shape[1]
    try:
        out = np.empty((height, width, len(factors)), dtype=np.uint8)
        for c, (u, s, vt) in enumerate(factors):
            channel = (u.astype(np.float32) * s.astype(np.float32)) @ vt.astype(np.float32)
            np.clip(channel, 0.0, 255.0, out=channel)
            out[:, :, c] = np.rint(channel)
    except MemoryError:
        raise LegacyError(
            f"{name}: not enough memory to rebuild a {height}x{width} image"
        ) from None
    return out[:, :, 0] if len(factors) == 1 else out


def sniff_legacy(path: str | os.PathLike[str]) -> bool:
    """Tell cheaply whether a file starts like a pickle.

    Parameters
    ----------
    path : str or os.PathLike
        The file to look at; at most 2 bytes are read.

    Returns
    -------
    bool
        True for a protocol 2-5 header (``\\x80`` + version) or a protocol 0/1 list or
        tuple opener (``(`` or ``]``).  Never raises.
    """
    try:
        with open(os.fspath(path), "rb") as fh:
            head = fh.read(2)
    except (OSError, TypeError, ValueError):
        return False
    if len(head) == 2 and head[0] == 0x80:
        return 2 <= head[1] <= 5
    return head[:1] in (b"(", b"]")
