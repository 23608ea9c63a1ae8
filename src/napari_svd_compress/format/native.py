"""Reading the files of the baseline codecs as bundles.

JPEG, WebP, AVIF and PNG go through Pillow; JPEG XL (``.jxl``), JPEG 2000 (``.jp2``
files and ``.j2k``/``.j2c`` codestreams, HTJ2K included) through imagecodecs, the
optional ``formats`` extra (without it, JPEG 2000 falls back on Pillow's OpenJPEG and
JPEG XL is refused with a :class:`~napari_svd_compress.errors.BundleVersionError`
saying what to install).  Every decoder reads the image size from the file's header and
refuses decompression bombs before it allocates anything.  8- and 16-bit files decode to
uint8 and uint16 (a 12-bit JPEG 2000 file to uint16 values up to 4095), float JPEG XL
files to float32 in their nominal ``[0, 1]``.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np

from .._image import ImageSpec, dtype_range
from ..errors import BundleContentError, BundleFormatError, BundleLimitError, BundleVersionError

MAX_PIXELS = 1 << 30

_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"

_SIGNATURES = {
    "jpeg": lambda d: d[:3] == b"\xff\xd8\xff",
    "webp": lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP",
    "avif": lambda d: d[4:8] == b"ftyp" and d[8:12] in (b"avif", b"avis"),
    "png": lambda d: d[:8] == b"\x89PNG\r\n\x1a\n",
    "jxl": lambda d: d[:2] == b"\xff\x0a" or d[:12] == _JXL_CONTAINER,
    "jp2": lambda d: d[:12] == _JP2_SIGNATURE,
    "j2k": lambda d: d[:4] == _J2K_SOC_SIZ,
}

#: The formats decoded through imagecodecs, and the file extensions they come with.
IMAGECODECS_FORMATS = ("jxl", "jp2", "j2k")
EXTENSIONS = {"jxl": (".jxl",), "jp2": (".jp2", ".jpx", ".jph"), "j2k": (".j2k", ".j2c", ".jhc")}

_INSTALL_HINT = "pip install 'napari-svd-compress[formats]'"


def sniff(data: bytes) -> str | None:
    """The baseline format whose signature ``data`` starts with, or None."""
    for name, test in _SIGNATURES.items():
        if test(data):
            return name
    return None


def decode_native(data: bytes) -> np.ndarray:
    """Decode a baseline file (JPEG, WebP, AVIF, PNG, JPEG XL, JPEG 2000), refusing
    decompression bombs and anything that is not an image of 1, 3 or 4 channels.

    Raises
    ------
    BundleFormatError
        The bytes are not a readable file of a known format.
    BundleLimitError
        The header declares more than :data:`MAX_PIXELS` pixels.
    BundleVersionError
        A JPEG XL file without imagecodecs installed.
    """
    fmt = sniff(data)
    if fmt in IMAGECODECS_FORMATS:
        try:
            import imagecodecs  # noqa: F401
        except ImportError:
            if fmt == "jxl":
                raise BundleVersionError(
                    f"reading JPEG XL files needs imagecodecs ({_INSTALL_HINT})"
                ) from None
        else:
            return _decode_imagecodecs(data, fmt)
    return _decode_pillow(data)


def _decode_pillow(data: bytes) -> np.ndarray:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise BundleLimitError(f"{im.width}x{im.height} pixels is beyond the limit")
                if im.mode not in ("L", "RGB", "RGBA", "I;16"):
                    im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
                return np.asarray(im).copy()
    except BundleLimitError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        raise BundleFormatError(f"cannot decode the image file ({exc})") from None


# --- imagecodecs: JPEG XL and JPEG 2000 ----------------------------------------------------


def image_size(data: bytes, fmt: str | None = None) -> tuple[int, int]:
    """``(width, height)`` declared by a JPEG XL or JPEG 2000 file's header.

    Reads a few dozen bytes: what lets the decoders refuse a decompression bomb before
    the library under them allocates the image.

    Raises
    ------
    BundleFormatError
        The header is missing, truncated or malformed.
    """
    fmt = fmt or sniff(data)
    readers = {
        "jxl": _jxl_size,
        "jp2": lambda d: _j2k_size(_jp2_codestream(d)),
        "j2k": _j2k_size,
    }
    if fmt not in readers:
        raise BundleFormatError("not a JPEG XL or JPEG 2000 file")
    try:
        return readers[fmt](data)
    except (IndexError, struct.error):
        raise BundleFormatError(f"the {fmt.upper()} header is truncated or malformed") from None


def _boxes(data: bytes, start: int = 0, end: int | None = None):
    """ISO base media boxes ``(type, payload start, payload end)`` of ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    for _ in range(10_000):
        if pos + 8 > end:
            return
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        head = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            head = 16
        elif size == 0:
            size = end - pos
        if size < head:
            raise BundleFormatError(f"a box of {size} bytes is malformed")
        yield kind, pos + head, min(pos + size, end)
        pos += size


