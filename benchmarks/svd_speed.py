"""SVD compression of a 24-megapixel RGB image: our codec against the seed scripts' method.

The seed scripts ran a full ``numpy.linalg.svd`` (float64) per channel and kept the
leading ``k`` triplets.  Each method runs in its own subprocess, so its peak resident
memory (``ru_maxrss``) is its own; times are medians over ``--repeats`` runs.

Usage::

    python benchmarks/svd_speed.py PHOTO [--size 6000x4000] [--repeats 3] [--out docs/benchmarks.md]

The photo is upscaled (bicubic) to the size and given mild noise (sigma 2 levels), so the
spectrum is full-rank like a real camera image.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_image(photo: str, size: tuple[int, int], path: Path) -> None:
    from PIL import Image

    w, h = size
    img = Image.open(photo).convert("RGB").resize((w, h), Image.BICUBIC)
    arr = np.asarray(img).astype(np.float32)
    rng = np.random.default_rng(0)
    arr += rng.normal(0, 2, arr.shape).astype(np.float32)
    np.save(path, np.clip(np.rint(arr), 0, 255).astype(np.uint8))


def child(kind: str, path: str, rank: int | None, percent: float | None) -> dict:
    image = np.load(path)
    out: dict = {}
    if kind == "seed":
        # The seed scripts: full float64 SVD per channel, truncate, cast.
        t0 = time.perf_counter()
        rec = np.empty(image.shape, np.float64)
        for c in range(3):
            u, s, vt = np.linalg.svd(image[..., c].astype(np.float64), full_matrices=False)
            k = rank
            rec[..., c] = (u[:, :k] * s[:k]) @ vt[:k]
        out["seconds"] = time.perf_counter() - t0
        rec8 = np.clip(np.rint(rec), 0, 255).astype(np.uint8)
        from napari_svd_compress.metrics import psnr

        out["psnr"] = psnr(image, rec8, 255.0)
        out["float64_factor_bytes"] = 3 * (sum(image.shape[:2]) + 1) * rank * 8
    else:
        import napari_svd_compress as nsc

        params = {"rank": rank} if rank else {"percent": percent}
        t0 = time.perf_counter()
        r = nsc.compress(image, "svd", color="rgb", **params)
        out["seconds_total"] = time.perf_counter() - t0
        out["seconds"] = r.encode_s
        out["decode_s"] = r.decode_s
        out["psnr"] = r.psnr
        out["bytes"] = r.nbytes
        out["bpp"] = r.bpp
        out["ranks"] = [c["rank"] for c in r.info["channels"]]
        if rank:
            # The same truncation without quantisation, to separate the two losses.
            from napari_svd_compress.codecs import _linalg
            from napari_svd_compress.metrics import psnr

            rec = np.empty(image.shape, np.float32)
            for c in range(3):
                u, s, vt = _linalg.truncated_svd(image[..., c].astype(np.float32), rank)
                rec[..., c] = (u * s) @ vt
            out["psnr_unquantised"] = psnr(
                image, np.clip(np.rint(rec), 0, 255).astype(np.uint8), 255.0
            )
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(*args: str) -> dict:
    cmd = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(args[0], args[2:], json.dumps(result), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photo", nargs="?")
    ap.add_argument("--size", default="6000x4000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed-repeats", type=int, default=1)
    ap.add_argument(
        "--percent-repeats",
        type=int,
        default=1,
        help="percent=0.9 keeps thousands of components of a noisy photo: slow",
    )
    ap.add_argument("--out", default=None, help="markdown file to append the table to")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "PATH", "RANK", "PERCENT"))
    args = ap.parse_args()
    if args.child:
        kind, path, rank, percent = args.child
        res = child(kind, path, int(rank) or None, float(percent) or None)
        print(json.dumps(res))
        return
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "img.npy"
        make_image(args.photo, (w, h), path)
        runs = {
            "seed: full SVD, rank 50": [
                run_child("seed", str(path), "50", "0") for _ in range(args.seed_repeats)
            ],
            "ours: rank 50": [run_child("ours", str(path), "50", "0") for _ in range(args.repeats)],
            "ours: percent 0.9": [
                run_child("ours", str(path), "0", "0.9") for _ in range(args.percent_repeats)
            ],
        }
    seed_s = statistics.median(r["seconds"] for r in runs["seed: full SVD, rank 50"])
    lines = [
        f"### SVD on a {w}x{h} RGB image ({w * h / 1e6:.0f} megapixels)",
        "",
        f"Source: `{Path(args.photo).name}` upscaled (bicubic) + noise sigma 2. "
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"Python {platform.python_version()}, NumPy {np.__version__}; "
        f"medians of {args.repeats} runs (seed method: {args.seed_repeats}, "
        f"percent: {args.percent_repeats}), "
        "each in its own process.",
        "",
        "| method | encode s | speed-up vs seed | peak RSS MB | PSNR dB | "
        "PSNR unquantised dB | bundle bytes | bpp | ranks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rs in runs.items():
        sec = statistics.median(r["seconds"] for r in rs)
        rss = statistics.median(r["peak_rss_mb"] for r in rs)
        psnr = statistics.median(r["psnr"] for r in rs)
        unq = rs[0].get("psnr_unquantised")
        lines.append(
            f"| {name} | {sec:.2f} | {seed_s / sec:.1f}x | {rss:.0f} | {psnr:.3f} | "
            f"{'' if unq is None else f'{unq:.3f}'} | {rs[0].get('bytes', '')} | "
            f"{rs[0].get('bpp', float('nan')):.3f} | {rs[0].get('ranks', '')} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    print(json.dumps(runs, indent=1))
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n" + table)


if __name__ == "__main__":
    main()
