"""Write the conformance bundles of the current format version and their expected digests.

Run from the repository root::

    PYTHONPATH=src python conformance/make_bundles.py

Bundles are written to ``conformance/bundles/`` as ``v{VERSION}-*.svdz``; files of other
versions are never touched (they must keep decoding), and a bundle that already exists is
kept as it is unless ``--force`` is given, so its digest stays what it was.  The expected
result of each file (the SHA-256 of the decoded array's C-order bytes, its shape and
dtype, or the error class a reader must raise) goes to ``conformance/expected.json``;
for ``learned`` bundles also the digest of the integer latents, which the specification
makes exact (the pixels, a neural network's output, are not).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_svd_compress import compress, decompress
from napari_svd_compress.codecs.learned.codec import decode_latents
from napari_svd_compress.errors import BundleError
from napari_svd_compress.format.bundle import VERSION, open_bundle

HERE = Path(__file__).resolve().parent
BUNDLES = HERE / "bundles"
ARRAYS = HERE / "arrays"
EXPECTED = HERE / "expected.json"


def _smooth(h: int, w: int, c: int, seed: int) -> np.ndarray:
    """A small test picture in [0, 1]: gradients, a disc, a few sinusoids and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    chans = []
    for i in range(c):
        f = 2.0 + 1.5 * i
        v = 0.5 + 0.3 * np.sin(f * np.pi * x + i) * np.cos(3 * np.pi * y - i)
        v += 0.25 * (((x - 0.5) ** 2 + (y - 0.45) ** 2) < 0.08)
        v += 0.03 * rng.standard_normal((h, w))
        chans.append(v)
    return np.clip(np.stack(chans, axis=-1), 0.0, 1.0)


