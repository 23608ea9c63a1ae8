"""Rate-distortion benchmark over a folder of images, or on a 16-bit image.

Usage::

    PYTHONPATH=src python benchmarks/rd.py FOLDER [--methods svd,pca,...] \
        [--out docs/rate-distortion.md] [--plot docs/rd-photos.png] [--csv rd.csv]
    PYTHONPATH=src python benchmarks/rd.py --bits16 [FOLDER] [--methods ...]
    # either one into a section of another page (docs/formats.md):
    PYTHONPATH=src python benchmarks/rd.py FOLDER --out docs/formats.md \
        --section "## 8-bit rate-distortion"

For each method and image, the codec's default sweep is run
(:func:`napari_svd_compress.pipelines.sweep.sweep`).  Reported per method: the Bjontegaard delta
rate against Pillow JPEG (``metrics.bd_rate`` per image on the points between 0.05 and 2
bpp, averaged over images; negative = fewer bytes than JPEG at equal PSNR) and the mean
PSNR at 0.25, 0.5 and 1 bpp (interpolated in log-rate on each image's curve).

``--bits16`` measures the codecs that keep more than 8 bits on 16-bit images (those of
FOLDER, or by default a 16-bit image made from scikit-image's ``camera``: see
:func:`camera16`), with sweeps that reach past 8-bit precision (:data:`POINTS16`), against
JPEG 2000 between 0.1 and 8 bpp, and adds each format's lossless rate.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _report import machine, replace_section

from napari_svd_compress import registry
from napari_svd_compress.api import compress
from napari_svd_compress.fileio.atomic import atomic_write
from napari_svd_compress.fileio.images import read_image
from napari_svd_compress.metrics import bd_rate
from napari_svd_compress.pipelines.sweep import SweepTable, plot_rd, sweep

# The reference is Pillow JPEG with optimised Huffman tables (the `jpeg` codec's
# default); PLAIN, Pillow's default tables, is reported as a second reference: it needs
# up to twice the bytes at the lowest qualities, so BD-rates against it look better.
PLAIN = "jpeg:optimize=false"
METHODS = (
    "svd",
    "svd:patch=8",
    "pca",
    "kmeans",
    "learned",
    "jpeg",
    PLAIN,
    "webp",
    "avif",
    "jpegxl",
    "jpeg2000",
    "htj2k",
)
RATES = (0.25, 0.5, 1.0)
LO, HI = 0.05, 2.0
EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".ppm")

#: 16-bit mode: every codec that decodes a uint16 image to uint16 (the Pillow ones,
#: 8-bit, are represented by `jpeg` alone, to show where 8 bits stop), with sweeps that
#: reach past 8-bit precision: the registry's sweeps span the rates of photographs.
POINTS16: dict[str, tuple[str, tuple[Any, ...]] | None] = {
    "svd": ("rank", (8, 16, 32, 64, 96, 128, 160, 200, 256)),
    "pca": ("step", (100.0, 40.0, 20.0, 10.0, 5.0, 2.5, 1.0, 0.5, 0.25, 0.1)),
    "kmeans": ("colors", (4, 16, 64, 256)),
    "learned": None,  # its own sweep: quality 1..6 is all there is
    "jpeg": ("quality", (10, 30, 50, 70, 85, 92, 97, 100)),
    "jpegxl": ("quality", (30, 50, 70, 85, 90, 95, 98, 99, 100)),
    "jpeg2000": ("psnr", (35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 80.0)),
    "htj2k": ("qstep", (0.05, 0.02, 0.01, 0.005, 0.002, 0.001, 0.0005, 0.0002, 0.0001)),
}
#: The lossless setting of the formats that have one (reported in 16-bit mode).
LOSSLESS = {"jpegxl": {"lossless": True}, "jpeg2000": {"psnr": 0.0}, "htj2k": {"qstep": 0.0}}


@dataclass(frozen=True)
class Mode:
    """What a run measures: the reference codec, rates and sweeps."""

    reference: str
    rates: tuple[float, ...]
    lo: float
    hi: float
    points: dict[str, tuple[str, tuple[Any, ...]] | None] | None = None


PHOTOS = Mode("jpeg", RATES, LO, HI)
BITS16 = Mode("jpeg2000", (0.25, 0.5, 1.0, 2.0, 4.0), 0.1, 8.0, POINTS16)


def camera16(seed: int = 0) -> np.ndarray:
    """A 512 x 512 uint16 image with real content below the 8th bit.

    scikit-image's ``camera`` smoothed (Gaussian, sigma 1: the edges get intermediate
    levels), plus a diagonal ramp (a smooth gradient 8 bits would band) and Gaussian
    noise of 16 levels RMS, scaled to about 500..64 500: some 40 000 distinct levels,
    like a well-exposed scientific camera frame.
    """
    from skimage import data, filters

    cam = filters.gaussian(data.camera().astype(np.float64) / 255.0, sigma=1.0)
    yy, xx = np.mgrid[0 : cam.shape[0], 0 : cam.shape[1]]
    ramp = (xx + yy) / float(xx.max() + yy.max())
    noise = np.random.default_rng(seed).normal(0.0, 16.0, cam.shape)
    image = (0.8 * cam + 0.15 * ramp) * 64000.0 + 500.0 + noise
    return np.clip(np.round(image), 0, 65535).astype(np.uint16)


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


def bd_vs(
    table: SweepTable, method: str, reference: str = "jpeg", lo: float = LO, hi: float = HI
) -> float:
    def pts(m: str) -> tuple[list[float], list[float]]:
        b, p = table.curve(m)
        keep = [(x, y) for x, y in zip(b, p, strict=True) if lo <= x <= hi and math.isfinite(y)]
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


def sweep_of(spec: str, mode: Mode = PHOTOS) -> tuple[str, tuple[Any, ...]]:
    """The parameter a method sweeps and its values: the mode's, else the codec's."""
    name = parse_method(spec)[0]
    return (mode.points or {}).get(name) or registry.get(name).sweep


def run_sweep(image: np.ndarray, methods: list[str], mode: Mode = PHOTOS) -> SweepTable:
    """The sweep of each method (the codec's default, or the mode's); variants are
    labelled with their spec."""
    table = SweepTable()
    for spec in methods:
        name, extra = parse_method(spec)
        pname, values = sweep_of(spec, mode)
        points = {name: [{pname: v, **extra} for v in values]}
        for row in sweep(image, methods=[name], points=points):
            row["method"] = spec
            table.rows.append(row)
    return table


def lossless_bpp(image: np.ndarray, method: str) -> float:
    """Bits per pixel of the format's lossless setting (checked to be exact); NaN if none."""
    if method not in LOSSLESS:
        return float("nan")
    r = compress(image, method, **LOSSLESS[method])
    if not np.array_equal(r.image, image):
        raise AssertionError(f"{method} {LOSSLESS[method]} is not lossless")
    return float(r.bpp)


