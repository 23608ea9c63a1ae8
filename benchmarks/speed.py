"""End-to-end speed of every method on a 24-megapixel photograph, in units of T0.

T0 is the flop floor of the textbook method, timed in the same process just before each
method: the eight float32 matrix products that a randomized SVD with three power
iterations (rank 50 + 25 oversampling) needs, on each of the three channels.  Each method
runs in its own subprocess (its peak resident memory is its own); each figure is the
median of ``--repeats`` runs, and every run is the whole ``compress()``: encode, decode,
PSNR and SSIM on the full image at full resolution, the rate the real bundle's size.

Usage::

    python benchmarks/speed.py [PHOTO] [--size 6000x4000] [--repeats 3]
                               [--methods svd,kmeans,...] [--scaling] [--out docs/performance.md]

Without PHOTO, scikit-image's astronaut is used.  The photo is upscaled (bicubic) to the
size and given camera-like noise (Gaussian, sigma 3 levels), so its spectrum is full-rank
like a real camera image's.  ``--scaling`` adds end-to-end seconds of svd, kmeans and pca
at 1, 6, 24 and 96 megapixels and a log-log plot (docs/performance-scaling.png).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import machine, replace_section  # noqa: E402

# name: (method, params)
METHODS: dict[str, tuple[str, dict]] = {
    "svd rank 50": ("svd", {"rank": 50}),
    "kmeans 16 colours": ("kmeans", {"colors": 16}),
    "pca defaults": ("pca", {}),
    "svd patch=8": ("svd", {"patch": 8}),
    "learned default": ("learned", {}),
    "svd percent=0.9": ("svd", {"percent": 0.9}),
    "jpeg": ("jpeg", {}),
    "webp": ("webp", {}),
}
TARGETS = {
    "svd rank 50": 2.5,
    "kmeans 16 colours": 2.5,
    "pca defaults": 5,
    "svd patch=8": 5,
    "learned default": 15,
    "svd percent=0.9": 40,
}
SCALING = ("svd rank 50", "kmeans 16 colours", "pca defaults")
SCALING_MPX = (1, 6, 24, 96)


def make_image(photo: str | None, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if photo is None:
        from skimage import data

        img = Image.fromarray(data.astronaut())
    else:
        img = Image.open(photo).convert("RGB")
    w, h = size
    arr = np.asarray(img.resize((w, h), Image.BICUBIC)).astype(np.float32)
    arr += np.random.default_rng(0).normal(0, 3, arr.shape).astype(np.float32)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _t0(image: np.ndarray) -> float:
    rng = np.random.default_rng(0)
    total = 0.0
    for c in range(image.shape[-1]):
        # unit range, as the codecs see it: raw 0..255 values would overflow float32
        # in the power iterations (and inf arithmetic is no fair floor)
        x = image[..., c].astype(np.float32) / np.float32(255)
        omega = rng.standard_normal((x.shape[1], 75), dtype=np.float32)
        t = time.perf_counter()
        q = x @ omega
        for _ in range(3):
            q = x @ (x.T @ q)
        _ = q.T @ x
        total += time.perf_counter() - t
    return total


def _stages(image: np.ndarray, method: str, params: dict) -> dict[str, float]:
    """One compress() taken apart into the API's stages (same work, timed one by one)."""
    from napari_svd_compress import api, metrics, registry
    from napari_svd_compress._image import from_unit, inspect, to_unit
    from napari_svd_compress._memory import large_work

    codec = registry.get(method)
    resolved = codec.resolve(params)
    spec = inspect(image, codec=codec)
    out: dict[str, float] = {}
    with large_work():  # the allocator settings compress() holds
        t = time.perf_counter()
        unit, _ = to_unit(image, spec)
        out["convert to unit range"] = time.perf_counter() - t
        t = time.perf_counter()
        container = api.container_for(codec, resolved, spec)
        encoded = codec.encode(unit, dict(resolved), lambda f: None, container)
        out["encode (codec)"] = time.perf_counter() - t
        t = time.perf_counter()
        decoded = codec.decode(encoded.meta, encoded.payloads, unit.shape)
        out["decode (codec)"] = time.perf_counter() - t
        t = time.perf_counter()
        back = from_unit(decoded, spec)
        out["convert back to dtype"] = time.perf_counter() - t
        t = time.perf_counter()
        metrics.squared_error(image, back)
        out["PSNR"] = time.perf_counter() - t
        t = time.perf_counter()
        metrics.ssim(image, back, spec)
        out["SSIM"] = time.perf_counter() - t
    return out


