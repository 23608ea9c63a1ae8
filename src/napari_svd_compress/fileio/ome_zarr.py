"""Writing images as OME-Zarr (OME-NGFF 0.4 or 0.5 multiscales), and reading them back.

:func:`write_ome_zarr` takes an image of 2 to 5 dimensions (grey or RGB, NumPy or dask,
read one plane at a time) with its axes, scale, translation and units, and writes a
store that ome-zarr-py, napari-ome-zarr, Fiji/MoBIE and other OME-Zarr readers open:

- NGFF 0.4 is a zarr format 2 group, NGFF 0.5 a zarr format 3 group (``"ome"``
  attributes, ``dimension_names`` on each array);
- axes are put in NGFF's order (time, channel, then z, y, x); an RGB image's colour axis
  becomes a channel axis ``c`` with red, green and blue ``omero`` channels;
- planes larger than ``smallest`` pixels on a side get a pyramid of 2 x 2 means (y and x
  only), each level a dataset with its own scale;
- chunks are lossless (Blosc-zstd with bit shuffle by default, or plain zstd) or
  compressed by our codecs (``compression="svdz"``, the numcodecs codec of
  :mod:`.zarr_codec`, one plane per chunk: see docs/formats.md);
- the store is written in a temporary folder beside the target and renamed into place,
  so a failed or interrupted write never leaves a half-written store at ``path``.

zarr and numcodecs come with the ``formats`` extra: this module imports numcodecs (and
zarr when it writes or reads), so the package does not import it by itself.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import ImageError, ParameterError
from .zarr_codec import SVDZ, zarr3_codec

__all__ = [
    "COMPRESSIONS",
    "NGFF_VERSIONS",
    "axis_names",
    "ome_unit",
    "read_ome_zarr",
    "write_ome_zarr",
]

NGFF_VERSIONS = ("0.4", "0.5")
COMPRESSIONS = ("blosc", "zstd", "none", "svdz")

_AXIS_ALIASES = {
    "t": "t",
    "time": "t",
    "c": "c",
    "ch": "c",
    "channel": "c",
    "channels": "c",
    "z": "z",
    "y": "y",
    "x": "x",
}
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_ORDER = "tczyx"
_DEFAULT_AXES = {2: "yx", 3: "zyx", 4: "tzyx", 5: "tczyx"}

# The units OME-NGFF allows (UDUNITS-2 names), and common spellings of them.
_SI_PREFIXES = (
    "yocto zepto atto femto pico nano micro milli centi deci deca hecto kilo mega giga tera "
    "peta exa zetta yotta"
).split()
_SPACE_UNITS = {"meter", *(f"{p}meter" for p in _SI_PREFIXES)} | {
    "angstrom",
    "foot",
    "inch",
    "mile",
    "parsec",
    "yard",
}
_TIME_UNITS = {"second", *(f"{p}second" for p in _SI_PREFIXES)} | {"minute", "hour", "day"}
_UNIT_ALIASES = {
    "um": "micrometer",
    "µm": "micrometer",
    "μm": "micrometer",
    "micron": "micrometer",
    "nm": "nanometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "å": "angstrom",
    "pm": "picometer",
    "s": "second",
    "sec": "second",
    "ms": "millisecond",
    "us": "microsecond",
    "µs": "microsecond",
    "ns": "nanosecond",
    "min": "minute",
    "h": "hour",
    "hr": "hour",
}
#: Units that mean "none" (napari's default is the pixel).
_NO_UNIT = {"", "pixel", "pixels", "px", "dimensionless", "none"}

_RGB_COLORS = ("FF0000", "00FF00", "0000FF", "FFFFFF")
_RGB_LABELS = ("red", "green", "blue", "alpha")


def ome_unit(unit: Any, kind: str) -> str | None:
    """The OME-NGFF name of ``unit`` for an axis of ``kind`` (``"space"``, ``"time"``),
    or None when there is none (pixels, unknown units: those warn)."""
    if unit is None:
        return None
    text = str(unit).strip()
    name = _UNIT_ALIASES.get(text.lower(), _UNIT_ALIASES.get(text, text.lower()))
    if name in _NO_UNIT:
        return None
    allowed = _SPACE_UNITS if kind == "space" else _TIME_UNITS if kind == "time" else set()
    if name in allowed:
        return name
    warnings.warn(
        f"unit {text!r} is not an OME-NGFF {kind} unit; the axis is written without one",
        UserWarning,
        stacklevel=3,
    )
    return None


def axis_names(ndim: int, axes: Sequence[str] | str | None) -> list[str] | None:
    """Canonical axis names (t, c, z, y, x) of ``ndim`` axes named ``axes`` (``"time"``,
    ``"Z"``, ...), or None if they are not ``ndim`` distinct OME-NGFF axes."""
    if axes is None:
        return None
    names = [_AXIS_ALIASES.get(str(a).strip().lower()) for a in axes]
    if len(names) != ndim or None in names or len(set(names)) != ndim:
        return None
    return names  # type: ignore[return-value]


def _plan_axes(
    shape: tuple[int, ...], rgb: bool, axes: Sequence[str] | str | None
) -> tuple[list[str], list[int]]:
    """The NGFF axes of the stored array and the permutation of the input's axes to them."""
    ndim = len(shape) - (1 if rgb else 0)
    names = axis_names(ndim, axes)
    if axes is not None and names is None:
        raise ParameterError(
            f"axes {list(axes)!r} are not {ndim} distinct OME-NGFF axes (t, c, z, y, x)"
        )
    if names is None:
        if ndim not in _DEFAULT_AXES or (rgb and ndim == 5):
            raise ImageError(f"OME-Zarr holds 2 to 5 axes; this image has shape {shape}")
        names = list(_DEFAULT_AXES[ndim])
    if rgb:
        if "c" in names:
            raise ImageError("an RGB image cannot have a channel axis too")
        names = [*names, "c"]
    if len(names) > 5:
        raise ImageError(f"OME-Zarr holds 2 to 5 axes; this image has shape {shape}")
    if "y" not in names or "x" not in names:
        raise ParameterError(f"axes {names} need y and x")
    order = sorted(range(len(names)), key=lambda i: _ORDER.index(names[i]))
    return [names[i] for i in order], order


