"""``batch``: compress a folder or glob of images on dask.distributed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..pipelines.batch import MANIFEST_CSV, MANIFEST_JSONL, batch
from .codec_cmds import add_codec_arguments, codec_params


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``batch`` subcommand."""
    p = sub.add_parser(
        "batch",
        help="compress many files (a folder or a glob) on a dask cluster, restartably",
        description=(
            "Compress every image and camera RAW file of INPUT (a folder, a glob pattern in "
            "quotes, or several of them) into OUTPUT_DIR, one dask.distributed task per file. "
            f"Each result is recorded in OUTPUT_DIR/{MANIFEST_JSONL} and {MANIFEST_CSV} as it "
            "completes; running the same command again skips the files already done. "
            "Exit status 0 when every file was compressed, 1 when any failed. "
            "Example: 'batch photos/ out/ --rank 50 --jpg --workers 2'."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folder, glob pattern or file")
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="folder for the outputs and manifest")
    p.add_argument("--jpg", action="store_true", help="also write each decoded image as JPEG")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="address of a running dask scheduler (e.g. tcp://10.0.0.5:8786); "
        "the workers need napari-svd-compress installed and must see OUTPUT_DIR",
    )
    where.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes of the local cluster (default: CPU count, at most 4)",
    )
    p.add_argument("--retry-failed", action="store_true", help="run again files that failed before")
    p.add_argument("--quiet", action="store_true", help="no progress bar, only the summary")
    raw = p.add_argument_group("camera RAW decoding")
    raw.add_argument("--raw-bits", type=int, choices=(8, 16), default=8, help="output bits")
    raw.add_argument("--half-size", action="store_true", help="decode at half resolution")
    add_codec_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the batch; 0 when every file is compressed, 1 when any failed."""
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be at least 1")
    params = codec_params(args)
    client = None
    if args.scheduler:
        from distributed import Client

        client = Client(args.scheduler)
    raw_options = {}
    if args.raw_bits != 8:
        raw_options["output_bits"] = args.raw_bits
    if args.half_size:
        raw_options["half_size"] = True
    try:
        report = batch(
            args.inputs,
            args.output_dir,
            args.method,
            client=client,
            workers=args.workers,
            jpg=args.jpg,
            raw_options=raw_options or None,
            retry_failed=args.retry_failed,
            progress=not args.quiet,
            **params,
        )
    finally:
        if client is not None:
            client.close()
    print()
    for rec in report.failed:
        print(f"FAILED {rec['input']}: {rec.get('error', '')}", file=sys.stderr)
    print(report.summary())
    print(f"manifest: {Path(report.manifest_path)}")
    return 1 if report.failed else 0
