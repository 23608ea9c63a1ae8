"""``sweep``: rate-distortion curves of several methods on one image."""

from __future__ import annotations

import argparse
import sys

from .. import registry
from ..errors import ParameterError
from ..pipelines.sweep import DEFAULT_METHODS, plot_rd, sweep


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``sweep`` subcommand."""
    p = sub.add_parser(
        "sweep",
        help="rate-distortion sweep: bpp, PSNR and SSIM of several methods on one image",
        description=(
            "Compress IMAGE with each method over the default range of its main parameter "
            "(about 0.05 to 2 bits per pixel on photographs) and print, or write, the "
            "table method,param,bytes,bpp,psnr,ssim,seconds.  Example: "
            "'sweep photo.png --methods svd,pca,jpeg --plot rd.png --csv rd.csv'."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="image file")
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated methods (default {','.join(DEFAULT_METHODS)}; "
        f"available: {','.join(registry.available())})",
    )
    p.add_argument("--plot", metavar="PNG", help="write PSNR and SSIM against bpp here")
    p.add_argument("--csv", metavar="CSV", help="write the table here (default: print it)")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the sweep; return the exit status."""
    from ..fileio.images import read_image

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise ParameterError("--methods is empty")
    for m in methods:
        registry.get(m)  # unknown names fail before any work is done
    image, _ = read_image(args.image)

    def progress(fraction: float) -> None:
        if not args.quiet:
            print(f"\r{100 * fraction:5.1f}%", end="", file=sys.stderr, flush=True)

    table = sweep(image, methods=methods, progress=progress)
    if not args.quiet:
        print(file=sys.stderr)
    if args.csv:
        table.to_csv(args.csv)
    else:
        sys.stdout.write(table.to_csv_text())
    if args.plot:
        plot_rd(table, args.plot, title=str(args.image))
    return 0
