"""Colour quantisation by k-means: a palette of ``k`` colours and an index map.

The clustering is fitted (k-means++ seeding, then Lloyd iterations, all vectorised
NumPy) on a seeded random subsample of the pixels, in RGB or CIELAB.  Assigning every
pixel of a large photograph to its nearest centre would cost ``H*W*k`` distances, so
pixels are first reduced to their 8-bit colours: each distinct colour (at most 2^24,
typically a few hundred thousand) is assigned once and the labels are read back through
a lookup table, in bands of rows so memory stays bounded.  Finally each palette entry
is set to the mean RGB value of the pixels assigned to it (one Lloyd step over all
pixels), which makes an image with at most ``k`` colours exact.

The palette is sorted by lightness so that neighbouring indices are similar colours and
the index map (one row per image row) suits
:func:`~napari_svd_compress.format.entropy.encode_ints`.  Grayscale images are clustered in
one dimension.

Payloads: ``palette`` (uint16, ``k x C``, values in 1/65535) and ``index`` (``H x W``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import BundleContentError
from ..format.entropy import decode_ints, encode_ints
from ..registry import Codec, Container, Encoded, Param, register

SPACES = ("rgb", "lab")
_BAND_PIXELS = 1 << 20
# Distances are computed for this many points at a time ( x k float32 values).
_DIST_CHUNK = 1 << 15
_PALETTE_SCALE = 65535

PARAMS = (
    Param("colors", int, 16, "Number of colours k in the palette.", low=2, high=256),
    Param(
        "space",
        str,
        "lab",
        "Colour space of the clustering: lab (CIELAB, perceptual) or rgb.",
        choices=SPACES,
    ),
    Param(
        "sample",
        int,
        100_000,
        "Pixels drawn at random to fit the palette (all pixels if the image is smaller).",
        low=100,
        high=1 << 28,
    ),
    Param("iterations", int, 50, "Most Lloyd iterations of the fit.", low=1, high=10_000),
    Param(
        "seed",
        int,
        0,
        "Seed of the subsample and of k-means++ (results are reproducible).",
        low=0,
        high=2**32 - 1,
    ),
)


def _short(params: Mapping[str, Any]) -> str:
    return f"k={params['colors']} {params['space']}"


def _to_feature(rgb: np.ndarray, space: str) -> np.ndarray:
    """(N, C) float RGB in [0, 1] to clustering features (float64)."""
    if space == "lab" and rgb.shape[1] == 3:
        from skimage.color import rgb2lab

        return rgb2lab(np.clip(rgb, 0, 1).astype(np.float64)[None]).reshape(-1, 3)
    return rgb.astype(np.float64)


def nearest(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of each point (squared Euclidean), in chunks."""
    c = centers.astype(np.float32)
    c2 = np.einsum("ij,ij->i", c, c)
    out = np.empty(len(points), np.int32)
    for s in range(0, len(points), _DIST_CHUNK):
        p = points[s : s + _DIST_CHUNK].astype(np.float32)
        # |p|^2 is the same for every centre, so it does not change the argmin.
        d = c2[None, :] - 2.0 * (p @ c.T)
        out[s : s + _DIST_CHUNK] = np.argmin(d, axis=1)
    return out


def kmeans_fit(
    x: np.ndarray, k: int, *, iterations: int = 50, seed: int = 0, tol: float = 1e-6
) -> np.ndarray:
    """Fit ``k`` centres to the rows of ``x`` (k-means++ seeding, then Lloyd).

    Parameters
    ----------
    x : ndarray, shape (N, D)
    k : int
        Number of centres; fewer are returned if ``x`` has fewer distinct rows.
    iterations : int
        Most Lloyd iterations.
    seed : int
        Seed of the k-means++ draws.
    tol : float
        Stop when no centre moves by more than ``tol`` times the data's spread.

    Returns
    -------
    ndarray, shape (k', D), float64
    """
    x = np.asarray(x, dtype=np.float64)
    uniq = np.unique(x, axis=0)
    if len(uniq) <= k:
        return uniq
    rng = np.random.default_rng(seed)
    n = len(x)
    centers = np.empty((k, x.shape[1]))
    centers[0] = x[rng.integers(n)]
    d2 = np.sum((x - centers[0]) ** 2, axis=1)
    for j in range(1, k):
        # k-means++ (Arthur & Vassilvitskii 2007): draw proportionally to D^2.
        total = d2.sum()
        if total <= 0:
            idx = rng.integers(n)
        else:
            idx = int(np.searchsorted(np.cumsum(d2), rng.random() * total))
            idx = min(idx, n - 1)
        centers[j] = x[idx]
        d2 = np.minimum(d2, np.sum((x - centers[j]) ** 2, axis=1))
    spread = float(np.sqrt(np.mean(np.var(x, axis=0)))) or 1.0
    for _ in range(iterations):
        labels = nearest(x, centers)
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        sums = np.stack(
            [np.bincount(labels, weights=x[:, j], minlength=k) for j in range(x.shape[1])],
            axis=1,
        )
        new = centers.copy()
        full = counts > 0
        new[full] = sums[full] / counts[full, None]
        empty = np.flatnonzero(~full)
        if len(empty):
            # An empty cluster takes the points farthest from their centres.
            dist = np.sum((x - new[labels]) ** 2, axis=1)
            new[empty] = x[np.argsort(dist)[::-1][: len(empty)]]
        shift = float(np.max(np.abs(new - centers)))
        centers = new
        if shift <= tol * spread and not len(empty):
            break
    return centers


