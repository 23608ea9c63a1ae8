"""Run time of the learned codec: onnxruntime transforms + constriction range coding.

Encoding a plane:

1. Grayscale is replicated to RGB.  The image is conceptually padded to a multiple of
   16 by symmetric reflection (never materialised as a whole: each tile gathers its
   pixels through reflected indices).
2. The analysis transform runs on tiles of ``TILE`` x ``TILE`` latent positions
   (768 px), each with ``MARGIN`` latent positions (32 px) of real image context on
   interior sides; only each tile's core latents are kept.  The transform's four
   5 x 5, stride-2 convolutions make latent ``i`` depend on pixels ``16 i - 30`` to
   ``16 i + 30``, so 32 px of context is all a core latent sees: the assembled latent
   equals the untiled one up to floating-point noise (on onnxruntime's CPU kernels it
   is bit-identical).  Tiles are slices of the image (copied once, into the NCHW
   input); only those on the bottom and right edges gather reflected rows or columns.
   Memory stays bounded by the tile size.
3. Latents are multiplied by the level's channel gains and rounded to integers.
4. The integers are range coded channel by channel (``constriction`` queue coder) by
   :mod:`.context`: discrete Laplace tables chosen per latent by the activity of its
   neighbourhood in the channels coded before (the level's learned tables only fix
   the channel order); escaped values are stored verbatim as int32 in the
   ``escapes`` payload.

Decoding reverses this; the synthesis transform also runs in tiles whose margins
(``MARGIN`` latent positions) are cropped, so there are no seams: a pixel depends on
the latents within 1 + 1/2 + 1/4 + 1/8 < 2 positions of it.  onnxruntime runs the
synthesis' transposed convolutions as sub-pixel convolutions (see
:func:`.model.subpixel_graph`), several times faster, to the same values up to float
noise.  Sessions keep a memory arena across a job's tiles and shrink it after the last
one (:func:`.model.release_options`).  The choice of table uses integer arithmetic
only and the tables are integer, so the decoded integers are identical on every
machine; only the final float transform may differ in the last bits.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...errors import BundleContentError, BundleVersionError, ParameterError
from ...registry import Encoded
from . import context
from .model import BUILTIN_PATH, LearnedModel, load_model, release_options, trusted_model

__all__ = ["channel_order", "decode", "decode_latents", "encode", "encode_latents"]

CODEC_VERSION = 2  # 2: context-adaptive coding (context.py) instead of fixed tables
TILE = 48  # latent positions per tile side (768 px): bounds onnxruntime's buffers
MARGIN = 2  # latent positions of context on interior tile sides (see the module doc)
_MAX_BITS_PER_SYMBOL = 64  # bound on payload size per latent symbol (validation)

#: onnxruntime ``intra_op_num_threads``; 0 lets onnxruntime choose (one thread per
#: physical core; 2 threads run about 1.8 times as fast as 1 on a 2-core machine).
#: Overridden by the environment variable ``NAPARI_SVD_LEARNED_THREADS``.  The latents
#: do not depend on it.
THREADS = 0


def _threads() -> int:
    env = os.environ.get("NAPARI_SVD_LEARNED_THREADS", "")
    try:
        return max(0, int(env)) if env else THREADS
    except ValueError:
        return THREADS


def _reflect(idx: np.ndarray, n: int) -> np.ndarray:
    """Map indices outside ``[0, n)`` back in by symmetric reflection (period 2n)."""
    j = np.mod(idx, 2 * n)
    return np.where(j >= n, 2 * n - 1 - j, j)


def _axis(a: int, b: int, n: int) -> slice | np.ndarray:
    """Positions ``a..b-1`` of an axis of length ``n``: a slice when they all lie inside
    it, else reflected indices (the bottom and right tiles of an image whose size is
    not a multiple of the stride)."""
    return slice(a, b) if 0 <= a and b <= n else _reflect(np.arange(a, b), n)


def _window(rgb: np.ndarray, rows: slice | np.ndarray, cols: slice | np.ndarray) -> np.ndarray:
    """``rgb[rows][:, cols]``: a view when both are slices, else a copy of the tile."""
    if isinstance(rows, np.ndarray) and isinstance(cols, np.ndarray):
        return rgb[rows[:, None], cols[None, :]]
    win = rgb[rows if isinstance(rows, slice) else slice(None)]
    win = win[:, cols if isinstance(cols, slice) else slice(None)]
    if isinstance(rows, np.ndarray):
        return win[rows]
    return win[:, cols] if isinstance(cols, np.ndarray) else win


def _spans(n: int, tile: int) -> list[tuple[int, int]]:
    return [(a, min(a + tile, n)) for a in range(0, n, tile)]


def _latent_size(h: int, w: int, stride: int = 16) -> tuple[int, int]:
    return -(-h // stride), -(-w // stride)


def _analysis(model: LearnedModel, rgb: np.ndarray, progress: Callable[[float], None]):
    """Latents ``(M, h, w)`` float32 of an ``(H, W, 3)`` image, computed in tiles."""
    s = model.stride
    hgt, wid = rgb.shape[:2]
    lh, lw = _latent_size(hgt, wid, s)
    sess = model.session("analysis", _threads())
    release = release_options()
    out = np.empty((model.channels, lh, lw), np.float32)
    tiles = [(ys, xs) for ys in _spans(lh, TILE) for xs in _spans(lw, TILE)]
    bufs: dict[tuple[int, int], np.ndarray] = {}
    for k, ((y0, y1), (x0, x1)) in enumerate(tiles):
        # Context only on interior sides, so a single-tile image costs nothing extra.
        my0, my1 = (MARGIN if y0 > 0 else 0), (MARGIN if y1 < lh else 0)
        mx0, mx1 = (MARGIN if x0 > 0 else 0), (MARGIN if x1 < lw else 0)
        rows = _axis((y0 - my0) * s, (y1 + my1) * s, hgt)
        cols = _axis((x0 - mx0) * s, (x1 + mx1) * s, wid)
        win = _window(rgb, rows, cols)  # (h, w, 3): a view except at the padded edges
        x = bufs.get(win.shape[:2])
        if x is None:
            x = bufs[win.shape[:2]] = np.empty((1, 3, *win.shape[:2]), np.float32)
        # NCHW, cleaned as copied: NaN and values below 0 become 0, values above 1 become 1.
        np.fmax(win.transpose(2, 0, 1), 0.0, out=x[0])
        np.fmin(x, 1.0, out=x)
        last = k == len(tiles) - 1
        y = sess.run(None, {"image": x}, release if last else None)[0][0]
        out[:, y0:y1, x0:x1] = y[:, my0 : my0 + (y1 - y0), mx0 : mx0 + (x1 - x0)]
        progress(0.85 * (k + 1) / len(tiles))
    return out


def _synthesis(
    model: LearnedModel, latent: np.ndarray, hgt: int, wid: int, clip: bool = False
) -> np.ndarray:
    """Image ``(H, W, 3)`` float32 from scaled latents ``(M, h, w)``, in tiles; clipped
    to [0, 1] as each tile is copied in when ``clip``."""
    s = model.stride
    _, lh, lw = latent.shape
    sess = model.session("synthesis", _threads())
    release = release_options()
    out = np.empty((hgt, wid, 3), np.float32)
    tiles = [(ys, xs) for ys in _spans(lh, TILE) for xs in _spans(lw, TILE)]
    for k, ((y0, y1), (x0, x1)) in enumerate(tiles):
        a0, a1 = max(0, y0 - MARGIN), min(lh, y1 + MARGIN)
        b0, b1 = max(0, x0 - MARGIN), min(lw, x1 + MARGIN)
        z = np.ascontiguousarray(latent[None, :, a0:a1, b0:b1])
        last = k == len(tiles) - 1
        img = sess.run(None, {"latent": z}, release if last else None)[0][0]  # (3, h*s, w*s)
        py0, px0 = (y0 - a0) * s, (x0 - b0) * s
        oy1, ox1 = min(y1 * s, hgt), min(x1 * s, wid)
        core = img[:, py0 : py0 + oy1 - y0 * s, px0 : px0 + ox1 - x0 * s].transpose(1, 2, 0)
        if clip:
            np.clip(core, 0.0, 1.0, out=out[y0 * s : oy1, x0 * s : ox1])
        else:
            out[y0 * s : oy1, x0 * s : ox1] = core
    return out


def channel_order(model: LearnedModel, level: int) -> np.ndarray:
    """The order in which the channels of ``level`` are coded (see :mod:`.context`)."""
    i = level - 1
    return context.channel_order(model.pmf[i], model.lo[i], model.size[i])


def encode_latents(model: LearnedModel, level: int, symbols: np.ndarray) -> dict[str, bytes]:
    """Entropy-code integer latents ``(M, h, w)``; return the payloads."""
    return context.encode(symbols, channel_order(model, level))


def decode_latents(meta: Mapping[str, Any], payloads: Mapping[str, bytes]) -> np.ndarray:
    """Decode the integer latents ``(M, h, w)`` of an encoded plane (after validation).

    The result depends only on the payloads and integer arithmetic, so it is
    bit-identical across machines and thread counts.
    """
    model, level, shape = _check(meta, payloads, None)
    return context.decode(payloads, shape, channel_order(model, level))


def encode(plane: np.ndarray, params: Mapping[str, Any], progress: Callable) -> Encoded:
    """Encode one ``(H, W, C)`` float32 plane in [0, 1], C = 1 or 3."""
    model_path = str(params.get("model") or "")
    model = load_model(model_path)
    level = int(params.get("quality", 3))
    if level not in model.levels:
        raise ParameterError(
            f"model {model.name!r} provides quality levels {list(model.levels)}, not {level}"
        )
    if plane.ndim != 3 or plane.shape[2] not in (1, 3):
        raise ParameterError(f"learned codec needs 1 or 3 channels, got shape {plane.shape}")
    hgt, wid, ch = plane.shape
    rgb = plane.astype(np.float32, copy=False)  # tiles are cleaned (NaN, clip) as gathered
    if ch == 1:
        rgb = np.broadcast_to(rgb, (hgt, wid, 3))
    progress(0.0)
    latent = _analysis(model, rgb, progress)
    latent *= model.gain[level - 1][:, None, None]
    symbols = np.rint(latent).astype(np.int32)
    del latent
    payloads = encode_latents(model, level, symbols)
    progress(1.0)
    meta = {
        "codec_version": CODEC_VERSION,
        "model": {
            **model.identity(),
            # Only a hint for the error message when the model is missing: decoding never
            # loads a file named by a bundle (see model.trusted_model).
            "path": "" if _is_builtin(model) else os.path.abspath(model_path),
        },
        "quality": level,
        "latent_shape": [int(v) for v in symbols.shape],
        "stride": model.stride,
        "tiling": {"tile": TILE * model.stride, "margin": MARGIN * model.stride},
        "crc32": zlib.crc32(payloads["latents"]),
        "escapes": len(payloads["escapes"]) // 4,
    }
    return Encoded(meta=meta, payloads=payloads)


def _is_builtin(model: LearnedModel) -> bool:
    return os.path.abspath(model.path) == os.path.abspath(BUILTIN_PATH)


def _check(
    meta: Mapping[str, Any], payloads: Mapping[str, bytes], shape: tuple[int, ...] | None
) -> tuple[LearnedModel, int, tuple[int, int, int]]:
    """Validate ``meta`` and payload sizes; return (model, level, latent shape)."""
    if not isinstance(meta, Mapping):
        raise BundleContentError("learned-codec metadata must be a mapping")
    if meta.get("codec_version") != CODEC_VERSION:
        raise BundleVersionError(
            f"learned-codec stream version {meta.get('codec_version')!r} is not supported "
            f"(this version reads {CODEC_VERSION})"
        )
    ident = meta.get("model")
    if not isinstance(ident, Mapping) or not all(
        isinstance(ident.get(k), str) for k in ("name", "version", "sha256", "path")
    ):
        raise BundleContentError("learned-codec metadata lacks the model identity")
    model = trusted_model(ident)
    if model is None:
        where = f" (it was at {ident['path']!r} when encoding)" if ident["path"] else ""
        raise BundleVersionError(
            f"this plane was encoded with model {ident['name']!r} version {ident['version']!r} "
            f"(sha256 {ident['sha256'][:12]}...), which is not the built-in model nor one "
            f"loaded by this process{where}; load it first (decompress --model FILE, or "
            "napari_svd_compress.codecs.learned.model.load_model(FILE))"
        )
    level = meta.get("quality")
    if not isinstance(level, int) or isinstance(level, bool) or level not in model.levels:
        raise BundleContentError(f"learned-codec quality {level!r} is not one of the model's")
    ls = meta.get("latent_shape")
    if (
        not isinstance(ls, list)
        or len(ls) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in ls)
        or ls[0] != model.channels
    ):
        raise BundleContentError(f"learned-codec latent shape {ls!r} is invalid")
    if meta.get("stride") != model.stride:
        raise BundleContentError("learned-codec stride does not match the model")
    if shape is not None:
        if len(shape) != 3 or shape[2] not in (1, 3) or shape[0] < 1 or shape[1] < 1:
            raise BundleContentError(f"learned codec cannot produce a plane of shape {shape}")
        if tuple(ls[1:]) != _latent_size(shape[0], shape[1], model.stride):
            raise BundleContentError(
                f"latent shape {ls} does not match the plane shape {tuple(shape)}"
            )
    bits = payloads.get("latents")
    esc = payloads.get("escapes", b"")
    models = payloads.get("models")
    if not all(isinstance(v, bytes | bytearray | memoryview) for v in (bits, esc, models)):
        raise BundleContentError(
            "learned-codec payloads 'latents', 'escapes' and 'models' are missing"
        )
    n_sym = ls[0] * ls[1] * ls[2]
    if len(bits) % 4 or len(bits) > n_sym * _MAX_BITS_PER_SYMBOL // 8 + 64:
        raise BundleContentError(f"learned-codec bitstream has an invalid size ({len(bits)} B)")
    if len(esc) % 4 or len(esc) // 4 > n_sym or meta.get("escapes") != len(esc) // 4:
        raise BundleContentError("learned-codec escape payload has an invalid size")
    if meta.get("crc32") != zlib.crc32(bytes(bits)):
        raise BundleContentError("learned-codec bitstream is corrupt or truncated (CRC mismatch)")
    return model, level, (ls[0], ls[1], ls[2])


def decode(
    meta: Mapping[str, Any], payloads: Mapping[str, bytes], shape: tuple[int, ...]
) -> np.ndarray:
    """Decode one plane to float32 of exactly ``shape`` (H, W, 1 or 3)."""
    shape = tuple(int(v) for v in shape)
    model, level, (m, lh, lw) = _check(meta, payloads, shape)
    symbols = context.decode(payloads, (m, lh, lw), channel_order(model, level))
    latent = symbols.astype(np.float32)
    del symbols
    latent *= model.inv_gain[level - 1][:, None, None]
    if shape[2] == 3:  # clipped tile by tile, as copied out (one pass fewer)
        return _synthesis(model, latent, shape[0], shape[1], clip=True)
    img = _synthesis(model, latent, shape[0], shape[1])
    img = img.mean(axis=2, keepdims=True, dtype=np.float32)
    return np.clip(img, 0.0, 1.0, out=img)
