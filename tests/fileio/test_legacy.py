"""Tests of the safe reader for the old SVD_image_compression ``.pkl`` files."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import subprocess

import numpy as np
import pytest
from skimage import data

from napari_svd_compress.errors import LegacyError
from napari_svd_compress.fileio.legacy import load_legacy, sniff_legacy


def _svd_entry(channel: np.ndarray, k: int) -> list[np.ndarray]:
    u, s, vt = np.linalg.svd(channel.astype(np.float64), full_matrices=False)
    return [u[:, :k], s[:k], vt[:k]]


def _expected(entries) -> np.ndarray:
    planes = [np.clip(np.rint((u * s) @ vt), 0, 255).astype(np.uint8) for u, s, vt in entries]
    return planes[0] if len(planes) == 1 else np.stack(planes, axis=-1)


def _assert_close(decoded: np.ndarray, expected: np.ndarray) -> None:
    assert decoded.dtype == np.uint8
    assert decoded.shape == expected.shape
    diff = np.abs(decoded.astype(int) - expected.astype(int))
    assert diff.max() <= 1  # float32 vs float64 rounding at .5 boundaries only
    assert (diff == 0).mean() > 0.99


@pytest.fixture(scope="module")
def gray_entries():
    camera = data.camera()[::8, ::6]  # 64 x 86
    return [_svd_entry(camera, 20)]


@pytest.fixture(scope="module")
def rgb_entries():
    astronaut = data.astronaut()[::8, ::6]  # 64 x 86 x 3
    return [_svd_entry(astronaut[..., c], 16) for c in range(3)]


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_gray_roundtrip(tmp_path, gray_entries, protocol):
    path = tmp_path / "camera.pkl"
    with open(path, "wb") as fh:
        pickle.dump(gray_entries, fh, protocol=protocol)
    assert sniff_legacy(path)
    image = load_legacy(path)
    assert image.shape == (64, 86)
    _assert_close(image, _expected(gray_entries))


@pytest.mark.parametrize("protocol", [2, 5])
def test_rgb_roundtrip_bytes_stream_and_tuples(rgb_entries, protocol):
    expected = _expected(rgb_entries)
    blob = pickle.dumps(rgb_entries, protocol=protocol)
    _assert_close(load_legacy(blob), expected)
    _assert_close(load_legacy(io.BytesIO(blob)), expected)
    as_tuples = tuple(tuple(entry) for entry in rgb_entries)
    _assert_close(load_legacy(pickle.dumps(as_tuples, protocol=protocol)), expected)


def test_layouts_and_dtypes(rgb_entries):
    # Fortran order, big-endian and float32 factors all describe the same image.
    mixed = [
        [np.asfortranarray(u), s.astype(">f8"), vt.astype(np.float32)] for u, s, vt in rgb_entries
    ]
    for protocol in (2, 5):
        _assert_close(load_legacy(pickle.dumps(mixed, protocol=protocol)), _expected(rgb_entries))


def test_numpy1_module_names(gray_entries):
    # Pickles written by numpy 1.x name numpy.core instead of numpy._core.
    blob = pickle.dumps(gray_entries, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in blob
    _assert_close(load_legacy(blob), _expected(gray_entries))


def test_full_matrices_svd():
    image = data.camera()[::8, ::6].astype(np.float64)
    u, s, vt = np.linalg.svd(image)  # full_matrices=True: U (64, 64), Vt (86, 86)
    decoded = load_legacy(pickle.dumps([[u, s, vt]]))
    _assert_close(decoded, data.camera()[::8, ::6])


class _Hostile:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _hostile_payloads(marker: str) -> dict[str, _Hostile]:
    return {
        "system": _Hostile(os.system, (f"touch {marker}",)),
        "exec": _Hostile(builtins.exec, (f"open({marker!r}, 'w').close()",)),
        "Popen": _Hostile(subprocess.Popen, (["touch", marker],)),
    }


@pytest.mark.parametrize("which", ["system", "exec", "Popen"])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_hostile_pickles_refused_without_side_effect(tmp_path, which, protocol):
    marker = tmp_path / "PWNED"
    payload = _hostile_payloads(str(marker))[which]
    eye = np.eye(30)
    for obj in (payload, [[eye, np.ones(30), payload]]):
        path = tmp_path / "evil.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        with pytest.raises(LegacyError, match=f"refused.*{which}"):
            load_legacy(path)
        assert not marker.exists()


def test_tampering_with_admitted_globals_refused():
    # GLOBAL numpy.dtype, then BUILD {"foo": 1} on it: tries to modify the admitted callable.
    blob = b"\x80\x02cnumpy\ndtype\n}X\x03\x00\x00\x00fooK\x01sb."
    with pytest.raises(LegacyError, match="refused"):
        load_legacy(blob)
    # Persistent ids are refused too.
    with pytest.raises(LegacyError):
        load_legacy(b"\x80\x02X\x01\x00\x00\x00xQ.")


def test_object_and_structured_dtypes_refused():
    objects = np.array([1.0, "text", None], dtype=object)
    with pytest.raises(LegacyError, match="refused"):
        load_legacy(pickle.dumps([[np.eye(3), objects, np.eye(3)]], protocol=2))
    record = np.zeros(3, dtype=[("a", "f8"), ("b", "i4")])
    with pytest.raises(LegacyError, match="refused"):
        load_legacy(pickle.dumps([[np.eye(3), record, np.eye(3)]], protocol=4))


def _bad_structures():
    u, s, vt = np.ones((40, 5)), np.ones(5), np.ones((5, 30))
    nan_s = s.copy()
    nan_s[2] = np.nan
    return {
        "dict": {"U": u, "S": s, "Vt": vt},
        "empty list": [],
        "two channels": [[u, s, vt], [u, s, vt]],
        "two-item entry": [[u, s]],
        "four-item entry": [[u, s, vt, s]],
        "entry not a list": [u],
        "k mismatch": [[u, np.ones(4), vt]],
        "Vt mismatch": [[u, s, np.ones((6, 30))]],
        "S is 2-D": [[u, np.ones((5, 1)), vt]],
        "channel sizes differ": [[u, s, vt], [u, s, np.ones((5, 31))], [u, s, vt]],
        "NaN": [[u, nan_s, vt]],
        "infinite": [[u * np.inf, s, vt]],
        "plain lists": [[u.tolist(), s.tolist(), vt.tolist()]],
        "complex": [[u.astype(complex), s, vt]],
        "rank too high": [[np.ones((4, 5)), s, np.ones((5, 30))]],
        "strings": [["U", "S", "Vt"]],
        "number": 42,
    }


@pytest.mark.parametrize("name", list(_bad_structures()))
def test_bad_structures_refused(name):
    with pytest.raises(LegacyError):
        load_legacy(pickle.dumps(_bad_structures()[name]))


def test_broken_inputs(tmp_path, gray_entries):
    blob = pickle.dumps(gray_entries, protocol=4)
    for cut in (1, 10, len(blob) // 2, len(blob) - 1):
        with pytest.raises(LegacyError):
            load_legacy(blob[:cut])
    with pytest.raises(LegacyError, match="empty"):
        load_legacy(b"")
    with pytest.raises(LegacyError):
        load_legacy(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(LegacyError):
        load_legacy(os.urandom(500))
    with pytest.raises(LegacyError, match=r"missing\.pkl"):
        load_legacy(tmp_path / "missing.pkl")
    with pytest.raises(LegacyError):
        load_legacy(tmp_path)  # a folder
    with pytest.raises(LegacyError, match="limit"):
        load_legacy(blob, max_bytes=100)
    with pytest.raises(LegacyError):
        load_legacy(blob, max_bytes=0)
    with pytest.raises(LegacyError):
        load_legacy(12345)
    with pytest.raises(LegacyError):
        load_legacy(io.StringIO("text"))


def test_sniff_legacy(tmp_path, gray_entries):
    for protocol in (0, 1, 2, 3, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(gray_entries, protocol=protocol))
        assert sniff_legacy(path), protocol
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    text = tmp_path / "a.txt"
    text.write_text("hello")
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    odd = tmp_path / "odd.pkl"
    odd.write_bytes(b"\x80\x09")
    for path in (png, text, empty, odd, tmp_path / "missing.pkl", tmp_path):
        assert not sniff_legacy(path), path


def test_mutated_pickles_only_raise_legacy_error():
    rng = np.random.default_rng(7)
    entries = [[np.ones((30, 3)), np.ones(3), np.ones((3, 25))]] * 3
    blobs = [pickle.dumps(entries, protocol=p) for p in (0, 2, 4, 5)]
    for i in range(400):
        blob = bytearray(blobs[i % len(blobs)])
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(len(blob)))
            if rng.random() < 0.7:
                blob[pos] = int(rng.integers(256))
            else:
                del blob[pos : pos + int(rng.integers(1, 8))]
        try:
            image = load_legacy(bytes(blob))
        except LegacyError:
            continue
        assert image.dtype == np.uint8
