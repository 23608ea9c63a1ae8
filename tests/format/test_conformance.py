"""The conformance bundles (conformance/): the library and the reference decoder both
decode them to the recorded digests (of the integer latents, for learned bundles), refuse
the bad ones, and do so whatever the number of BLAS/OpenMP threads."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_svd_compress import decompress, errors
from napari_svd_compress.codecs import color

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "conformance"
EXPECTED = json.loads((FOLDER / "expected.json").read_text())
VALID = sorted(f for f, v in EXPECTED.items() if "sha256" in v)
REFUSED = sorted(f for f, v in EXPECTED.items() if "error" in v)
LEARNED = sorted(f for f, v in EXPECTED.items() if "latents" in v)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _reference():
    spec = importlib.util.spec_from_file_location(
        "reference_decoder", FOLDER / "reference_decoder.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_folder_is_complete_and_small():
    assert len(VALID) >= 20 and len(REFUSED) >= 4
    files = {p.name for p in (FOLDER / "bundles").iterdir()}
    assert files == set(EXPECTED)
    assert sum((FOLDER / "bundles" / f).stat().st_size for f in files) < 2 << 20
    covered = {json.loads(_manifest(f))["codec"] for f in VALID}
    assert {"svd", "pca", "kmeans", "learned"} <= covered
    assert LEARNED == sorted(f for f in VALID if json.loads(_manifest(f))["codec"] == "learned")
    dtypes = {EXPECTED[f]["dtype"] for f in VALID}
    assert {"uint8", "uint16", "int16", "float32", "float64"} <= dtypes


def _manifest(name: str) -> bytes:
    import zipfile

    with zipfile.ZipFile(FOLDER / "bundles" / name) as zf:
        return zf.read("manifest.json")


EXACT = [f for f in VALID if EXPECTED[f]["exact"]]


def _close_to_recorded(name: str, out: np.ndarray) -> None:
    """A decoding that the spec leaves to BLAS's rounding (``exact`` false): the recorded
    array, up to one integer level (or 1e-5 of the range for floats)."""
    recorded = np.load(FOLDER / "arrays" / (Path(name).stem + ".npy"))
    assert _digest(recorded) == EXPECTED[name]["sha256"]
    diff = np.abs(out.astype(np.float64) - recorded.astype(np.float64))
    if out.dtype.kind == "f":
        span = float(recorded.max() - recorded.min()) or 1.0
        assert diff.max() <= 1e-5 * span
    else:
        assert diff.max() <= 1


@pytest.mark.parametrize("name", VALID)
def test_library_decodes_to_expected(name):
    out = np.asarray(decompress(FOLDER / "bundles" / name))
    want = EXPECTED[name]
    assert list(out.shape) == want["shape"] and out.dtype.name == want["dtype"]
    if want["exact"] or _digest(out) == want["sha256"]:
        assert _digest(out) == want["sha256"]
    else:  # another BLAS kernel than the one that recorded it
        _close_to_recorded(name, out)


def test_exact_bundles_cover_the_exact_codecs():
    codecs = {json.loads(_manifest(f))["codec"] for f in EXACT}
    assert codecs == {"svd", "kmeans", "pca"}
    assert all(f.startswith(("v2-", "v3-")) for f in EXACT if "-svd-" in f)
    # Version 3 made pca and patch svd exact; earlier ones stay BLAS-rounded.
    assert all(f.startswith("v3-") for f in EXACT if "-pca-" in f or "-patch-" in f)
    assert any("-pca-rows-" in f for f in EXACT) and any("-svd-patch-" in f for f in EXACT)
    # The version-3 deblocking filter is exercised by a pca bundle and by the patches.
    filtered = [f for f in EXACT if json.loads(_manifest(f))["planes"][0].get("deblock")]
    assert any("-pca-" in f for f in filtered) and any("-patch-" in f for f in filtered)


@pytest.mark.parametrize("name", REFUSED)
def test_library_refuses(name):
    cls = getattr(errors, EXPECTED[name]["error"])
    with pytest.raises(cls):
        decompress(FOLDER / "bundles" / name)


@pytest.mark.parametrize("name", VALID)
def test_reference_decoder_matches(name):
    """Written from the spec alone, it gives the library's bytes (on this machine, for
    the BLAS-rounded codecs; anywhere, for the exact ones)."""
    ref = _reference()
    if name in LEARNED:  # its pixels are no business of the reference decoder
        with pytest.raises(ref.Unsupported):
            ref.decode((FOLDER / "bundles" / name).read_bytes())
        return
    out = ref.decode((FOLDER / "bundles" / name).read_bytes())
    assert _digest(out) == _digest(np.asarray(decompress(FOLDER / "bundles" / name)))
    if EXPECTED[name]["exact"]:
        assert _digest(out) == EXPECTED[name]["sha256"]


@pytest.mark.parametrize("name", REFUSED)
def test_reference_decoder_refuses(name):
    ref = _reference()
    with pytest.raises(ref.Refused):
        ref.decode((FOLDER / "bundles" / name).read_bytes())


def _library_latents(data: bytes) -> np.ndarray:
    """The library's integer latents of a learned bundle, ``(*stack axes, M, h, w)``."""
    from napari_svd_compress.codecs.learned.codec import decode_latents
    from napari_svd_compress.format.bundle import open_bundle

    bundle = open_bundle(data)
    planes = bundle.manifest["planes"]
    got = [
        decode_latents(meta, bundle.payloads_with_prefix(f"p{i}/" if len(planes) > 1 else ""))
        for i, meta in enumerate(planes)
    ]
    stack = bundle.spec.shape[: -3 if bundle.spec.rgb else -2]
    return np.stack(got).reshape(*stack, *got[0].shape)