def child(path: str, name: str, repeats: int, stages: bool) -> dict:
    import napari_svd_compress as nsc

    image = np.load(path)
    method, params = METHODS[name]
    runs = []
    for _ in range(repeats):
        t0 = _t0(image)
        start = time.perf_counter()
        result = nsc.compress(image, method, **params)
        total = time.perf_counter() - start
        runs.append(
            {
                "t0": t0,
                "total": total,
                "ratio": total / t0,
                "encode": result.encode_s,
                "decode": result.decode_s,
            }
        )
    out = {
        "bytes": result.nbytes,
        "bpp": result.bpp,
        "psnr": result.psnr,
        "ssim": result.ssim,
        **{k: statistics.median(r[k] for r in runs) for k in runs[0]},
    }
    if stages:
        out["stages"] = _stages(image, method, params)
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


def _peak_rss_mib() -> float:
    """This process's peak resident memory.  VmHWM, not ``ru_maxrss``: Linux keeps the
    latter across ``exec``, so a child would report its parent's peak if larger."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(path: Path, name: str, repeats: int, stages: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), name, str(repeats)]
    if stages:
        cmd.append("--stages")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def raw_decode(image: np.ndarray, tmp: Path, repeats: int) -> dict[str, float]:
    """Our RAW reader against rawpy's own postprocess with the same settings, on a DNG
    written from ``image`` (full decode and the half-size preview), alternated."""
    import rawpy

    from napari_svd_compress.fileio.raw import read_raw, write_dng

    path = write_dng(tmp / "image.dng", image)

    def ours(half: bool) -> None:
        read_raw(path, half_size=half)

    def theirs(half: bool) -> None:
        with rawpy.imread(str(path)) as raw:
            raw.postprocess(
                output_bps=8,
                half_size=half,
                use_camera_wb=True,
                use_auto_wb=False,
                no_auto_bright=False,
                output_color=rawpy.ColorSpace.sRGB,
            )

    out = {}
    for half in (False, True):
        times: dict[str, list[float]] = {"ours": [], "rawpy": []}
        for _ in range(repeats):
            for key, fn in (("ours", ours), ("rawpy", theirs)):
                t = time.perf_counter()
                fn(half)
                times[key].append(time.perf_counter() - t)
        tag = "half" if half else "full"
        out[f"{tag} ours"] = statistics.median(times["ours"])
        out[f"{tag} rawpy"] = statistics.median(times["rawpy"])
    return out


def matmul_gflops() -> float:
    a = np.random.default_rng(0).standard_normal((4000, 4000), dtype=np.float32)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        _ = a @ a
        times.append(time.perf_counter() - t)
    return 2 * 4000**3 / statistics.median(times) / 1e9


def memory_gbps() -> float:
    a = np.ones(72_000_000, np.uint8)
    b = np.empty_like(a)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - t)
    return 2 * a.nbytes / statistics.median(times) / 1e9


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        path, name, repeats = sys.argv[2], sys.argv[3], int(sys.argv[4])
        print(json.dumps(child(path, name, repeats, "--stages" in sys.argv)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", nargs="?", help="photo to upscale (default: astronaut)")
    parser.add_argument("--size", default="6000x4000", help="W x H (default 6000x4000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated names")
    parser.add_argument("--scaling", action="store_true", help="also 1, 6, 24, 96 Mpx")
    parser.add_argument("--raw", action="store_true", help="also RAW (DNG) decoding")
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")

    gflops, gbps = matmul_gflops(), memory_gbps()
    rows, stage_rows = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image.npy"
        np.save(path, make_image(args.photo, (w, h)))
        for name in names:
            r = run_child(path, name, args.repeats, stages=name in TARGETS)
            rows.append((name, r))
            stage_rows[name] = r.get("stages")
            print(
                f"{name:20s} {r['total']:7.2f} s  {r['ratio']:5.2f} T0 (T0 {r['t0']:.2f} s)  "
                f"encode {r['encode']:.2f}  decode {r['decode']:.2f}  "
                f"{r['bpp']:.3f} bpp  {r['psnr']:.2f} dB  RSS {r['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
        raw = raw_decode(np.load(path), Path(tmp), args.repeats) if args.raw else None
        if raw:
            print("RAW decode: " + ", ".join(f"{k} {v:.2f} s" for k, v in raw.items()))
        scaling = []
        if args.scaling:
            for mpx in SCALING_MPX:
                sw = round((mpx * 1e6 * 1.5) ** 0.5)
                sh = round(sw / 1.5)
                spath = Path(tmp) / f"image{mpx}.npy"
                np.save(spath, make_image(args.photo, (sw, sh)))
                for name in SCALING:
                    r = run_child(spath, name, 1 if mpx >= 96 else args.repeats, stages=False)
                    scaling.append((mpx, sw, sh, name, r))
                    print(f"{mpx:3d} Mpx {name:20s} {r['total']:7.2f} s", flush=True)
    report(args, w, h, gflops, gbps, rows, stage_rows, scaling, raw)
    return 0


def report(args, w, h, gflops, gbps, rows, stage_rows, scaling, raw) -> None:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    where = (
        f"{machine()} (shared with other jobs: "
        f"timings are noisy, hence T0 measured beside each run and medians of "
        f"{args.repeats}); NumPy {np.__version__}; float32 matmul {gflops:.0f} GFLOP/s, "
        f"memory copy {gbps:.1f} GB/s, both measured in this run"
    )
    lines = [
        "## End to end on a 24-megapixel photograph",
        "",
        f"Generated by `benchmarks/speed.py` on {when}: {args.photo or 'astronaut'} upscaled "
        f"to {w} x {h} with noise (sigma 3).  Machine: {where}.",
        "",
        "| method | end to end s | T0 s | x T0 | target | encode s | decode s | "
        "bpp | PSNR dB | SSIM | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        target = f"<= {TARGETS[name]}" if name in TARGETS else "codec + figures"
        lines.append(
            f"| {name} | {r['total']:.2f} | {r['t0']:.2f} | {r['ratio']:.2f} | {target} | "
            f"{r['encode']:.2f} | {r['decode']:.2f} | {r['bpp']:.3f} | {r['psnr']:.2f} | "
            f"{r['ssim']:.4f} | {r['peak_rss_mib']:.0f} |"
        )
    lines += [
        "",
        "### Stages",
        "",
        "One more run of each method taken apart into the API's stages (the same work as "
        "`compress()`, timed one by one).  Floors: a pass over the 72 MB uint8 image at the "
        f"measured copy rate is {2 * 72e6 / gbps / 1e9:.3f} s, over its float32 copy "
        f"{2 * 288e6 / gbps / 1e9:.3f} s; T0 is the matmul floor of a rank-75 factorisation.",
        "",
    ]
    names = [n for n, s in stage_rows.items() if s]
    if names:
        stages = list(next(iter(stage_rows[n] for n in names)))
        lines.append("| stage | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for stage in stages:
            cells = " | ".join(f"{stage_rows[n][stage]:.2f}" for n in names)
            lines.append(f"| {stage} | {cells} |")
    if rows:  # a run of --raw or --scaling alone keeps the methods table as it is
        replace_section(args.out, lines[0], lines)
    if raw:
        rlines = [
            "## RAW decoding",
            "",
            f"Generated by `benchmarks/speed.py --raw` on {when}: a {w} x {h} Bayer DNG "
            "written by `fileio.raw.write_dng` from the same photo, decoded by our reader "
            "(`read_raw`: LibRaw through rawpy, checks and metadata) and by rawpy's own "
            f"`postprocess` with the same settings, alternated, medians of {args.repeats}.  "
            "In napari, opening a RAW file is the full decode; `File > IO Utilities > Open "
            "camera RAW as half-size preview…` gives the half-size preview; from Python it "
            "is `read_raw(path, half_size=True)`, on the command line `--half-size`.",
            "",
            "| decode | ours s | rawpy s | ours / rawpy |",
            "|---|---|---|---|",
        ]
        for tag in ("full", "half"):
            a, b = raw[f"{tag} ours"], raw[f"{tag} rawpy"]
            label = "full" if tag == "full" else "half size (preview)"
            rlines.append(f"| {label} | {a:.2f} | {b:.2f} | {a / b:.2f} |")
        replace_section(args.out, rlines[0], rlines)
    if scaling:
        plot = Path(args.out).with_name("performance-scaling.png")
        slines = [
            "## How cost grows with the image",
            "",
            f"Generated by `benchmarks/speed.py --scaling` on {when}; same machine and photo.  "
            "End-to-end seconds of `compress()` (median of "
            f"{args.repeats}, one run at 96 Mpx).",
            "",
            "| megapixels | size | " + " | ".join(SCALING) + " |",
            "|---|---|" + "---|" * len(SCALING),
        ]
        for mpx in SCALING_MPX:
            got = {n: r for m, _, _, n, r in scaling if m == mpx}
            sw, sh = next((a, b) for m, a, b, _, _ in scaling if m == mpx)
            cells = " | ".join(f"{got[n]['total']:.2f}" for n in SCALING)
            slines.append(f"| {mpx} | {sw} x {sh} | {cells} |")
        slope = []
        for n in SCALING:
            xs = [np.log(m) for m, _, _, nn, _ in scaling if nn == n]
            ys = [np.log(r["total"]) for _, _, _, nn, r in scaling if nn == n]
            slope.append(f"{n} {np.polyfit(xs, ys, 1)[0]:.2f}")
        slines += [
            "",
            "Slope of log(seconds) against log(pixels) (1 = linear): " + ", ".join(slope) + ".",
            "",
            f"![seconds against megapixels, log-log]({plot.name})",
        ]
        replace_section(args.out, slines[0], slines)
        _plot(scaling, plot)


def _plot(scaling, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name in SCALING:
        pts = sorted((m, r["total"]) for m, _, _, n, r in scaling if n == name)
        ax.loglog(*zip(*pts, strict=True), "o-", label=name)
    ax.set_xlabel("megapixels")
    ax.set_ylabel("compress() seconds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