def _images(args: argparse.Namespace) -> list[tuple[str, np.ndarray]]:
    if args.folder is None:
        return [("camera16", camera16())]
    files = sorted(p for p in Path(args.folder).iterdir() if p.suffix.lower() in EXTS)
    if args.images:
        files = files[: args.images]
    out = []
    for f in files:
        image, _ = read_image(f)
        if image.ndim == 3 and image.shape[-1] == 4:
            image = image[..., :3]
        out.append((f.name, image))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", nargs="?", default=None)
    ap.add_argument("--bits16", action="store_true", help="the 16-bit table (see above)")
    ap.add_argument("--methods", default=None)
    ap.add_argument("--images", type=int, default=0, help="only the first N images")
    ap.add_argument("--out", default="docs/rate-distortion.md")
    ap.add_argument(
        "--section",
        default=None,
        help='a "## heading" of --out to replace with the tables (the rest is kept)',
    )
    ap.add_argument("--plot", default="docs/rd-photos.png", help="'' for none")
    ap.add_argument("--csv", default=None, help="all sweep rows, with an image column")
    ap.add_argument(
        "--reuse",
        default=None,
        help="CSV of an earlier run (--csv): its rows of the methods not run now are "
        "reported as they are (the figures are deterministic; the times are that run's)",
    )
    args = ap.parse_args(argv)
    args.command = shlex.join(["benchmarks/rd.py", *(sys.argv[1:] if argv is None else argv)])
    mode = BITS16 if args.bits16 else PHOTOS
    if args.folder is None and not args.bits16:
        ap.error("a folder of images is needed (or --bits16)")
    known = tuple(POINTS16) if args.bits16 else METHODS
    methods = [m for m in (args.methods or ",".join(known)).split(",") if m]
    # The imagecodecs codecs register only where imagecodecs is installed.
    missing = [m for m in methods if parse_method(m)[0] not in registry.available()]
    if missing:
        print(f"not installed, left out: {', '.join(missing)}", file=sys.stderr)
        methods = [m for m in methods if m not in missing]
    if mode.reference not in methods:
        methods.append(mode.reference)
    args.reused = []
    reused = _read_rows(args.reuse, exclude=methods) if args.reuse else {}
    run_methods = methods
    args.reused = sorted({m for rows in reused.values() for m in rows})
    methods = [*methods, *dict.fromkeys(m for rows in reused.values() for m in rows)]
    methods.sort(key=lambda m: known.index(m) if m in known else len(known))
    images = _images(args)
    if not images:
        print(f"no images in {args.folder}", file=sys.stderr)
        return 1
    acc = Results(methods, mode)
    all_rows: list[dict] = []
    t_start = time.perf_counter()
    for i, (name, image) in enumerate(images):
        table = run_sweep(image, run_methods, mode)
        for rows in reused.get(name, {}).values():
            table.rows.extend(rows)
        for row in table:
            all_rows.append({"image": name, **row})
        acc.add(table, image if args.bits16 else None)
        line = [f"[{i + 1}/{len(images)}] {name}"]
        line += [f"{m} {100 * acc.bds[m][-1]:+.1f}%" for m in methods]
        print("  ".join(line), flush=True)
        # The report, plot and CSV are rewritten after every image, so an interrupted
        # run leaves them.
        elapsed = time.perf_counter() - t_start
        write_report(args, [n for n, _ in images[: i + 1]], acc, elapsed)
        if i == 0 and args.plot:
            h, w = image.shape[:2]
            plot_rd(table, args.plot, title=f"{name} ({w}x{h}, {image.dtype})")
        if args.csv:
            buf = io.StringIO()
            w = csv.DictWriter(
                buf, fieldnames=["image", *SweepTable().columns], lineterminator="\n"
            )
            w.writeheader()
            w.writerows(all_rows)
            atomic_write(args.csv, buf.getvalue().encode())
    return 0


