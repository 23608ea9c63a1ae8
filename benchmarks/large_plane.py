"""Time and peak memory of compress_large on a huge synthetic uint16 plane.

Usage::

    PYTHONPATH=src python benchmarks/large_plane.py --size 30000 --rank 100
    PYTHONPATH=src python benchmarks/large_plane.py --size 8000 --in-memory

The plane (a tiled photograph plus Gaussian noise, uint16, the look of a stitched
microscope mosaic) is generated band by band into a ``.npy`` file in ``--dir``
(1.8 GB at 30000 x 30000), then compressed in a child process so that its peak
resident memory (``ru_maxrss``) and the peak of traced allocations (``tracemalloc``:
NumPy buffers and the entropy coder) belong to the compression alone.  The file is
deleted afterwards unless ``--keep``.  ``--in-memory`` also runs the ordinary
:func:`napari_svd_compress.compress` on the same plane, for comparison (only for
sizes that fit in memory).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_plane(path: Path, size: int, seed: int = 0) -> None:
    """Write a ``size x size`` uint16 mosaic to ``path`` without holding it in memory."""
    from skimage import data, transform

    tile = transform.resize(data.camera().astype(np.float32) / 255, (1000, 1000))
    tile = tile.astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(size, size))
    band = 1000
    reps = size // 1000 + 1
    for r0 in range(0, size, band):
        r1 = min(r0 + band, size)
        rows = np.tile(tile[: r1 - r0], (1, reps))[:, :size]
        # Tiles differ a little in exposure, like the fields of a stitched mosaic.
        gain = 0.8 + 0.2 * np.repeat(rng.random(reps), 1000)[:size]
        noisy = rows * gain * 60000 + rng.normal(0, 500, rows.shape).astype(np.float32)
        out[r0:r1] = np.clip(noisy, 0, 65535).astype(np.uint16)
    out.flush()
    del out


def _vm_hwm() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return -1


def measure(path: str, rank: int, mode: str) -> dict:
    """Run in the child process: compress and report time and memory."""
    import resource
    import tracemalloc

    tracemalloc.start()
    t0 = time.perf_counter()
    if mode == "large":
        from napari_svd_compress.pipelines.large import compress_large

        r = compress_large(path, rank=rank, out=path + ".svdz")
        fig = {"psnr": r.psnr, "bytes": r.nbytes, "bpp": r.bpp, "encode_s": r.encode_s}
        fig["measure_s"] = r.decode_s
    elif mode == "decode":
        from napari_svd_compress.pipelines.large import decompress_large

        decompress_large(path + ".svdz", path + ".decoded.npy")
        os.unlink(path + ".decoded.npy")
        fig = {"psnr": float("nan"), "bytes": os.path.getsize(path + ".svdz"), "bpp": float("nan")}
    else:
        from napari_svd_compress import compress

        image = np.load(path)
        r = compress(image, "svd", rank=rank)
        fig = {"psnr": r.psnr, "bytes": r.nbytes, "bpp": r.bpp, "encode_s": r.encode_s}
        fig["measure_s"] = r.decode_s
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    # VmHWM is the peak of this process's own address space.  ru_maxrss is not: Linux
    # carries it across exec, so it includes the parent's peak (the generator's pages)
    # when the child was started by vfork.
    hwm = _vm_hwm()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fig.update(mode=mode, seconds=seconds, traced_peak=peak, max_rss=hwm, ru_maxrss=maxrss)
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=30000)
    ap.add_argument("--rank", type=int, default=100)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--in-memory", action="store_true", help="also run compress() in memory")
    ap.add_argument("--decode", action="store_true", help="also time decompress_large")
    ap.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.rank, args.child[1])))
        return
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    path = Path(args.dir) / f"mosaic_{args.size}.npy"
    t0 = time.perf_counter()
    if not path.exists():
        make_plane(path, args.size)
    print(
        f"# plane {args.size}x{args.size} uint16, {path.stat().st_size / 1e9:.2f} GB, "
        f"generated in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    rows = []
    try:
        modes = ["large"] + (["decode"] if args.decode else [])
        for mode in modes + (["memory"] if args.in_memory else []):
            cmd = [sys.executable, __file__, "--rank", str(args.rank), "--child", str(path), mode]
            done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                raise SystemExit(done.returncode)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
        Path(str(path) + ".svdz").unlink(missing_ok=True)
    mp = args.size * args.size / 1e6
    print(
        "\n| path | plane | rank | time (s) | Mpixel/s | peak RSS (GB) | traced peak (GB) "
        "| PSNR (dB) | bpp |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {args.size}x{args.size} ({mp:.0f} Mpx) | {args.rank} "
            f"| {r['seconds']:.0f} | {mp / r['seconds']:.2f} | {r['max_rss'] / 1e9:.2f} "
            f"| {r['traced_peak'] / 1e9:.2f} | {r['psnr']:.2f} | {r['bpp']:.4f} |"
        )


if __name__ == "__main__":
    main()
