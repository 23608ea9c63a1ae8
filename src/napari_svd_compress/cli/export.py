"""``export``: an image or a bundle as an OME-Zarr store, lossless or with svdz chunks."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .. import registry
from ..errors import ParameterError
from .codec_cmds import add_codec_arguments, codec_params

# fileio.ome_zarr's COMPRESSIONS and NGFF_VERSIONS: that module needs the 'formats' extra,
# so it is imported when the command runs, and the parser is built without it.
COMPRESSIONS = ("blosc", "zstd", "none", "svdz")
NGFF_VERSIONS = ("0.4", "0.5")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``export`` subcommand."""
    p = sub.add_parser(
        "export",
        help="write an image or a .svdz bundle as OME-Zarr (lossless, or svdz-compressed chunks)",
        description=(
            "Write INPUT (any image the command line reads: TIFF, PNG, NPY, JPEG XL, JPEG "
            "2000, camera RAW, or a .svdz bundle) as an OME-Zarr store OUTPUT (OME-NGFF 0.4 "
            "or 0.5 multiscales, with a pyramid for planes over --smallest pixels).  Chunks "
            "are lossless Blosc-zstd by default; '--codec svdz' compresses each chunk with "
            "--method and its parameters (a bundle's own method and parameters when "
            "--method is not given).  Examples: 'export cells.tif cells.ome.zarr --axes zyx "
            "--scale 2,0.3,0.3 --units um'; 'export cells.tif cells.ome.zarr --codec svdz "
            "--method pca --step 4'.  Needs the 'formats' extra (zarr, numcodecs)."
        ),
    )
    p.add_argument("input", metavar="IMAGE_OR_BUNDLE", help="image file or .svdz bundle")
    p.add_argument("output", metavar="OUTPUT", help="the store to write (e.g. out.ome.zarr)")
    p.add_argument(
        "--codec",
        choices=COMPRESSIONS,
        default="blosc",
        help="chunk compression: blosc (Blosc-zstd, lossless; default), zstd, none, or svdz "
        "(our codecs, lossy: see --method)",
    )
    p.add_argument(
        "--ngff", choices=NGFF_VERSIONS, default="0.4", help="OME-NGFF version (default 0.4)"
    )
    p.add_argument(
        "--axes",
        help="names of the image's axes but the colour one, e.g. 'zyx' or 't,z,y,x' "
        "(default: y x last, then z, t, c)",
    )
    p.add_argument("--scale", help="pixel size per axis, comma-separated (e.g. 2,0.3,0.3)")
    p.add_argument("--translate", help="position of the first pixel per axis, comma-separated")
    p.add_argument(
        "--units",
        help="unit per axis, comma-separated, or one for every axis (e.g. 'um' or 's,um,um')",
    )
    rgb = p.add_mutually_exclusive_group()
    rgb.add_argument(
        "--rgb", dest="rgb", action="store_true", default=None, help="last axis is RGB"
    )
    rgb.add_argument("--no-rgb", dest="rgb", action="store_false", help="last axis is not RGB")
    p.add_argument("--chunk", type=int, help="y and x size of a chunk")
    p.add_argument(
        "--smallest",
        type=int,
        default=1024,
        help="pyramid levels halve y and x until the longer side is at most this (1024)",
    )
    p.add_argument("--no-pyramid", action="store_true", help="write level 0 only")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--json", action="store_true", help="print what was written as JSON")
    add_codec_arguments(p)
    p.set_defaults(run=run, method=None)


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    parts = [t.strip() for t in text.split(",")] if "," in text else [text.strip()]
    return [t for t in parts if t] or None


def _numbers(text: str | None, flag: str) -> list[float] | None:
    parts = _split(text)
    if parts is None:
        return None
    try:
        return [float(t) for t in parts]
    except ValueError:
        raise ParameterError(f"{flag} takes comma-separated numbers, got {text!r}") from None


