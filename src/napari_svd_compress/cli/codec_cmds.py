"""``compress``, ``decompress`` and ``info``: one image in, files and figures out."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .. import registry
from ..api import Result, compress, decompress
from ..errors import ParameterError
from ..fileio.atomic import atomic_write
from ..fileio.images import default_output, display_available, read_image, write_jpeg, write_png
from ..format.bundle import open_bundle
from ..pipelines.large import LARGE_PARAMS, compress_large, wants_large


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``compress``, ``decompress`` and ``info`` subcommands."""
    _add_compress(sub)
    _add_decompress(sub)
    _add_info(sub)


def add_codec_arguments(parser: argparse.ArgumentParser) -> None:
    """``--method`` and one flag per codec parameter, generated from the registry.

    A name shared by several codecs (``quality``) is one flag; the chosen codec
    converts and checks the value.  Every flag defaults to "not given".
    """
    codecs = registry.all_codecs()
    parser.add_argument(
        "-m",
        "--method",
        default="svd",
        choices=[c.name for c in codecs],
        help="compression method (default: svd)",
    )
    seen: dict[str, list[tuple[registry.Codec, registry.Param]]] = {}
    for codec in codecs:
        for p in codec.params:
            seen.setdefault(p.name, []).append((codec, p))
    group = parser.add_argument_group("method parameters (each applies to the methods named)")
    for name, owners in seen.items():
        first = owners[0][1]
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        helps = "; ".join(f"{c.name}: {p.help}{_range(p)}" for c, p in owners)
        kwargs: dict[str, Any] = {"dest": f"param_{name}", "default": None, "help": helps}
        if all(p.kind is bool for _, p in owners):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = first.kind.__name__.upper() if len(owners) == 1 else "VALUE"
        group.add_argument(*flags, **kwargs)


def _range(p: registry.Param) -> str:
    bits = []
    if p.choices:
        bits.append("one of " + ", ".join(map(str, p.choices)))
    elif p.low is not None or p.high is not None:
        bits.append(f"{p.low if p.low is not None else ''}..{p.high if p.high is not None else ''}")
    if p.default is not None and p.default != "":
        bits.append(f"default {p.default}")
    return f" ({'; '.join(bits)})" if bits else ""


def codec_params(args: argparse.Namespace) -> dict[str, Any]:
    """The codec parameters given on the command line, checked against ``args.method``."""
    codec = registry.get(args.method)
    given = {
        key[len("param_") :]: value
        for key, value in vars(args).items()
        if key.startswith("param_") and value is not None
    }
    names = {p.name for p in codec.params}
    wrong = sorted(set(given) - names)
    if wrong:
        flags = ", ".join(f"--{w}" for w in wrong)
        raise ParameterError(f"{flags} does not apply to method {codec.name!r}")
    return given