def _as(img: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bool":
        return img > 0.5
    if dtype in ("float32", "float64"):
        return (img * 3.0 - 1.0).astype(dtype)
    if dtype == "int16":
        return np.rint(img * 4000 - 2000).astype(np.int16)
    info = np.iinfo(dtype)
    return np.rint(img * info.max).astype(dtype)


def _gray(h: int, w: int, dtype: str, seed: int = 0) -> np.ndarray:
    return _as(_smooth(h, w, 1, seed)[..., 0], dtype)


def _rgb(h: int, w: int, dtype: str, seed: int = 0, alpha: bool = False) -> np.ndarray:
    img = _smooth(h, w, 4 if alpha else 3, seed)
    if alpha:
        img[..., 3] = img[..., 3] > 0.5  # a mask, as alpha planes usually are
    return _as(img, dtype)


def _stack(n: int, make: Callable[[int], np.ndarray]) -> np.ndarray:
    return np.stack([make(i) for i in range(n)])


# name -> (image, method, params).  Every codec, dtype, layout, colour space and rank rule.
CASES: dict[str, tuple[Callable[[], np.ndarray], str, dict[str, Any]]] = {
    "svd-gray-uint8-rank": (lambda: _gray(48, 40, "uint8"), "svd", {"rank": 8}),
    "svd-rgb-uint8-ycbcr": (lambda: _rgb(40, 48, "uint8"), "svd", {"rank": 6, "color": "ycbcr"}),
    "svd-rgb-uint8-rgb": (lambda: _rgb(40, 48, "uint8", 1), "svd", {"rank": 5, "color": "rgb"}),
    "svd-rgba-uint8": (lambda: _rgb(32, 36, "uint8", 2, alpha=True), "svd", {"rank": 4}),
    "svd-gray-uint16-percent": (lambda: _gray(40, 40, "uint16", 3), "svd", {"percent": 0.6}),
    "svd-gray-int16-energy": (lambda: _gray(36, 44, "int16", 4), "svd", {"energy": 0.995}),
    "svd-gray-float32-psnr": (lambda: _gray(40, 40, "float32", 5), "svd", {"target_psnr": 28.0}),
    "svd-gray-float64-bpp": (lambda: _gray(40, 40, "float64", 6), "svd", {"target_bpp": 1.5}),
    "svd-gray-bool": (lambda: _gray(32, 32, "bool", 7), "svd", {"rank": 6}),
    "svd-stack-uint8": (
        lambda: _stack(3, lambda i: _gray(32, 32, "uint8", 10 + i)),
        "svd",
        {"rank": 4},
    ),
    "svd-rgb-stack-uint16": (
        lambda: _stack(2, lambda i: _rgb(32, 32, "uint16", 20 + i)),
        "svd",
        {"rank": 3},
    ),
    "svd-patch-rgb-uint8": (lambda: _rgb(40, 40, "uint8", 8), "svd", {"patch": 8, "rank": 12}),
    "svd-patch-gray-uint16": (lambda: _gray(36, 36, "uint16", 9), "svd", {"patch": 4, "rank": 6}),
    "pca-blocks-rgb-uint8": (lambda: _rgb(48, 48, "uint8", 11), "pca", {}),
    "pca-blocks-gray-uint8-nodeblock": (lambda: _gray(40, 48, "uint8", 12), "pca", {"deblock": 0}),
    "pca-blocks-ycbcr-uint16": (lambda: _rgb(40, 40, "uint16", 13), "pca", {"color": "ycbcr"}),
    "pca-blocks-rgb-uint8-deblock": (
        lambda: _rgb(48, 64, "uint8", 3),
        "pca",
        {"step": 24, "block": 4},
    ),
    "pca-rows-rgb-uint8": (lambda: _rgb(32, 40, "uint8", 14), "pca", {"mode": "rows"}),
    "pca-rows-gray-float32": (lambda: _gray(32, 32, "float32", 15), "pca", {"mode": "rows"}),
    "kmeans-rgb-uint8": (lambda: _rgb(40, 40, "uint8", 16), "kmeans", {"colors": 8}),
    "kmeans-rgba-uint8-lab": (
        lambda: _rgb(32, 32, "uint8", 17, alpha=True),
        "kmeans",
        {"colors": 6, "space": "lab"},
    ),
    "kmeans-gray-uint16": (lambda: _gray(40, 40, "uint16", 18), "kmeans", {"colors": 5}),
    "kmeans-stack-float64": (
        lambda: _stack(2, lambda i: _gray(24, 24, "float64", 30 + i)),
        "kmeans",
        {"colors": 4},
    ),
}
# The learned codec (format version 3 on): two levels, grey, a size that is not a multiple
# of the stride, more than one plane.
if VERSION >= 3:
    CASES.update(
        {
            "learned-rgb-uint8-q1": (lambda: _rgb(48, 64, "uint8", 40), "learned", {"quality": 1}),
            "learned-rgb-uint8-q5": (lambda: _rgb(48, 64, "uint8", 40), "learned", {"quality": 5}),
            "learned-gray-uint8": (lambda: _gray(48, 64, "uint8", 41), "learned", {"quality": 3}),
            "learned-rgb-uint16-odd": (
                lambda: _rgb(40, 56, "uint16", 42),
                "learned",
                {"quality": 3},
            ),
            "learned-stack-gray-uint8": (
                lambda: _stack(2, lambda i: _gray(32, 32, "uint8", 43 + i)),
                "learned",
                {"quality": 2},
            ),
            # Rewritten by _with_escapes (EDITS).
            "learned-rgb-uint8-escapes": (lambda: _rgb(96, 128, "uint8", 44), "learned", {}),
        }
    )


def digest(array: np.ndarray) -> dict[str, Any]:
    """The expected entry of a decoded array."""
    a = np.ascontiguousarray(array)
    return {
        "sha256": hashlib.sha256(a.tobytes()).hexdigest(),
        "shape": list(a.shape),
        "dtype": a.dtype.name,
    }


def exact_by_construction(manifest: dict[str, Any]) -> bool:
    """Whether the spec makes every decoded bit independent of BLAS and threads (its
    section 12): ``kmeans``, ``svd`` whole-image channels with a ``shift``, and (version
    3) ``pca`` and patch ``svd`` planes with a ``shift`` (``rows``: every channel)."""
    codec = manifest.get("codec")
    if codec == "kmeans":
        return True
    if codec not in ("svd", "pca"):
        return False
    return all(_plane_exact(codec, plane) for plane in manifest.get("planes", []))


def _plane_exact(codec: str, plane: dict[str, Any]) -> bool:
    if codec == "pca" or "patch" in plane:
        if plane.get("mode") == "rows":
            return all("shift" in ch for ch in plane.get("channels", []))
        return "shift" in plane
    return all("shift" in ch for ch in plane.get("channels", []))


def latents(path: Path) -> np.ndarray:
    """The integer latents of a learned bundle as the library decodes them:
    ``(*stack axes, M, h, w)`` int32, the layout of expected.json's ``latents``."""
    bundle = open_bundle(path)
    n = len(bundle.manifest["planes"])
    planes = [
        decode_latents(meta, bundle.payloads_with_prefix(f"p{i}/" if n > 1 else ""))
        for i, meta in enumerate(bundle.manifest["planes"])
    ]
    stack = bundle.spec.shape[: -3 if bundle.spec.rgb else -2]
    return np.stack(planes).reshape(*stack, *planes[0].shape)


def _manifest(data: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return json.loads(zf.read("manifest.json"))


def _rezip(data: bytes, edit: Callable[[dict[str, Any], dict[str, bytes]], None]) -> bytes:
    """``data`` with its manifest and payloads changed by ``edit`` (no validation)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        payloads = {n: zf.read(n) for n in zf.namelist() if n != "manifest.json"}
    edit(manifest, payloads)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        info = zipfile.ZipInfo("manifest.json", (1980, 1, 1, 0, 0, 0))
        zf.writestr(info, json.dumps(manifest, separators=(",", ":")).encode())
        for name, blob in payloads.items():
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), blob)
    return buf.getvalue()


def _refused(base: bytes) -> dict[str, bytes]:
    """Bundles a reader must refuse, made from a valid one."""

    def version(m: dict[str, Any], p: dict[str, bytes]) -> None:
        m["version"] = 99

    def size(m: dict[str, Any], p: dict[str, bytes]) -> None:
        m["payloads"]["svd"] += 1

    def magic(m: dict[str, Any], p: dict[str, bytes]) -> None:
        # The first integer stream (after k float32 amplitudes) loses its "E1" magic.
        k = m["planes"][0]["channels"][0]["rank"]
        p["svd"] = p["svd"][: 4 * k] + b"X" + p["svd"][4 * k + 1 :]

    def name(m: dict[str, Any], p: dict[str, bytes]) -> None:
        p["../evil"] = b"x"
        m["payloads"]["../evil"] = 1

    def rank(m: dict[str, Any], p: dict[str, bytes]) -> None:
        m["planes"][0]["channels"][0]["rank"] = 10_000

    def shift(m: dict[str, Any], p: dict[str, bytes]) -> None:
        # Weights 2^8 times too large: the exact sum could pass 2^53.
        m["planes"][0]["channels"][0]["shift"] += 8

    return {
        "refuse-version": _rezip(base, version),
        "refuse-size": _rezip(base, size),
        "refuse-stream-magic": _rezip(base, magic),
        "refuse-member-name": _rezip(base, name),
        "refuse-rank": _rezip(base, rank),
        "refuse-not-zip": b"NOTAZIP" + base[7:64],
        **({"refuse-shift": _rezip(base, shift)} if VERSION >= 2 else {}),
    }


def _with_escapes(data: bytes) -> bytes:
    """``data`` (a one-plane learned bundle) with a few latents far beyond every table,
    coded again: real pictures seldom escape, and the escape path must be covered."""
    from napari_svd_compress.codecs.learned.codec import encode_latents
    from napari_svd_compress.codecs.learned.model import load_model

    def edit(m: dict[str, Any], p: dict[str, bytes]) -> None:
        meta = m["planes"][0]
        symbols = decode_latents(meta, p)
        symbols[0, 1, 2], symbols[5, 0, 0], symbols[77, 4, 7] = 70000, -90000, 5000
        p.update(encode_latents(load_model(None), meta["quality"], symbols))
        meta["crc32"] = zlib.crc32(p["latents"])
        meta["escapes"] = len(p["escapes"]) // 4
        m["payloads"].update({k: len(v) for k, v in p.items()})

    return _rezip(data, edit)


#: Cases whose bundle is changed after encoding.
EDITS: dict[str, Callable[[bytes], bytes]] = {"learned-rgb-uint8-escapes": _with_escapes}


def _refused_learned(base: bytes) -> dict[str, bytes]:
    """A learned bundle whose latent stream lost its last word, its CRC-32 made to match:
    only decoding the stream can tell (the coder is not used up exactly)."""

    def truncate(m: dict[str, Any], p: dict[str, bytes]) -> None:
        p["latents"] = p["latents"][:-4]
        m["payloads"]["latents"] -= 4
        m["planes"][0]["crc32"] = zlib.crc32(p["latents"])

    return {"refuse-learned-stream": _rezip(base, truncate)}


def _pca_shift(m: dict[str, Any], p: dict[str, bytes]) -> None:
    # Basis times step 2^30 times too large: the exact sums could pass 2^53.
    m["planes"][0]["shift"][0] += 30


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rewrite existing bundles")
    args = parser.parse_args(argv)
    BUNDLES.mkdir(exist_ok=True)
    expected = json.loads(EXPECTED.read_text()) if EXPECTED.exists() else {}
    prefix = f"v{VERSION}-"
    files: dict[str, bytes] = {}
    for name, (make, method, params) in CASES.items():
        path = BUNDLES / f"{prefix}{name}.svdz"
        if path.exists() and not args.force:
            files[path.name] = path.read_bytes()
            continue
        blob = compress(make(), method, **params).bundle
        files[path.name] = EDITS[name](blob) if name in EDITS else blob
    base = files[f"{prefix}svd-gray-uint8-rank.svdz"]
    refused = _refused(base)
    if VERSION >= 3:
        refused.update(_refused_learned(files[f"{prefix}learned-rgb-uint8-q1.svdz"]))
        pca = files[f"{prefix}pca-blocks-rgb-uint8.svdz"]
        refused["refuse-pca-shift"] = _rezip(pca, _pca_shift)
    for name, blob in refused.items():
        path = BUNDLES / f"{prefix}{name}.svdz"
        files[path.name] = path.read_bytes() if path.exists() and not args.force else blob
    for fname, blob in files.items():
        (BUNDLES / fname).write_bytes(blob)
    # Every bundle in the folder, of any version, is decoded again: a recorded result
    # that the library no longer reproduces is an error, never silently rewritten.
    changed = []
    ARRAYS.mkdir(exist_ok=True)
    for path in sorted(BUNDLES.glob("*.svdz")):
        fname = path.name
        try:
            array = np.asarray(decompress(path))
        except BundleError as exc:
            got: dict[str, Any] = {"error": type(exc).__name__}
        else:
            got = digest(array)
            got["exact"] = exact_by_construction(_manifest(path.read_bytes()))
            if _manifest(path.read_bytes())["codec"] == "learned":
                # The latents are exact by construction (section 10.1), the pixels not.
                got["latents"] = {**digest(latents(path)), "exact": True}
            # Decodings that BLAS may round differently elsewhere are kept whole, so that a
            # test there can tell a last-bit difference from a wrong decoding.
            npy = ARRAYS / (path.stem + ".npy")
            if not got["exact"] and (not npy.exists() or fname in files):
                np.save(npy, array)
        if fname in expected and expected[fname] != got and not (args.force and fname in files):
            changed.append(fname)
        else:
            expected[fname] = got
    if changed:
        raise SystemExit(f"the library no longer decodes these as recorded: {changed}")
    EXPECTED.write_text(json.dumps(dict(sorted(expected.items())), indent=1) + "\n")
    total = sum((BUNDLES / f).stat().st_size for f in expected)
    print(f"{len(expected)} files, {total} bytes")


if __name__ == "__main__":
    main()
