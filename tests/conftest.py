"""Shared fixtures of the napari plugin tests (readers, writers, widget, sample data)."""

from __future__ import annotations

import numpy as np
import pytest


def synthetic_rgb(height: int = 96, width: int = 128) -> np.ndarray:
    """A smooth colourful uint8 test image with some edges (compresses like a photo)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 0.5 + 0.5 * np.sin(x / 9.0)
    g = 0.5 + 0.5 * np.cos(y / 7.0)
    b = ((x // 16 + y // 16) % 2) * 0.6 + 0.2 + 0.2 * np.sin((x + y) / 5.0)
    noise = np.random.default_rng(1).normal(0, 0.03, (height, width, 3))
    return np.clip((np.stack([r, g, b], axis=-1) + noise) * 255, 0, 255).astype(np.uint8)


@pytest.fixture
def rgb_image() -> np.ndarray:
    return synthetic_rgb()


@pytest.fixture
def dng_path(tmp_path, rgb_image):
    """A small Bayer DNG written by the library (no download, no camera)."""
    from napari_svd_compress.fileio import raw

    return raw.write_dng(tmp_path / "synthetic.dng", rgb_image)


@pytest.fixture
def notifications():
    """Notifications dispatched during the test (napari's notification manager records)."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)

    class Recorded:
        def all(self):
            return notification_manager.records[start:]

        def errors(self):
            return [n for n in self.all() if str(n.severity).lower().endswith("error")]

        def messages(self):
            return [str(n.message) for n in self.all()]

    return Recorded()


# --- a codec registered by the tests: slow, can fail, to test progress, cancel, errors ---


def _slow_encode(plane, params, progress, container):
    import time

    from napari_svd_compress.errors import ImageError
    from napari_svd_compress.registry import Encoded

    for i in range(params["steps"]):
        time.sleep(0.02)
        progress(i / params["steps"])
    if params["fail"]:
        raise ImageError("deliberate failure for the test")
    return Encoded(meta={"mean": float(plane.mean())})


def _slow_decode(meta, payloads, shape):
    return np.full(shape, meta["mean"], dtype=np.float32)


@pytest.fixture
def slow_codec():
    """Register ``slowtest``: sleeps ``steps`` x 20 ms, keeps only the mean, may fail."""
    from napari_svd_compress import registry
    from napari_svd_compress.registry import Codec, Param

    codec = registry.register(
        Codec(
            name="slowtest",
            label="Slow test codec",
            description="Sleeps, reports progress, keeps only the mean.",
            params=(
                Param("steps", int, 10, "How many 20 ms naps.", low=1, high=10_000),
                Param("fail", bool, False, "Raise an ImageError at the end."),
                Param("note", str, None, "An optional path.", path=True),
            ),
            encode=_slow_encode,
            decode=_slow_decode,
            channels=None,
            sweep=("steps", (1, 2)),
        )
    )
    yield codec
    registry._REGISTRY.pop("slowtest", None)