def _jp2_codestream(data: bytes) -> bytes:
    for kind, start, stop in _boxes(data):
        if kind == b"jp2c":
            return data[start:stop]
    raise BundleFormatError("the JP2 file has no codestream ('jp2c' box)")


def _j2k_size(code: bytes) -> tuple[int, int]:
    """Image size from the SIZ marker segment right after SOC."""
    if code[:4] != _J2K_SOC_SIZ:
        raise BundleFormatError("the JPEG 2000 codestream does not start with SOC and SIZ")
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", code[8:24])
    if xsiz <= xosiz or ysiz <= yosiz:
        raise BundleFormatError("the JPEG 2000 image size is invalid")
    return xsiz - xosiz, ysiz - yosiz


def _jxl_codestream(data: bytes) -> bytes:
    """The codestream of a JPEG XL file: the file itself, or the first ``jxlc`` or
    ``jxlp`` box of the container (enough for the size header)."""
    if data[:2] == b"\xff\x0a":
        return data
    for kind, start, stop in _boxes(data):
        if kind == b"jxlc":
            return data[start:stop]
        if kind == b"jxlp":
            return data[start + 4 : stop]  # a 4-byte sequence number comes first
    raise BundleFormatError("the JPEG XL container has no codestream box")


class _Bits:
    """Little-endian bit reader (JPEG XL's bit order)."""

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data[:64], "little")
        self.available = 8 * min(len(data), 64)
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > self.available:
            raise IndexError("truncated")
        out = (self.value >> self.pos) & ((1 << n) - 1)
        self.pos += n
        return out


# JPEG XL SizeHeader: the aspect ratios coded by 'ratio' 1..7.
_JXL_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


def _jxl_size(data: bytes) -> tuple[int, int]:
    """Image size from the JPEG XL SizeHeader (ISO/IEC 18181-1, section D.2)."""
    code = _jxl_codestream(data)
    if code[:2] != b"\xff\x0a":
        raise BundleFormatError("the JPEG XL codestream has no signature")
    bits = _Bits(code[2:])

    def dimension(small: bool) -> int:
        if small:
            return (bits.read(5) + 1) * 8
        return 1 + bits.read((9, 13, 18, 30)[bits.read(2)])

    small = bool(bits.read(1))
    height = dimension(small)
    ratio = bits.read(3)
    if ratio == 0:
        width = dimension(small)
    else:
        num, den = _JXL_RATIOS[ratio]
        width = height * num // den
    return width, height


def _decode_imagecodecs(data: bytes, fmt: str) -> np.ndarray:
    import imagecodecs

    width, height = image_size(data, fmt)
    if width * height > MAX_PIXELS:
        raise BundleLimitError(f"{width}x{height} pixels is beyond the limit")
    try:
        if fmt == "jxl":
            # The first frame of an animation: a frame count is not in the header.
            image = imagecodecs.jpegxl_decode(data, index=0)
        else:
            image = imagecodecs.jpeg2k_decode(data)
    except MemoryError:
        raise BundleLimitError("not enough memory to decode the image") from None
    except Exception as exc:  # imagecodecs raises its own error types, and others
        kind = "JPEG XL" if fmt == "jxl" else "JPEG 2000"
        raise BundleFormatError(f"cannot decode the {kind} file ({exc})") from None
    return _normalised(np.asarray(image), fmt)


def _normalised(image: np.ndarray, fmt: str) -> np.ndarray:
    """A decoded image as grey ``(H, W)``, RGB or RGBA, in a dtype the library takes."""
    if image.ndim == 4 and image.shape[0] == 1:  # one frame of an animation
        image = image[0]
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] == 2:  # grey and alpha
        image = np.concatenate([np.repeat(image[..., :1], 3, axis=2), image[..., 1:]], axis=2)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
        raise BundleContentError(
            f"the {fmt} file decodes to shape {image.shape}: not a grey, RGB or RGBA image"
        )
    if image.dtype == np.float16:
        image = image.astype(np.float32)
    if image.dtype.kind not in "uif" or image.dtype.itemsize > 4:
        raise BundleContentError(f"the {fmt} file decodes to unsupported dtype {image.dtype}")
    return np.ascontiguousarray(image)


def native_spec(image: np.ndarray) -> ImageSpec:
    """The image spec of a decoded baseline file (grey, RGB or RGBA).

    Integer images have their dtype's range (0..255, 0..65535: a 12-bit JPEG 2000 file is
    a uint16 image whose values stop at 4095); float images (JPEG XL) the nominal
    ``[0, 1]``.
    """
    rgb = image.ndim == 3
    value_range = dtype_range(image.dtype) or (0.0, 1.0)
    return ImageSpec(
        shape=image.shape,
        dtype=image.dtype,
        rgb=rgb,
        alpha=rgb and image.shape[-1] == 4,
        value_range=value_range,
    )
