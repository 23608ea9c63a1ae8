"""to_unit and from_unit work band by band; the values are those of the whole-plane
operations they replace (bundles and figures must not change)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_svd_compress import _image
from napari_svd_compress._image import inspect


def _whole_to_unit(plane: np.ndarray, spec: _image.ImageSpec) -> np.ndarray:
    lo, hi = spec.value_range
    unit = (plane[..., :3] if spec.alpha else plane).astype(np.float32)
    if lo != 0.0:
        unit -= np.float32(lo)
    unit *= np.float32(1.0 / (hi - lo))
    return unit if spec.rgb else unit[..., None]


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [
        (np.uint8, (700, 500, 3)),
        (np.uint16, (300, 400)),
        (np.int16, (500, 300, 4)),
        (np.float64, (600, 300, 3)),
        (np.float32, (5, 7)),
        (np.uint8, (3, 40000)),
    ],
)
def test_banded_unit_conversions_equal_whole_plane(dtype, shape):
    rng = np.random.default_rng(1)
    if np.dtype(dtype).kind == "f":
        plane = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    else:
        info = np.iinfo(dtype)
        plane = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    spec = inspect(plane)
    unit, alpha = _image.to_unit(plane, spec)
    assert unit.flags.c_contiguous
    np.testing.assert_array_equal(unit, _whole_to_unit(plane, spec))
    noisy = unit + rng.normal(0, 0.1, unit.shape).astype(np.float32)
    back = _image.from_unit(noisy, spec, alpha)
    np.testing.assert_array_equal(back, _image._from_unit(noisy, spec, alpha))
    assert back.dtype == plane.dtype and back.shape == plane.shape
