"""The ``napari-svd-compress`` command line.

Each subcommand lives in its own module with ``add_parser(subparsers)`` and
``run(args) -> int``; the codec flags are generated from the registry.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import SVDCompressError
from . import batch, codec_cmds, demo, export, sweep, train

PROG = "napari-svd-compress"
# The seed scripts took flags without a subcommand: treat those as `compress`.
_SEED_FLAGS = ("--file", "--percent", "--save_encoded", "--show_compressed")


def build_parser() -> argparse.ArgumentParser:
    """The parser of the whole command line, one subparser per subcommand module."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Lossy image compression by truncated SVD, PCA, k-means colour quantisation "
            "and a small learned codec, with honest figures (bytes on disk, bpp, PSNR, SSIM)."
        ),
        epilog=f"Run '{PROG} COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _modules():
        module.add_parser(sub)
    return parser


def _modules() -> list:
    return [codec_cmds, sweep, batch, export, train, demo]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if (args_list and args_list[0] in _SEED_FLAGS) or (
        args_list and args_list[0].startswith("--") and args_list[0].split("=")[0] in _SEED_FLAGS
    ):
        args_list.insert(0, "compress")
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (SVDCompressError, OSError, ValueError) as exc:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and exc.filename:
            text = f"{exc.filename}: {exc.strerror or exc}"
        print(f"{PROG}: error: {text}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
