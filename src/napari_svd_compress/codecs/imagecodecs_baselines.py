"""Baselines through imagecodecs: JPEG XL, JPEG 2000 and HTJ2K, at 8 or 16 bits.

The codecs people choose today for photographs (JPEG XL, libjxl) and for scientific
and medical data (JPEG 2000, OpenJPEG; its high-throughput variant HTJ2K, OpenJPH).
As for the Pillow baselines (:mod:`.standard`), the bundle is the format's own file
(payload ``"file"``: a ``.jxl``, a ``.jp2``, an HTJ2K ``.j2k`` codestream) that other
programs open, decoded through :mod:`..format.native`, which refuses decompression
bombs.

Unlike the Pillow baselines, they keep the input's precision: an 8-bit input is
written as an 8-bit file and anything finer (uint16, int16, 32-bit integers, floats) as
a 16-bit file, so a uint16 microscopy image decodes to uint16 with all its levels
(the API tells the depth through ``Container.quantum``).  Grey and RGB.

They register only when imagecodecs (the ``formats`` extra) is installed and offers
the format (asking costs about 10 ms at import); without it the package works as before.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..registry import Codec, Container, Encoded, Param, register
from .standard import file_decoder

__all__ = ["available", "file_bits"]


def file_bits(container: Container) -> int:
    """The bit depth a plane is written at: 8 for 8-bit inputs (quantum 1/255 or
    coarser), 16 for everything finer (uint16, wider integers, floats: quantum 0)."""
    q = container.quantum
    return 8 if q > 0 and q >= 1.0 / 255.0 * (1 - 1e-9) else 16


def _pixels(plane: np.ndarray, bits: int) -> np.ndarray:
    """A ``[0, 1]`` float plane ``(H, W, C)`` as uint8/uint16 ``(H, W)`` or ``(H, W, 3)``."""
    top = 255.0 if bits == 8 else 65535.0
    out = np.clip(np.rint(plane * np.float32(top)), 0, top)
    out = out.astype(np.uint8 if bits == 8 else np.uint16)
    return np.ascontiguousarray(out[..., 0] if out.shape[2] == 1 else out)


def _encode_jpegxl(pixels: np.ndarray, params: Mapping[str, Any]) -> bytes:
    import imagecodecs

    if params["lossless"]:
        return imagecodecs.jpegxl_encode(pixels, lossless=True, effort=int(params["effort"]))
    return imagecodecs.jpegxl_encode(
        pixels, level=int(params["quality"]), effort=int(params["effort"])
    )


def _encode_jpeg2000(pixels: np.ndarray, params: Mapping[str, Any]) -> bytes:
    import imagecodecs

    psnr = float(params["psnr"])
    # OpenJPEG's fixed-quality mode: the one quality layer is cut at this PSNR (dB,
    # of the file's own bit depth); 0 is the reversible (lossless) 5/3 wavelet.
    return imagecodecs.jpeg2k_encode(
        pixels, level=psnr, reversible=psnr == 0, codecformat="JP2", numthreads=1
    )


def _encode_htj2k(pixels: np.ndarray, params: Mapping[str, Any]) -> bytes:
    import imagecodecs

    qstep = float(params["qstep"])
    # OpenJPH: the quantisation step of the irreversible 9/7 wavelet, relative to the
    # bit depth; 0 is the reversible (lossless) 5/3 wavelet.
    return imagecodecs.htj2k_encode(pixels, level=qstep, reversible=qstep == 0)


_ENCODERS: dict[str, Callable[[np.ndarray, Mapping[str, Any]], bytes]] = {
    "jpegxl": _encode_jpegxl,
    "jpeg2000": _encode_jpeg2000,
    "htj2k": _encode_htj2k,
}
#: The format :func:`~napari_svd_compress.format.native.sniff` names each codec's file,
#: which is also the extension it is written with.
_FILE = {"jpegxl": "jxl", "jpeg2000": "jp2", "htj2k": "j2k"}
#: imagecodecs' codec classes.
_IMAGECODECS = {"jpegxl": "JPEGXL", "jpeg2000": "JPEG2K", "htj2k": "HTJ2K"}


def _make_encode(name: str) -> Callable[[np.ndarray, dict[str, Any], Callable, Container], Encoded]:
    def encode(
        plane: np.ndarray, params: dict[str, Any], progress: Callable, container: Container
    ) -> Encoded:
        """Encode one plane as the format's file, at 8 or 16 bits (see :func:`file_bits`)."""
        progress(0.0)
        bits = file_bits(container)
        data = _ENCODERS[name](_pixels(plane, bits), params)
        progress(1.0)
        return Encoded(meta={"format": _FILE[name], "bits": bits}, payloads={"file": bytes(data)})

    return encode


