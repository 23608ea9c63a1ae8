"""The public API: input checking, figures, progress and cancellation, the registry."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from skimage import data, metrics

import napari_svd_compress as nsc
from napari_svd_compress import registry
from napari_svd_compress.errors import Cancelled, ImageError, ParameterError


@pytest.fixture(scope="module")
def small() -> np.ndarray:
    return data.camera()[::4, ::4].copy()


def test_import_does_not_pull_napari_or_qt():
    code = (
        "import sys, napari_svd_compress as n; n.available_methods();"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui', 'torch')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_result_figures_are_consistent(small):
    r = nsc.compress(small, "svd", rank=10)
    assert r.nbytes == len(r.bundle)
    assert r.bpp == pytest.approx(len(r.bundle) * 8 / small.size)
    assert r.ratio == pytest.approx(small.nbytes / len(r.bundle))
    assert r.psnr == pytest.approx(metrics.peak_signal_noise_ratio(small, r.image))
    expected_ssim = metrics.structural_similarity(small, r.image, data_range=255)
    assert r.ssim == pytest.approx(expected_ssim, abs=1e-9)
    assert r.encode_s > 0 and r.decode_s > 0
    assert r.label == "svd r=10"
    assert r.figures()["bytes"] == r.nbytes


def test_banded_ssim_equals_scikit_image():
    img = data.camera()
    rng = np.random.default_rng(0)
    big = np.tile(img, (3, 1))  # 1536 rows: scored in bands
    noisy = np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)
    expected = metrics.structural_similarity(big, noisy, data_range=255)
    assert nsc.metrics.ssim(big, noisy) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((0, 10), np.uint8), "empty"),
        (np.zeros(10, np.uint8), "at least 2 dimensions"),
        (np.zeros((1, 10), np.uint8), "at least 2x2"),
        (np.full((8, 8), np.nan, np.float32), "NaN"),
        (np.array([[np.inf, 1], [2, 3]]), "NaN or infinite"),
        (np.zeros((8, 8), np.complex64), "unsupported image dtype"),
        (np.zeros((8, 8), object), "unsupported image dtype"),
        (np.zeros((8, 8), "U3"), "unsupported image dtype"),
    ],
)
def test_bad_images_raise_image_error(image, match):
    with pytest.raises(ImageError, match=match):
        nsc.compress(image, "svd")


def test_bad_parameters_raise_parameter_error(small):
    with pytest.raises(ParameterError, match="unknown method"):
        nsc.compress(small, "zip")
    with pytest.raises(ParameterError, match="no parameter"):
        nsc.compress(small, "svd", ranks=3)
    with pytest.raises(ParameterError, match=">= 1"):
        nsc.compress(small, "svd", rank=0)
    with pytest.raises(ParameterError, match="only one"):
        nsc.compress(small, "svd", rank=3, percent=0.5)
    with pytest.raises(ParameterError, match="one of"):
        nsc.compress(small, "svd", color="hsv")
    with pytest.raises(ParameterError, match="type int"):
        nsc.compress(small, "svd", rank=2.5)


def test_rgb_flag(small):
    with pytest.raises(ImageError, match="rgb=True"):
        nsc.compress(small, "svd", rgb=True)
    stack = np.stack([small] * 3, axis=-1)  # (128, 128, 3): RGB by napari's rule
    assert nsc.compress(stack, "svd", rank=5).info["space"] == "ycbcr"
    as_stack = nsc.compress(stack, "svd", rank=5, rgb=False)  # 128 planes of 128x3
    assert len(as_stack.info["planes"]) == 128


def test_progress_reaches_one_and_cancel_stops(small):
    seen = []
    nsc.compress(np.stack([small, small]), "svd", rank=5, progress=seen.append)
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert all(a <= b + 1e-12 for a, b in zip(seen, seen[1:]))

    def cancel(fraction):
        if fraction > 0.3:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        nsc.compress(np.stack([small] * 4), "svd", rank=5, progress=cancel)


def test_registry_schema_is_complete():
    for codec in registry.all_codecs():
        assert codec.name and codec.label and codec.description
        for p in codec.params:
            assert p.kind in (int, float, str, bool) and p.help
            if p.default is not None:
                assert p.check(p.default) == p.default
        groups = {p.group for p in codec.params if p.group}
        for g in groups:
            defaults = [p for p in codec.params if p.group == g and p.default is not None]
            assert len(defaults) == 1, (codec.name, g)
        resolved = codec.resolve({})
        assert set(resolved) == {p.name for p in codec.params}


def test_encoders_get_the_container_as_an_argument(small, slow_codec):
    """Codecs get their declared parameters only, and the container figures explicitly."""
    import dataclasses

    from napari_svd_compress.format.bundle import member_overhead

    seen = []

    def encode(plane, params, progress, container):
        seen.append((dict(params), container))
        return registry.Encoded(meta={"mean": 0.5})

    codec = registry.register(dataclasses.replace(slow_codec, encode=encode))
    overheads = {}
    for name, image, quantum in (
        ("uint8", small, 1 / 255),
        ("uint16", small.astype(np.uint16), 1 / 65535),
        ("float", small / 255.0, 0.0),
        ("rgba", np.dstack([small] * 4), 1 / 255),
    ):
        seen.clear()
        result = nsc.compress(image, "slowtest", steps=1)
        ((params, container),) = seen
        assert params == codec.resolve({"steps": 1})
        assert isinstance(container, registry.Container)
        assert container.quantum == pytest.approx(quantum)
        overheads[name] = container.overhead
        if name != "rgba":
            # The bundle is the container around the meta: within a few bytes of figures.
            meta = len('{"mean":0.5}')
            assert abs(result.nbytes - (container.overhead + meta - 2)) <= 8, name
    assert overheads["rgba"] >= overheads["uint8"] + member_overhead("alpha")
    with pytest.raises(dataclasses.FrozenInstanceError):
        registry.Container().quantum = 1.0  # type: ignore[misc]


def test_make_result_is_what_compress_returns(small):
    """compress() is compress_plane per plane, then api.make_result (as the pipelines)."""
    from napari_svd_compress import api
    from napari_svd_compress._image import inspect

    stack = np.stack([small, small[::-1]])
    codec = registry.get("svd")
    resolved = codec.resolve({"target_bpp": 0.8})
    spec = inspect(stack, codec=codec)
    planes = [api.compress_plane(stack[i], spec, codec, resolved) for i in range(2)]
    made = api.make_result(codec, resolved, spec, [p.figures() for p in planes])
    direct = nsc.compress(stack, "svd", target_bpp=0.8)
    assert made.bundle == direct.bundle and made.image is None
    assert (made.psnr, made.ssim, made.info) == (direct.psnr, direct.ssim, direct.info)
    for name in ("pixels", "raw_nbytes", "label", "method", "params"):
        assert getattr(made, name) == getattr(direct, name), name


@pytest.mark.parametrize("method", ["jpeg", "webp", "avif"])
def test_baseline_files_refuse_an_alpha_channel(method):
    # The bundle is the format's own file: figures on an alpha it does not hold would lie.
    rgba = np.zeros((16, 16, 4), np.uint8)
    with pytest.raises(ImageError, match="alpha"):
        nsc.compress(rgba, method)
    assert nsc.compress(rgba[..., :3], method).image.shape == (16, 16, 3)
