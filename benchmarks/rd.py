"""Rate-distortion benchmark over a folder of images.

Usage::

    PYTHONPATH=src python benchmarks/rd.py FOLDER [--methods svd,pca,...] \
        [--out docs/rate-distortion.md] [--plot docs/rd-photos.png] [--csv rd.csv]

For each method and image, the codec's default sweep is run
(:func:`napari_svd_compress.pipelines.sweep.sweep`).  Reported per method: the Bjontegaard delta
rate against Pillow JPEG (``metrics.bd_rate`` per image on the points between 0.05 and 2
bpp, averaged over images; negative = fewer bytes than JPEG at equal PSNR) and the mean
PSNR at 0.25, 0.5 and 1 bpp (interpolated in log-rate on each image's curve).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from napari_svd_compress import registry
from napari_svd_compress.fileio.atomic import atomic_write
from napari_svd_compress.fileio.images import read_image
from napari_svd_compress.metrics import bd_rate
from napari_svd_compress.pipelines.sweep import SweepTable, plot_rd, sweep

# The reference is Pillow JPEG with optimised Huffman tables (the `jpeg` codec's
# default); PLAIN, Pillow's default tables, is reported as a second reference: it needs
# up to twice the bytes at the lowest qualities, so BD-rates against it look better.
PLAIN = "jpeg:optimize=false"
METHODS = ("svd", "svd:patch=8", "pca", "kmeans", "learned", "jpeg", PLAIN, "webp", "avif")
RATES = (0.25, 0.5, 1.0)
LO, HI = 0.05, 2.0
EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".ppm")


def psnr_at(bpp: list[float], psnr: list[float], rate: float) -> float:
    """PSNR at ``rate`` by linear interpolation in log(bpp); NaN outside the curve."""
    pts = sorted((b, p) for b, p in zip(bpp, psnr, strict=True) if math.isfinite(p) and b > 0)
    if not pts or rate < pts[0][0] or rate > pts[-1][0]:
        return float("nan")
    x = np.log([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    # A curve that is not monotone in rate (rare) is made so before interpolating.
    y = np.maximum.accumulate(y)
    return float(np.interp(math.log(rate), x, y))


def bd_vs(table: SweepTable, method: str, reference: str = "jpeg") -> float:
    def pts(m: str) -> tuple[list[float], list[float]]:
        b, p = table.curve(m)
        keep = [(x, y) for x, y in zip(b, p, strict=True) if LO <= x <= HI and math.isfinite(y)]
        return [k[0] for k in keep], [k[1] for k in keep]

    return bd_rate(*pts(method), *pts(reference))


def nanmean(values: list[float]) -> tuple[float, int]:
    v = [x for x in values if math.isfinite(x)]
    return (float(np.mean(v)) if v else float("nan")), len(v)


def parse_method(spec: str) -> tuple[str, dict[str, str]]:
    """``"svd:patch=8"`` -> ``("svd", {"patch": "8"})``: a method with fixed extra parameters."""
    name, _, extra = spec.partition(":")
    params = dict(kv.split("=", 1) for kv in extra.split("+") if kv)
    return name, params


def run_sweep(image: np.ndarray, methods: list[str]) -> SweepTable:
    """The default sweep of each method; variants are labelled with their spec."""
    table = SweepTable()
    for spec in methods:
        name, extra = parse_method(spec)
        codec = registry.get(name)
        pname, values = codec.sweep
        points = {name: [{pname: v, **extra} for v in values]}
        for row in sweep(image, methods=[name], points=points):
            row["method"] = spec
            table.rows.append(row)
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", default="docs/rate-distortion.md")
    ap.add_argument("--plot", default="docs/rd-photos.png")
    ap.add_argument("--csv", default=None, help="all sweep rows, with an image column")
    ap.add_argument(
        "--reuse",
        default=None,
        help="CSV of an earlier run (--csv): its rows of the methods not run now are "
        "reported as they are (the figures are deterministic; the times are that run's)",
    )
    args = ap.parse_args(argv)
    args.reused = []
    methods = [m for m in args.methods.split(",") if m]
    if "jpeg" not in methods:
        methods.append("jpeg")
    reused = _read_rows(args.reuse, exclude=methods) if args.reuse else {}
    run_methods = methods
    args.reused = sorted({m for rows in reused.values() for m in rows})
    methods = [*methods, *dict.fromkeys(m for rows in reused.values() for m in rows)]
    methods.sort(key=lambda m: METHODS.index(m) if m in METHODS else len(METHODS))
    files = sorted(p for p in Path(args.folder).iterdir() if p.suffix.lower() in EXTS)
    if not files:
        print(f"no images in {args.folder}", file=sys.stderr)
        return 1
    bds: dict[str, list[float]] = {m: [] for m in methods}
    bds_plain: dict[str, list[float]] = {m: [] for m in methods}
    at: dict[tuple[str, float], list[float]] = {(m, r): [] for m in methods for r in RATES}
    secs: dict[str, list[float]] = {m: [] for m in methods}
    all_rows: list[dict] = []
    t_start = time.perf_counter()
    for i, f in enumerate(files):
        image, _ = read_image(f)
        if image.ndim == 3 and image.shape[-1] == 4:
            image = image[..., :3]
        table = run_sweep(image, run_methods)
        for rows in reused.get(f.name, {}).values():
            table.rows.extend(rows)
        for row in table:
            all_rows.append({"image": f.name, **row})
        line = [f"[{i + 1}/{len(files)}] {f.name}"]
        for m in methods:
            b, p = table.curve(m)
            bds[m].append(bd_vs(table, m) if m != "jpeg" else 0.0)
            bds_plain[m].append(bd_vs(table, m, PLAIN) if PLAIN in methods else math.nan)
            secs[m].extend(r["seconds"] for r in table if r["method"] == m)
            for r in RATES:
                at[(m, r)].append(psnr_at(b, p, r))
            line.append(f"{m} {100 * bds[m][-1]:+.1f}%")
        print("  ".join(line), flush=True)
        # The report, plot and CSV are rewritten after every image, so an interrupted
        # run leaves them.
        elapsed = time.perf_counter() - t_start
        write_report(args, files[: i + 1], methods, (bds, bds_plain), at, secs, elapsed)
        if i == 0:
            plot_rd(table, args.plot, title=f"{f.name} ({image.shape[1]}x{image.shape[0]})")
        if args.csv:
            buf = io.StringIO()
            w = csv.DictWriter(
                buf, fieldnames=["image", *SweepTable().columns], lineterminator="\n"
            )
            w.writeheader()
            w.writerows(all_rows)
            atomic_write(args.csv, buf.getvalue().encode())
    return 0


def _read_rows(path: str, exclude: list[str]) -> dict[str, dict[str, list[dict]]]:
    """Rows of an earlier ``--csv``, by image and method, without the ``exclude`` methods."""
    out: dict[str, dict[str, list[dict]]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["method"] in exclude:
                continue
            for key in ("bytes", "bpp", "psnr", "ssim", "seconds"):
                row[key] = float(row[key])
            image = row.pop("image")
            out.setdefault(image, {}).setdefault(row["method"], []).append(row)
    return out


NOTES = """
## Notes