class Results:
    """Per method, the figures of each image so far."""

    def __init__(self, methods: list[str], mode: Mode) -> None:
        self.methods, self.mode = methods, mode
        self.bds: dict[str, list[float]] = {m: [] for m in methods}
        self.bds_plain: dict[str, list[float]] = {m: [] for m in methods}
        self.at: dict[tuple[str, float], list[float]] = {
            (m, r): [] for m in methods for r in mode.rates
        }
        self.secs: dict[str, list[float]] = {m: [] for m in methods}
        self.lossless: dict[str, list[float]] = {m: [] for m in methods}

    def add(self, table: SweepTable, image: np.ndarray | None) -> None:
        """One image's table; with ``image``, also the lossless rates."""
        ref, lo, hi = self.mode.reference, self.mode.lo, self.mode.hi
        for m in self.methods:
            b, p = table.curve(m)
            self.bds[m].append(bd_vs(table, m, ref, lo, hi) if m != ref else 0.0)
            plain = bd_vs(table, m, PLAIN, lo, hi) if PLAIN in self.methods else math.nan
            self.bds_plain[m].append(plain)
            self.secs[m].extend(r["seconds"] for r in table if r["method"] == m)
            for r in self.mode.rates:
                self.at[(m, r)].append(psnr_at(b, p, r))
            if image is not None:
                self.lossless[m].append(lossless_bpp(image, m))


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
* `jpegxl`, `jpeg2000` and `htj2k` are libjxl, OpenJPEG and OpenJPH through imagecodecs
  (`docs/formats.md`).
