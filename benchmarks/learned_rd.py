"""Rate-distortion of the learned codec against Pillow JPEG (and WebP), with BD-rate.

Usage::

    python benchmarks/learned_rd.py FOLDER [--model M.svdm] [--json out.json]

For every PNG/JPEG in FOLDER: each quality level of the learned codec is encoded and
decoded through the codec's own ``encode``/``decode`` (its payload bytes plus
``OVERHEAD`` bytes for the .svdz container), and JPEG (and WebP when Pillow has it) at
quality 5, 10, ..., 95.  PSNR is over RGB with data range 255 after rounding to uint8.

BD-rate (Bjøntegaard) per image: points with 0.05 <= bpp <= 2 are kept; for each codec
``ln(rate)`` is fitted by a cubic polynomial in PSNR; the difference of the fits is
averaged over the overlapping PSNR interval; ``BD = exp(mean diff) - 1``.  The table
reports the mean over images (negative = fewer bits than JPEG at equal PSNR).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

OVERHEAD = 200  # bytes of .svdz container per image (manifest + ZIP headers), estimated
BPP_RANGE = (0.05, 2.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def pillow_points(img: np.ndarray, fmt: str) -> list[tuple[float, float]]:
    from PIL import Image

    pts = []
    pil = Image.fromarray(img)
    for q in range(5, 100, 5):
        buf = io.BytesIO()
        pil.save(buf, format=fmt, quality=q)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        pts.append((8 * len(buf.getvalue()) / (img.shape[0] * img.shape[1]), psnr(img, dec)))
    return pts


def learned_points(img: np.ndarray, model: str) -> tuple[list[tuple[float, float]], list[float]]:
    from napari_svd_compress.codecs.learned import codec
    from napari_svd_compress.codecs.learned.model import load_model

    x = img.astype(np.float32) / 255.0
    pts, secs = [], []
    for q in load_model(model).levels:
        t0 = time.perf_counter()
        enc = codec.encode(x, {"quality": q, "model": model}, lambda f: None)
        out = codec.decode(enc.meta, enc.payloads, x.shape)
        secs.append(time.perf_counter() - t0)
        nbytes = sum(len(v) for v in enc.payloads.values()) + OVERHEAD
        dec = np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)
        pts.append((8 * nbytes / (img.shape[0] * img.shape[1]), psnr(img, dec)))
    return pts, secs


def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    """Bjøntegaard delta rate of ``test`` against ``anchor`` (fraction, e.g. -0.3)."""

    def keep(pts):
        p = np.array([t for t in pts if BPP_RANGE[0] <= t[0] <= BPP_RANGE[1]])
        return p if len(p) >= 4 else None

    a, t = keep(anchor), keep(test)
    if a is None or t is None:
        return None
    lo = max(a[:, 1].min(), t[:, 1].min())
    hi = min(a[:, 1].max(), t[:, 1].max())
    if hi <= lo:
        return None
    pa = np.polyint(np.polyfit(a[:, 1], np.log(a[:, 0]), 3))
    pt = np.polyint(np.polyfit(t[:, 1], np.log(t[:, 0]), 3))
    diff = (np.polyval(pt, hi) - np.polyval(pt, lo) - np.polyval(pa, hi) + np.polyval(pa, lo)) / (
        hi - lo
    )
    return float(np.exp(diff) - 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="folder of evaluation photographs (never trained on)")
    parser.add_argument("--model", default="", help=".svdm model (default: built-in)")
    parser.add_argument("--json", default=None, help="write all points here")
    args = parser.parse_args(argv)

    from PIL import Image, features

    files = sorted(
        p for p in Path(args.folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")
    )
    if not files:
        print(f"no images in {args.folder}", file=sys.stderr)
        return 1
    has_webp = features.check("webp")
    results = []
    for f in files:
        img = np.asarray(Image.open(f).convert("RGB"))
        ours, secs = learned_points(img, args.model)
        jpeg = pillow_points(img, "JPEG")
        webp = pillow_points(img, "WEBP") if has_webp else []
        r = {
            "image": f.name,
            "learned": ours,
            "jpeg": jpeg,
            "webp": webp,
            "bd_learned": bd_rate(jpeg, ours),
            "bd_webp": bd_rate(jpeg, webp) if webp else None,
            "seconds": secs,
        }
        results.append(r)
        bdw = f"{r['bd_webp']:+.1%}" if r["bd_webp"] is not None else "n/a"
        bdl = f"{r['bd_learned']:+.1%}" if r["bd_learned"] is not None else "n/a"
        print(f"{f.name:40s} BD-rate learned {bdl:>8s}  webp {bdw:>8s}", flush=True)

    levels = len(results[0]["learned"])
    print("\nquality  mean bpp  mean PSNR (dB)")
    for i in range(levels):
        b = np.mean([r["learned"][i][0] for r in results])
        p = np.mean([r["learned"][i][1] for r in results])
        print(f"{i + 1:7d}  {b:8.3f}  {p:8.2f}")
    for key in ("bd_learned", "bd_webp"):
        vals = [r[key] for r in results if r[key] is not None]
        if vals:
            print(f"mean {key} vs JPEG: {np.mean(vals):+.1%} over {len(vals)} images")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
