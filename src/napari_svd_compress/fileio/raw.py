"""Camera RAW decoding with rawpy (LibRaw), and a minimal DNG writer.

The writer exists so that the plugin has RAW sample data and the tests have RAW files without
downloading anything: it turns an ordinary RGB image into a Bayer mosaic stored as a DNG that
LibRaw decodes back to (nearly) the same colours.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import struct
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from napari_svd_compress.errors import ImageError, ParameterError, RawError

from .atomic import atomic_target

__all__ = [
    "RAW_EXTENSIONS",
    "is_raw_path",
    "make_sample_dng",
    "read_raw",
    "sniff_raw",
    "write_dng",
]

#: Lower-case file extensions of the RAW formats LibRaw reads.
RAW_EXTENSIONS: tuple[str, ...] = (
    ".dng",  # Adobe Digital Negative (and many phones)
    ".cr2",  # Canon
    ".cr3",
    ".crw",
    ".crm",
    ".nef",  # Nikon
    ".nrw",
    ".arw",  # Sony
    ".srf",
    ".sr2",
    ".raf",  # Fujifilm
    ".orf",  # Olympus / OM System
    ".ori",
    ".rw2",  # Panasonic
    ".rwl",  # Leica
    ".raw",  # Panasonic, Leica, Casio and others
    ".pef",  # Pentax
    ".ptx",
    ".srw",  # Samsung
    ".x3f",  # Sigma
    ".3fr",  # Hasselblad
    ".fff",
    ".iiq",  # Phase One
    ".cap",
    ".eip",
    ".erf",  # Epson
    ".kdc",  # Kodak
    ".dcr",
    ".dcs",
    ".drf",
    ".k25",
    ".kc2",
    ".mrw",  # Minolta
    ".mos",  # Leaf
    ".mef",  # Mamiya
    ".mdc",
    ".mfw",
    ".bay",  # Casio
    ".pxn",  # Logitech
    ".r3d",  # RED
    ".rwz",  # Rawzor
    ".ari",  # ARRI
    ".cs1",  # Sinar
    ".sti",
    ".cine",  # Phantom
    ".gpr",  # GoPro
)

_OUTPUT_BITS = (8, 16)
_CFA_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
_MIN_SIDE = 22  # LibRaw rejects images with a side shorter than 22 pixels
_MAX_SIDE = 65_000

# XYZ (D65) -> linear sRGB.  As the DNG ColorMatrix1 (XYZ -> camera) it declares that the
# synthetic "camera" sees linear sRGB, so LibRaw's sRGB output reproduces the source colours.
_XYZ_TO_SRGB = np.array(
    [
        [3.2404542, -1.5371385, -0.4985314],
        [-0.9692660, 1.8760108, 0.0415560],
        [0.0556434, -0.2040259, 1.0572252],
    ]
)


def is_raw_path(path: str | os.PathLike[str]) -> bool:
    """Tell whether a path has a camera RAW file extension.

    Parameters
    ----------
    path : str or os.PathLike
        File name or path; only its extension is looked at (case-insensitive).

    Returns
    -------
    bool
        True if the extension is one of :data:`RAW_EXTENSIONS`.
    """
    try:
        suffix = Path(os.fspath(path)).suffix.lower()
    except (TypeError, ValueError):
        return False
    return suffix in RAW_EXTENSIONS


def _looks_like_raw(head: bytes) -> bool:
    """Check leading bytes against the container signatures LibRaw recognises."""
    if len(head) < 4:
        return False
    if head[:4] in (b"II*\x00", b"MM\x00*"):  # TIFF: DNG, NEF, CR2, ARW, PEF, SRW, 3FR, ...
        return True
    if head[:4] in (b"IIRO", b"IIRS", b"MMOR"):  # Olympus ORF
        return True
    if head[:4] == b"IIU\x00":  # Panasonic RW2 / Leica RWL
        return True
    if head[:2] in (b"II", b"MM") and head[6:14] == b"HEAPCCDR":  # Canon CRW (CIFF)
        return True
    if head[4:12] == b"ftypcrx ":  # Canon CR3 (ISO base media)
        return True
    if head[4:8] in (b"RED1", b"RED2"):  # RED R3D
        return True
    prefixes = (
        b"FUJIFILMCCD-RAW",  # Fujifilm RAF
        b"FOVb",  # Sigma X3F
        b"\x00MRM",  # Minolta MRW
        b"ARRI",  # ARRIRAW
        b"NOKIARAW",  # Nokia
        b"XPDS",  # Sinarback
        b"qktk",  # Apple QuickTake
        b"DSC-Image",  # Casio
    )
    if any(head.startswith(p) for p in prefixes):
        return True
    # Phase One IIQ: an "IIII"/"MMMM" block within the first 32 bytes.
    return b"IIII" in head[:32] or b"MMMM" in head[:32]


def sniff_raw(path: str | os.PathLike[str]) -> bool:
    """Tell, from its first bytes, whether a file looks like a RAW file LibRaw could read.

    Parameters
    ----------
    path : str or os.PathLike
        The file to look at.  At most 64 bytes are read.

    Returns
    -------
    bool
        True if the leading bytes match a RAW container signature.  Plain TIFF files share
        the TIFF signature, so True means "worth trying", not "certainly decodable".  Never
        raises: missing files, folders and unreadable files give False.
    """
    try:
        with open(os.fspath(path), "rb") as fh:
            head = fh.read(64)
    except (OSError, TypeError, ValueError):
        return False
    return _looks_like_raw(head)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise RawError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_options(
    output_bits: Any,
    half_size: Any,
    use_camera_wb: Any,
    use_auto_wb: Any,
    no_auto_bright: Any,
    gamma: Any,
) -> dict[str, Any]:
    """Validate the decode options; return them as a JSON-safe dict."""
    if isinstance(output_bits, (bool, np.bool_)) or output_bits not in _OUTPUT_BITS:
        raise RawError(f"output_bits must be 8 or 16, got {output_bits!r}")
    options: dict[str, Any] = {"output_bits": int(output_bits)}
    for name, value in (
        ("half_size", half_size),
        ("use_camera_wb", use_camera_wb),
        ("use_auto_wb", use_auto_wb),
        ("no_auto_bright", no_auto_bright),
    ):
        options[name] = _check_bool(name, value)
    if gamma is not None:
        try:
            if isinstance(gamma, (str, bytes)):
                raise TypeError
            power, slope = (float(g) for g in gamma)
        except (TypeError, ValueError):
            raise RawError(f"gamma must be None or a (power, slope) pair, got {gamma!r}") from None
        if not (math.isfinite(power) and math.isfinite(slope) and power > 0 and slope > 0):
            raise RawError(f"gamma values must be finite and positive, got {gamma!r}")
        gamma = [power, slope]
    options["gamma"] = gamma
    options["output_color"] = "sRGB"
    return options


def _jsonable(value: Any) -> Any:
    """Convert rawpy/numpy values to JSON-safe Python values (non-finite floats -> None)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").rstrip("\x00")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if hasattr(value, "_asdict"):  # rawpy's named tuples
        return {k: _jsonable(v) for k, v in value._asdict().items()}
    if hasattr(value, "name") and hasattr(value, "value"):  # enums
        return str(value.name)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _camera_metadata(raw: Any) -> dict[str, Any]:
    """Collect what rawpy exposes about the sensor; attributes vary between versions."""
    meta: dict[str, Any] = {}
    for attr in (
        "sizes",
        "color_desc",
        "num_colors",
        "raw_type",
        "raw_pattern",
        "black_level_per_channel",
        "white_level",
        "camera_white_level_per_channel",
        "camera_whitebalance",
        "daylight_whitebalance",
        "color_matrix",
        "rgb_xyz_matrix",
        "lens",
        "other",
    ):
        # rawpy properties can raise for formats lacking the data; such entries are omitted.
        try:
            meta[attr] = _jsonable(getattr(raw, attr))
        except Exception:
            pass
    return meta