* `svd` is the whole-image truncated SVD per channel (the default, `patch=0`);
  `svd:patch=8` is the patch SVD of arXiv 2408.12691 (`compress(..., "svd", patch=8)`):
  the matrix whose columns are the 8 x 8 x 3 patches is factored (its left singular
  vectors are the eigenvectors of the 192 x 192 patch covariance), the rank sweeps the
  rate, and the coefficient step follows the rank (3 x the RMS of the last kept
  component).  It shares its coder and decoder with `pca`.
* `pca` is the blocks mode (8 x 8 patches of all channels, RGB, all components, the
  step sweeps the rate).  It works in RGB: in YCbCr the quantisation error of a joint
  colour transform is amplified up to 4 dB by the conversion back to RGB.
* What took the block codecs from +12 % (pca) and +14 % (patch SVD) to below JPEG,
  measured on these photos one change at a time (pca BD-rate after each):
  a deblocking filter in the decoder (re-projection of the decoded image on the basis
  at 16 block offsets, kept only where the encoder measures a gain) -0.3 %; the basis
  sent as coordinates in the block DCT -5.6 %; the coefficients coded component by
  component with a Laplace model that follows the activity of each block's
  neighbourhood, and smooth components as residuals of a median prediction
  (`_block_context.py`) -14.8 %; then the DC step and the basis precision retuned.
