"""Tests of the learned codec (built-in model; onnxruntime + constriction, no torch)."""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("constriction")

from napari_svd_compress.codecs.learned import codec
from napari_svd_compress.codecs.learned import model as model_module
from napari_svd_compress.codecs.learned.model import (
    BUILTIN_PATH,
    _digest,
    load_model,
    pack_model,
)
from napari_svd_compress.errors import (
    BundleContentError,
    BundleError,
    BundleFormatError,
    BundleLimitError,
    BundleVersionError,
    Cancelled,
    ParameterError,
)
from napari_svd_compress.registry import get

LEVELS = (1, 2, 3, 4, 5, 6)
# Astronaut downscaled to 256x256: floors are 0.5 dB below and bands about 15 % around
# the values measured on this machine, so that a broken runtime or a swapped model fails.
# Measured 2026-11-22 with the shipped model version 2: PSNR 24.96, 26.26, 27.27, 28.15,
# 28.67, 28.98 dB at 0.279, 0.375, 0.481, 0.604, 0.728, 0.867 bpp (payload only).
PSNR_FLOOR = {1: 24.45, 2: 25.75, 3: 26.75, 4: 27.65, 5: 28.15, 6: 28.45}
BPP_BAND = {
    1: (0.24, 0.32),
    2: (0.32, 0.43),
    3: (0.41, 0.55),
    4: (0.51, 0.69),
    5: (0.62, 0.84),
    6: (0.74, 1.00),
}
# Flat colour at quality 4 (grey levels, 0..255): measured interior max - min 2.8, 5.1,
# 6.9 per channel and mean error at most 1.7; limits with margin.
FLAT_SPREAD = 10.0
FLAT_MEAN_ERROR = 3.5