@pytest.mark.parametrize("name", LEARNED)
def test_learned_latents_are_exact(name):
    """The integer latents (spec section 10.1) of the library and of the reference decoder
    are the same and are the recorded ones, on any machine."""
    data = (FOLDER / "bundles" / name).read_bytes()
    want = EXPECTED[name]["latents"]
    ours, ref = _library_latents(data), _reference().decode_latents(data)
    assert ours.dtype == ref.dtype == np.int32 and want["exact"]
    assert list(ours.shape) == list(ref.shape) == want["shape"]
    assert _digest(ours) == _digest(ref) == want["sha256"]


def test_learned_cases_cover_the_coder():
    """Two levels, grey and RGB, a size off the stride, a stack, and escaped latents."""
    metas = [json.loads(_manifest(f)) for f in LEARNED]
    planes = [p for m in metas for p in m["planes"]]
    assert len({p["quality"] for p in planes}) >= 2
    assert {m["rgb"] for m in metas} == {True, False}
    assert any(m["shape"][-3] % 16 for m in metas if m["rgb"])
    assert any(len(m["planes"]) > 1 for m in metas)
    assert any(p["escapes"] > 0 for p in planes)


def _damaged(data: bytes, where: int | None, crc: bool) -> bytes:
    """``data`` (a one-plane learned bundle) with byte ``where`` of its latent stream
    flipped (the last word dropped if None); the CRC-32 recomputed if ``crc``."""
    import io
    import zipfile
    import zlib

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        payloads = {n: zf.read(n) for n in zf.namelist() if n != "manifest.json"}
    bits = payloads["latents"]
    if where is None:
        bits = bits[:-4]
    else:
        bits = bits[:where] + bytes([bits[where] ^ 0xFF]) + bits[where + 1 :]
    payloads["latents"] = bits
    manifest["payloads"]["latents"] = len(bits)
    if crc:
        manifest["planes"][0]["crc32"] = zlib.crc32(bits)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for n, blob in payloads.items():
            zf.writestr(n, blob)
    return buf.getvalue()


@pytest.mark.parametrize(
    "where, crc",
    [(0, False), (0, True), (-1, True), (-4, True), (None, True)],
    ids=["crc", "first-byte", "last-byte", "last-word", "truncated"],
)
def test_damaged_learned_stream_is_refused_by_both(where, crc):
    """A damaged latent stream is refused by its CRC-32, or, with the CRC made to match,
    by the range decoder not being used up exactly (the library's BundleContentError, the
    reference decoder's Refused)."""
    name = "v3-learned-rgb-uint8-escapes.svdz"
    data = _damaged((FOLDER / "bundles" / name).read_bytes(), where, crc)
    with pytest.raises(errors.BundleContentError):
        decompress(data)
    with pytest.raises(errors.BundleContentError):
        _library_latents(data)
    ref = _reference()
    with pytest.raises(ref.Refused):
        ref.decode_latents(data)


def _spec_frequencies(weights: list[int]) -> list[int]:
    """Cumulative 24-bit frequencies of a table's integer weights, by the formula of the
    spec (section 10.2)."""
    n, total = len(weights), float(sum(weights))
    sigma = float(2**24 - n) / total
    cum, out = 0.0, []
    for s, w in enumerate(weights):
        out.append(int(cum * sigma) + s)
        cum += float(w)
    return [*out, 2**24]