"""


def _versions() -> str:
    import matplotlib
    import PIL

    import napari_svd_compress as nsc

    text = (
        f"NumPy {np.__version__}, Pillow {PIL.__version__}, matplotlib "
        f"{matplotlib.__version__}, napari-svd-compress {nsc.__version__}"
    )
    try:
        import imagecodecs

        v = imagecodecs.version(dict)
        libs = ", ".join(f"{k} {v[k]}" for k in ("libjxl", "openjpeg", "openjph") if k in v)
        text += f", imagecodecs {imagecodecs.__version__} ({libs})"
    except Exception:  # not installed, or an older version() signature: versions only
        pass
    return text


def write_report(args: argparse.Namespace, names: list[str], acc: Results, elapsed: float):
    """The markdown tables: a whole page, or one section of ``args.out``."""
    mode, methods = acc.mode, acc.methods
    ref = mode.reference
    heading = args.section or "# Rate-distortion"
    lines = [
        heading,
        "",
        f"Generated by `{args.command}` on "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC "
        f"({len(names)} image{'s' if len(names) > 1 else ''}: {', '.join(names)}; "
        f"{elapsed / 60:.1f} min).",
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
        f"Machine: {machine()} "
        "(shared with other jobs: timings are indicative only), "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"{_versions()}.",
        "",
        f"BD-rate: Bjontegaard delta rate against `{ref}` (`metrics.bd_rate`, PSNR, "
        f"points between {mode.lo} and {mode.hi} bpp), per image, then averaged over the "
        "images where the curves overlap (n).  Negative means fewer bytes than "
        f"`{ref}` at equal PSNR.  PSNR at a rate is interpolated on each image's curve "
        "(log rate) and averaged over the images whose curve reaches that rate (n).",
        "",
    ]
    plain = PLAIN in methods
    if plain:
        lines += [
            f"BD-rates against `{PLAIN}` (Pillow's default Huffman tables) are in the "
            "second column, for comparison with figures measured that way.",
            "",
        ]
    if args.bits16:
        lines += [
            "`camera16` is scikit-image's `camera` made a 16-bit image with content below "
            "the 8th bit (`rd.camera16`: smoothed, a ramp added, noise of 16 levels RMS).  "
            "PSNR is of the 16-bit range (65535).  8-bit rounding alone caps a codec at "
            "about 59 dB here (the `jpeg` row); lossless is each format's exact setting "
            "(checked), in bits per pixel.",
            "",
        ]
    head = ["method", "sweep", f"BD-rate vs {ref} (n)"]
    head += ["vs plain JPEG"] if plain else []
    head += [f"PSNR @{r:g} bpp (n)" for r in mode.rates]
    head += ["lossless bpp"] if args.bits16 else []
    head += ["median encode s"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        bd, nb = nanmean(acc.bds[m])
        cells = [m, sweep_of(m, mode)[0]]
        cells.append("reference" if m == ref else (f"{100 * bd:+.1f}% ({nb})" if nb else "n/a"))
        if plain:
            bd_p, nbp = nanmean(acc.bds_plain[m])
            cells.append("reference" if m == PLAIN else (f"{100 * bd_p:+.1f}%" if nbp else "n/a"))
        for r in mode.rates:
            v, n = nanmean(acc.at[(m, r)])
            cells.append(f"{v:.2f} ({n})" if n else "- (0)")
        if args.bits16:
            v, n = nanmean(acc.lossless[m])
            cells.append(f"{v:.3f}" if n else "-")
        cells.append(f"{float(np.median(acc.secs[m])):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    if len(names) > 1:
        others = [m for m in methods if m != ref]
        lines += [
            "",
            "Per image BD-rates (%):",
            "",
            "| image | " + " | ".join(others) + " |",
            "|---|" + "---|" * len(others),
        ]
        for i, name in enumerate(names):
            vals = [f"{100 * acc.bds[m][i]:+.1f}" for m in others]
            lines.append(f"| {name} | " + " | ".join(vals) + " |")
    if args.plot:
        rel = os.path.relpath(args.plot, Path(args.out).parent)
        lines += ["", f"![rate-distortion of {names[0]}]({rel})"]
    if args.section:
        replace_section(args.out, args.section, [*lines, "", ""])
    else:
        lines.append(NOTES)
        atomic_write(args.out, "\n".join(lines).encode())


if __name__ == "__main__":
    sys.exit(main())
