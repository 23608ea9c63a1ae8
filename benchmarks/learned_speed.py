"""Speed (and optionally peak memory) of the learned codec's encode + decode.

Usage::

    python benchmarks/learned_speed.py [IMAGE] [--quality 3] [--repeat 5] [--threads 0]
    python benchmarks/learned_speed.py --megapixels 24     # peak memory on a large image

Without IMAGE, scikit-image's ``coffee`` photograph resized to 768x512 is used.  The
first (warm-up) run builds the onnxruntime sessions and is not counted; the figure is
the median of ``--repeat`` runs.  ``--megapixels`` runs one encode + decode of a
synthetic photo-like image of that size and reports the process's peak resident
memory (``ru_maxrss``), which includes onnxruntime's native buffers.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

import numpy as np


def _photo_768x512(path: str | None) -> np.ndarray:
    from PIL import Image

    if path:
        im = Image.open(path).convert("RGB")
    else:
        from skimage.data import coffee

        im = Image.fromarray(coffee())
    if im.size not in ((768, 512), (512, 768)):
        im = im.resize((768, 512), Image.Resampling.LANCZOS)
    return np.asarray(im, np.float32) / 255.0


def _large(megapixels: float) -> np.ndarray:
    """A photo-like large image: a tiled, slightly varied photograph (not flat)."""
    from skimage.data import astronaut

    h = round(np.sqrt(megapixels * 1e6 * 2 / 3))
    w = round(megapixels * 1e6 / h)
    base = astronaut().astype(np.float32) / 255.0
    reps = (-(-h // 512), -(-w // 512), 1)
    img = np.tile(base, reps)[:h, :w]
    img *= np.linspace(0.8, 1.0, w, dtype=np.float32)[None, :, None]
    return np.ascontiguousarray(img)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image", nargs="?", help="a 768x512 photograph (default: coffee)")
    parser.add_argument("--quality", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: auto)")
    parser.add_argument("--model", default="", help=".svdm model (default: built-in)")
    parser.add_argument("--megapixels", type=float, default=None, help="large-image run")
    args = parser.parse_args(argv)
    os.environ["NAPARI_SVD_LEARNED_THREADS"] = str(args.threads)

    from napari_svd_compress.codecs.learned import codec

    params = {"quality": args.quality, "model": args.model}

    def once(img: np.ndarray) -> tuple[float, float, int]:
        t0 = time.perf_counter()
        enc = codec.encode(img, params, lambda f: None)
        t1 = time.perf_counter()
        codec.decode(enc.meta, enc.payloads, img.shape)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1, sum(len(v) for v in enc.payloads.values())

    if args.megapixels:
        img = _large(args.megapixels)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        e, d, n = once(img)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"{img.shape[1]}x{img.shape[0]} ({img.shape[0] * img.shape[1] / 1e6:.1f} MP) "
            f"q={args.quality}: encode {e:.1f} s, decode {d:.1f} s, {n * 8 / img.size * 3:.3f} "
            f"bpp; peak RSS {peak:.0f} MiB (input alone {img.nbytes / 2**20:.0f} MiB, "
            f"RSS before {before:.0f} MiB)"
        )
        return 0

    img = _photo_768x512(args.image)
    once(img)  # warm-up: sessions and entropy tables
    runs = [once(img) for _ in range(args.repeat)]
    tot = [e + d for e, d, _ in runs]
    print(
        f"768x512 q={args.quality} threads={args.threads or 'auto'}: encode+decode median "
        f"{statistics.median(tot):.3f} s (encode {statistics.median(r[0] for r in runs):.3f} s, "
        f"decode {statistics.median(r[1] for r in runs):.3f} s) over {args.repeat} runs; "
        f"{runs[0][2] * 8 / (img.shape[0] * img.shape[1]):.3f} bpp"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
