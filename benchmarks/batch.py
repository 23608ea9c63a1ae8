"""Throughput of ``batch`` (files per second) with 1 and 2 workers, in one run.

Usage::

    PYTHONPATH=src python benchmarks/batch.py --files 24 --width 1024 --height 768

Generates ``--files`` RGB PNGs (smooth shapes, texture and noise, so the SVD has
work to do) in a temporary folder, then for each worker count starts a fresh
LocalCluster (processes, one thread each), runs :func:`napari_svd_compress.pipelines.batch.batch`
into a fresh output folder and reports the wall time of the batch itself (cluster
start-up reported separately) and files per second.  A serial loop of
:func:`napari_svd_compress.compress` in this process is the baseline.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def make_images(folder: Path, n: int, width: int, height: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    files = []
    for i in range(n):
        rng = np.random.default_rng(i)
        f = rng.uniform(0.005, 0.03, 3)
        base = np.stack(
            [
                0.5 + 0.4 * np.sin(f[0] * x + i),
                0.5 + 0.4 * np.cos(f[1] * y - i),
                0.5 + 0.4 * np.sin(f[2] * (x + y)),
            ],
            axis=-1,
        )
        base += 0.15 * ((x // 64 + y // 64 + i) % 2)[..., None]
        img = np.clip(base * 220 + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        p = folder / f"photo{i:03d}.png"
        Image.fromarray(img).save(p)
        files.append(p)
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--rank", type=int, default=50)
    ap.add_argument("--workers", default="1,2", help="worker counts to try (comma-separated)")
    ap.add_argument("--serial", action="store_true", help="also time a serial compress() loop")
    args = ap.parse_args()

    from distributed import Client, LocalCluster

    from napari_svd_compress import compress
    from napari_svd_compress.fileio.images import read_image
    from napari_svd_compress.pipelines.batch import batch

    root = Path(tempfile.mkdtemp(prefix="svd-batch-bench-"))
    rows = []
    try:
        files = make_images(root / "in", args.files, args.width, args.height)
        print(f"# {len(files)} PNGs {args.width}x{args.height} RGB, svd rank {args.rank}")
        if args.serial:
            t0 = time.perf_counter()
            for f in files:
                compress(read_image(f)[0], "svd", rank=args.rank)
            s = time.perf_counter() - t0
            rows.append(("serial compress() loop", "-", 0.0, s, len(files) / s))
            print(rows[-1], flush=True)
        for n in (int(w) for w in args.workers.split(",") if w):
            t0 = time.perf_counter()
            cluster = LocalCluster(
                n_workers=n, processes=True, threads_per_worker=1, dashboard_address=None
            )
            client = Client(cluster)
            startup = time.perf_counter() - t0
            try:
                report = batch(root / "in", root / f"out{n}", "svd", client=client, rank=args.rank)
            finally:
                client.close()
                cluster.close()
            assert not report.failed and len(report.computed) == len(files)
            rows.append(
                ("batch, LocalCluster", n, startup, report.seconds, report.files_per_second)
            )
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\n| run | workers | cluster start (s) | batch time (s) | files/s |")
    print("|---|---|---|---|---|")
    for name, n, start, secs, fps in rows:
        print(f"| {name} | {n} | {start:.1f} | {secs:.1f} | {fps:.2f} |")


if __name__ == "__main__":
    main()