def _downsample(plane: np.ndarray) -> np.ndarray:
    """The 2 x 2 mean of a 2-D plane (odd edges replicated), in the plane's dtype."""
    h, w = plane.shape
    if h % 2 or w % 2:
        plane = np.pad(plane, ((0, h % 2), (0, w % 2)), mode="edge")
    work = plane.astype(np.float64 if plane.dtype.itemsize > 4 else np.float32)
    out = 0.25 * (work[0::2, 0::2] + work[1::2, 0::2] + work[0::2, 1::2] + work[1::2, 1::2])
    if plane.dtype.kind in "iub":
        info = np.iinfo(plane.dtype) if plane.dtype.kind != "b" else None
        out = np.rint(out)
        if info is not None:
            out = np.clip(out, info.min, info.max)
    return out.astype(plane.dtype)


def _level_shapes(h: int, w: int, smallest: int, max_levels: int) -> list[tuple[int, int]]:
    shapes = [(h, w)]
    while max(shapes[-1]) > smallest and len(shapes) < max_levels:
        ph, pw = shapes[-1]
        shapes.append(((ph + 1) // 2, (pw + 1) // 2))
    return shapes


def _compressor(compression: str, zarr_format: int, codec: Any) -> dict[str, Any]:
    """The create_array keywords of a compression."""
    if compression == "svdz":
        if zarr_format == 2:
            return {"compressors": codec, "filters": None}
        config = codec.get_config()
        config.pop("id")
        return {"serializer": zarr3_codec(**config), "compressors": None, "filters": None}
    if compression == "none":
        return {"compressors": None, "filters": None}
    if zarr_format == 2:
        import numcodecs

        if compression == "zstd":
            return {"compressors": numcodecs.Zstd(level=5), "filters": None}
        return {
            "compressors": numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
            "filters": None,
        }
    from zarr.codecs import BloscCodec, ZstdCodec

    if compression == "zstd":
        return {"compressors": ZstdCodec(level=5), "filters": None}
    return {"compressors": BloscCodec(cname="zstd", clevel=5, shuffle="shuffle"), "filters": None}


def write_ome_zarr(
    path: str | PathLike[str],
    data: Any,
    *,
    rgb: bool | None = None,
    axes: Sequence[str] | str | None = None,
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    units: Sequence[Any] | None = None,
    name: str | None = None,
    version: str = "0.4",
    compression: str = "blosc",
    method: str = "pca",
    params: Mapping[str, Any] | None = None,
    chunk: int | None = None,
    smallest: int = 1024,
    max_levels: int = 8,
    contrast_limits: Sequence[float] | None = None,
    overwrite: bool = True,
    progress: Callable[[float], None] | None = None,
) -> Path:
    """Write an image as an OME-Zarr store (a folder, conventionally ``*.ome.zarr``).

    Parameters
    ----------
    path : path-like
        The store to write.
    data : array_like
        2 to 5 dimensions (and a colour axis when ``rgb``): NumPy, dask, zarr or any array
        that can be sliced; it is read one 2-D plane at a time.
    rgb : bool, optional
        Whether the last axis holds colours (napari's rule when None: ``ndim >= 3`` and a
        last axis of 3 or 4).  It is stored as a channel axis ``c``.
    axes : sequence of str, optional
        The names of ``data``'s axes but the colour one (``"tzyx"``, ``["z", "y", "x"]``,
        ``time``, ``channel`` ... are understood).  By default the last two are y and x,
        and the others z (3-D), t and z (4-D), t, c and z (5-D).
    scale, translate : sequence of float, optional
        Physical size of a pixel and position of the first one, per axis of ``data`` but
        the colour one (napari's layer ``scale`` and ``translate``).
    units : sequence, optional
        Units per axis (strings such as ``"micrometer"`` or ``"um"``, or pint units as
        napari holds them).  Pixels and unknown units are left out (unknown ones warn).
    name : str, optional
        The multiscale's name.
    version : {"0.4", "0.5"}
        OME-NGFF version: 0.4 is a zarr format 2 store, 0.5 a zarr format 3 one.
    compression : {"blosc", "zstd", "none", "svdz"}
        Lossless Blosc-zstd (with byte shuffle), plain zstd, none, or our codecs (lossy,
        ``method`` with ``params``, through :class:`~.zarr_codec.SVDZ`).
    method : str
        With ``compression="svdz"``: the registered method of each chunk.
    params : mapping, optional
        The method's parameters (checked before anything is written).
    chunk : int, optional
        The y and x size of a chunk (other axes are chunked by 1).  Default 1024 for
        lossless chunks; for svdz the whole plane up to 4096 pixels a side, else 2048
        (SVD and PCA gain from large planes, and edge chunks are padded).
    smallest : int
        Pyramid levels halve y and x until the longer side is at most this.
    max_levels : int
        At most this many levels (level 0 included).
    contrast_limits : sequence of 2 floats, optional
        The display window written to the ``omero`` channels (RGB images and images with
        a channel axis).
    overwrite : bool
        If False, raise FileExistsError when ``path`` exists.
    progress : callable, optional
        Called with the fraction of planes written.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ImageError
        For shapes OME-Zarr cannot hold (fewer than 2 or more than 5 axes).
    ParameterError
        For bad axes, scales, versions, compressions or codec parameters.
    """
    import zarr

    path = Path(path)
    if version not in NGFF_VERSIONS:
        raise ParameterError(f"OME-NGFF version must be one of {', '.join(NGFF_VERSIONS)}")
    if compression not in COMPRESSIONS:
        raise ParameterError(f"compression must be one of {', '.join(COMPRESSIONS)}")
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists (not overwriting)")
    if int(smallest) < 16 or int(max_levels) < 1:
        raise ParameterError("smallest must be at least 16 and max_levels at least 1")
    shape = tuple(int(n) for n in getattr(data, "shape", np.shape(data)))
    dtype = np.dtype(getattr(data, "dtype", None) or np.asarray(data).dtype)
    if dtype.kind not in "biuf":
        raise ImageError(f"OME-Zarr images are numbers; got dtype {dtype}")
    if rgb is None:
        rgb = len(shape) >= 3 and shape[-1] in (3, 4)
    rgb = bool(rgb)
    if rgb and (len(shape) < 3 or shape[-1] not in (3, 4)):
        raise ImageError(f"rgb=True needs a last axis of 3 or 4; got shape {shape}")
    if 0 in shape:
        raise ImageError(f"the image is empty (shape {shape})")
    names, order = _plan_axes(shape, rgb, axes)
    n_in = len(shape) - (1 if rgb else 0)
    scale_in = _per_axis(scale, n_in, "scale", 1.0)
    translate_in = _per_axis(translate, n_in, "translate", 0.0)
    units_in = list(units) if units is not None else [None] * n_in
    if len(units_in) != n_in:
        raise ParameterError(f"units needs {n_in} entries, got {len(units_in)}")
    if any(s <= 0 for s in scale_in):
        raise ParameterError(f"scale must be positive, got {scale_in}")
    if rgb:
        scale_in, translate_in, units_in = [*scale_in, 1.0], [*translate_in, 0.0], [*units_in, None]
    stored_shape = tuple(shape[i] for i in order)
    scales = [scale_in[i] for i in order]
    translations = [translate_in[i] for i in order]
    axis_meta = []
    for ax, i in zip(names, order, strict=True):
        entry = {"name": ax, "type": _AXIS_TYPES[ax]}
        unit = ome_unit(units_in[i], _AXIS_TYPES[ax]) if ax != "c" else None
        if unit is not None:
            entry["unit"] = unit
        axis_meta.append(entry)

    codec = None
    if compression == "svdz":
        codec = SVDZ(method=method, rgb=False, **dict(params or {}))
        codec.check_dtype(dtype)
    h, w = stored_shape[-2], stored_shape[-1]
    if chunk:
        size = int(chunk)
    elif compression == "svdz":
        # Whole planes up to 4096 pixels a side: edge chunks are padded, and SVD and PCA
        # gain from large planes.
        size = max(h, w) if max(h, w) <= 4096 else 2048
    else:
        size = 1024
    if size < 16:
        raise ParameterError("chunk must be at least 16")
    levels = _level_shapes(h, w, int(smallest), int(max_levels))
    zarr_format = 2 if version == "0.4" else 3
    lead = stored_shape[:-2]

    datasets = []
    for k in range(len(levels)):
        factor = 2**k
        level_scale = [*scales[:-2], scales[-2] * factor, scales[-1] * factor]
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": level_scale}]
        # A 2^k x 2^k mean is centred (2^k - 1) / 2 level-0 pixels in from its block's
        # first pixel: without this shift, coarse levels drift against level 0.
        shift = [0.0] * (len(scales) - 2) + [s * (factor - 1) / 2 for s in scales[-2:]]
        level_translation = [t + d for t, d in zip(translations, shift, strict=True)]
        if any(t != 0 for t in level_translation):
            transforms.append({"type": "translation", "translation": level_translation})
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    multiscale: dict[str, Any] = {
        "name": name or _stem(path),
        "axes": axis_meta,
        "datasets": datasets,
        "type": "mean",
        "metadata": {
            "description": "2 x 2 mean in y and x per level",
            "method": "napari_svd_compress.fileio.ome_zarr.write_ome_zarr",
            "version": __version__,
        },
    }
    omero = _omero(names, stored_shape, dtype, rgb, contrast_limits)
    ours = {"compression": compression, "created_by": f"napari-svd-compress {__version__}"}
    if codec is not None:
        ours["codec"] = codec.get_config()
    if version == "0.4":
        attrs: dict[str, Any] = {"multiscales": [{"version": "0.4", **multiscale}]}
        if omero:
            attrs["omero"] = omero
        attrs["napari_svd_compress"] = ours
    else:
        ome: dict[str, Any] = {"version": "0.5", "multiscales": [multiscale]}
        if omero:
            ome["omero"] = omero
        attrs = {"ome": ome, "napari_svd_compress": ours}

    with _atomic_store(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
        group.attrs.update(attrs)
        arrays = []
        for k, (lh, lw) in enumerate(levels):
            kwargs: dict[str, Any] = {
                "name": str(k),
                "shape": (*lead, lh, lw),
                "dtype": dtype,
                "chunks": (*(1,) * len(lead), min(lh, size), min(lw, size)),
                "fill_value": 0,
                **_compressor(compression, zarr_format, codec),
            }
            if zarr_format == 2:
                kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
            else:
                kwargs["dimension_names"] = names
            arrays.append(group.create_array(**kwargs))
        n_planes = math.prod(lead)
        for i, idx in enumerate(np.ndindex(*lead)):
            # The input index of this stored plane: y and x stay whole.
            key = [slice(None)] * len(shape)
            for pos, value in zip(range(len(lead)), idx, strict=True):
                key[order[pos]] = value
            plane = np.asarray(data[tuple(key)])
            if order[-2] > order[-1]:  # x before y in the input
                plane = plane.T
            plane = np.ascontiguousarray(plane.astype(dtype, copy=False))
            for k, arr in enumerate(arrays):
                if k:
                    plane = _downsample(plane)
                arr[idx] = plane
            if progress is not None:
                progress((i + 1) / n_planes)
    return path


def _stem(path: Path) -> str:
    """``cells.ome.zarr`` -> ``cells``."""
    name = path.name
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def _per_axis(values: Sequence[float] | None, n: int, what: str, default: float) -> list[float]:
    if values is None:
        return [default] * n
    out = [float(v) for v in values]
    if len(out) != n:
        raise ParameterError(f"{what} needs {n} values (one per axis), got {len(out)}")
    if not all(math.isfinite(v) for v in out):
        raise ParameterError(f"{what} must be finite, got {out}")
    return out


def _omero(
    names: list[str],
    shape: tuple[int, ...],
    dtype: np.dtype,
    rgb: bool,
    limits: Sequence[float] | None,
) -> dict[str, Any] | None:
    """``omero`` rendering metadata: one entry per channel (RGB: red, green, blue)."""
    if "c" not in names:
        return None
    n = shape[names.index("c")]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = float(info.min), float(info.max)
    else:
        lo, hi = 0.0, 1.0
    start, end = (float(limits[0]), float(limits[1])) if limits is not None else (lo, hi)
    if dtype.kind == "f" and limits is not None:
        lo, hi = min(lo, start), max(hi, end)
    channels = []
    for i in range(n):
        channels.append(
            {
                "label": _RGB_LABELS[i] if rgb else f"channel {i}",
                "color": _RGB_COLORS[i] if rgb else "FFFFFF",
                "active": not (rgb and i == 3),
                "window": {"min": lo, "max": hi, "start": start, "end": end},
            }
        )
    return {"channels": channels, "rdefs": {"model": "color" if rgb else "greyscale"}}


# --- atomic stores ----------------------------------------------------------------------


@contextmanager
def _atomic_store(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it over ``path`` on success.

    The folder is ``.NAME.HOST-PID.RANDOM.tmp`` (as :mod:`.atomic` names its temporary
    files); a failed block removes it, and folders that killed writers of the same target
    left are removed first.  An existing store at ``path`` is moved aside, the new one
    renamed into place, then the old one removed: readers see the old store or the
    complete new one, and a failure between the two renames puts the old one back.
    """
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{path.name}.{_host()}-{os.getpid()}.", suffix=".tmp", dir=folder)
    )
    try:
        yield tmp
        _replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_folder(tmp: Path, path: Path) -> None:
    if not path.exists() and not path.is_symlink():
        os.rename(tmp, path)
        return
    old = path.with_name(f".{path.name}.{_host()}-{os.getpid()}.old.tmp")
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def _host() -> str:
    import hashlib

    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _remove_stale(path: Path) -> None:
    """Remove temporary stores that killed writers of ``path`` left beside it."""
    folder = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}."
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    host = _host()
    for tmp in candidates:
        middle = tmp.name[len(prefix) :]
        if not middle.endswith(".tmp") or not tmp.is_dir():
            continue
        tag, _, rest = middle.partition("-")
        pid = rest.split(".")[0]
        if tag == host and pid.isdigit():
            stale = not _alive(int(pid))
        else:
            try:
                stale = time.time() - tmp.stat().st_mtime > 24 * 3600
            except OSError:
                continue
        if not stale:
            continue
        if middle.endswith(".old.tmp") and not path.exists() and not path.is_symlink():
            # The writer died between moving the old store aside and renaming the new
            # one into place: put the old one back rather than lose it.
            try:
                os.rename(tmp, path)
                continue
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


# --- reading back -----------------------------------------------------------------------


def read_ome_zarr(path: str | PathLike[str]) -> tuple[list[Any], dict[str, Any]]:
    """The levels (zarr arrays, largest first) and the multiscale metadata of a store.

    Understands OME-NGFF 0.4 (zarr format 2) and 0.5 (zarr format 3) images; the
    metadata dict is the multiscale entry with ``"version"`` and, when present,
    ``"omero"`` added.

    Raises
    ------
    ImageError
        When ``path`` is not an OME-Zarr image.
    """
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise ImageError(f"{path}: not a zarr group ({exc})") from None
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
    if not isinstance(multiscales, list) or not multiscales:
        raise ImageError(f"{path}: no OME-NGFF multiscales metadata")
    meta = dict(multiscales[0])
    meta.setdefault("version", ome.get("version"))
    if "omero" in ome:
        meta["omero"] = ome["omero"]
    try:
        levels = [group[d["path"]] for d in meta["datasets"]]
    except (KeyError, TypeError) as exc:
        raise ImageError(f"{path}: a dataset of the multiscales is missing ({exc})") from None
    return levels, meta