def _add_compress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compress",
        help="compress an image or camera RAW file; write a bundle and/or a JPG",
        description=(
            "Compress one image (PNG, JPEG, TIFF, NPY, camera RAW, ...) and print its figures. "
            "Examples: 'compress photo.nef --rank 50 -o photo.svdz --jpg photo.jpg'; "
            "'compress --file photo.png --percent 0.9 --save_encoded'."
        ),
    )
    p.add_argument("input", nargs="?", help="input image (or use --file)")
    p.add_argument("--file", dest="file", help="input image (the seed scripts' flag)")
    p.add_argument(
        "-o", "--output", help="bundle to write (default: INPUT's name with .svdz, in the cwd)"
    )
    p.add_argument(
        "--save_encoded",
        "--save-encoded",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="the seed scripts' flag: write the encoded bundle (to PATH or the default name)",
    )
    p.add_argument("--jpg", metavar="PATH", help="also write the decoded image as JPEG")
    p.add_argument("--jpg-quality", type=int, default=95, help="JPEG quality (default 95)")
    p.add_argument("--png", metavar="PATH", help="also write the decoded image as PNG")
    p.add_argument(
        "--show_compressed",
        "--show-compressed",
        action="store_true",
        help="show original and result side by side (matplotlib; needs a display)",
    )
    p.add_argument("--no-bundle", action="store_true", help="write no bundle (figures only)")
    p.add_argument(
        "--large",
        action="store_true",
        help="banded out-of-core SVD for huge 2-D TIFF/NPY planes (automatic from 134 Mpx; "
        "svd with --rank/--qloss only)",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    raw = p.add_argument_group("camera RAW decoding")
    raw.add_argument("--raw-bits", type=int, choices=(8, 16), default=8, help="output bits")
    raw.add_argument("--half-size", action="store_true", help="decode at half resolution")
    add_codec_arguments(p)
    p.set_defaults(run=run_compress)


def _input_path(args: argparse.Namespace) -> Path:
    if args.input and args.file and args.input != args.file:
        raise ParameterError("give the input once (positional or --file)")
    name = args.input or args.file
    if not name:
        raise ParameterError("no input image given")
    return Path(name)


def run_compress(args: argparse.Namespace) -> int:
    """Run ``compress``; returns the exit status."""
    src = _input_path(args)
    params = codec_params(args)
    if args.large and args.method == "svd":
        unsupported = sorted(set(params) - set(LARGE_PARAMS))
        if unsupported:
            flags = " and ".join(f"--{name}" for name in LARGE_PARAMS)
            raise ParameterError(f"--large takes {flags} only, not --{unsupported[0]}")
    if wants_large(args.method, src, params, force=args.large):
        return _run_compress_large(args, src, params)
    codec = registry.get(args.method)
    options = {"output_bits": args.raw_bits, "half_size": args.half_size} if _is_raw(src) else {}
    image, _ = read_image(src, **options)
    result = compress(image, args.method, **params)
    written = []
    bundle_path = None
    if not args.no_bundle:
        ext = f".{codec.native}" if codec.native else ".svdz"
        if codec.native == "jpeg":
            ext = ".jpg"
        bundle_path = Path(
            args.output or args.save_encoded or default_output(Path.cwd() / src.name, ext)
        )
        _refuse_input(bundle_path, src)
        atomic_write(bundle_path, result.bundle)
        written.append(bundle_path)
    if args.jpg:
        _refuse_input(Path(args.jpg), src)
        written.append(write_jpeg(args.jpg, result.image, quality=args.jpg_quality))
    if args.png:
        _refuse_input(Path(args.png), src)
        written.append(write_png(args.png, result.image))
    _print_figures(result, src, written, as_json=args.json)
    if args.show_compressed:
        _show(image, result)
    return 0


def _run_compress_large(args: argparse.Namespace, src: Path, params: dict[str, Any]) -> int:
    """``compress`` of a huge 2-D plane through the banded out-of-core SVD."""
    out = None
    if not args.no_bundle:
        out = Path(
            args.output or args.save_encoded or default_output(Path.cwd() / src.name, ".svdz")
        )
        _refuse_input(out, src)
    result = compress_large(src, out=out, **params)
    if args.jpg or args.png:
        print("--jpg/--png: not written for large planes (decompress to .npy instead)")
    _print_figures(result, src, [out] if out else [], as_json=args.json)
    return 0


def _is_raw(path: Path) -> bool:
    from ..fileio.raw import is_raw_path

    return is_raw_path(path) and path.suffix.lower() not in (".tif", ".tiff")


def _refuse_input(out: Path, src: Path) -> None:
    if out.exists() and src.exists() and out.resolve() == src.resolve():
        raise ParameterError(f"refusing to overwrite the input file {src}")


def _print_figures(result: Result, src: Path, written: Iterable[Path], *, as_json: bool) -> None:
    if as_json:
        out = result.figures()
        out["input"] = str(src)
        out["written"] = [str(w) for w in written]
        out["info"] = result.info
        print(json.dumps(out, indent=1, default=str))
        return
    print(f"{src}: {result.summary()}")
    for w in written:
        print(f"wrote {w}")


def _show(original: np.ndarray, result: Result) -> None:
    if not display_available():
        print("--show_compressed: no display available; use --jpg/--png to save the result")
        return
    import matplotlib.pyplot as plt

    _, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, img, title in (
        (axes[0], original, "original"),
        (axes[1], result.image, f"{result.label} ({result.bpp:.2f} bpp, {result.psnr:.1f} dB)"),
    ):
        ax.imshow(img, cmap=None if img.ndim == 3 else "gray")
        ax.set_title(title)
        ax.axis("off")
    plt.show()


def _add_decompress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decompress",
        help="decode a bundle to an image file",
        description="Decode a .svdz bundle to PNG, JPEG, TIFF or NPY (chosen by -o's extension).",
    )
    p.add_argument("bundle", help="the .svdz file")
    p.add_argument("-o", "--output", help="image to write (default: BUNDLE's name with .png)")
    p.add_argument("--jpg-quality", type=int, default=95, help="JPEG quality (default 95)")
    p.add_argument(
        "--model",
        metavar="FILE",
        help="the learned codec's model file the bundle was encoded with, when not the "
        "built-in one (a bundle never names a file to load)",
    )
    p.set_defaults(run=run_decompress)