def _read_input(src: Path) -> tuple[Any, bool | None, dict[str, Any] | None]:
    """The image (lazy for bundles of several planes), its rgb flag if known, and the
    bundle's method and parameters (None for other files)."""
    if src.suffix.lower() == ".svdz":
        from ..api import decompress
        from ..format.bundle import open_bundle

        opened = open_bundle(src)
        image = decompress(opened, lazy=True)
        if opened.native is not None:
            return image, None, None
        manifest = opened.manifest
        return image, opened.spec.rgb, {"method": manifest["codec"], "params": manifest["params"]}
    from ..fileio.images import read_image

    image, _ = read_image(src)
    return image, None, None


def _store_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


def run(args: argparse.Namespace) -> int:
    """Run ``export``; returns the exit status."""
    src, out = Path(args.input), Path(args.output)
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise ParameterError(f"refusing to overwrite the input file {src}")
    if out.exists() and not args.overwrite:
        raise ParameterError(f"{out} exists; give --overwrite to replace it")
    try:
        from ..fileio.ome_zarr import read_ome_zarr, write_ome_zarr
    except ImportError as exc:
        raise ParameterError(
            f"export needs the 'formats' extra ({exc}): pip install 'napari-svd-compress[formats]'"
        ) from None
    given_params = {k: v for k, v in vars(args).items() if k.startswith("param_") and v is not None}
    if args.codec != "svdz" and (args.method is not None or given_params):
        raise ParameterError("--method and its parameters apply to --codec svdz only")
    image, rgb, bundle_codec = _read_input(src)
    method, params = "pca", {}
    if args.codec == "svdz":
        if args.method is None and bundle_codec is not None and not given_params:
            method, params = bundle_codec["method"], dict(bundle_codec["params"])
        else:
            args.method = args.method or "pca"
            method, params = args.method, codec_params(args)
        resolved = registry.get(method).resolve(params)
        params = {k: v for k, v in resolved.items() if v is not None}
    if args.rgb is not None:
        rgb = args.rgb
    is_rgb = bool(rgb) if rgb is not None else _napari_rgb(image)
    units = _split(args.units)
    n_axes = image.ndim - (1 if is_rgb else 0)
    if units is not None and len(units) == 1 and n_axes > 1:
        units = units * n_axes
    axes = _split(args.axes)
    if axes is not None and len(axes) == 1 and len(axes[0]) > 1:
        axes = list(axes[0])
    written = write_ome_zarr(
        out,
        image,
        rgb=is_rgb,
        axes=axes,
        scale=_numbers(args.scale, "--scale"),
        translate=_numbers(args.translate, "--translate"),
        units=units,
        version=args.ngff,
        compression=args.codec,
        method=method,
        params=params,
        chunk=args.chunk,
        smallest=args.smallest,
        max_levels=1 if args.no_pyramid else 8,
        overwrite=True,
    )
    levels, meta = read_ome_zarr(written)
    nbytes = _store_bytes(written)
    pixels = 1  # of one channel, over the whole stack (as Result.bpp counts them)
    for n in image.shape[:n_axes]:
        pixels *= int(n)
    report = {
        "input": str(src),
        "output": str(written),
        "ngff": args.ngff,
        "compression": args.codec,
        "method": method if args.codec == "svdz" else None,
        "params": params if args.codec == "svdz" else None,
        "axes": [a["name"] for a in meta["axes"]],
        "levels": [list(level.shape) for level in levels],
        "bytes": nbytes,
        "bpp": nbytes * 8 / pixels,
    }
    if args.json:
        print(json.dumps(report, indent=1, default=str))
        return 0
    codec_text = args.codec if args.codec != "svdz" else f"svdz {method} {json.dumps(params)}"
    shapes = ", ".join("x".join(map(str, s)) for s in report["levels"])
    print(
        f"wrote {written}: OME-NGFF {args.ngff}, axes {''.join(report['axes'])}, "
        f"levels {shapes}; {nbytes:,} bytes ({report['bpp']:.3f} bpp), chunks {codec_text}"
    )
    return 0


def _napari_rgb(image: Any) -> bool:
    return image.ndim >= 3 and image.shape[-1] in (3, 4)