def _short(params: Mapping[str, Any]) -> str:
    if params.get("lossless"):
        return "lossless"
    for key, text in (("quality", "q"), ("psnr", "psnr"), ("qstep", "qstep")):
        if key in params:
            value = params[key]
            return "lossless" if key != "quality" and value == 0 else f"{text}={value}"
    return ""


_DEPTH = (
    "8-bit inputs give 8-bit files; 16-bit, wider integer and float inputs give 16-bit "
    "files, so a uint16 image keeps all its levels."
)
_SPECS: dict[str, dict[str, Any]] = {
    "jpegxl": {
        "label": "JPEG XL (imagecodecs)",
        "description": (
            "Baseline: libjxl's JPEG XL encoder through imagecodecs.  The result is a plain "
            f".jxl file.  {_DEPTH}"
        ),
        "params": (
            Param(
                "quality",
                int,
                90,
                "JPEG XL quality (libjxl's scale: 90 is visually lossless, 100 the best "
                "lossy setting; lower = smaller file).",
                low=0,
                high=100,
            ),
            Param(
                "effort",
                int,
                7,
                "Encoder effort (1 = fastest, 9 = smallest file; libjxl's default is 7).",
                low=1,
                high=9,
            ),
            Param("lossless", bool, False, "Mathematically lossless (quality is ignored)."),
        ),
        "sweep": ("quality", (8, 20, 35, 50, 65, 80, 88, 93, 97)),
    },
    "jpeg2000": {
        "label": "JPEG 2000 (imagecodecs)",
        "description": (
            "Baseline: OpenJPEG's JPEG 2000 encoder through imagecodecs, at a target PSNR.  "
            f"The result is a plain .jp2 file.  {_DEPTH}"
        ),
        "params": (
            Param(
                "psnr",
                float,
                40.0,
                "Target PSNR in dB of the file's bit depth (higher = better and larger; "
                "0 = lossless, reversible wavelet).",
                low=0,
                high=150,
            ),
        ),
        "sweep": ("psnr", (24.0, 26.0, 28.0, 30.0, 32.0, 34.0, 36.0, 38.0, 41.0, 44.0)),
    },
    "htj2k": {
        "label": "HTJ2K (imagecodecs)",
        "description": (
            "Baseline: High-Throughput JPEG 2000 (Part 15) by OpenJPH through imagecodecs: "
            "JPEG 2000's wavelet with a much faster block coder.  The result is a .j2k "
            f"codestream.  {_DEPTH}"
        ),
        "params": (
            Param(
                "qstep",
                float,
                0.01,
                "Quantisation step, relative to the bit depth (smaller = better and "
                "larger; 0 = lossless, reversible wavelet).",
                low=0,
                high=1,
            ),
        ),
        "sweep": ("qstep", (1.0, 0.6, 0.4, 0.25, 0.15, 0.1, 0.06, 0.04, 0.025, 0.015)),
    },
}


def available(name: str) -> bool:
    """Whether imagecodecs is installed and offers the codec ``name``."""
    if importlib.util.find_spec("imagecodecs") is None:
        return False
    try:
        import imagecodecs

        return bool(getattr(imagecodecs, _IMAGECODECS[name]).available)
    except Exception:  # a broken install: leave the codec out rather than fail the import
        return False


def _codec(name: str) -> Codec:
    spec = _SPECS[name]
    return Codec(
        name=name,
        label=spec["label"],
        description=spec["description"],
        params=spec["params"],
        encode=_make_encode(name),
        decode=file_decoder(name, _FILE[name]),
        sweep=spec["sweep"],
        native=_FILE[name],
        short=_short,
    )


JPEGXL = register(_codec("jpegxl")) if available("jpegxl") else None
JPEG2000 = register(_codec("jpeg2000")) if available("jpeg2000") else None
HTJ2K = register(_codec("htj2k")) if available("htj2k") else None
