"""Sample data: a RAW made on first use (nothing downloaded) and a photograph."""

from __future__ import annotations

import numpy as np
import pytest

from napari_svd_compress._napari import sample_data as _sample_data


def test_sample_dng_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = _sample_data.sample_dng_path()
    assert first.is_file()
    assert str(first).startswith(str(tmp_path / "cache"))
    mtime = first.stat().st_mtime_ns
    assert _sample_data.sample_dng_path() == first
    assert first.stat().st_mtime_ns == mtime  # not written again


@pytest.mark.gui
def test_open_sample_raw_and_photo(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    viewer = make_napari_viewer()
    viewer.open_sample("napari-svd-compress", "raw")
    viewer.open_sample("napari-svd-compress", "astronaut")
    raw_layer, photo = viewer.layers
    assert raw_layer.name == "astronaut (RAW)"
    assert raw_layer.rgb and raw_layer.data.shape == (512, 512, 3)
    assert raw_layer.data.dtype == np.uint8
    assert raw_layer.metadata["svd_compress"]["raw"]["settings"]["output_bits"] == 8
    assert photo.name == "astronaut" and photo.data.shape == (512, 512, 3)