def _noop(_: float) -> None:
    pass


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage.data import astronaut as load
    from skimage.transform import resize

    img = resize(load(), (256, 256), anti_aliasing=True)
    return np.ascontiguousarray(img, dtype=np.float32)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((np.round(a * 255.0) - np.round(b * 255.0)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def _bpp(enc, shape) -> float:
    return 8 * sum(len(v) for v in enc.payloads.values()) / (shape[0] * shape[1])


def _roundtrip(img, **params):
    p = get("learned").resolve(params)
    enc = codec.encode(img, p, _noop)
    json.dumps(enc.meta)  # must be JSON-safe
    out = codec.decode(enc.meta, enc.payloads, img.shape)
    assert out.dtype == np.float32 and out.shape == img.shape
    return enc, out


@pytest.fixture(scope="module")
def encoded_levels(astronaut):
    return {q: _roundtrip(astronaut, quality=q) for q in LEVELS}


def test_registered():
    c = get("learned")
    assert c.param("quality").high == len(LEVELS)
    assert c.sweep == ("quality", LEVELS)
    assert c.label_for({"quality": 2, "model": ""}) == "q=2"


@pytest.mark.parametrize("q", LEVELS)
def test_roundtrip_quality(astronaut, encoded_levels, q):
    enc, out = encoded_levels[q]
    psnr, bpp = _psnr(astronaut, out), _bpp(enc, astronaut.shape)
    assert psnr >= PSNR_FLOOR[q], (q, psnr, bpp)
    lo, hi = BPP_BAND[q]
    assert lo <= bpp <= hi, (q, psnr, bpp)
    assert enc.meta["quality"] == q
    assert enc.meta["latent_shape"] == [load_model().channels, 16, 16]


def test_rate_and_quality_monotone(astronaut, encoded_levels):
    bpps = [_bpp(encoded_levels[q][0], astronaut.shape) for q in LEVELS]
    psnrs = [_psnr(astronaut, encoded_levels[q][1]) for q in LEVELS]
    assert all(a < b for a, b in itertools.pairwise(bpps)), bpps
    assert all(a < b for a, b in itertools.pairwise(psnrs)), psnrs


_DECODE_SCRIPT = """
import json, sys, numpy as np
from pathlib import Path
from napari_svd_compress.codecs.learned import codec
d = Path(sys.argv[1])
meta = json.loads((d / "meta.json").read_text())
payloads = {p.name: p.read_bytes() for p in d.iterdir() if p.suffix == ""}
np.save(d / f"latents_{sys.argv[2]}.npy", codec.decode_latents(meta, payloads))
np.save(d / f"image_{sys.argv[2]}.npy", codec.decode(meta, payloads, tuple(meta["_shape"])))
"""


def test_decode_identical_across_processes_and_threads(tmp_path, astronaut):
    img = astronaut[:128, :192]
    enc = codec.encode(img, {"quality": 3, "model": ""}, _noop)
    (tmp_path / "meta.json").write_text(json.dumps({**enc.meta, "_shape": list(img.shape)}))
    for k, v in enc.payloads.items():
        (tmp_path / k).write_bytes(v)
    # The child must import the same package as this process (installed or not).
    root = str(Path(codec.__file__).parents[3])
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    for threads in (1, 2):
        env = {**os.environ, "NAPARI_SVD_LEARNED_THREADS": str(threads), "PYTHONPATH": pythonpath}
        subprocess.run(
            [sys.executable, "-c", _DECODE_SCRIPT, str(tmp_path), str(threads)],
            check=True,
            env=env,
            timeout=120,
        )
    a, b = (np.load(tmp_path / f"latents_{t}.npy") for t in (1, 2))
    assert a.dtype == np.int32 and np.array_equal(a, b)
    assert np.array_equal(a, codec.decode_latents(enc.meta, enc.payloads))
    ia, ib = (np.load(tmp_path / f"image_{t}.npy") for t in (1, 2))
    assert np.abs(ia - ib).max() < 1e-4


def test_flat_colour_decodes_flat(monkeypatch):
    img = np.empty((200, 300, 3), np.float32)
    img[:] = (0.30, 0.55, 0.80)
    _, whole = _roundtrip(img, quality=4)
    # Small tiles (64 px) so that this image is cut into 4 x 5 tiles.
    monkeypatch.setattr(codec, "TILE", 4)
    enc, tiled = _roundtrip(img, quality=4)
    assert enc.meta["tiling"]["tile"] == 64
    assert np.abs(tiled - whole).max() < 1e-5  # no seams: tiling changes nothing
    inner = tiled[16:-16, 16:-16]
    spread = (inner.max(axis=(0, 1)) - inner.min(axis=(0, 1))) * 255
    assert np.all(spread < FLAT_SPREAD), spread
    assert np.abs(tiled.mean(axis=(0, 1)) - img[0, 0]).max() * 255 < FLAT_MEAN_ERROR


def test_tiled_matches_untiled(monkeypatch, astronaut):
    whole, out_whole = _roundtrip(astronaut, quality=4)
    monkeypatch.setattr(codec, "TILE", 4)
    tiled, out_tiled = _roundtrip(astronaut, quality=4)
    a = codec.decode_latents(whole.meta, whole.payloads)
    b = codec.decode_latents(tiled.meta, tiled.payloads)
    assert np.mean(a != b) < 1e-3  # only float-noise rounding flips
    assert _psnr(out_whole, out_tiled) > 40


def test_tiled_decode_matches_untiled(monkeypatch, encoded_levels):
    """The synthesis' margin covers its receptive field: tiles change nothing but float
    noise (the bundle's 16 x 16 latents, in 3 x 3 latent tiles)."""
    enc = encoded_levels[4][0]
    whole = codec.decode(enc.meta, enc.payloads, (256, 256, 3))
    monkeypatch.setattr(codec, "TILE", 3)
    tiled = codec.decode(enc.meta, enc.payloads, (256, 256, 3))
    assert np.abs(tiled - whole).max() < 1e-5


def test_decode_matches_stored_graph_and_old_tiling(monkeypatch, encoded_levels):
    """The sub-pixel synthesis with 2-latent margins gives the image that the stored
    graph (ConvTranspose) with the former 4-latent margins gave, up to float noise."""
    enc = encoded_levels[4][0]
    shape = (256, 256, 3)
    monkeypatch.setattr(codec, "TILE", 5)
    new = codec.decode(enc.meta, enc.payloads, shape)
    model = load_model()
    assert model.runtime_graph("synthesis") != model.graphs["synthesis.onnx"]
    stored = {
        w: model_module._make_session(model.graphs[f"{w}.onnx"], 0)
        for w in ("analysis", "synthesis")
    }
    monkeypatch.setattr(model, "session", lambda which, threads=0: stored[which])
    monkeypatch.setattr(codec, "MARGIN", 4)
    old = codec.decode(enc.meta, enc.payloads, shape)
    assert np.abs(new - old).max() < 2e-4  # a twentieth of a grey level
    assert np.mean(np.round(new * 255) != np.round(old * 255)) < 1e-3
    # The encoder's latents do not depend on the margin either.
    img = _astronaut_crop()
    a = codec.encode(img, {"quality": 4, "model": ""}, _noop)
    monkeypatch.setattr(codec, "MARGIN", 2)
    b = codec.encode(img, {"quality": 4, "model": ""}, _noop)
    la, lb = codec.decode_latents(a.meta, a.payloads), codec.decode_latents(b.meta, b.payloads)
    assert np.mean(la != lb) < 1e-3


def _astronaut_crop() -> np.ndarray:
    from skimage.data import astronaut as load

    return load()[100:260, 150:374].astype(np.float32) / 255.0


def test_encode_identical_across_thread_counts(monkeypatch):
    """onnxruntime's thread count does not change a single latent (nor the bundle)."""
    img = _astronaut_crop()
    monkeypatch.setattr(codec, "TILE", 4)
    payloads = []
    for threads in ("1", "2"):
        monkeypatch.setenv("NAPARI_SVD_LEARNED_THREADS", threads)
        payloads.append(codec.encode(img, {"quality": 3, "model": ""}, _noop).payloads)
    assert payloads[0] == payloads[1]


def _onnx_ops(graph: bytes) -> list[str]:
    m = model_module
    (g,) = [v for n, _, v, _ in m._fields(graph) if n == 7]
    return [m._strs(m._fields(bytes(v)), 4)[0] for n, _, v, _ in m._fields(bytes(g)) if n == 1]


def test_builtin_synthesis_runs_as_subpixel_convolutions():
    model = load_model()
    assert "ConvTranspose" in _onnx_ops(model.graphs["synthesis.onnx"])
    ops = _onnx_ops(model.runtime_graph("synthesis"))
    assert "ConvTranspose" not in ops and ops.count("DepthToSpace") == 4
    assert model.runtime_graph("analysis") is model.graphs["analysis.onnx"]  # nothing to do


def _convtranspose_graph(w, b, strides, pads, opad, group=1) -> bytes:
    """A one-node ConvTranspose ONNX model, written with model.py's protobuf helpers."""
    m = model_module
    attrs = (
        m._attr_ints("strides", strides)
        + m._attr_ints("pads", pads)
        + m._attr_ints("output_padding", opad)
    )
    if group != 1:
        attrs += m._ef(
            5, m._ef(1, "group") + m._ev(3 << 3) + m._ev(group) + m._ev(20 << 3) + m._ev(2)
        )

    def value_info(name, dims):
        shape = b"".join(
            m._ef(1, m._ev(1 << 3) + m._ev(d) if isinstance(d, int) else m._ef(2, d)) for d in dims
        )
        return m._ef(1, name) + m._ef(2, m._ef(1, m._ev(1 << 3) + m._ev(1) + m._ef(2, shape)))

    graph = (
        m._encode_node(["x", "w", "b"], ["y"], "ct", "ConvTranspose", attrs)
        + m._ef(2, "g")
        + m._encode_tensor("w", w)
        + m._encode_tensor("b", b)
        + m._ef(11, value_info("x", [1, w.shape[0], "h", "w"]))
        + m._ef(12, value_info("y", [1, w.shape[1] * group, "oh", "ow"]))
    )
    opset = m._ef(1, "") + m._ev(2 << 3) + m._ev(17)
    return m._ev(1 << 3) + m._ev(8) + m._ef(8, opset) + m._ef(7, graph)


@pytest.mark.parametrize(
    ("k", "s", "p", "op"),
    [(5, 2, (2, 2), 1), (3, 2, (1, 1), 1), (4, 2, (1, 1), 0), (5, 3, (1, 1), 0), (3, 3, (0, 0), 0)],
)
def test_subpixel_rewrite_equals_convtranspose(k, s, p, op):
    rng = np.random.default_rng(k * 10 + s)
    w = rng.standard_normal((5, 3, k, k)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    graph = _convtranspose_graph(w, b, [s, s], [p[0], p[1], p[0], p[1]], [op, op])
    new = model_module.subpixel_graph(graph)
    assert new is not None and _onnx_ops(new) == ["Conv", "DepthToSpace"]
    x = rng.standard_normal((1, 5, 6, 7)).astype(np.float32)
    ya = model_module._make_session(graph, 1).run(None, {"x": x})[0]
    yb = model_module._make_session(new, 1).run(None, {"x": x})[0]
    assert ya.shape == yb.shape == (1, 3, 6 * s, 7 * s)
    assert np.abs(ya - yb).max() < 1e-4
    assert model_module._checked_rewrite(graph) == new


def test_subpixel_rewrite_leaves_other_graphs_alone(monkeypatch):
    w = np.ones((4, 2, 5, 5), np.float32)
    b = np.zeros(2, np.float32)
    grouped = _convtranspose_graph(w, b, [2, 2], [2, 2, 2, 2], [1, 1], group=2)
    assert model_module.subpixel_graph(grouped) is None  # grouped: not covered
    odd = _convtranspose_graph(w, b, [2, 2], [2, 2, 2, 2], [0, 0])  # output 2n - 1
    assert model_module.subpixel_graph(odd) is None
    assert model_module._checked_rewrite(b"not a graph") == b"not a graph"
    # A rewrite that computed something else would be refused by the check.
    good = _convtranspose_graph(w, b, [2, 2], [2, 2, 2, 2], [1, 1])
    real = model_module._subpixel_weights
    monkeypatch.setattr(
        model_module,
        "_subpixel_weights",
        lambda *a: (lambda k, b2, p: (k * 1.01, b2, p))(*real(*a)),
    )
    assert model_module._checked_rewrite(good) is good


def test_grayscale(astronaut):
    gray = np.ascontiguousarray(astronaut.mean(axis=2, keepdims=True))
    _enc, out = _roundtrip(gray, quality=5)
    assert out.shape == gray.shape
    assert _psnr(gray, out) > PSNR_FLOOR[5] - 2


def test_odd_and_tiny_shapes():
    rng = np.random.default_rng(0)
    for shape in ((1, 1, 3), (17, 5, 1), (33, 70, 3)):
        img = rng.random(shape, dtype=np.float32)
        _enc, out = _roundtrip(img, quality=2)
        assert out.shape == shape and np.all(np.isfinite(out))


def test_progress_and_cancel(astronaut):
    seen = []
    codec.encode(astronaut, {"quality": 1, "model": ""}, seen.append)
    assert seen[-1] == 1.0 and seen == sorted(seen)

    def cancel(f):
        if f > 0:
            raise Cancelled()

    with pytest.raises(Cancelled):
        codec.encode(astronaut, {"quality": 1, "model": ""}, cancel)


def test_model_mismatch(encoded_levels):
    enc = encoded_levels[2][0]
    shape = (256, 256, 3)
    for key, value in (("sha256", "0" * 64), ("version", "999"), ("name", "other")):
        meta = {**enc.meta, "model": {**enc.meta["model"], key: value}}
        with pytest.raises(BundleVersionError, match="encoded with model"):
            codec.decode(meta, enc.payloads, shape)
    with pytest.raises(BundleVersionError):
        codec.decode({**enc.meta, "codec_version": 99}, enc.payloads, shape)
    # The path is only a hint: the built-in model is found by identity wherever it was.
    meta = {**enc.meta, "model": {**enc.meta["model"], "path": "/nonexistent/x.svdm"}}
    assert codec.decode(meta, enc.payloads, shape).shape == shape


def test_corrupt_bitstream(encoded_levels):
    enc = encoded_levels[3][0]
    shape = (256, 256, 3)
    bits = enc.payloads["latents"]
    cut = bits[: len(bits) // 2]
    with pytest.raises(BundleContentError):
        codec.decode(enc.meta, {**enc.payloads, "latents": cut}, shape)
    # Even with a matching checksum, truncation is detected (not decoded as garbage).
    import zlib

    meta = {**enc.meta, "crc32": zlib.crc32(cut)}
    with pytest.raises(BundleError):
        codec.decode(meta, {**enc.payloads, "latents": cut}, shape)
    flipped = bytearray(bits)
    flipped[len(bits) // 3] ^= 0xFF
    with pytest.raises(BundleContentError):
        codec.decode(enc.meta, {**enc.payloads, "latents": bytes(flipped)}, shape)
    with pytest.raises(BundleContentError):  # latent shape vs plane shape
        codec.decode(enc.meta, enc.payloads, (512, 256, 3))
    huge = {**enc.meta, "latent_shape": [enc.meta["latent_shape"][0], 10**6, 10**6]}
    with pytest.raises(BundleContentError):
        codec.decode(huge, enc.payloads, shape)
    with pytest.raises(BundleContentError):
        codec.decode(enc.meta, {}, shape)


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, v in members.items():
            zf.writestr(k, v)
    return buf.getvalue()


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def test_hostile_model_files(tmp_path, astronaut, monkeypatch):
    def load(data: bytes):
        p = tmp_path / f"m{len(list(tmp_path.iterdir()))}.svdm"
        p.write_bytes(data)
        return load_model(p)

    with pytest.raises(ParameterError):
        load_model(tmp_path / "missing.svdm")
    with pytest.raises(ParameterError):
        load_model(tmp_path)
    with pytest.raises(BundleFormatError):
        load(b"\x00garbage" * 100)
    with pytest.raises(BundleFormatError):
        load(_zip({"hello.txt": b"hi"}))
    with pytest.raises(BundleFormatError):
        load(_zip({"manifest.json": b"{not json"}))
    good = _members(BUILTIN_PATH)
    manifest = json.loads(good["manifest.json"])
    with pytest.raises(BundleContentError, match="lacks"):
        load(_zip({"manifest.json": good["manifest.json"]}))
    with pytest.raises(BundleVersionError):
        load(_zip({**good, "manifest.json": json.dumps({**manifest, "format_version": 7})}))
    tampered = {**good, "gain.npy": good["gain.npy"][:-4] + b"\0\0\0\0"}
    with pytest.raises(BundleContentError, match="sha256"):
        load(_zip(tampered))
    # A pickled (object) array with a correct digest is still refused.
    obj = io.BytesIO()
    np.save(obj, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    evil = {k: v for k, v in good.items() if k != "manifest.json"}
    evil["pmf.npy"] = obj.getvalue()
    evil_manifest = json.dumps({**manifest, "sha256": _digest(evil)})
    with pytest.raises(BundleContentError):
        load(_zip({"manifest.json": evil_manifest, **evil}))
    # A graph that is not ONNX, with a correct digest.
    bad = {k: v for k, v in good.items() if k != "manifest.json"}
    bad["synthesis.onnx"] = b"not a graph"
    with pytest.raises(BundleContentError, match="synthesis"):
        load(_zip({"manifest.json": json.dumps({**manifest, "sha256": _digest(bad)}), **bad}))
    # A member that inflates far beyond the limit (zip bomb) is refused before reading
    # (the limit is lowered here so that the test stays fast).
    monkeypatch.setattr(model_module, "_MAX_MEMBER", 8 * 2**20)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", good["manifest.json"])
        for k, v in good.items():
            if k not in ("manifest.json", "analysis.onnx"):
                zf.writestr(k, v)
        zf.writestr("analysis.onnx", b"\0" * (9 * 2**20))
    with pytest.raises(BundleLimitError):
        load(bomb.getvalue())
    # Selecting a bad model through the codec is a clean error too.
    with pytest.raises(BundleError):
        codec.encode(astronaut, {"quality": 1, "model": str(tmp_path / "m2.svdm")}, _noop)


def test_user_model_roundtrip_and_levels(tmp_path, astronaut, monkeypatch):
    """A model file packed by ``pack_model`` (as the trainer does) is usable."""
    good = _members(BUILTIN_PATH)
    arrays = {
        k: np.load(io.BytesIO(good[f"{k}.npy"]), allow_pickle=False)
        for k in ("gain", "inv_gain", "pmf", "lo", "size")
    }
    path = tmp_path / "user.svdm"
    path.write_bytes(
        pack_model(
            name="user",
            version="7",
            levels=[2, 4],
            analysis=good["analysis.onnx"],
            synthesis=good["synthesis.onnx"],
            arrays=arrays,
        )
    )
    img = astronaut[:64, :96]
    enc = codec.encode(img, {"quality": 4, "model": str(path)}, _noop)
    assert enc.meta["model"]["name"] == "user" and enc.meta["model"]["path"]
    assert codec.decode(enc.meta, enc.payloads, img.shape).shape == img.shape
    # A new process knows only the built-in model: the bundle's path is never opened.
    monkeypatch.setattr(model_module, "_CACHE", {})
    opened = []
    real_parse = model_module._parse
    monkeypatch.setattr(model_module, "_parse", lambda p: opened.append(p) or real_parse(p))
    with pytest.raises(BundleVersionError, match="not the built-in model"):
        codec.decode(enc.meta, enc.payloads, img.shape)
    assert all(Path(p) == BUILTIN_PATH for p in opened)
    model_module.load_model(path)  # the user names the file: then it decodes
    assert codec.decode(enc.meta, enc.payloads, img.shape).shape == img.shape
    with pytest.raises(ParameterError, match="quality levels"):
        codec.encode(img, {"quality": 3, "model": str(path)}, _noop)


def test_model_size_budget():
    assert BUILTIN_PATH.stat().st_size < 25 * 2**20


def test_through_api(astronaut):
    api = pytest.importorskip("napari_svd_compress.api")
    res = api.compress(np.round(astronaut * 255).astype(np.uint8), "learned", quality=3)
    assert res.image.shape == (256, 256, 3) and res.image.dtype == np.uint8
    assert res.psnr > PSNR_FLOOR[3] - 1
    back = api.decompress(res.bundle)
    assert np.array_equal(back, res.image)


def test_train_without_torch(monkeypatch, capsys):
    from napari_svd_compress.cli import main

    monkeypatch.setitem(sys.modules, "torch", None)  # makes ``import torch`` fail
    assert main(["train", "--images", ".", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'napari-svd-compress[train]'" in err and "\n" not in err


def test_train_parser_needs_no_torch(capsys):
    """The cli builds the train parser and checks its options without the training code."""
    code = (
        "import sys\n"
        "from napari_svd_compress.cli import build_parser\n"
        "args = build_parser().parse_args(['train', '--quality', '1-3,5', '--crop', '64'])\n"
        "print(args.quality, args.crop, args.out)\n"
        "print([m for m in sys.modules if m.startswith(('torch', 'napari_svd_compress.training'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[1, 2, 3, 5] 64 model.svdm", "[]"]
    from napari_svd_compress.cli import main

    for bad in ("0", "2-9", "x", "3-1"):
        with pytest.raises(SystemExit):
            main(["train", "--quality", bad])
        assert "--quality" in capsys.readouterr().err


def test_training_data_without_torch(tmp_path):
    from PIL import Image

    from napari_svd_compress.training.data import CropSampler, load_training_images

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    skipped: list[str] = []
    images = load_training_images(tmp_path, 48, use_skimage=False, log=skipped.append)
    # a.png at scales 1 and 0.7 (56 x 67); 0.5 (40 x 48) is smaller than the crop.
    assert [im.shape for im in images] == [(80, 96, 3), (56, 67, 3)]
    assert len(skipped) == 1 and "b.png" in skipped[0]
    batch = CropSampler(images, 48, seed=0).batch(5)
    assert batch.shape == (5, 3, 48, 48) and batch.dtype == np.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0


@pytest.mark.slow
def test_train_tiny_run_exports_usable_model(tmp_path, capsys):
    """Two steps on one small image, exported and used: the user-training path."""
    pytest.importorskip("torch")
    from PIL import Image

    from napari_svd_compress.cli import main
    from napari_svd_compress.training.loop import train

    images = tmp_path / "imgs"
    images.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(images / "a.png")
    out = tmp_path / "tiny.svdm"
    argv = ["train", "--images", str(images), "--quality", "2-3", "--steps", "2", "--crop", "32"]
    argv += ["--batch", "2", "--no-skimage", "--out", str(out), "--name", "tiny", "--threads", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert json.loads(printed[-1])["model"] == str(out)
    model = load_model(out)
    assert model.levels == (2, 3) and model.name == "tiny"
    assert (tmp_path / "tiny.svdm.d" / "log.csv").exists()
    img = rng.random((40, 50, 3), dtype=np.float32)
    enc = codec.encode(img, {"quality": 3, "model": str(out)}, _noop)
    assert codec.decode(enc.meta, enc.payloads, img.shape).shape == img.shape
    # The library refuses what the networks cannot take.
    with pytest.raises(ParameterError, match="multiple of 16"):
        train(tmp_path / "w", images=images, crop=40, steps=1)
    with pytest.raises(ParameterError, match="quality levels"):
        train(tmp_path / "w", images=images, levels=[0], steps=1)