def run_decompress(args: argparse.Namespace) -> int:
    """Run ``decompress``; returns the exit status."""
    src = Path(args.bundle)
    if args.model:
        from ..codecs.learned.model import load_model

        load_model(args.model)
    image = decompress(src)
    out = Path(args.output) if args.output else default_output(Path.cwd() / src.name, ".png")
    _refuse_input(out, src)
    suffix = out.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import io

        import tifffile

        buf = io.BytesIO()
        tifffile.imwrite(buf, image)
        atomic_write(out, buf.getvalue())
    elif suffix == ".npy":
        import io

        buf = io.BytesIO()
        np.save(buf, image, allow_pickle=False)
        atomic_write(out, buf.getvalue())
    elif suffix in (".jpg", ".jpeg"):
        write_jpeg(out, image, quality=args.jpg_quality)
    elif suffix == ".png":
        if image.ndim > 3 or (image.ndim == 3 and image.shape[-1] not in (3, 4)):
            raise ParameterError("a stack cannot be written as PNG; use .tif or .npy")
        write_png(out, image)
    else:
        raise ParameterError(f"unknown output type {suffix!r}; use .png, .jpg, .tif or .npy")
    print(f"wrote {out} ({'x'.join(map(str, image.shape))} {image.dtype})")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="print a bundle's manifest and figures",
        description="Print the manifest of a .svdz bundle and its figures (sizes from the file).",
    )
    p.add_argument("bundle", help="the .svdz file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run_info)


def run_info(args: argparse.Namespace) -> int:
    """Run ``info``; returns the exit status."""
    opened = open_bundle(args.bundle)
    manifest = dict(opened.manifest)
    figures = opened.figures
    if args.json:
        print(json.dumps({"manifest": manifest, "figures": figures}, indent=1))
        return 0
    spec = opened.spec
    print(f"{args.bundle}")
    print(f"  format    {manifest.get('format')} v{manifest.get('version', '-')}")
    print(f"  codec     {manifest.get('codec')}  {json.dumps(manifest.get('params', {}))}")
    print(f"  image     {'x'.join(map(str, spec.shape))} {spec.dtype}  range {spec.value_range}")
    print(f"  colour    {'RGBA' if spec.alpha else 'RGB' if spec.rgb else 'grayscale'}")
    print(f"  planes    {spec.n_planes}")
    for key in ("bytes", "bpp", "ratio", "psnr", "ssim"):
        if key in figures:
            value = figures[key]
            text = (
                f"{value:,}"
                if key == "bytes"
                else (f"{value:.4f}" if isinstance(value, float) else str(value))
            )
            print(f"  {key:<9} {text}")
    payloads = manifest.get("payloads", {})
    print(f"  payloads  {len(payloads)} ({sum(payloads.values()):,} bytes)")
    sys.stdout.flush()
    return 0