def _tiff_make_model(path: str) -> dict[str, str]:
    """Read Make, Model and UniqueCameraModel from IFD0 of a TIFF-based RAW file.

    rawpy does not expose the camera make and model.  A few bounded reads of the first IFD
    find them in DNG, NEF, CR2, ARW, PEF, ... without a TIFF library (which would log warnings
    about the maker-specific tags of real RAW files).  Any failure gives what was found so far.
    """
    wanted = {271: "make", 272: "model", 50708: "unique_camera_model"}
    found: dict[str, str] = {}
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(head[:4])
            if order is None or len(head) < 8:
                return found
            (ifd,) = struct.unpack(order + "I", head[4:])
            fh.seek(ifd)
            (count,) = struct.unpack(order + "H", fh.read(2))
            entries = fh.read(12 * min(count, 512))
            for i in range(len(entries) // 12):
                tag, kind, length, value = struct.unpack(
                    order + "HHI4s", entries[12 * i : 12 * i + 12]
                )
                if tag not in wanted or kind != 2 or not 0 < length <= 256:  # 2: ASCII
                    continue
                if length > 4:
                    fh.seek(struct.unpack(order + "I", value)[0])
                    value = fh.read(length)
                text = value[:length].split(b"\x00")[0].decode("utf-8", "replace").strip()
                if text.isprintable() and text:
                    found[wanted[tag]] = text
    except (OSError, ValueError, struct.error):
        pass
    return found


def _error_text(exc: BaseException) -> str:
    text = exc.args[0] if exc.args else str(exc)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = str(text).strip() or type(exc).__name__
    return " ".join(text.split())


@contextmanager
def _stderr_of_c_code() -> Iterator[list[str]]:
    """Collect what is written to file descriptor 2 inside the block (C libraries print
    there); the list is filled when the block ends.  Does nothing where fd 2 cannot be
    redirected."""
    printed: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield printed
        return
    sink = tempfile.TemporaryFile()
    try:
        os.dup2(sink.fileno(), 2)
    except OSError:
        os.close(saved)
        sink.close()
        yield printed
        return
    try:
        yield printed
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sink.seek(0)
        text = sink.read(1 << 16).decode("utf-8", "replace")
        sink.close()
        printed.extend(line + "\n" for line in text.splitlines() if line.strip())


def _libraw_said(printed: list[str], path: str) -> str:
    """LibRaw's messages as the end of an error: ``" (LibRaw: data corrupted at 3134)"``."""
    said = []
    for line in printed:
        text = line.strip()
        if text.startswith(path + ":"):
            text = text[len(path) + 1 :].strip()
        if text and text not in said:
            said.append(text)
    if not said:
        return ""
    text = "; ".join(said[:3]) + ("; ..." if len(said) > 3 else "")
    return f" (LibRaw: {text})"


def read_raw(
    path: str | os.PathLike[str],
    *,
    output_bits: int = 8,
    half_size: bool = False,
    use_camera_wb: bool = True,
    use_auto_wb: bool = False,
    no_auto_bright: bool = False,
    gamma: tuple[float, float] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode a camera RAW file to an sRGB image.

    Parameters
    ----------
    path : str or os.PathLike
        The RAW file.
    output_bits : {8, 16}, optional
        Bits per sample of the result (uint8 or uint16).
    half_size : bool, optional
        Merge each 2x2 Bayer block into one pixel instead of demosaicing (fast, half size).
    use_camera_wb : bool, optional
        Use the white balance the camera recorded (default).
    use_auto_wb : bool, optional
        Compute the white balance from the image; takes priority over ``use_camera_wb``.
        With neither, LibRaw's daylight balance is used.
    no_auto_bright : bool, optional
        Disable LibRaw's automatic brightening.
    gamma : (float, float) or None, optional
        Gamma curve as (power, slope); None keeps LibRaw's default BT.709 curve (2.222, 4.5).

    Returns
    -------
    image : numpy.ndarray
        (H, W, 3) uint8 or uint16 sRGB image, orientation applied.
    metadata : dict
        JSON-safe dict: ``"settings"`` (the decode options used), ``"camera"`` (what rawpy
        exposes: sizes, colour description, black/white levels, white balances, matrices,
        lens and shot information, and make/model for TIFF-based files), ``"libraw_version"``
        and ``"shape"``.

    Raises
    ------
    RawError
        If an option is invalid, or the file is missing, empty, not RAW, corrupt or truncated.
    """
    settings = _check_options(
        output_bits, half_size, use_camera_wb, use_auto_wb, no_auto_bright, gamma
    )
    try:
        fspath = os.fspath(path)
    except TypeError:
        raise RawError(f"not a file path: {path!r}") from None
    name = os.path.basename(fspath) or fspath
    try:
        st = os.stat(fspath)
    except OSError as exc:
        raise RawError(f"cannot read RAW file {name!r}: {exc.strerror or exc}") from None
    if not os.path.isfile(fspath):
        raise RawError(f"cannot read RAW file {name!r}: not a regular file")
    if st.st_size == 0:
        raise RawError(f"cannot read RAW file {name!r}: the file is empty")

    import rawpy  # deferred: only RAW users pay for loading LibRaw

    kwargs: dict[str, Any] = {
        "output_bps": settings["output_bits"],
        "half_size": settings["half_size"],
        "use_camera_wb": settings["use_camera_wb"],
        "use_auto_wb": settings["use_auto_wb"],
        "no_auto_bright": settings["no_auto_bright"],
        "output_color": rawpy.ColorSpace.sRGB,
    }
    if settings["gamma"] is not None:
        kwargs["gamma"] = tuple(settings["gamma"])
    # LibRaw reports damage by printing to stderr: collect it, so that a bad file gives
    # one error (with LibRaw's words in it) instead of stray lines.
    with _stderr_of_c_code() as printed:
        try:
            with rawpy.imread(fspath) as raw:
                camera = _camera_metadata(raw)
                image = raw.postprocess(**kwargs)
            failure = None
        except rawpy.LibRawFileUnsupportedError:
            failure = "not a RAW format LibRaw supports"
        except rawpy.LibRawIOError:
            failure = "the file is truncated or unreadable"
        except MemoryError:
            failure = "not enough memory to decode it"
        except Exception as exc:  # LibRaw fails in many ways; all mean "bad file"
            failure = f"damaged or unsupported ({_error_text(exc)})"
    said = _libraw_said(printed, fspath)
    if failure is not None:
        raise RawError(f"cannot read RAW file {name!r}: {failure}{said}")
    if printed:  # decoded despite damage: let LibRaw's warnings through
        sys.stderr.write("".join(printed))

    image = np.asarray(image)
    want = np.uint8 if settings["output_bits"] == 8 else np.uint16
    if image.ndim == 3 and image.shape[2] == 1:  # monochrome sensors
        image = np.repeat(image, 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise RawError(f"cannot read RAW file {name!r}: LibRaw returned shape {image.shape}")
    image = np.ascontiguousarray(image, dtype=want)

    camera.update(_tiff_make_model(fspath))
    metadata = {
        "source": name,
        "format": os.path.splitext(name)[1].lower().lstrip(".") or None,
        "settings": settings,
        "camera": camera,
        "libraw_version": _jsonable(getattr(rawpy, "libraw_version", None)),
        "shape": list(image.shape),
        "dtype": image.dtype.name,
    }
    return image, metadata


def _to_unit_rgb(rgb: Any) -> np.ndarray:
    """Validate an image and return it as float64 (H, W, 3) in [0, 1]."""
    try:
        arr = np.asarray(rgb)
    except Exception as exc:
        raise ImageError(f"cannot use {type(rgb).__name__} as an image: {exc}") from None
    if arr.dtype == np.uint8:
        unit = arr.astype(np.float64) / 255.0
    elif arr.dtype == np.uint16:
        unit = arr.astype(np.float64) / 65535.0
    elif arr.dtype.kind == "f":
        unit = arr.astype(np.float64)
        if not np.all(np.isfinite(unit)):
            raise ImageError("the image contains NaN or infinite values")
        unit = np.clip(unit, 0.0, 1.0)
    else:
        raise ImageError(f"image dtype must be uint8, uint16 or float in [0, 1], got {arr.dtype}")
    if unit.ndim == 2:
        unit = np.repeat(unit[:, :, None], 3, axis=2)
    elif unit.ndim == 3 and unit.shape[2] in (3, 4):
        unit = unit[:, :, :3]  # alpha has no place in a sensor mosaic
    else:
        raise ImageError(f"image must have shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}")
    height, width = unit.shape[:2]
    if min(height, width) < _MIN_SIDE:
        raise ImageError(
            f"image is {height}x{width}; LibRaw needs at least {_MIN_SIDE} pixels per side"
        )
    if max(height, width) > _MAX_SIDE:
        raise ImageError(f"image is {height}x{width}; at most {_MAX_SIDE} pixels per side")
    return unit


def _srational(values: np.ndarray) -> list[int]:
    out: list[int] = []
    for v in np.asarray(values, dtype=np.float64).ravel():
        frac = Fraction(float(v)).limit_denominator(100_000)
        out += [frac.numerator, frac.denominator]
    return out


def write_dng(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    *,
    pattern: str = "RGGB",
    bits: int = 12,
) -> Path:
    """Write an RGB image as a Bayer-mosaic DNG that LibRaw can decode.

    The image is taken as sRGB, linearised, sampled through the colour filter array and
    scaled to ``bits``.  The DNG declares linear sRGB as the camera colour space and a neutral
    as-shot white balance, so decoding with the camera white balance gives back the colours.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file (written atomically: temporary file, then rename).
    rgb : numpy.ndarray
        (H, W, 3) image (an alpha channel is dropped, (H, W) is taken as grey), uint8, uint16
        or float in [0, 1] (clipped).  Each side must be at least 22 pixels (LibRaw's limit).
    pattern : {"RGGB", "BGGR", "GRBG", "GBRG"}, optional
        The 2x2 colour filter layout, read row by row from the top-left pixel.
    bits : int, optional
        Sensor bit depth, 8 to 16; sets the white level ``2**bits - 1``.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ImageError
        If the image has the wrong shape, dtype or size, or non-finite values.
    ParameterError
        If ``pattern`` or ``bits`` is invalid.
    RawError
        If the file cannot be written.
    """
    if not isinstance(pattern, str) or pattern.upper() not in _CFA_PATTERNS:
        raise ParameterError(f"pattern must be one of {', '.join(_CFA_PATTERNS)}, got {pattern!r}")
    pattern = pattern.upper()
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)):
        raise ParameterError(f"bits must be an integer from 8 to 16, got {bits!r}")
    if not 8 <= bits <= 16:
        raise ParameterError(f"bits must be from 8 to 16, got {bits}")
    try:
        dest = Path(os.fspath(path))
    except TypeError:
        raise ParameterError(f"not a file path: {path!r}") from None
    unit = _to_unit_rgb(rgb)

    # sRGB decoding curve: the sensor records linear light; LibRaw re-applies a gamma.
    linear = np.where(unit <= 0.04045, unit / 12.92, ((unit + 0.055) / 1.055) ** 2.4)
    white = (1 << int(bits)) - 1
    channel = {"R": 0, "G": 1, "B": 2}
    mosaic = np.empty(unit.shape[:2], dtype=np.uint16)
    for i, colour in enumerate(pattern):
        dy, dx = divmod(i, 2)
        plane = linear[dy::2, dx::2, channel[colour]]
        mosaic[dy::2, dx::2] = np.rint(plane * white).astype(np.uint16)

    extratags = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, tuple(channel[c] for c in pattern), True),  # CFAPattern
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion 1.4
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "napari-svd-compress synthetic sensor", True),  # UniqueCameraModel
        (50710, "B", 3, (0, 1, 2), True),  # CFAPlaneColor: R, G, B
        (50711, "H", 1, 1, True),  # CFALayout: rectangular
        (50714, "I", 1, 0, True),  # BlackLevel
        (50717, "I", 1, white, True),  # WhiteLevel
        (50721, "2i", 9, _srational(_XYZ_TO_SRGB), True),  # ColorMatrix1 (XYZ -> camera)
        (50728, "2I", 3, _srational(np.ones(3)), True),  # AsShotNeutral: camera white is grey
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (271, "s", 0, "napari-svd-compress", True),  # Make
        (272, "s", 0, "synthetic sensor", True),  # Model
        (274, "H", 1, 1, True),  # Orientation: top-left
    ]

    import tifffile

    try:
        with atomic_target(dest) as tmp:
            tifffile.imwrite(
                tmp,
                mosaic,
                byteorder="<",
                photometric=32803,  # CFA
                subfiletype=0,  # the main (raw) image
                software="napari-svd-compress",
                metadata=None,
                extratags=extratags,
            )
    except OSError as exc:
        raise RawError(f"cannot write DNG {str(dest)!r}: {exc.strerror or exc}") from None
    return dest


def make_sample_dng(path: str | os.PathLike[str]) -> Path:
    """Write a sample DNG made from scikit-image's bundled astronaut photograph.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.

    Returns
    -------
    pathlib.Path
        The path written: a 12-bit RGGB DNG of 512x512 pixels.  Nothing is downloaded.

    Raises
    ------
    RawError
        If the file cannot be written.
    """
    from skimage import data

    rgb = data.astronaut()  # 512 x 512 x 3 uint8, shipped with scikit-image
    return write_dng(path, rgb, pattern="RGGB", bits=12)