def _codes(band: np.ndarray) -> np.ndarray:
    """8-bit colour codes of an (h, w, C) band: one integer per pixel."""
    q = np.rint(np.clip(band, 0, 1) * 255).astype(np.uint32)
    if q.shape[2] == 1:
        return q[..., 0].ravel()
    return ((q[..., 0] << 16) | (q[..., 1] << 8) | q[..., 2]).ravel()


def _code_colors(codes: np.ndarray, c: int) -> np.ndarray:
    if c == 1:
        return (codes[:, None] / 255.0).astype(np.float64)
    return np.stack([(codes >> 16) & 255, (codes >> 8) & 255, codes & 255], axis=1) / 255.0


def encode(
    plane: np.ndarray,
    params: dict[str, Any],
    progress: Callable[[float], None],
    container: Container,
) -> Encoded:
    """Encode one plane (see :mod:`napari_svd_compress.registry`); ``container`` is unused."""
    h, w, c = plane.shape
    k = params["colors"]
    space = params["space"] if c == 3 else "rgb"
    flat = plane.reshape(-1, c)
    rng = np.random.default_rng(params["seed"])
    n = h * w
    m = min(params["sample"], n)
    pick = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
    centers = kmeans_fit(
        _to_feature(flat[pick], space), k, iterations=params["iterations"], seed=params["seed"]
    )
    k_fit = len(centers)
    progress(0.4)
    band_rows = max(1, _BAND_PIXELS // w)
    bands = [(r, min(r + band_rows, h)) for r in range(0, h, band_rows)]
    # Each distinct 8-bit colour is assigned once: the image has far fewer colours
    # than pixels, and a lookup table turns codes into labels.
    present = np.zeros(1 << (24 if c == 3 else 8), bool)
    for r0, r1 in bands:
        present[_codes(plane[r0:r1])] = True
    cells = np.flatnonzero(present).astype(np.uint32)
    del present
    lut = np.zeros(1 << (24 if c == 3 else 8), np.uint8)
    lut[cells] = nearest(_to_feature(_code_colors(cells, c), space), centers)
    progress(0.6)
    labels = np.empty((h, w), np.uint8)
    sums = np.zeros((k_fit, c))
    counts = np.zeros(k_fit)
    for r0, r1 in bands:
        lab = lut[_codes(plane[r0:r1])]
        labels[r0:r1] = lab.reshape(r1 - r0, w)
        counts += np.bincount(lab, minlength=k_fit)
        vals = plane[r0:r1].reshape(-1, c)
        for j in range(c):
            sums[:, j] += np.bincount(lab, weights=vals[:, j], minlength=k_fit)
    progress(0.8)
    used = np.flatnonzero(counts > 0)
    palette = sums[used] / counts[used, None]
    remap = np.zeros(k_fit, np.uint8)
    # Sort by luma (or grey level) so nearby indices are nearby colours.
    luma = palette @ np.array([0.299, 0.587, 0.114]) if c == 3 else palette[:, 0]
    order = np.argsort(luma, kind="stable")
    remap[used[order]] = np.arange(len(used), dtype=np.uint8)
    labels = remap[labels]
    qpal = np.rint(np.clip(palette[order], 0, 1) * _PALETTE_SCALE).astype(np.uint16)
    payloads = {
        "palette": encode_ints(qpal),
        # lzma takes longer than the clustering itself; zlib's runs often beat the
        # Laplace coder on index maps (3x on a smooth 24-megapixel photo).
        "index": encode_ints(labels, methods=("raw", "zlib", "laplace")),
    }
    progress(1.0)
    return Encoded(meta={"colors": len(used), "space": space}, payloads=payloads)


def decode(
    meta: Mapping[str, Any], payloads: Mapping[str, bytes], shape: tuple[int, ...]
) -> np.ndarray:
    h, w, c = shape
    try:
        k = int(meta["colors"])
    except (KeyError, TypeError, ValueError):
        raise BundleContentError("kmeans: the plane's meta is malformed") from None
    if not 1 <= k <= 256:
        raise BundleContentError(f"kmeans: {k} colours is out of range")
    for name in ("palette", "index"):
        if name not in payloads:
            raise BundleContentError(f"kmeans: payload {name!r} is missing")
    palette = decode_ints(payloads["palette"], shape=(k, c), dtype=np.uint16)
    index = decode_ints(payloads["index"], shape=(h, w), dtype=np.uint8)
    if index.size and int(index.max()) >= k:
        raise BundleContentError("kmeans: the index map refers to colours beyond the palette")
    colors = (palette.astype(np.float32) / np.float32(_PALETTE_SCALE)).astype(np.float32)
    return colors[index]


CODEC = register(
    Codec(
        name="kmeans",
        label="k-means colour quantisation",
        description=(
            "A palette of k colours fitted by k-means (on a random subsample, in CIELAB "
            "or RGB) and an entropy-coded map of palette indices."
        ),
        params=PARAMS,
        encode=encode,
        decode=decode,
        sweep=("colors", (2, 4, 8, 16, 32, 64, 128, 256)),
        short=_short,
    )
)
