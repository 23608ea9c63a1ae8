"""k-means codec on a large photograph: encode, decode and end-to-end seconds against T0.

    python benchmarks/kmeans_speed.py IMAGE.npy|IMAGE.png [--repeats 3] [--colors 16]
        [--baseline OLD_KMEANS.py OLD_ENTROPY.py]

T0 is the flop floor of a rank-75 randomized SVD (the eight float32 matrix products per
channel, see benchmarks/speed.py), timed in the same run.  With ``--baseline`` the runs
alternate between the current codec and an older copy of codecs/kmeans.py (with its
format/entropy.py), so that both see the same machine load; medians are printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import napari_svd_compress as nsc
from napari_svd_compress import registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import _t0  # the same T0 as the methods table


def _load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("image")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--colors", type=int, default=16)
    ap.add_argument("--baseline", nargs=2, metavar=("KMEANS_PY", "ENTROPY_PY"))
    args = ap.parse_args(argv)
    if args.image.endswith(".npy"):
        image = np.load(args.image)
    else:
        from skimage import io

        image = io.imread(args.image)[..., :3]
    current = registry.get("kmeans")
    codecs = {"new": current}
    if args.baseline:
        entropy = _load("napari_svd_compress.format._entropy_baseline", args.baseline[1])
        old = _load("napari_svd_compress.codecs._kmeans_baseline", args.baseline[0])
        old.encode_ints, old.decode_ints = entropy.encode_ints, entropy.decode_ints
        codecs = {"old": old.CODEC, "new": current}
    rows: dict[str, dict[str, list[float]]] = {n: {} for n in [*codecs, "T0"]}
    figures = {}
    for _ in range(args.repeats):
        rows["T0"].setdefault("s", []).append(_t0(image))
        for name, codec in codecs.items():
            registry.register(codec)
            t = time.perf_counter()
            r = nsc.compress(image, "kmeans", colors=args.colors)
            total = time.perf_counter() - t
            for key, v in (("encode", r.encode_s), ("decode", r.decode_s), ("total", total)):
                rows[name].setdefault(key, []).append(v)
            figures[name] = (len(r.bundle), r.psnr, r.ssim)
    registry.register(current)
    base = statistics.median(rows["T0"]["s"])
    print(f"{image.shape} colors={args.colors}  T0 median {base:.2f} s  (runs {rows['T0']['s']})")
    for name in codecs:
        med = {k: statistics.median(v) for k, v in rows[name].items()}
        size, psnr, ssim = figures[name]
        print(
            f"{name:4s} encode {med['encode']:.2f}  decode {med['decode']:.2f}  "
            f"total {med['total']:.2f} s = {med['total'] / base:.2f} T0   "
            f"bytes {size}  PSNR {psnr:.4f}  SSIM {ssim:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
