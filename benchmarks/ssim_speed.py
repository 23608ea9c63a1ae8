"""SSIM and PSNR of a 24-megapixel RGB pair: ours against scikit-image's.

Usage::

    PYTHONPATH=src python benchmarks/ssim_speed.py [--size 6000x4000] [--repeats 3]
        [--noise 3.0] [--seed 0]

The reference is scikit-image's ``chelsea`` photo (451 x 300, the 3:2 of a camera)
upscaled bilinearly to the size; the test image is the reference with camera-like
Gaussian noise (sigma ``--noise`` levels, seeded), both uint8.  Each of our functions
and its scikit-image counterpart (``structural_similarity(..., data_range=255,
channel_axis=-1)``, its defaults otherwise; ``peak_signal_noise_ratio``) run
alternately, ``--repeats`` times each, so that a busy machine slows both alike; the
medians, their ratio and the difference of the values are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.transform import resize

from napari_svd_compress import metrics


def make_pair(width: int, height: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A photograph-like uint8 RGB pair of ``height x width``: upscaled photo and noisy copy."""
    photo = resize(data.chelsea(), (height, width), order=1, preserve_range=True)
    reference = np.clip(np.rint(photo), 0, 255).astype(np.uint8)
    del photo
    rng = np.random.default_rng(seed)
    test = np.empty_like(reference)
    for start in range(0, height, 500):  # in bands: no 600 MB float64 noise array
        band = reference[start : start + 500].astype(np.float32)
        band += rng.normal(0.0, noise, band.shape).astype(np.float32)
        test[start : start + 500] = np.clip(np.rint(band), 0, 255)
    return reference, test


def race(
    ours: Callable[[], float], theirs: Callable[[], float], repeats: int
) -> tuple[float, float, float, float]:
    """Median seconds of ``ours`` and ``theirs`` run alternately, and their last values."""
    t_ours, t_theirs = [], []
    v_ours = v_theirs = float("nan")
    for _ in range(repeats):
        t0 = time.perf_counter()
        v_ours = float(ours())
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        v_theirs = float(theirs())
        t_theirs.append(time.perf_counter() - t0)
    return statistics.median(t_ours), statistics.median(t_theirs), v_ours, v_theirs


def report(name: str, result: tuple[float, float, float, float]) -> None:
    t_ours, t_theirs, v_ours, v_theirs = result
    print(
        f"{name}: ours {t_ours:.3f} s, scikit-image {t_theirs:.3f} s, "
        f"ratio {t_ours / t_theirs:.3f}; values {v_ours:.12f} / {v_theirs:.12f}, "
        f"|difference| {abs(v_ours - v_theirs):.3g}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--noise", type=float, default=3.0, help="noise sigma, in levels")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    reference, test = make_pair(width, height, args.noise, args.seed)
    print(f"{width} x {height} RGB uint8, noise sigma {args.noise}, {args.repeats} runs each")

    report(
        "SSIM",
        race(
            lambda: metrics.ssim(reference, test),
            lambda: structural_similarity(reference, test, data_range=255, channel_axis=-1),
            args.repeats,
        ),
    )
    report(
        "PSNR",
        race(
            lambda: metrics.psnr(reference, test),
            lambda: peak_signal_noise_ratio(reference, test, data_range=255),
            args.repeats,
        ),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
