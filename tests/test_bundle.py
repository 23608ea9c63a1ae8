"""The .svdz container: round trip and every kind of malformed or hostile file."""

from __future__ import annotations

import io
import json
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from skimage import data

import napari_svd_compress as nsc
from napari_svd_compress import bundle
from napari_svd_compress.errors import (
    BundleContentError,
    BundleError,
    BundleFormatError,
    BundleLimitError,
    BundleVersionError,
)


@pytest.fixture(scope="module")
def good() -> bytes:
    return nsc.compress(data.camera()[::4, ::4], "svd", rank=10).bundle


def rezip(good: bytes, manifest_edit=None, payload_edit=None, extra=None) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(good))
    manifest = json.loads(src.read("manifest.json"))
    if manifest_edit:
        manifest_edit(manifest)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for name in manifest.get("payloads", {}) or src.namelist():
            if name == "manifest.json" or name not in src.namelist():
                continue
            payload = src.read(name)
            if payload_edit:
                payload = payload_edit(name, payload)
            zf.writestr(name, payload)
        for name, blob in (extra or {}).items():
            zf.writestr(name, blob)
    return buf.getvalue()


def test_round_trip_and_manifest(good, tmp_path):
    opened = bundle.open_bundle(good)
    m = opened.manifest
    assert m["format"] == "svdz" and m["version"] == 1 and m["codec"] == "svd"
    assert m["shape"] == [128, 128] and m["dtype"] == "uint8"
    assert m["value_range"] == [0.0, 255.0]
    assert m["params"]["rank"] == 10
    assert opened.figures["bytes"] == len(good)
    path = tmp_path / "x.svdz"
    bundle.write(path, good)
    np.testing.assert_array_equal(nsc.decompress(path), nsc.decompress(good))


def test_bundles_are_reproducible():
    img = data.camera()[::4, ::4]
    a = nsc.compress(img, "svd", rank=7).bundle
    b = nsc.compress(img, "svd", rank=7).bundle
    assert a == b


def set_(key, value):
    def edit(m):
        m[key] = value

    return edit


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda g: g[: len(g) // 2], BundleFormatError),
        (lambda g: g[:10], BundleFormatError),
        (lambda g: b"", BundleFormatError),
        (lambda g: b"GIF89a" + g[6:], BundleFormatError),
        (lambda g: b"PK\x03\x04" + b"\0" * 100, BundleFormatError),
        (lambda g: rezip(g, set_("version", 99)), BundleVersionError),
        (lambda g: rezip(g, set_("format", "zip")), BundleFormatError),
        (lambda g: rezip(g, set_("codec", "gzip")), BundleVersionError),
        (lambda g: rezip(g, set_("shape", [10**6, 10**6])), BundleLimitError),
        (lambda g: rezip(g, set_("shape", [128, -1])), BundleContentError),
        (lambda g: rezip(g, set_("shape", [64, 64])), BundleContentError),
        (lambda g: rezip(g, set_("shape", "big")), BundleContentError),
        (lambda g: rezip(g, set_("dtype", "object")), BundleContentError),
        (lambda g: rezip(g, set_("value_range", [1, 0])), BundleContentError),
        (lambda g: rezip(g, set_("planes", [])), BundleContentError),
        (lambda g: rezip(g, set_("payloads", {"svd": 3})), BundleContentError),
        (lambda g: rezip(g, set_("payloads", {"nothere": 3})), BundleContentError),
        (
            lambda g: rezip(g, lambda m: m["planes"][0]["channels"][0].update(rank=10**9)),
            BundleContentError,
        ),
        (
            lambda g: rezip(g, lambda m: m["planes"][0]["channels"][0].update(step=-1)),
            BundleContentError,
        ),
        (lambda g: rezip(g, lambda m: m["planes"][0].update(space="cmyk")), BundleContentError),
        (lambda g: rezip(g, payload_edit=lambda n, p: p[: len(p) // 2]), BundleContentError),
        (
            lambda g: rezip(g, payload_edit=lambda n, p: p[:8] + bytes(len(p) - 8)),
            BundleContentError,
        ),
    ],
)
def test_malformed_bundles_raise_bundle_error(good, make, error):
    bad = make(good)
    with pytest.raises(error) as info:
        nsc.decompress(bad)
    assert str(info.value)


def test_bad_json_manifest(good):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", "{not json")
    with pytest.raises(BundleFormatError, match="JSON"):
        nsc.decompress(buf.getvalue())


def test_missing_manifest():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("other", b"x")
    with pytest.raises(BundleFormatError, match="manifest"):
        nsc.decompress(buf.getvalue())


def test_zip_bomb_is_refused_quickly_without_allocating(good):
    # 1 GiB of zeros deflates to about 1 MiB: declared sizes give it away.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        m = json.loads(zipfile.ZipFile(io.BytesIO(good)).read("manifest.json"))
        m["payloads"] = {"svd": 1 << 30}
        zf.writestr("manifest.json", json.dumps(m))
        with zf.open("svd", "w", force_zip64=True) as fh:
            chunk = bytes(1 << 20)
            for _ in range(1024):
                fh.write(chunk)
    bomb = buf.getvalue()
    assert len(bomb) < 8 << 20
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(BundleLimitError):
        nsc.decompress(bomb)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 64 << 20


def test_absurd_shape_is_refused_before_allocation(good):
    bad = rezip(good, set_("shape", [10**6, 10**6, 3]), lambda n, p: p)
    tracemalloc.start()
    with pytest.raises(BundleError):
        nsc.decompress(bad)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 32 << 20


def test_path_that_does_not_exist_or_is_a_directory(tmp_path):
    with pytest.raises(BundleFormatError, match="cannot read"):
        nsc.decompress(tmp_path / "missing.svdz")
    with pytest.raises(BundleFormatError, match="directory"):
        nsc.decompress(tmp_path)


def test_member_names_cannot_escape(good):
    bad = rezip(good, extra={"../evil": b"x"})
    with pytest.raises(BundleFormatError, match="member name"):
        nsc.decompress(bad)


def test_writer_is_atomic(tmp_path, monkeypatch, good):
    target = tmp_path / "out.svdz"
    target.write_bytes(b"old contents")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        bundle.write(target, good)
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.svdz"]
