"""``demo``: the README's main job.

With a display, napari opens with the plugin docked on the bundled sample RAW. Without
one, the same work runs headless: the sample is compressed by every method at its
default setting, the bundles and JPG previews are written, and the figures printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import registry
from ..api import compress
from ..fileio.atomic import atomic_write
from ..fileio.images import display_available, write_jpeg
from ..fileio.raw import make_sample_dng, read_raw


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="napari with the plugin on the bundled sample (headless: the same from the CLI)",
        description=__doc__,
    )
    p.add_argument("--out", default="demo-output", help="folder for the outputs (headless)")
    p.add_argument("--headless", action="store_true", help="never open a window")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo (napari, or headless); returns the exit status."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dng = make_sample_dng(out / "sample.dng")
    if not args.headless and display_available():
        from . import gui

        return gui.open_viewer(dng)
    print(f"no display: running the demo headless on {dng}")
    image, meta = read_raw(dng)
    cam = meta.get("camera") or {}
    camera = f"{cam.get('make', '')} {cam.get('model', '')}".strip() or "unknown camera"
    print(f"decoded {dng.name}: {image.shape[1]}x{image.shape[0]} {image.dtype} ({camera})")
    header = f"{'method':<22}{'bytes':>9}{'bpp':>8}{'ratio':>8}{'PSNR':>8}{'SSIM':>8}{'s':>7}"
    print(header)
    for codec in registry.all_codecs():
        try:
            result = compress(image, codec.name)
        except Exception as exc:  # one failing method must not hide the others
            print(f"{codec.name:<22}failed: {exc}")
            continue
        ext = ".jpg" if codec.native == "jpeg" else f".{codec.native}" if codec.native else ".svdz"
        atomic_write(out / f"sample-{codec.name}{ext}", result.bundle)
        write_jpeg(out / f"sample-{codec.name}-preview.jpg", result.image)
        print(
            f"{result.label:<22}{result.nbytes:>9,}{result.bpp:>8.3f}{result.ratio:>8.1f}"
            f"{result.psnr:>8.2f}{result.ssim:>8.4f}{result.encode_s + result.decode_s:>7.2f}"
        )
    print(f"outputs in {out}/ (bundles and JPG previews); open a .svdz in napari to view it")
    return 0
