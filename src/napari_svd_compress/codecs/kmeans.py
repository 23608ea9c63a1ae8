"""Colour quantisation by k-means: a palette of ``k`` colours and an index map.

The clustering is fitted (k-means++ seeding, then Lloyd iterations, all vectorised
NumPy) on a seeded random subsample of the pixels, in RGB or CIELAB.  Assigning every
pixel of a large photograph to its nearest centre would cost ``H*W*k`` distances, so
pixels are first reduced to their 8-bit colours: each distinct colour (at most 2^24,
typically a few hundred thousand to a million and a half) is assigned once and the labels
are read back through lookup tables.  Each palette entry is the mean RGB value of the
pixels assigned to it (one Lloyd step over all pixels), which makes an image with at most
``k`` colours exact.

Image noise dithers the labels along cluster borders, and the dither costs the index map
most of its bytes.  So a pixel whose second-nearest centre's palette colour is no farther
from it in RGB than its nearest one's (nearest is measured in the clustering space) takes
whichever of the two labels more of its four neighbours have; the palette is then refitted.
The squared error cannot grow (for 8-bit images, before the palette's rounding to 16
bits), and the map of a noisy 24-megapixel photograph shrinks by 10-20%.

The palette is sorted by lightness so that neighbouring indices are similar colours and
the index map (one row per image row) suits
:func:`~napari_svd_compress.format.entropy.encode_ints`.  Grayscale images are clustered in
one dimension.

Payloads: ``palette`` (uint16, ``k x C``, values in 1/65535) and ``index`` (``H x W``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from .._threads import thread_map
from ..errors import BundleContentError
from ..format.entropy import decode_ints, encode_ints
from ..registry import Codec, Container, Encoded, Param, encode_one, register

SPACES = ("rgb", "lab")
_BAND_PIXELS = 1 << 20
# Distances are computed for blocks of points of this many float32 values in all (1 MiB,
# in cache: the product has an inner dimension of 3, so memory sets its pace).
_DIST_VALUES = 1 << 18
_PALETTE_SCALE = 65535
# Pixels per block of the colour-code pass (its float32 temporaries stay in cache), and
# threads over the blocks (numpy releases the GIL inside its loops).
_CODE_BLOCK = 1 << 16
# Pixels per block of the decoder's palette lookup.
_DECODE_BLOCK = 1 << 20
# Neighbour-vote passes that settle pixels between their two nearest centres (see encode).
_SMOOTH_PASSES = 3
# The float32 value of each 8-bit level as the image conversion makes it (to_unit).
_LEVELS = np.arange(256, dtype=np.float32) * np.float32(1 / 255)

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


def _srgb_linear() -> np.ndarray:
    """Linear light of the 256 sRGB levels, as scikit-image's rgb2xyz computes it."""
    v = np.arange(256) / 255.0
    high = v > 0.04045
    v[high] = np.power((v[high] + 0.055) / 1.055, 2.4)
    v[~high] /= 12.92
    return v


def _code_features(cells: np.ndarray, c: int, space: str) -> np.ndarray:
    """Clustering features (float64) of 8-bit colour codes (see :func:`_all_codes`).

    Equal to ``_to_feature(_code_colors(cells, c), space)``; for CIELAB the sRGB
    linearisation is a table lookup instead of a power per channel and colour.
    """
    if space != "lab" or c != 3:
        return _code_colors(cells, c)
    from skimage.color.colorconv import xyz_from_rgb, xyz_tristimulus_values

    xyz = _srgb_linear()[_code_levels(cells, c)] @ xyz_from_rgb.T.astype(np.float64)
    # xyz2lab's arithmetic, without its masked assignments.
    xyz /= xyz_tristimulus_values(illuminant="D65", observer="2", dtype=np.float64)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    lab = np.empty_like(f)
    lab[:, 0] = (116.0 * f[:, 1]) - 16.0
    lab[:, 1] = 500.0 * (f[:, 0] - f[:, 1])
    lab[:, 2] = 200.0 * (f[:, 1] - f[:, 2])
    return lab


