"""What quantising and entropy coding the SVD factors costs and saves, at a fixed rank.

For every photo in FOLDER, at rank K (default 50) per RGB channel: the bundle's size
against the same factors stored as float32 (U, S, Vt), and the PSNR of the decoded bundle
against the exact (float64, unquantised) truncation.

Usage::

    python benchmarks/svd_quantisation.py FOLDER [--rank 50] [--out docs/svd.md]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

import napari_svd_compress as nsc
from napari_svd_compress.metrics import psnr


def exact_truncation(image: np.ndarray, k: int) -> np.ndarray:
    x = image.astype(np.float64)
    out = np.empty_like(x)
    for c in range(x.shape[-1]):
        u, s, vt = np.linalg.svd(x[..., c], full_matrices=False)
        out[..., c] = (u[:, :k] * s[:k]) @ vt[:k]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--rank", type=int, default=50)
    ap.add_argument("--out", help="markdown file to append the table to")
    args = ap.parse_args()
    k = args.rank
    rows = []
    for path in sorted(Path(args.folder).glob("*.png")):
        image = np.asarray(Image.open(path).convert("RGB"))
        h, w, _ = image.shape
        r = nsc.compress(image, "svd", rank=k, color="rgb")
        float_bytes = 3 * ((h + w) * k + k) * 4
        exact = psnr(image, exact_truncation(image, k), 255.0)
        rows.append((path.name, r.nbytes, float_bytes, exact, r.psnr))
        print(
            f"{path.name}: {r.nbytes} B vs {float_bytes} B float32; "
            f"PSNR {r.psnr:.3f} vs exact {exact:.3f}"
        )
    fraction = [b / f for _, b, f, _, _ in rows]
    loss = [e - q for *_, e, q in rows]
    lines = [
        f"### Quantisation at rank {k} (RGB, per channel), {len(rows)} photos",
        "",
        "| photo | bundle bytes | float32 factors bytes | bundle / float32 | "
        "PSNR exact dB | PSNR bundle dB | loss dB |",
        "|---|---|---|---|---|---|---|",
    ]
    for (name, b, f, e, q), fr in zip(rows, fraction):
        lines.append(f"| {name} | {b} | {f} | {fr:.3f} | {e:.3f} | {q:.3f} | {e - q:.3f} |")
    lines.append(
        f"| **median** | | | **{statistics.median(fraction):.3f}** | | | "
        f"**{statistics.median(loss):.3f}** (max {max(loss):.3f}) |"
    )
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n" + table)


if __name__ == "__main__":
    main()