def test_latent_tables_are_the_specified_quantisation():
    """constriction's Categorical quantises each table's weights as the spec writes it.

    Probed through the range decoder: the first symbol decoded from the words of the
    64-bit point ``q (2^40 - 1)`` is the one whose cumulative frequencies bracket ``q``
    (a fresh decoder's range is ``2^64 - 1``, so the quantile is ``point // (2^40 - 1)``).
    """
    import constriction

    ref = _reference()

    def first(table, q: int) -> int:
        point = q * (2**40 - 1)
        words = np.array([point >> 32, point & 0xFFFFFFFF, 0, 0], np.uint32)
        return int(constriction.stream.queue.RangeDecoder(words).decode(table))

    for j, r in enumerate(ref.RATIOS):
        w = [1 << 40]
        while len(w) <= 4096 and (w[-1] * r) >> 24 >= 1 << 20:
            w.append((w[-1] * r) >> 24)
        weights = w[:0:-1] + w + [max(((w[-1] * r) >> 24) * 64, 1)]
        assert sum(weights) < 2**53  # the float64 sums are exact
        cdf = _spec_frequencies(weights)
        radius, table = ref.laplace_table(j)
        assert len(weights) == 2 * radius + 2
        n = len(weights)
        probe = sorted({*range(min(n, 12)), *range(radius - 6, radius + 7), *range(n - 6, n)})
        for s in (s for s in probe if 0 <= s < n):
            assert first(table, cdf[s]) == s
            assert s == 0 or first(table, cdf[s] - 1) == s - 1


def test_reference_decoder_cli_prints_latent_digests(capsys):
    """The command line prints the latents' digest of a learned bundle."""
    name = LEARNED[0]
    assert _reference().main([str(FOLDER / "bundles" / name)]) == 0
    want = EXPECTED[name]["latents"]
    assert f"latents {want['shape']} int32 {want['sha256']}" in capsys.readouterr().out


_DIGESTS = """
import hashlib, json, sys
import numpy as np
from napari_svd_compress import decompress
names = json.loads(sys.argv[1])
out = {n: hashlib.sha256(np.ascontiguousarray(decompress(sys.argv[2] + "/" + n)).tobytes())
       .hexdigest() for n in names}
print(json.dumps(out))
"""


def _digests(names: list[str], **env_vars: str) -> dict[str, str]:
    """The digests of ``names`` decoded in a fresh process with ``env_vars`` set."""
    env = dict(os.environ)
    env.update(env_vars)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-c", _DIGESTS, json.dumps(names), str(FOLDER / "bundles")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(run.stdout)


def _threads(n: int) -> dict[str, str]:
    return {v: str(n) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def test_same_bytes_with_one_and_two_threads():
    one, two = _digests(VALID, **_threads(1)), _digests(VALID, **_threads(2))
    assert one == two
    assert all(one[n] == EXPECTED[n]["sha256"] for n in EXACT)


def test_exact_bundles_same_bytes_on_another_blas_kernel():
    """OpenBLAS picks its kernels by CPU; forcing an old one (SSE3 "Prescott") stands in
    for another machine.  The bundles the spec makes exact must not notice (with another
    BLAS the variable does nothing, and the test still holds)."""
    other = _digests(EXACT, OPENBLAS_CORETYPE="Prescott", **_threads(2))
    assert other == {n: EXPECTED[n]["sha256"] for n in EXACT}


def test_ycbcr_inverse_is_elementwise_and_specified():
    """The inverse colour transform is the spec's float32 arithmetic, not a BLAS product."""
    rng = np.random.default_rng(1)
    ycc = rng.random((64, 48, 3), dtype=np.float32)
    m = color._YCBCR_TO_RGB32
    y, cb, cr = ycc[..., 0], ycc[..., 1] - np.float32(0.5), ycc[..., 2] - np.float32(0.5)
    want = np.stack([(y * m[j, 0] + cb * m[j, 1]) + cr * m[j, 2] for j in range(3)], -1)
    assert np.array_equal(color.ycbcr_to_rgb(ycc), want)
    # The written-out table is the float32 rounding of the forward matrix's inverse.
    inv = np.linalg.inv(color._RGB_TO_YCBCR).astype(np.float32)
    assert np.array_equal(inv, m)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_alpha_is_kept_bit_for_bit(dtype):
    # Float alpha travels as the integers of its IEEE-754 bits (spec 4.4).
    from napari_svd_compress import compress

    rgba = np.random.default_rng(1).random((24, 20, 4)).astype(dtype)
    rgba[0, 0, 3] = -0.0
    result = compress(rgba, "svd", rank=3)
    back = decompress(result.bundle)
    assert back.dtype == dtype
    assert back[..., 3].tobytes() == rgba[..., 3].tobytes()
    np.testing.assert_array_equal(_reference().decode(result.bundle), back)