class _Distances:
    """``|c|^2 - 2 p.c`` (float32) of points ``p`` to the centres, in blocks of points.

    |p|^2 is the same for every centre, so it does not change which is nearest.  The
    product is taken with the centres times -2 (exact: a power of two), which gives the
    same values as scaling it after, one pass fewer.
    """

    def __init__(self, points: np.ndarray, centers: np.ndarray) -> None:
        c = centers.astype(np.float32)
        self.c2 = np.einsum("ij,ij->i", c, c)
        self.cm2 = c * np.float32(-2)
        self.points = points
        self.chunk = max(1, _DIST_VALUES // len(c))
        self.buf = np.empty((min(len(points), self.chunk), len(c)), np.float32)

    def __iter__(self) -> Iterator[tuple[slice, np.ndarray]]:
        for s in range(0, len(self.points), self.chunk):
            p = self.points[s : s + self.chunk].astype(np.float32, copy=False)
            d = np.matmul(p, self.cm2.T, out=self.buf[: len(p)])
            d += self.c2
            yield slice(s, s + len(p)), d


def nearest(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of each point (squared Euclidean), in chunks."""
    out = np.empty(len(points), np.int32)
    for rows, d in _Distances(points, centers):
        out[rows] = np.argmin(d, axis=1)
    return out


def _two_nearest(points: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nearest centre of each point (as :func:`nearest`) and the second nearest
    (the nearest again when there is one centre)."""
    first = np.empty(len(points), np.uint8)
    second = np.empty(len(points), np.uint8)
    for rows, d in _Distances(points, centers):
        i = np.argmin(d, axis=1)
        first[rows] = i
        if len(centers) > 1:
            d[np.arange(len(d)), i] = np.inf
            i = np.argmin(d, axis=1)
        second[rows] = i
    return first, second


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
    # Equal rows have equal projections (on a generic direction), so more than k distinct
    # projections rule out k or fewer distinct rows without sorting the rows.
    if len(x) <= k or len(np.unique(x @ np.cos(np.arange(1, x.shape[1] + 1)))) <= k:
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
    x32 = x.astype(np.float32)
    columns = np.ascontiguousarray(x.T)
    for _ in range(iterations):
        labels = nearest(x32, centers)
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        sums = np.stack([np.bincount(labels, weights=col, minlength=k) for col in columns], axis=1)
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


def _code_levels(codes: np.ndarray, c: int) -> np.ndarray:
    """(N, C) 8-bit levels of colour codes."""
    if c == 1:
        return codes[:, None].astype(np.int64)
    return np.stack([codes & 255, (codes >> 8) & 255, (codes >> 16) & 255], axis=1)


def _code_colors(codes: np.ndarray, c: int) -> np.ndarray:
    """(N, C) float64 colours in [0, 1] of colour codes."""
    return _code_levels(codes, c) / 255.0


def _all_codes(plane: np.ndarray) -> tuple[np.ndarray, bool]:
    """The 8-bit colour code of every pixel, ``r | g << 8 | b << 16`` (or the grey
    level), as a flat int64 array, and whether every value is exactly its 8-bit level
    (``_LEVELS``), as an 8-bit image's is.

    Works in blocks of rows on up to ``THREADS`` threads; the result does not depend on
    their number.
    """
    h, w, c = plane.shape
    codes = np.empty(h * w, np.int64)
    rows = max(1, _CODE_BLOCK // w)
    blocks = [(r, min(r + rows, h)) for r in range(0, h, rows)]
    # Integers up to 2^24 are exact in float32, so the code is one product with these.
    weights = np.array([1, 1 << 8, 1 << 16][:c], np.float32)

    def block(i: int) -> bool:
        r0, r1 = blocks[i]
        x = plane[r0:r1].reshape(-1, c)
        t = np.multiply(x, np.float32(255))
        np.clip(t, 0, 255, out=t)
        np.rint(t, out=t)
        codes[r0 * w : r1 * w] = t @ weights
        # _LEVELS[t] without the lookup: the same float32 product.
        return bool(np.array_equal(t * _LEVELS[1], x))

    return codes, all(thread_map(block, range(len(blocks))))


def _luma_order(palette: np.ndarray) -> np.ndarray:
    """Order of palette entries by luma (or grey level)."""
    luma = palette @ np.array([0.299, 0.587, 0.114]) if palette.shape[1] == 3 else palette[:, 0]
    return np.argsort(luma, kind="stable")


def _smooth(
    labels: np.ndarray, cand: np.ndarray, first: np.ndarray, second: np.ndarray
) -> np.ndarray:
    """Settle candidate pixels (flat indices ``cand`` into the (h, w) ``labels``, each
    labelled ``first``, allowed ``second``) by votes of their four neighbours: a pixel
    takes whichever of its two labels more neighbours have (ties keep the label).  All
    candidates update at once, ``_SMOOTH_PASSES`` times; ``labels`` changes in place.
    Returns the candidates' labels."""
    h, w = labels.shape
    flat = labels.reshape(-1)
    r, col = np.divmod(cand, w)
    # A side beyond the image reads the pixel itself; its vote is taken back below.
    off = [(r == 0, -w), (r == h - 1, w), (col == 0, -1), (col == w - 1, 1)]
    sides = [cand + np.where(out, 0, d) for out, d in off]
    outside = sum(out.astype(np.int8) for out, _ in off)
    cur = flat[cand]
    for _ in range(_SMOOTH_PASSES):
        own = outside * (cur == first)
        v1 = -own
        v2 = own - outside
        for i in sides:
            v = flat[i]
            v1 += v == first
            v2 += v == second
        new = np.where(v2 > v1, second, np.where(v1 > v2, first, cur))
        if np.array_equal(new, cur):
            break
        flat[cand] = cur = new
    return cur


class _Colours:
    """What every palette of one plane shares: the 8-bit colour code of each pixel, the
    distinct codes ("cells", each assigned once: the image has far fewer than pixels)
    with their pixel counts, their clustering features and the fitting subsamples.

    A sweep over the palette size computes these once (:func:`encode_many`).
    """

    def __init__(self, plane: np.ndarray) -> None:
        h, w, c = plane.shape
        self.plane, self.c, self.n = plane, c, h * w
        self.codes, self.exact = _all_codes(plane)
        self.size = 1 << (8 * c)
        self.inverse: np.ndarray | None = None
        if self.n >= self.size >> 4:
            # Lookup tables indexed by code (16 MiB each for colour).
            hist = np.bincount(self.codes, minlength=self.size)
            self.cells = np.flatnonzero(hist != 0)  # faster than on the int64 counts
            self.weight = hist[self.cells].astype(np.float64)
            del hist
        else:
            # Small images: sorting the codes costs less than filling the tables.
            self.cells, self.inverse, weight = np.unique(
                self.codes, return_inverse=True, return_counts=True
            )
            self.weight = weight.astype(np.float64)
        self._features: dict[str, np.ndarray] = {}
        self._samples: dict[tuple[str, int, int], np.ndarray] = {}

    def per_pixel(self, values: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """Values of the cells spread to the pixels (or to the flat pixel indices ``at``)."""
        if self.inverse is not None:
            return values[self.inverse] if at is None else values[self.inverse[at]]
        table = np.zeros(self.size, values.dtype)
        table[self.cells] = values
        return table[self.codes] if at is None else table[self.codes[at]]

    def features(self, space: str) -> np.ndarray:
        """Clustering features of the cells."""
        if space not in self._features:
            self._features[space] = _code_features(self.cells, self.c, space)
        return self._features[space]

    def sample(self, space: str, size: int, seed: int) -> np.ndarray:
        """Features of the seeded random subsample of ``size`` pixels the palette is fitted to."""
        key = (space, size, seed)
        if key not in self._samples:
            n = self.n
            m = min(size, n)
            rng = np.random.default_rng(seed)
            pick = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
            self._samples[key] = _to_feature(self.plane.reshape(-1, self.c)[pick], space)
        return self._samples[key]


def encode_many(
    plane: np.ndarray,
    param_sets: list[dict[str, Any]],
    progress: Callable[[float], None],
    containers: list[Container],
) -> Iterator[Encoded]:
    """Encode one plane at several parameter sets (a sweep over ``colors``), computing
    the colour codes, their cells and features once (:class:`_Colours`).  Each bundle
    is byte for byte the one :func:`encode` gives for its parameters alone."""
    colours = _Colours(plane)
    n = len(param_sets)
    for i, params in enumerate(param_sets):
        yield _encode(colours, params, lambda f, i=i: progress((i + f) / n))


# Encode one plane (see :mod:`napari_svd_compress.registry`); ``container`` is unused.
encode = encode_one(encode_many)


def _encode(
    colours: _Colours, params: dict[str, Any], progress: Callable[[float], None]
) -> Encoded:
    """One palette size of :func:`encode_many`."""
    plane = colours.plane
    h, w, c = plane.shape
    k = params["colors"]
    space = params["space"] if c == 3 else "rgb"
    flat = plane.reshape(-1, c)
    n = h * w
    sample = colours.sample(space, params["sample"], params["seed"])
    centers = kmeans_fit(sample, k, iterations=params["iterations"], seed=params["seed"])
    k_fit = len(centers)
    progress(0.4)
    cells, weight, per_pixel = colours.cells, colours.weight, colours.per_pixel
    first, second = _two_nearest(colours.features(space), centers)
    # Pixel counts and sums per label: the palette is the mean of each cluster.
    counts = np.bincount(first, weights=weight, minlength=k_fit)
    # The cells' colours, one channel at a time.
    levels = [cells if c == 1 else (cells >> (8 * j)) & 255 for j in range(c)]
    labels = None
    if colours.exact:
        # Every pixel holds its cell's colour, so the sums run over cells.
        colors = [_LEVELS[q].astype(np.float64) for q in levels]
        sums = np.stack(
            [np.bincount(first, weights=weight * x, minlength=k_fit) for x in colors], axis=1
        )
    else:
        colors = [q / 255.0 for q in levels]
        labels = per_pixel(first)
        sums = np.zeros((k_fit, c))
        for s in range(0, n, _BAND_PIXELS):
            lab = labels[s : s + _BAND_PIXELS]
            vals = flat[s : s + _BAND_PIXELS]
            for j in range(c):
                sums[:, j] += np.bincount(lab, weights=vals[:, j], minlength=k_fit)
    # Number the used labels by luma (or grey level), so that nearby indices are nearby
    # colours, before the labels are spread to the pixels.
    used = np.flatnonzero(counts > 0)
    order = _luma_order(sums[used] / counts[used, None])
    remap = np.zeros(k_fit, np.uint8)
    remap[used[order]] = np.arange(len(used))
    has_second = counts[second] > 0
    first, second = remap[first], remap[second]
    counts, sums = counts[used[order]], sums[used[order]]
    labels = per_pixel(first) if labels is None else remap[labels]
    progress(0.6)
    # Pixels whose second label is no worse in RGB with this palette settle by their
    # neighbours' votes (_smooth; see the module docstring), then the palette is refitted.
    palette = sums / counts[:, None]
    one, two = first.astype(np.intp), second.astype(np.intp)
    worse = np.zeros(len(cells))
    for j, x in enumerate(colors):
        # (x - p2)^2 - (x - p1)^2 = (p2 - p1) (p2 + p1 - 2x)
        p1, p2 = palette[one, j], palette[two, j]
        x = p1 + p2 - 2 * x
        x *= p2 - p1
        worse += x
    cand = np.flatnonzero(per_pixel(has_second & (one != two) & (worse <= 0)))
    if len(cand):
        was = labels[cand]
        now = _smooth(labels.reshape(h, w), cand, was, per_pixel(second, cand))
        moved = now != was
        if moved.any():
            m = len(counts)
            a, b = was[moved].astype(np.intp), now[moved].astype(np.intp)
            vals = flat[cand[moved]].astype(np.float64)
            counts += np.bincount(b, minlength=m) - np.bincount(a, minlength=m)
            for j in range(c):
                sums[:, j] += np.bincount(b, weights=vals[:, j], minlength=m)
                sums[:, j] -= np.bincount(a, weights=vals[:, j], minlength=m)
    progress(0.8)
    used = np.flatnonzero(counts > 0)
    palette = sums[used] / counts[used, None]
    order = _luma_order(palette)
    if len(used) < len(counts) or np.any(order != np.arange(len(order))):
        # The refit emptied a label or changed the order (rare): number them again.
        remap = np.zeros(len(counts), np.uint8)
        remap[used[order]] = np.arange(len(used))
        labels = remap[labels]
    labels = labels.reshape(h, w)
    qpal = np.rint(np.clip(palette[order], 0, 1) * _PALETTE_SCALE).astype(np.uint16)
    payloads = {
        "palette": encode_ints(qpal),
        # zlib's and lzma's runs often beat the Laplace coder on index maps (3x on a smooth
        # 24-megapixel photo).  quick: lzma at a fast preset (6 takes longer than the
        # clustering), and large maps coded once by the coder that wins on samples.
        "index": encode_ints(labels, methods=("raw", "zlib", "lzma", "laplace"), quick=True),
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
    # colors[index], faster: each colour as one C-float item, gathered in blocks of rows
    # on threads (mode="clip" does not buffer; the index was checked above).
    item = np.dtype((np.void, 4 * c))
    table = np.ascontiguousarray(colors).view(item).reshape(-1)
    out = np.empty((h, w, c), np.float32)
    items = out.view(item).reshape(h, w)
    rows = max(1, _DECODE_BLOCK // max(w, 1))
    starts = range(0, h, rows)

    def block(r: int) -> None:
        np.take(table, index[r : r + rows], out=items[r : r + rows], mode="clip")

    thread_map(block, starts)
    return out


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
        encode_many=encode_many,
        sweep=("colors", (2, 4, 8, 16, 32, 64, 128, 256)),
        short=_short,
    )
)
