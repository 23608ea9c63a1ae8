"""The conformance bundles (conformance/): the library and the reference decoder both
decode them to the recorded digests, refuse the bad ones, and do so whatever the number
of BLAS/OpenMP threads."""

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
    assert {"svd", "pca", "kmeans"} <= covered
    dtypes = {EXPECTED[f]["dtype"] for f in VALID}
    assert {"uint8", "uint16", "int16", "float32", "float64"} <= dtypes


def _manifest(name: str) -> bytes:
    import zipfile

    with zipfile.ZipFile(FOLDER / "bundles" / name) as zf:
        return zf.read("manifest.json")


@pytest.mark.parametrize("name", VALID)
def test_library_decodes_to_expected(name):
    out = np.asarray(decompress(FOLDER / "bundles" / name))
    want = EXPECTED[name]
    assert list(out.shape) == want["shape"] and out.dtype.name == want["dtype"]
    assert _digest(out) == want["sha256"]


@pytest.mark.parametrize("name", REFUSED)
def test_library_refuses(name):
    cls = getattr(errors, EXPECTED[name]["error"])
    with pytest.raises(cls):
        decompress(FOLDER / "bundles" / name)


@pytest.mark.parametrize("name", VALID)
def test_reference_decoder_matches(name):
    ref = _reference()
    out = ref.decode((FOLDER / "bundles" / name).read_bytes())
    assert _digest(out) == EXPECTED[name]["sha256"]


@pytest.mark.parametrize("name", REFUSED)
def test_reference_decoder_refuses(name):
    ref = _reference()
    with pytest.raises(ref.Refused):
        ref.decode((FOLDER / "bundles" / name).read_bytes())


_DIGESTS = """
import hashlib, json, sys
import numpy as np
from napari_svd_compress import decompress
names = json.loads(sys.argv[1])
out = {n: hashlib.sha256(np.ascontiguousarray(decompress(sys.argv[2] + "/" + n)).tobytes())
       .hexdigest() for n in names}
print(json.dumps(out))
"""


def _digests_with_threads(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    run = subprocess.run(
        [sys.executable, "-c", _DIGESTS, json.dumps(VALID), str(FOLDER / "bundles")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(run.stdout)


def test_same_bytes_with_one_and_two_threads():
    one, two = _digests_with_threads(1), _digests_with_threads(2)
    assert one == two
    assert one == {n: EXPECTED[n]["sha256"] for n in VALID}


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