* `kmeans` has no rate-distortion knob but the palette size: its PSNR saturates.
* `learned` is the learned codec (`docs/learned-codec.md`), quality 1 to 6.
"""


def write_report(args, files, methods, bd_pair, at, secs, elapsed) -> None:
    import matplotlib
    import PIL

    import napari_svd_compress as nsc

    lines = [
        "# Rate-distortion",
        "",
        f"Generated by `benchmarks/rd.py {args.folder}` on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC "
        f"({len(files)} images, {elapsed / 60:.1f} min).",
        "",
        *(
            [
                f"Rows of {', '.join(args.reused)} are reused from an earlier run of this "
                "script (`--reuse`): their codecs did not change since, so their figures "
                "are the same; their encode times are that run's.",
                "",
            ]
            if args.reused
            else []
        ),
        f"Machine: {platform.machine()}, {os.cpu_count()} logical CPUs "
        "(shared with other jobs: timings are indicative only), "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"NumPy {np.__version__}, Pillow {PIL.__version__}, matplotlib "
        f"{matplotlib.__version__}, napari-svd-compress {nsc.__version__}.",
        "",
        "BD-rate: Bjontegaard delta rate against Pillow JPEG (`metrics.bd_rate`, PSNR, "
        f"points between {LO} and {HI} bpp), per image, then averaged over the images "
        "where the curves overlap (n).  Negative means fewer bytes than JPEG at equal "
        "PSNR.  PSNR at a rate is interpolated on each image's curve (log rate) and "
        "averaged over the images whose curve reaches that rate (n).",
        "",
        f"BD-rates against `{PLAIN}` (Pillow's default Huffman tables) are in the second "
        "column, for comparison with figures measured that way.",
        "",
        "| method | sweep | BD-rate vs JPEG (n) | vs plain JPEG | PSNR @0.25 bpp (n) "
        "| PSNR @0.5 bpp (n) | PSNR @1 bpp (n) | median encode s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    bds, bds_plain = bd_pair
    for m in methods:
        codec = registry.get(parse_method(m)[0])
        bd, nb = nanmean(bds[m])
        bd_p, nbp = nanmean(bds_plain[m])
        plain_txt = "reference" if m == PLAIN else (f"{100 * bd_p:+.1f}%" if nbp else "n/a")
        cells = []
        for r in RATES:
            v, n = nanmean(at[(m, r)])
            cells.append(f"{v:.2f} ({n})" if n else "- (0)")
        sweep_txt = f"{codec.sweep[0]}" if codec.sweep else ""
        bd_txt = "reference" if m == "jpeg" else (f"{100 * bd:+.1f}% ({nb})" if nb else "n/a")
        lines.append(
            f"| {m} | {sweep_txt} | {bd_txt} | {plain_txt} | {' | '.join(cells)} | "
            f"{float(np.median(secs[m])):.2f} |"
        )
    lines += [
        "",
        "Per image BD-rates (%):",
        "",
        "| image | " + " | ".join(m for m in methods if m != "jpeg") + " |",
        "|---|" + "---|" * (len(methods) - 1),
    ]
    for i, f in enumerate(files):
        vals = [f"{100 * bds[m][i]:+.1f}" for m in methods if m != "jpeg"]
        lines.append(f"| {f.name} | " + " | ".join(vals) + " |")
    lines += ["", f"![rate-distortion of {files[0].name}](rd-photos.png)", NOTES]
    atomic_write(args.out, "\n".join(lines).encode())


if __name__ == "__main__":
    sys.exit(main())
