"""Fuzz every reader of untrusted files: .svdz bundles, baseline images, legacy pickles, RAW.

Usage::

    python benchmarks/fuzz.py N --seed S [--workers W] [--timeout 10] [--out DIR]
    python benchmarks/fuzz.py --seed S --case I     # re-run one case here, with its traceback
    python benchmarks/fuzz.py --replay FILE --kind bundle

Each case ``i`` is derived from ``(S, i)`` alone: it picks a valid seed file of one kind
(bundles of every codec: svd whole and patch, pca, kmeans, learned; grey, RGB, RGBA,
uint16, float, stacks; JPEG/WebP/AVIF/PNG files; legacy pickles; DNG files) and mutates
it: at the byte level (bit flips, interesting values, truncation, deletion, insertion,
splices), at the ZIP level (members repacked with correct CRCs and sizes so that the
mutations reach the codecs; integer-stream headers; duplicate, missing, extra and
renamed members with path-like names; deflated members; zip bombs), in the manifest's
JSON (any field, nested ones too, replaced by values of every type: -1, 2**63, 1e308,
NaN, Infinity, strings, lists, objects, null; keys deleted, added, duplicated), in the
pickle structure (hostile globals, absurd shapes, wrong dtypes) and in the DNG's TIFF
tags (sizes, offsets, bit depths, CFA).

Cases run in worker processes under an address-space limit (``resource.RLIMIT_AS``),
each with a time limit enforced by the parent, so that a crash (a signal) or a hang is
counted against the case, the worker replaced, and the run goes on.  A case's outcome:

``refused``
    The reader raised the error its contract names: a ``BundleError`` for bundles and
    baseline images, ``LegacyError`` for pickles, ``RawError`` for RAW files.
``clean``
    It decoded, to exactly the shape and dtype the file declares.
``escape:<type>``
    Any other exception (the contract is broken).
``wrong-output``, ``crash:<signal>``, ``hang``, ``code-ran``
    A decode of the wrong shape or dtype; the worker died; the case ran past the time
    limit; a hostile pickle ran code.
``over-memory``
    The case allocated more than its budget: twice the decoded image it declares (for
    a bundle, the image in its dtype plus the float32 plane codecs decode to; for a
    baseline file, the image its header declares as Pillow holds it, 4 bytes a pixel,
    plus the array) plus 4 bytes per byte
    of the file plus 16 MiB (measured by tracemalloc, which sees Python and NumPy
    allocations, and by the peak resident set, which sees the native libraries too).

The report (stdout and ``OUT/report.json``) counts outcomes by kind and seed, the
refusals by exception class (and, for ``BundleDecodeError``, by the exception the
safety net caught), and lists every case that was not refused or clean with its
reproducer: the seed and case index, and the mutated file saved under ``OUT/cases``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import copy
import io
import json
import multiprocessing as mp
import os
import pickle
import signal
import struct
import sys
import tempfile
import time
import traceback
import zipfile
import zlib
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import numpy as np

KINDS = ("bundle", "native", "legacy", "raw")
EXPECTED = {
    "bundle": "BundleError",
    "native": "BundleError",
    "legacy": "LegacyError",
    "raw": "RawError",
}
KIND_WEIGHTS = {"bundle": 0.62, "native": 0.12, "legacy": 0.13, "raw": 0.13}
CORPUS_VERSION = 3
MAX_BYTES = 256 << 20  # decompress's memory limit in the workers (a small machine)
# What a case may take besides its image: interpreter and library working sets (an xz
# decoder alone takes 9 MiB for the dictionary of preset 6).
SLACK = 16 << 20


# --- the corpus of valid files ------------------------------------------------------------


@dataclass
class Seed:
    name: str
    kind: str
    data: bytes


def _images() -> dict[str, np.ndarray]:
    from skimage import data

    astro = data.astronaut()
    rgb = astro[40:232:4, 120:312:4].copy()  # 48 x 48 x 3
    gray = data.camera()[100:404:8, 60:380:8].copy()  # 38 x 40
    rgba = np.dstack([rgb[:40, :44], np.linspace(0, 255, 40 * 44).reshape(40, 44).astype(np.uint8)])
    u16 = (gray.astype(np.uint16) * 257)[:32, :36]
    f32 = (gray.astype(np.float32) / 7.0 - 3.0)[:30, :34]
    f64 = rgb[:24, :28].astype(np.float64) / 255.0
    stack = np.stack([u16[:24, :28], u16[4:28, 2:30], u16[8:32, 4:32]])
    return {
        "rgb": rgb,
        "gray": gray,
        "rgba": rgba,
        "u16": u16,
        "f32": f32,
        "f64": f64,
        "stack": stack,
        "big": astro[::2, ::2].copy(),  # 256 x 256 x 3: makes the memory ratio meaningful
    }


def build_corpus() -> list[Seed]:
    """The valid files every case starts from (deterministic)."""
    import napari_svd_compress as nsc
    from napari_svd_compress.fileio import raw

    im = _images()
    seeds: list[Seed] = []

    def bundle(name: str, image: np.ndarray, method: str, **params: Any) -> None:
        data = nsc.compress(image, method, **params).bundle
        seeds.append(Seed(name, "native" if method in ("jpeg", "webp", "avif") else "bundle", data))

    bundle("svd-gray", im["gray"], "svd", rank=8)
    bundle("svd-rgb-ycbcr", im["rgb"], "svd", rank=6)
    bundle("svd-rgb-rgb", im["rgb"], "svd", rank=5, color="rgb")
    bundle("svd-rgba", im["rgba"], "svd", rank=4)
    bundle("svd-u16", im["u16"], "svd", rank=7)
    bundle("svd-f32", im["f32"], "svd", rank=5)
    bundle("svd-f64-rgb", im["f64"], "svd", rank=4)
    bundle("svd-stack-u16", im["stack"], "svd", rank=3)
    bundle("svd-patch-rgb", im["rgb"], "svd", patch=4, rank=6)
    bundle("svd-patch-gray", im["gray"], "svd", patch=2, rank=3)
    bundle("svd-big", im["big"], "svd", rank=12)
    bundle("pca-rgb", im["rgb"], "pca")
    bundle("pca-gray-rows", im["gray"], "pca", mode="rows", components=6)
    bundle("pca-rgba", im["rgba"], "pca", block=4)
    bundle("pca-f32", im["f32"], "pca", deblock=0)
    bundle("kmeans-rgb", im["rgb"], "kmeans", colors=8)
    bundle("kmeans-gray", im["gray"], "kmeans", colors=4, space="rgb")
    bundle("kmeans-rgba", im["rgba"], "kmeans", colors=6)
    bundle("kmeans-big", im["big"], "kmeans", colors=32)
    bundle("learned-rgb", im["rgb"], "learned", quality=2)
    bundle("learned-gray", im["gray"], "learned", quality=4)
    bundle("jpeg-rgb", im["rgb"], "jpeg")
    bundle("jpeg-gray", im["gray"], "jpeg")
    bundle("webp-rgb", im["rgb"], "webp")
    bundle("avif-rgb", im["rgb"], "avif")
    png = io.BytesIO()
    from PIL import Image

    Image.fromarray(im["rgba"]).save(png, format="PNG")
    seeds.append(Seed("png-rgba", "native", png.getvalue()))

    for name, image, protocol in (
        ("legacy-gray-p2", im["gray"], 2),
        ("legacy-rgb-p4", im["rgb"][:24, :20], 4),
        ("legacy-rgba-p5", im["rgba"][:16, :18], 5),
        ("legacy-gray-p0", im["gray"][:12, :10], 0),
    ):
        seeds.append(Seed(name, "legacy", _legacy_pickle(image, protocol)))
    with tempfile.TemporaryDirectory() as tmp:
        for name, image, pattern, bits in (
            ("dng-rggb-12", im["rgb"][:32, :40], "RGGB", 12),
            ("dng-bggr-16", im["rgb"][8:40, 4:28], "BGGR", 16),
            ("dng-gbrg-8", im["gray"][:24, :30], "GBRG", 8),
        ):
            path = raw.write_dng(Path(tmp) / f"{name}.dng", image, pattern=pattern, bits=bits)
            seeds.append(Seed(name, "raw", path.read_bytes()))
    return seeds


def _legacy_pickle(image: np.ndarray, protocol: int) -> bytes:
    x = image.astype(np.float64)
    if x.ndim == 2:
        x = x[..., None]
    entries = []
    for c in range(x.shape[2]):
        u, s, vt = np.linalg.svd(x[..., c], full_matrices=False)
        k = max(1, min(6, len(s)))
        entries.append([u[:, :k], s[:k], vt[:k]])
    return pickle.dumps(entries, protocol=protocol)


def load_corpus(cache: Path | None) -> list[Seed]:
    """The corpus, from ``cache`` if it holds this version of it."""
    import napari_svd_compress as nsc

    tag = f"corpus-v{CORPUS_VERSION}-{nsc.__version__}.json"
    if cache is not None and (cache / tag).exists():
        raw = json.loads((cache / tag).read_text())
        return [Seed(s["name"], s["kind"], base64.b64decode(s["data"])) for s in raw]
    seeds = build_corpus()
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        text = json.dumps(
            [
                {"name": s.name, "kind": s.kind, "data": base64.b64encode(s.data).decode()}
                for s in seeds
            ]
        )
        tmp = cache / f".{tag}.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, cache / tag)
    return seeds


# --- mutations ----------------------------------------------------------------------------

INTERESTING_INTS = [
    0,
    1,
    -1,
    2,
    7,
    255,
    256,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63),
    10**30,
]
JSON_ZOO: list[Any] = [
    *INTERESTING_INTS,
    0.5,
    -0.0,
    1e-308,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    True,
    False,
    None,
    "",
    "x",
    "svd",
    "uint8",
    "../../etc/passwd",
    "\u0000",
    "A" * 5000,
    [],
    [0],
    [1, 1],
    [None],
    [-1, -1],
    [2**31, 2**31],
    [100000, 100000],
    [1, 2, 3, 4, 5, 6, 7, 8, 9],
    {},
    {"a": 1},
    {"rank": 1},
]


def _pick(rng: np.random.Generator, seq: list[Any]) -> Any:
    """An element of ``seq`` (a copy of a list or dict: the zoo's must never be shared)."""
    item = seq[int(rng.integers(len(seq)))]
    return copy.deepcopy(item) if isinstance(item, list | dict) else item


def mutate_bytes(rng: np.random.Generator, data: bytes, others: list[bytes]) -> bytes:
    """1 to 4 byte-level edits."""
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        n = len(buf)
        op = int(rng.integers(9))
        if n == 0:
            buf += bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
            continue
        pos = int(rng.integers(n))
        if op == 0:  # bit flips
            for _ in range(int(rng.integers(1, 9))):
                p = int(rng.integers(n))
                buf[p] ^= 1 << int(rng.integers(8))
        elif op == 1:  # an interesting byte
            buf[pos] = _pick(rng, [0, 1, 0x7F, 0x80, 0xFE, 0xFF])
        elif op == 2:  # an interesting word
            width = _pick(rng, [2, 4, 8])
            value = _pick(rng, INTERESTING_INTS) % (1 << (8 * width))
            order = _pick(rng, ["little", "big"])
            buf[pos : pos + width] = value.to_bytes(width, order)
        elif op == 3:  # truncate
            del buf[int(rng.integers(n)) :]
        elif op == 4:  # delete a chunk
            del buf[pos : pos + int(rng.integers(1, max(2, n // 4)))]
        elif op == 5:  # insert random bytes
            buf[pos:pos] = bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
        elif op == 6:  # duplicate a chunk
            chunk = buf[pos : pos + int(rng.integers(1, 256))]
            at = int(rng.integers(n))
            buf[at:at] = chunk
        elif op == 7 and others:  # splice from another file
            other = _pick(rng, others)
            if other:
                a = int(rng.integers(len(other)))
                buf[pos : pos + int(rng.integers(1, 512))] = other[
                    a : a + int(rng.integers(1, 512))
                ]
        else:  # random bytes over a span
            span = int(rng.integers(1, 32))
            buf[pos : pos + span] = bytes(rng.integers(0, 256, span, dtype=np.uint8))
    return bytes(buf)


@dataclass
class Member:
    name: str
    data: bytes
    deflate: bool = False


def _members(data: bytes) -> list[Member]:
    zf = zipfile.ZipFile(io.BytesIO(data))
    return [Member(i.filename, zf.read(i)) for i in zf.infolist()]


def _pack(members: list[Member]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate names are on purpose
            for m in members:
                info = zipfile.ZipInfo(m.name, (1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED if m.deflate else zipfile.ZIP_STORED
                zf.writestr(info, m.data)
    return buf.getvalue()


def _json_paths(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _json_paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:16]):
            out += _json_paths(v, (*path, i))
    return out


def _set_path(root: Any, path: tuple, value: Any, delete: bool = False) -> Any:
    if not path:
        return value
    parent = root
    for k in path[:-1]:
        parent = parent[k]
    if delete and isinstance(parent, dict):
        parent.pop(path[-1], None)
    elif delete and isinstance(parent, list):
        parent.pop(path[-1])
    else:
        parent[path[-1]] = value
    return root


def _near(rng: np.random.Generator, value: Any) -> Any:
    """A value of the same type near ``value`` (the edits a validator most likely misses)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + _pick(rng, [-1, 1, -value, value, 2**31, -(2**31), 1 << 40])
    if isinstance(value, float):
        return value * _pick(rng, [-1.0, 0.0, 1e-300, 1e300, 2.0, 0.5])
    if isinstance(value, str):
        return _pick(rng, [value[:-1], value + "x", value.upper(), "", "rgb", "ycbcr", "gray"])
    if isinstance(value, list):
        if value and rng.random() < 0.5:
            return value[:-1]
        return value + value[:1] if value else [0]
    return _pick(rng, JSON_ZOO)


def mutate_manifest(rng: np.random.Generator, manifest: dict) -> str:
    """Edit the manifest's JSON: one or two fields, anywhere in it."""
    m = json.loads(json.dumps(manifest))
    for _ in range(int(rng.integers(1, 3))):
        paths = _json_paths(m)[1:] or [()]
        # Half the edits go to the planes' entries: what the codecs read.
        inner = [p for p in paths if p[:1] == ("planes",) and len(p) > 2]
        path = _pick(rng, inner if inner and rng.random() < 0.5 else paths)
        op = rng.random()
        if op < 0.4:
            m = _set_path(m, path, _pick(rng, JSON_ZOO))
        elif op < 0.75:
            cur = m
            for k in path:
                cur = cur[k]
            m = _set_path(m, path, _near(rng, cur))
        elif op < 0.9 and path:
            m = _set_path(m, path, None, delete=True)
        else:
            parent = m
            for k in path[:-1]:
                parent = parent[k]
            if isinstance(parent, dict):
                parent[_pick(rng, ["extra", "rank", "shape", "planes", "p0/svd"])] = _pick(
                    rng, JSON_ZOO
                )
    text = json.dumps(m, allow_nan=True)
    if rng.random() < 0.05:  # a duplicate key: json.loads keeps the last
        text = text[:-1] + ', "shape": [1, 1]}'
    if rng.random() < 0.02:  # nested far beyond the recursion limit
        text = text[:-1] + ', "deep": ' + "[" * 100000 + "]" * 100000 + "}"
    return text


BAD_NAMES = [
    "../svd",
    "/svd",
    "p0/../svd",
    "C:\\svd",
    "svd\\..\\x",
    "svd/",
    " svd",
    "\u0455vd",
    "svd\x00.npy",
    "a/" * 120 + "svd",
    "",
    "manifest.json",
    ".svd",
]


def mutate_bundle(rng: np.random.Generator, data: bytes, others: list[bytes]) -> bytes:
    """A ZIP-level or manifest mutation, repacked with correct CRCs (or a byte-level one)."""
    op = rng.random()
    if op < 0.2:
        return mutate_bytes(rng, data, others)
    members = _members(data)
    manifest = json.loads(members[0].data)
    payload_members = [m for m in members if m.name != "manifest.json"]
    fix_sizes = True
    if op < 0.5 and payload_members:  # mutate a payload, so that the codec sees it
        m = _pick(rng, payload_members)
        if rng.random() < 0.35 and b"E1" in m.data:
            m.data = _mutate_stream_header(rng, m.data)
        else:
            m.data = mutate_bytes(rng, m.data, others)
    elif op < 0.78:  # the manifest's JSON
        members[0].data = mutate_manifest(rng, manifest).encode()
        fix_sizes = rng.random() < 0.5
        manifest = None
    elif op < 0.83:  # the manifest's text, byte by byte
        members[0].data = mutate_bytes(rng, members[0].data, others)
        manifest = None
    else:  # the container's structure
        sub = int(rng.integers(8))
        if sub == 0 and members:  # a duplicate member
            dup = _pick(rng, members)
            members.insert(int(rng.integers(len(members) + 1)), Member(dup.name, dup.data))
        elif sub == 1 and payload_members:  # a missing member
            members.remove(_pick(rng, payload_members))
            fix_sizes = False
        elif sub == 2 and members:  # a path-like name
            _pick(rng, members).name = _pick(rng, BAD_NAMES)
        elif sub == 3:  # extra members, maybe many
            for i in range(int(_pick(rng, [1, 3, 2000]))):
                members.append(Member(f"extra{i}", b"x" * int(rng.integers(0, 64))))
        elif sub == 4:  # deflated members, or a zip bomb
            for m in members:
                m.deflate = rng.random() < 0.6
            if rng.random() < 0.3 and payload_members:  # a zip bomb
                bomb = _pick(rng, payload_members)
                bomb.data = bytes(int(_pick(rng, [1 << 20, 50 << 20])))
                bomb.deflate = True
        elif sub == 5:  # reorder (manifest not first)
            order = rng.permutation(len(members))
            members = [members[i] for i in order]
        elif sub == 6 and payload_members and others:  # a payload from another file
            donor = _pick(rng, others)
            try:
                got = _members(donor)
            except Exception:
                got = []
            if len(got) > 1:
                _pick(rng, payload_members).data = _pick(rng, got[1:]).data
        else:  # a payload renamed to another payload's name
            if len(payload_members) >= 2:
                a, b = rng.choice(len(payload_members), 2, replace=False)
                payload_members[int(a)].name = payload_members[int(b)].name
    if manifest is not None and rng.random() < 0.9:
        # The learned codec checks a CRC of its bitstream: keep it right, so that the
        # mutated bits reach the entropy decoder and the network.
        for i, plane in enumerate(manifest.get("planes", [])):
            prefix = f"p{i}/" if len(manifest["planes"]) > 1 else ""
            for m in members:
                if m.name == prefix + "latents" and isinstance(plane, dict) and "crc32" in plane:
                    plane["crc32"] = zlib.crc32(m.data)
    if fix_sizes and manifest is not None:
        manifest["payloads"] = {m.name: len(m.data) for m in members if m.name != "manifest.json"}
        for m in members:
            if m.name == "manifest.json":
                m.data = json.dumps(manifest, allow_nan=True).encode()
    return _pack(members)


def _mutate_stream_header(rng: np.random.Generator, data: bytes) -> bytes:
    """Edit a field of an integer stream's header (``E1``: coder, dtype, shape, or the
    laplace body's symbol range and row count)."""
    buf = bytearray(data)
    starts = [i for i in range(len(buf) - 1) if buf[i : i + 2] == b"E1"]
    at = _pick(rng, starts)
    field = int(rng.integers(5))
    if field == 0:
        buf[at + 2] = int(rng.integers(6))  # coder
    elif field == 1:
        buf[at + 3] = int(rng.integers(10))  # dtype code
    elif field == 2:
        buf[at + 4] = _pick(rng, [0, 1, 2, 3, 9, 255])  # ndim
    else:
        ndim = buf[at + 4] if at + 4 < len(buf) else 0
        offset = at + 5 + (8 * int(rng.integers(max(ndim, 1))) if field == 3 else 8 * ndim)
        value = _pick(rng, INTERESTING_INTS) % (1 << 64)
        buf[offset : offset + 8] = value.to_bytes(8, "little")
    return bytes(buf)


def mutate_native(rng: np.random.Generator, data: bytes, others: list[bytes]) -> bytes:
    if rng.random() < 0.25:
        buf = bytearray(data)
        if data[:3] == b"\xff\xd8\xff":  # JPEG: the frame header's height and width
            at = data.find(b"\xff\xc0")
            if at >= 0:
                field = at + 5 + 2 * int(rng.integers(2))
                buf[field : field + 2] = (_pick(rng, INTERESTING_INTS) % 65536).to_bytes(2, "big")
                return bytes(buf)
        if data[:8] == b"\x89PNG\r\n\x1a\n":  # PNG: IHDR with a correct CRC
            field = 16 + 4 * int(rng.integers(2))
            buf[field : field + 4] = (_pick(rng, INTERESTING_INTS) % (1 << 32)).to_bytes(4, "big")
            buf[29:33] = zlib.crc32(bytes(buf[12:29])).to_bytes(4, "big")
            return bytes(buf)
    return mutate_bytes(rng, data, others)


class _Evil:
    def __init__(self, call: Any, args: tuple) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple:
        return (self.call, self.args)


def mutate_legacy(rng: np.random.Generator, data: bytes, others: list[bytes], marker: str) -> bytes:
    op = rng.random()
    if op < 0.6:
        return mutate_bytes(rng, data, others)
    if op < 0.7:  # hostile globals: each would write the marker file if it ran
        code = f"open({marker!r}, 'w').write('ran')"
        evil = _pick(
            rng,
            [
                _Evil(eval, (code,)),
                _Evil(exec, (code,)),
                _Evil(os.system, (f"touch {marker}",)),
                _Evil(__import__, ("os",)),
                _Evil(np.load, (marker,)),
                _Evil(io.FileIO, (marker, "w")),
            ],
        )
        entry = [[evil, np.ones(1), np.ones((1, 2))]] if rng.random() < 0.5 else evil
        return pickle.dumps(entry, protocol=int(rng.integers(0, 6)))
    # Structures: wrong shapes, dtypes, nesting, sizes.
    h, w, k = (int(v) for v in rng.integers(1, 40, 3))
    choice = int(rng.integers(10))
    u, s, vt = rng.normal(size=(h, k)), rng.normal(size=k) * 10, rng.normal(size=(k, w))
    if choice == 0:
        obj: Any = [[u, s]]
    elif choice == 1:
        obj = [[u.astype(object), s, vt]]
    elif choice == 2:
        obj = [[u.astype(np.complex128), s, vt]]
    elif choice == 3:
        obj = [[u, s, vt.T]]
    elif choice == 4:
        obj = [[u, s, vt]] * int(_pick(rng, [2, 5, 0]))
    elif choice == 5:
        obj = [[u * 1e300, s * 1e300, vt]]
    elif choice == 6:
        obj = [[np.zeros((h, k), dtype=[("a", "<f8"), ("b", "<i4")]), s, vt]]
    elif choice == 7:
        obj = [[u, s.astype(np.float16), vt.astype(">f4")]]
    elif choice == 8:
        obj = {"u": u, "s": s, "vt": vt}
    else:
        obj = [[np.asfortranarray(u), s, vt]]
    blob = pickle.dumps(obj, protocol=int(rng.integers(0, 6)))
    return mutate_bytes(rng, blob, others) if rng.random() < 0.3 else blob


def mutate_raw(rng: np.random.Generator, data: bytes, others: list[bytes]) -> bytes:
    if rng.random() < 0.45 and data[:4] == b"II*\x00":
        buf = bytearray(data)
        try:
            (ifd,) = struct.unpack("<I", data[4:8])
            (count,) = struct.unpack("<H", data[ifd : ifd + 2])
        except struct.error:
            return mutate_bytes(rng, data, others)
        for _ in range(int(rng.integers(1, 4))):
            entry = ifd + 2 + 12 * int(rng.integers(max(count, 1)))
            part = int(rng.integers(3))
            if part == 0:  # the type or count field
                buf[entry + 2 : entry + 8] = bytes(rng.integers(0, 256, 6, dtype=np.uint8))
            else:  # the value or offset
                value = _pick(rng, INTERESTING_INTS) % (1 << 32)
                buf[entry + 8 : entry + 12] = value.to_bytes(4, "little")
        return bytes(buf)
    if rng.random() < 0.05:  # not RAW at all, with a RAW name
        return _pick(rng, [b"", b"\x00" * 100, b"II*\x00", *others[:3]])
    return mutate_bytes(rng, data, others)


# --- one case -------------------------------------------------------------------------------


def make_case(seed: int, index: int, corpus: list[Seed], marker: str) -> tuple[str, str, bytes]:
    """``(kind, seed name, mutated file)`` of case ``index`` (deterministic)."""
    rng = np.random.default_rng([seed, index])
    kinds = list(KIND_WEIGHTS)
    kind = kinds[int(rng.choice(len(kinds), p=list(KIND_WEIGHTS.values())))]
    pool = [s for s in corpus if s.kind == kind]
    base = pool[int(rng.integers(len(pool)))]
    others = [s.data for s in corpus if s.kind == kind and s is not base]
    if kind == "bundle":
        data = mutate_bundle(rng, base.data, others)
    elif kind == "native":
        data = mutate_native(rng, base.data, others)
    elif kind == "legacy":
        data = mutate_legacy(rng, base.data, others, marker)
    else:
        data = mutate_raw(rng, base.data, others)
    return kind, base.name, data


def _declared_bytes(kind: str, data: bytes) -> int:
    """The decoded image a file declares, in bytes (0 when it declares none)."""
    from napari_svd_compress.errors import SVDCompressError

    if kind == "bundle":
        from napari_svd_compress.format import bundle

        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            manifest = json.loads(zf.read("manifest.json"))
            spec = bundle.spec_from_manifest(manifest)
        except (Exception, SVDCompressError):
            return 0
        h, w, cu = spec.unit_shape
        return spec.raw_nbytes + 4 * h * w * cu
    if kind == "native":  # what its header declares: Pillow's image (4 B/px) + the array
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                return w * h * (4 + len(im.getbands()) * (2 if "16" in im.mode else 1))
        except Exception:
            return 0
    return 0


def run_case(kind: str, data: bytes, workdir: Path, decode_mode: int) -> tuple[str, str, int]:
    """Decode one file as the library would; return ``(outcome, detail, declared bytes)``."""
    import napari_svd_compress as nsc
    from napari_svd_compress import api
    from napari_svd_compress.errors import BundleError, LegacyError, RawError
    from napari_svd_compress.format import bundle

    expected = {"bundle": BundleError, "native": BundleError, "legacy": LegacyError}.get(
        kind, RawError
    )
    declared = 0
    try:
        if kind in ("bundle", "native"):
            opened = bundle.open_bundle(data)
            spec = opened.spec
            h, w, cu = spec.unit_shape
            declared = spec.raw_nbytes + 4 * h * w * cu
            if decode_mode == 0 or opened.native is not None:
                out = nsc.decompress(opened, max_bytes=MAX_BYTES)
            elif decode_mode == 1:
                out = np.asarray(nsc.decompress(opened, lazy=True, max_bytes=MAX_BYTES))
            else:  # a pyramid, as napari opens a huge plane: read the smallest level
                levels = api.decompress_levels(opened, max_bytes=MAX_BYTES, smallest=16)
                small = np.asarray(levels[-1])
                want = levels[-1].shape
                if small.shape != want or small.dtype != spec.dtype:
                    return "wrong-output", f"level {small.shape} {small.dtype}", declared
                out = np.asarray(levels[0]) if len(levels) == 1 else None
            if out is not None and (out.shape != spec.shape or out.dtype != spec.dtype):
                return "wrong-output", f"{out.shape} {out.dtype} for {spec.shape}", declared
        elif kind == "legacy":
            from napari_svd_compress.fileio.legacy import load_legacy

            out = load_legacy(data)
            if out.dtype != np.uint8 or out.ndim not in (2, 3):
                return "wrong-output", f"{out.shape} {out.dtype}", declared
            declared = out.nbytes * 5
        else:
            from napari_svd_compress.fileio.raw import read_raw

            path = workdir / "case.dng"
            path.write_bytes(data)
            out, _ = read_raw(path, half_size=bool(decode_mode == 1))
            declared = out.nbytes
        return "clean", "", declared
    except expected as exc:
        name = type(exc).__name__
        if exc.__cause__ is not None:  # what a safety net caught
            name += f"<{type(exc.__cause__).__name__}>"
        return "refused", name, declared
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=12))
        return f"escape:{type(exc).__name__}", tb[-4000:], declared


# --- workers ------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def worker_main(
    conn: Any,
    corpus_path: str,
    seed: int,
    address_space: int,
    workdir: str,
    inject: dict[int, str] | None = None,
) -> None:
    """A worker: warm up, set the address-space limit, then run the cases it is sent."""
    import resource
    import tracemalloc
    import warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warnings.simplefilter("ignore")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    corpus = load_corpus(Path(corpus_path))
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    marker = str(work / "code-ran.txt")
    # LibRaw reports on stderr; keep it out of the report.
    err = os.open(str(work / "stderr.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(err, 2)
    # Warm up: import and initialise every decoder once, so that no case pays for it.
    for s in corpus:
        for mode in range(3):
            run_case(s.kind, s.data, work, mode)
    if address_space:
        limit = _status_kib("VmSize") + address_space
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    tracemalloc.start()
    rss_ok = _reset_peak_rss()
    conn.send(("ready", os.getpid()))
    while True:
        msg = conn.recv()
        if msg is None:
            break
        index = msg
        try:
            kind, base, data = make_case(seed, index, corpus, marker)
        except Exception as exc:  # a bug of the fuzzer itself: report it, go on
            detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            conn.send(("done", index, "?", "?", "fuzzer-error", detail[-3000:], 0.0, 0, 0, 0, 0))
            continue
        mode = int(np.random.default_rng([seed, index, 1]).integers(3))
        tracemalloc.reset_peak()
        traced0 = tracemalloc.get_traced_memory()[0]
        rss0 = _status_kib("VmRSS") if rss_ok and _reset_peak_rss() else 0
        t0 = time.perf_counter()
        if inject and index in inject:  # the fuzzer's own test: fail on purpose
            _misbehave(inject[index])
        outcome, detail, declared = run_case(kind, data, work, mode)
        seconds = time.perf_counter() - t0
        traced = tracemalloc.get_traced_memory()[1] - traced0
        rss = _status_kib("VmHWM") - rss0 if rss0 else 0
        if os.path.exists(marker):
            outcome, detail = "code-ran", "a hostile pickle ran code"
            os.unlink(marker)
        declared = max(declared, _declared_bytes(kind, data))
        budget = 2 * declared + 4 * len(data) + SLACK
        if outcome in ("refused", "clean") and max(traced, rss) > budget:
            detail = f"{outcome} {detail}: traced {traced:,} B, rss {rss:,} B, budget {budget:,} B"
            outcome = "over-memory"
        conn.send(
            (
                "done",
                index,
                kind,
                base,
                outcome,
                detail,
                seconds,
                traced,
                rss,
                declared,
                len(data),
            )
        )


def _misbehave(how: str) -> None:
    if how == "crash":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif how == "hang":
        time.sleep(3600)
    elif how == "memory":
        np.ones(64 << 20, np.uint8)
    else:
        raise ValueError(f"--inject: unknown failure {how!r}")


class Pool:
    """Worker processes fed case indices one at a time, watched for crashes and hangs."""

    def __init__(self, n: int, corpus_path: Path, seed: int, args: argparse.Namespace) -> None:
        self.ctx = mp.get_context("spawn")
        self.corpus_path, self.seed, self.args = corpus_path, seed, args
        self.slots: list[dict[str, Any]] = [self._start(i) for i in range(n)]

    def _start(self, slot: int) -> dict[str, Any]:
        parent, child = self.ctx.Pipe()
        workdir = Path(self.args.out) / "work" / f"w{slot}-{time.monotonic_ns()}"
        proc = self.ctx.Process(
            target=worker_main,
            args=(
                child,
                str(self.corpus_path),
                self.seed,
                self.args.address_space << 20,
                workdir,
                self.args.inject,
            ),
            daemon=True,
        )
        proc.start()
        child.close()
        return {"proc": proc, "conn": parent, "case": None, "since": 0.0, "ready": False}

    def restart(self, slot: int) -> None:
        old = self.slots[slot]
        if old["proc"].is_alive():
            old["proc"].kill()
        old["proc"].join(5)
        old["conn"].close()
        self.slots[slot] = self._start(slot)

    def close(self) -> None:
        for s in self.slots:
            try:
                s["conn"].send(None)
            except (OSError, BrokenPipeError):
                pass
        for s in self.slots:
            s["proc"].join(5)
            if s["proc"].is_alive():
                s["proc"].kill()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run cases ``args.start`` to ``args.start + args.n`` and return the report."""
    out = Path(args.out)
    (out / "cases").mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    corpus = load_corpus(out / "corpus")
    corpus_path = out / "corpus"
    marker = str(out / "parent-marker")
    pool = Pool(args.workers, corpus_path, args.seed, args)
    pending = list(range(args.start + args.n - 1, args.start - 1, -1))
    results: list[tuple] = []
    problems: list[dict[str, Any]] = []
    done = 0
    last_print = time.perf_counter()
    stop = {"flag": False}
    failure = ""

    def on_signal(signum: int, frame: Any) -> None:
        stop["flag"] = True

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)

    def record_problem(index: int, kind: str, base: str, outcome: str, detail: str) -> None:
        path = out / "cases" / f"seed{args.seed}-case{index}-{kind}.bin"
        try:
            path.write_bytes(make_case(args.seed, index, corpus, marker)[2])
        except Exception as exc:
            detail += f"\n(the case cannot be made again: {exc!r})"
        problems.append(
            {
                "case": index,
                "kind": kind,
                "seed_file": base,
                "outcome": outcome,
                "detail": detail,
                "file": str(path),
                "reproduce": f"python benchmarks/fuzz.py --seed {args.seed} --case {index}",
            }
        )

    try:
        while (pending or any(s["case"] is not None for s in pool.slots)) and not stop["flag"]:
            for slot, s in enumerate(pool.slots):
                if s["ready"] and s["case"] is None and pending:
                    index = pending.pop()
                    try:
                        s["conn"].send(index)
                        s["case"], s["since"] = index, time.perf_counter()
                    except (OSError, BrokenPipeError):
                        pending.append(index)
                        pool.restart(slot)
            conns = {s["conn"]: slot for slot, s in enumerate(pool.slots)}
            sentinels = {s["proc"].sentinel: slot for slot, s in enumerate(pool.slots)}
            ready = wait(list(conns) + list(sentinels), timeout=0.5)
            now = time.perf_counter()
            for r in ready:
                if r in conns:
                    slot = conns[r]
                    s = pool.slots[slot]
                    try:
                        msg = s["conn"].recv()
                    except (EOFError, OSError):
                        continue  # the sentinel tells what happened
                    if msg[0] == "ready":
                        s["ready"] = True
                        s["since"] = now
                        continue
                    _, index, kind, base, outcome, detail, seconds, traced, rss, decl, _size = msg
                    s["case"] = None
                    results.append((index, kind, base, outcome, detail, seconds, traced, rss, decl))
                    done += 1
                    if outcome not in ("refused", "clean"):
                        record_problem(index, kind, base, outcome, detail)
            for slot, s in enumerate(pool.slots):
                proc = s["proc"]
                if not proc.is_alive():
                    if s["case"] is not None:
                        index = s["case"]
                        code = proc.exitcode or 0
                        sig = signal.Signals(-code).name if code < 0 else f"exit {code}"
                        kind, base = _describe(args.seed, index, corpus, marker)
                        results.append((index, kind, base, f"crash:{sig}", "", 0.0, 0, 0, 0))
                        record_problem(index, kind, base, f"crash:{sig}", f"worker died: {sig}")
                        done += 1
                    elif not s["ready"]:
                        raise RuntimeError(f"worker {slot} died while starting: {proc.exitcode}")
                    pool.restart(slot)
                elif s["case"] is not None and now - s["since"] > args.timeout:
                    index = s["case"]
                    kind, base = _describe(args.seed, index, corpus, marker)
                    results.append((index, kind, base, "hang", "", args.timeout, 0, 0, 0))
                    record_problem(index, kind, base, "hang", f"over {args.timeout} s")
                    done += 1
                    pool.restart(slot)
            if not args.quiet and time.perf_counter() - last_print > args.print_every:
                last_print = time.perf_counter()
                rate = done / max(last_print - t_start, 1e-9)
                print(
                    f"{done}/{args.n} cases, {len(problems)} problems, {rate:.0f} cases/s",
                    flush=True,
                )
    except Exception:  # a bug of the fuzzer: keep what was run
        failure = traceback.format_exc()
        print(failure, file=sys.stderr)
        stop["flag"] = True
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        pool.close()
    report = summarise(args, results, problems, time.perf_counter() - t_start)
    report["complete"] = not stop["flag"]
    if failure:
        report["fuzzer_failure"] = failure
    text = json.dumps(report, indent=1, default=str)
    (out / "report.json").write_text(text)
    return report


def _describe(seed: int, index: int, corpus: list[Seed], marker: str) -> tuple[str, str]:
    try:
        kind, base, _ = make_case(seed, index, corpus, marker)
        return kind, base
    except Exception:
        return "?", "?"


def summarise(
    args: argparse.Namespace, results: list[tuple], problems: list[dict], seconds: float
) -> dict[str, Any]:
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    by_seed: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    refusals: collections.Counter = collections.Counter()
    examples: dict[str, int] = {}
    slowest = sorted(results, key=lambda r: -r[5])[:5]
    worst_ratio = 0.0
    worst_ratio_case = None
    max_traced = max_rss = 0
    for index, kind, base, outcome, detail, _secs, traced, rss, decl in results:
        key = outcome.split(":")[0] if outcome in ("refused", "clean") else outcome
        by_kind[kind][key] += 1
        by_seed[base][key] += 1
        if outcome == "refused":
            refusals[f"{kind}: {detail}"] += 1
            examples.setdefault(f"{kind}: {detail}", index)
        max_traced, max_rss = max(max_traced, traced), max(max_rss, rss)
        if decl >= 512 << 10 and outcome in ("clean", "refused"):
            ratio = max(traced, rss) / decl
            if ratio > worst_ratio:
                worst_ratio, worst_ratio_case = ratio, index
    totals: collections.Counter = collections.Counter()
    for c in by_kind.values():
        totals.update(c)
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "seed": args.seed,
        "cases": len(results),
        "seconds": round(seconds, 1),
        "workers": args.workers,
        "timeout_s": args.timeout,
        "address_space_mib": args.address_space,
        "machine": _machine(),
        "totals": dict(totals),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "by_seed_file": {k: dict(v) for k, v in sorted(by_seed.items())},
        "refusals_by_class": dict(refusals.most_common()),
        "refusal_examples": {k: examples[k] for k, _ in refusals.most_common()},
        "problems": problems,
        "slowest": [{"case": r[0], "kind": r[1], "seconds": round(r[5], 3)} for r in slowest],
        "max_traced_bytes": max_traced,
        "max_rss_bytes": max_rss,
        "worst_ratio_to_declared": round(worst_ratio, 3),
        "worst_ratio_case": worst_ratio_case,
        "largest": [
            {
                "case": r[0],
                "kind": r[1],
                "seed_file": r[2],
                "outcome": r[3],
                "traced": r[6],
                "rss": r[7],
                "declared": r[8],
            }
            for r in sorted(results, key=lambda r: -max(r[6], r[7]))[:5]
        ],
    }


def _machine() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {mem:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, NumPy {np.__version__}"
    )


def print_report(report: dict[str, Any]) -> None:
    print(
        f"{report['cases']} cases in {report['seconds']} s "
        f"({report['workers']} workers, seed {report['seed']}): {report['totals']}"
    )
    for kind, counts in report["by_kind"].items():
        print(f"  {kind:<7} {counts}")
    print("refusals by class:")
    for name, count in list(report["refusals_by_class"].items())[:40]:
        print(f"  {count:>7}  {name}  (e.g. case {report['refusal_examples'][name]})")
    print(
        f"largest allocation: {report['max_traced_bytes']:,} B traced, "
        f"{report['max_rss_bytes']:,} B resident; worst ratio to the declared image "
        f"(images >= 512 KiB): {report['worst_ratio_to_declared']}"
    )
    for p in report["problems"][:50]:
        print(f"PROBLEM case {p['case']} ({p['kind']}, from {p['seed_file']}): {p['outcome']}")
        print(f"  reproduce: {p['reproduce']}   file: {p['file']}")
        if p["detail"]:
            print("  " + p["detail"].strip().replace("\n", "\n  ")[-1500:])


def one_case(args: argparse.Namespace) -> int:
    """Run one case in this process and show everything about it."""
    corpus = load_corpus(Path(args.out) / "corpus")
    with tempfile.TemporaryDirectory() as tmp:
        marker = str(Path(tmp) / "code-ran.txt")
        if args.replay:
            kind, base, data = args.kind, "replay", Path(args.replay).read_bytes()
        else:
            kind, base, data = make_case(args.seed, args.case, corpus, marker)
        mode = int(np.random.default_rng([args.seed, args.case or 0, 1]).integers(3))
        print(f"case {args.case}: {kind} from {base}, {len(data)} bytes, decode mode {mode}")
        outcome, detail, _declared = run_case(kind, data, Path(tmp), mode)
        print(outcome, detail)
        if os.path.exists(marker):
            print("code-ran: the hostile pickle ran code")
            return 1
    return 0 if outcome in ("refused", "clean") else 1


def _injections(text: str) -> dict[int, str]:
    out = {}
    for item in filter(None, text.split(",")):
        how, _, case = item.partition(":")
        out[int(case)] = how
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("n", nargs="?", type=int, default=1000, help="number of cases")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", type=int, default=0, help="first case index")
    p.add_argument("--workers", type=int, default=max(1, min(os.cpu_count() or 1, 4)))
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per case")
    p.add_argument(
        "--address-space",
        type=int,
        default=1024,
        metavar="MIB",
        help="address space each worker may add to what it has after warming up",
    )
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "nsc-fuzz"))
    p.add_argument("--case", type=int, help="run this one case here and show its outcome")
    p.add_argument("--replay", help="decode this saved file here (with --kind)")
    p.add_argument("--kind", choices=KINDS, default="bundle")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--inject",
        type=_injections,
        default={},
        metavar="HOW:CASE,...",
        help="test the fuzzer itself: make these cases crash, hang or take memory "
        "(crash:5,hang:9,memory:12)",
    )
    p.add_argument("--print-every", type=float, default=30.0, metavar="S")
    args = p.parse_args(argv)
    if args.case is not None or args.replay:
        return one_case(args)
    report = run(args)
    print_report(report)
    bad = sum(v for k, v in report["totals"].items() if k not in ("refused", "clean"))
    return 0 if bad == 0 and report["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
