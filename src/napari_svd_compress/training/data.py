"""Training data of the learned codec: images at several scales and random crops.

NumPy and Pillow only (no torch): the crops are float32 arrays that
:func:`napari_svd_compress.training.loop.train` moves to the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from os import PathLike
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_SUFFIXES", "SKIMAGE_PHOTOS", "CropSampler", "load_training_images"]

#: Scikit-image's bundled colour photographs used in addition to the user's folder.
SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)

#: Files of a training folder that are read (by suffix, lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


def _load_rgb(path: Path, log: Callable[[str], None]) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:  # unreadable files are skipped, not fatal
        log(f"skipping {path}: {exc}")
        return None


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))


def load_training_images(
    folder: str | PathLike[str] | None,
    crop: int,
    *,
    use_skimage: bool = True,
    max_side: int = 1024,
    log: Callable[[str], None] | None = None,
) -> list[np.ndarray]:
    """Load the training pyramid: every image at several downscales (uint8 HxWx3).

    Large photographs (e.g. 2560 px wallpapers) are first reduced to ``max_side``
    (which also removes JPEG blocking), then added at scales 1, 0.7 and 0.5.  Images
    smaller than ``crop`` after scaling are dropped.

    Parameters
    ----------
    folder : path, optional
        Folder whose images (:data:`IMAGE_SUFFIXES`) are used; unreadable files are
        skipped.
    crop : int
        Side of the training crops: smaller scaled images are dropped.
    use_skimage : bool
        Also use scikit-image's bundled photographs (:data:`SKIMAGE_PHOTOS`; those
        that need a download are skipped, nothing is fetched).
    max_side : int
        Longest side an image is first reduced to.
    log : callable, optional
        Called with a line of text for each file skipped.

    Returns
    -------
    list of ndarray
    """
    report = log or (lambda text: None)
    sources: list[np.ndarray] = []
    if folder:
        for p in sorted(Path(folder).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                img = _load_rgb(p, report)
                if img is not None:
                    sources.append(img)
    if use_skimage:
        import skimage.data

        for name in SKIMAGE_PHOTOS:
            try:
                img = getattr(skimage.data, name)()
            except Exception:  # some need a download; never fetch anything
                continue
            if img.ndim == 3 and img.shape[2] >= 3:
                sources.append(np.ascontiguousarray(img[..., :3]))
    out = []
    for img in sources:
        side = max(img.shape[:2])
        if side > max_side:
            img = _resize(img, max_side / side)
        for s in (1.0, 0.7, 0.5):
            r = img if s == 1.0 else _resize(img, s)
            if min(r.shape[:2]) >= crop:
                out.append(np.ascontiguousarray(r))
    return out


class CropSampler:
    """Random crops with flips, each image weighted by the square root of its area.

    A fraction ``flat`` of the crops is replaced by synthetic flat colours or ramps.

    Parameters
    ----------
    images : list of ndarray
        uint8 ``(H, W, 3)`` images, each at least ``crop`` on both sides.
    crop : int
        Side of the crops.
    seed : int
        Seed of the random generator.
    flat : float
        Fraction of synthetic flat crops.
    """

    def __init__(self, images: list[np.ndarray], crop: int, seed: int, flat: float = 0.04) -> None:
        self.images = images
        self.flat = flat
        self.crop = crop
        w = np.array([math.sqrt(i.shape[0] * i.shape[1]) for i in images])
        self.p = w / w.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> np.ndarray:
        """``n`` crops as float32 ``(n, 3, crop, crop)`` in [0, 1]."""
        c = self.crop
        out = np.empty((n, 3, c, c), np.float32)
        for k in range(n):
            img = self.images[self.rng.choice(len(self.images), p=self.p)]
            y = self.rng.integers(0, img.shape[0] - c + 1)
            x = self.rng.integers(0, img.shape[1] - c + 1)
            patch = img[y : y + c, x : x + c]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            if self.rng.random() < 0.5:
                patch = patch[::-1]
            out[k] = patch.transpose(2, 0, 1) / 255.0
            if self.rng.random() < self.flat:
                out[k] = self._flat()
        return out

    def _flat(self) -> np.ndarray:
        """A flat colour or a gentle linear ramp: teaches the decoder to keep flats flat
        (photographs have too few exactly flat areas for a short run to learn it)."""
        c = self.crop
        colour = self.rng.random(3).astype(np.float32)
        ramp = self.rng.normal(0, 0.1, size=(3, 2)).astype(np.float32)
        if self.rng.random() < 0.5:
            ramp[:] = 0
        yy, xx = np.mgrid[0:c, 0:c].astype(np.float32) / c - 0.5
        img = colour[:, None, None] + ramp[:, :1, None] * yy + ramp[:, 1:, None] * xx
        return np.clip(img, 0.0, 1.0)
