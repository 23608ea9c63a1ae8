"""The .svdz factor bundle: a ZIP of ``manifest.json`` plus named payloads.

See ``docs/bundle-format.md`` for the format.  The reader treats every file as hostile:
it checks the container, the manifest and the declared sizes against fixed limits
before it reads or allocates anything, and reports every problem as a
:class:`~napari_svd_compress.errors.BundleError`.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

import numpy as np

from .._image import SUPPORTED_DTYPES, ImageSpec
from .._version import __version__
from ..errors import (
    BundleContentError,
    BundleError,
    BundleFormatError,
    BundleLimitError,
    BundleVersionError,
    refuse_failures,
)
from . import native

FORMAT = "svdz"
#: The version written.  2: svd channels sum their components exactly (an integer
#: ``shift`` per channel); every other payload is as in version 1.
#: 3: entropy models are integer tables (``laplace`` coder 4, coefficient mode 2).
#: 3: pca and patch-svd decode exactly (integer basis and sums; ``shift`` in the plane meta).
VERSION = 3
#: The versions read (version 1 svd channels decode by their own arithmetic).
READ_VERSIONS = (1, 2, 3)
MANIFEST = "manifest.json"

#: Reader limits.  A bundle beyond them is refused before anything is allocated.
MAX_FILE_BYTES = 8 << 30
MAX_MANIFEST_BYTES = 16 << 20
MAX_MEMBERS = 200_000
MAX_ELEMENTS = 1 << 34  # values in the decoded image (16 Gi: a 900-Mpixel RGB mosaic fits)
MAX_PLANE_PIXELS = 1 << 34  # 10^5 x 10^5 fits: such planes are decoded lazily, tile by tile
MAX_NDIM = 8
MAX_INFLATE_RATIO = 200  # for deflated members (we write stored ones)

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,200}$")
_ZIP_MAGIC = b"PK\x03\x04"
# The 1980-01-01 timestamp keeps bundles byte-identical across runs.
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass
class Bundle:
    """An opened bundle: its manifest, its payloads and the image spec it declares.

    For a baseline codec's own file (JPEG, WebP, AVIF) ``native`` holds the decoded
    image and the other fields describe it.
    """

    manifest: dict[str, Any]
    payloads: dict[str, bytes]
    spec: ImageSpec
    nbytes: int
    native: np.ndarray | None = None
    #: Per plane, the codec's decoder of parts of it, made on first use by the API's lazy
    #: decoding (it holds the decoded factors, so it is made once).
    region_decoders: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)

    def payloads_with_prefix(self, prefix: str) -> dict[str, bytes]:
        if not prefix:
            return self.payloads
        n = len(prefix)
        return {k[n:]: v for k, v in self.payloads.items() if k.startswith(prefix)}

    @property
    def figures(self) -> dict[str, Any]:
        """Stored quality figures plus the size figures of this very file."""
        spec = self.spec
        out = dict(self.manifest.get("figures") or {})
        out["bytes"] = self.nbytes
        out["bpp"] = self.nbytes * 8 / spec.pixels
        out["ratio"] = spec.raw_nbytes / self.nbytes
        return out


def make_manifest(
    *,
    codec: str,
    params: dict[str, Any],
    spec: ImageSpec,
    planes: list[dict[str, Any]],
    figures: dict[str, Any],
) -> dict[str, Any]:
    """The manifest for a bundle (payload sizes are added by :func:`write_bytes`)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "codec": codec,
        "params": params,
        "shape": list(spec.shape),
        "dtype": spec.dtype.name,
        "rgb": spec.rgb,
        "alpha": spec.alpha,
        "value_range": list(spec.value_range),
        "planes": planes,
        "figures": {k: _json_float(v) for k, v in figures.items()},
        "created_by": f"napari-svd-compress {__version__}",
    }


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def write_bytes(manifest: dict[str, Any], payloads: dict[str, bytes]) -> bytes:
    """Serialise a bundle to bytes (manifest first, members stored uncompressed:
    the payloads are already entropy coded, and stored members cannot be zip bombs)."""
    for name in payloads:
        if not _NAME.match(name) or ".." in name or name == MANIFEST:
            raise ValueError(f"invalid payload name {name!r}")
    manifest = dict(manifest)
    manifest["payloads"] = {name: len(data) for name, data in payloads.items()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        text = json.dumps(manifest, separators=(",", ":"), allow_nan=False)
        zf.writestr(zipfile.ZipInfo(MANIFEST, _EPOCH), text.encode())
        for name, data in payloads.items():
            zf.writestr(zipfile.ZipInfo(name, _EPOCH), data)
    return buf.getvalue()


def member_overhead(name: str) -> int:
    """Bytes a stored ZIP member adds besides its data (local + central headers)."""
    return 30 + 46 + 2 * len(name.encode())


def read_source(source: bytes | bytearray | memoryview | str | PathLike[str]) -> bytes:
    """The bytes of ``source`` (bytes pass through; paths are read with a size limit)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    path = os.fspath(source)
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise BundleLimitError(f"{path}: {size} bytes is beyond the {MAX_FILE_BYTES} limit")
        with open(path, "rb") as fh:
            return fh.read(size + 1)
    except BundleError:
        raise
    except IsADirectoryError:
        raise BundleFormatError(f"{path}: is a directory, not a bundle") from None
    except OSError as exc:
        raise BundleFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None


def open_bundle(source: bytes | str | PathLike[str]) -> Bundle:
    """Open and validate a bundle (or a baseline codec's JPEG/WebP/AVIF file).

    Raises
    ------
    BundleError
        A subclass naming the problem, for anything malformed or beyond the limits.
        Whatever else the ZIP reader or the image decoders raise on hostile bytes is
        turned into a :class:`BundleFormatError` here (see
        :func:`~napari_svd_compress.errors.refuse_failures`).
    """
    data = read_source(source)
    with refuse_failures("the container", BundleFormatError):
        return _open(data)


def _open(data: bytes) -> Bundle:
    if not data:
        raise BundleFormatError("the file is empty")
    if data[:4] != _ZIP_MAGIC:
        fmt = native.sniff(data)
        if fmt is not None:
            image = native.decode_native(data)
            manifest = {"format": fmt, "codec": fmt, "shape": list(image.shape), "planes": [{}]}
            return Bundle(
                manifest=manifest,
                payloads={},
                spec=native.native_spec(image),
                nbytes=len(data),
                native=image,
            )
        raise BundleFormatError("not a .svdz bundle (no ZIP signature)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,  # "zip file version 19.8": a flipped bit in a header
        ValueError,
        OSError,
        EOFError,
    ) as exc:
        raise BundleFormatError(f"not a readable ZIP container ({exc})") from None
    if len(infos) > MAX_MEMBERS:
        raise BundleLimitError(f"{len(infos)} members is beyond the {MAX_MEMBERS} limit")
    members = {}
    for info in infos:
        if info.filename in members:
            raise BundleFormatError(f"duplicate member {info.filename!r}")
        _check_member(info)
        members[info.filename] = info
    if MANIFEST not in members:
        raise BundleFormatError("the bundle has no manifest.json")
    manifest = _parse_manifest(_read_member(zf, members[MANIFEST], MAX_MANIFEST_BYTES))
    spec = spec_from_manifest(manifest)
    declared = manifest.get("payloads")
    if not isinstance(declared, dict):
        raise BundleContentError("manifest 'payloads' must map names to sizes")
    total = 0
    for name, size in declared.items():
        if name not in members or name == MANIFEST:
            raise BundleContentError(f"payload {name!r} is listed but missing")
        if (
            not isinstance(size, int)
            or isinstance(size, bool)
            or size < 0
            or members[name].file_size != size
        ):
            raise BundleContentError(f"payload {name!r} has the wrong size")
        total += size
    if total > len(data) * MAX_INFLATE_RATIO:
        raise BundleLimitError("the payloads inflate far beyond the file size (zip bomb?)")
    payloads = {name: _read_member(zf, members[name], declared[name]) for name in declared}
    return Bundle(manifest=manifest, payloads=payloads, spec=spec, nbytes=len(data))


def _check_member(info: zipfile.ZipInfo) -> None:
    name = info.filename
    if not _NAME.match(name) or ".." in name:
        raise BundleFormatError(f"invalid member name {name!r}")
    if info.flag_bits & 0x41:  # bit 0: encrypted; bit 6: strong encryption
        raise BundleFormatError(f"member {name!r} is encrypted")
    if info.flag_bits & 0x20:  # bit 5: "compressed patched data", which nothing reads
        raise BundleFormatError(f"member {name!r} uses patched data")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BundleFormatError(f"member {name!r} uses an unsupported compression method")
    if info.file_size > MAX_FILE_BYTES:
        raise BundleLimitError(f"member {name!r} declares {info.file_size} bytes")
    if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > max(
        info.compress_size * MAX_INFLATE_RATIO, 1 << 20
    ):
        raise BundleLimitError(f"member {name!r} inflates beyond the limit (zip bomb?)")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    if info.file_size > limit:
        raise BundleLimitError(f"member {info.filename!r} is larger than {limit} bytes")
    try:
        with zf.open(info) as fh:
            data = fh.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
        raise BundleFormatError(
            f"member {info.filename!r} is corrupt or truncated ({exc})"
        ) from None
    if len(data) != info.file_size:
        raise BundleFormatError(f"member {info.filename!r} is truncated")
    return data


def _parse_manifest(raw: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleFormatError(f"manifest.json is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BundleFormatError("manifest.json must hold a JSON object")
    if manifest.get("format") != FORMAT:
        raise BundleFormatError(f"not a {FORMAT} bundle (format {manifest.get('format')!r})")
    version = manifest.get("version")
    if version not in READ_VERSIONS or isinstance(version, bool):
        known = ", ".join(map(str, READ_VERSIONS))
        raise BundleVersionError(
            f"bundle format version {_short(version)} is not supported (this reader knows {known})"
        )
    codec = manifest.get("codec")
    if not isinstance(codec, str):
        raise BundleContentError("manifest 'codec' must be a string")
    return manifest


_MAX_VALUE = 1e300


def _short(value: Any) -> str:
    """``repr`` of a manifest value, cut short for messages (a hostile one can be huge)."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge int"
    return text if len(text) <= 80 else text[:77] + "..."


def spec_from_manifest(manifest: dict[str, Any]) -> ImageSpec:
    """Validate the image description of a manifest and return it as an ImageSpec."""
    shape = manifest.get("shape")
    if (
        not isinstance(shape, list)
        or not 2 <= len(shape) <= MAX_NDIM
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
    ):
        raise BundleContentError(
            f"manifest 'shape' is not a list of 2 to 8 positive ints: {_short(shape)}"
        )
    dtype = manifest.get("dtype")
    if not isinstance(dtype, str) or dtype not in SUPPORTED_DTYPES or dtype in ("bool", "float16"):
        raise BundleContentError(f"manifest 'dtype' {_short(dtype)} is not supported")
    rgb, alpha = manifest.get("rgb"), manifest.get("alpha")
    if not isinstance(rgb, bool) or not isinstance(alpha, bool):
        raise BundleContentError("manifest 'rgb' and 'alpha' must be booleans")
    if rgb and (len(shape) < 3 or shape[-1] != (4 if alpha else 3)):
        raise BundleContentError(f"manifest shape {shape} does not match rgb/alpha flags")
    if alpha and not rgb:
        raise BundleContentError("manifest has alpha without rgb")
    elements = math.prod(shape)
    plane_px = shape[-3] * shape[-2] if rgb else shape[-2] * shape[-1]
    if elements > MAX_ELEMENTS or plane_px > MAX_PLANE_PIXELS:
        raise BundleLimitError(
            f"manifest shape {shape} ({elements:.3g} values) is beyond the reader's limits"
        )
    vr = manifest.get("value_range")
    if (
        not isinstance(vr, list)
        or len(vr) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in vr)
        # |v| <= 1e300 keeps hi - lo finite (and 10**400, which float() refuses, out)
        or not all(abs(v) <= _MAX_VALUE for v in vr)
        or not vr[0] < vr[1]
    ):
        raise BundleContentError(f"manifest 'value_range' is invalid: {_short(vr)}")
    lo, hi = float(vr[0]), float(vr[1])
    if not hi > lo:  # two huge ints can round to the same float
        raise BundleContentError(f"manifest 'value_range' is invalid: {_short(vr)}")
    spec = ImageSpec(
        shape=tuple(shape), dtype=np.dtype(dtype), rgb=rgb, alpha=alpha, value_range=(lo, hi)
    )
    planes = manifest.get("planes")
    if not isinstance(planes, list) or len(planes) != spec.n_planes:
        raise BundleContentError(f"manifest 'planes' must list {spec.n_planes} plane entries")
    if not all(isinstance(p, dict) for p in planes):
        raise BundleContentError("manifest 'planes' entries must be objects")
    return spec
