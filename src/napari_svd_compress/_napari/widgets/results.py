"""Compression results as napari layers, named and annotated the same way by every widget."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image

from ..writer import META_KEY, json_safe, layer_entry

if TYPE_CHECKING:
    import napari

    from ...api import Result

__all__ = [
    "ERROR_MAPS",
    "LUMA",
    "SIGNED_COLORMAP",
    "ErrorMap",
    "Run",
    "add_result",
    "difference",
    "error_map",
    "signed_difference",
]

#: The kinds of error map: ``result - source`` (luma for colour) and ``|source - result|``.
ERROR_MAPS = ("signed", "absolute")
#: Weights of the luma of a colour difference (BT.601, as the codecs' YCbCr).
LUMA = (0.299, 0.587, 0.114)
#: The diverging colormap of signed error maps: blue where the result is darker than the
#: source, red where it is brighter, white where they agree.
SIGNED_COLORMAP = "RdBu_r"
#: Signed maps are shown with contrast limits +-(this percentile of |error|), so that a few
#: large errors at edges do not wash the rest out (the colour bar shows the scale).
SIGNED_PERCENTILE = 99.9
_LIMIT_SAMPLES = 1 << 20


@dataclass
class Run:
    """One compression of this session, as the Compress widget's table lists it."""

    layer: Image
    source: str
    method: str
    params: dict[str, Any]
    figures: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> list[str]:
        """The table row: layer, method, parameters, bytes, bpp, ratio, PSNR, SSIM, seconds."""
        f = self.figures
        params = ", ".join(f"{k}={v}" for k, v in self.params.items() if v is not None)
        return [
            self.layer.name,
            self.method,
            params,
            str(f["bytes"]),
            f"{f['bpp']:.4f}",
            f"{f['ratio']:.2f}",
            f"{f['psnr']:.2f}",
            f"{f['ssim']:.4f}",
            f"{f['encode_s'] + f['decode_s']:.2f}",
        ]


def difference(source: Any, decoded: np.ndarray, rgb: bool) -> np.ndarray:
    """``|source - decoded|`` as float32, averaged over colour channels, plane by plane.

    Reading ``source`` one plane at a time keeps a dask stack lazy.
    """
    out_shape = decoded.shape[:-1] if rgb else decoded.shape
    out = np.empty(out_shape, dtype=np.float32)
    stack = out_shape[:-2]
    for idx in np.ndindex(*stack):
        a = np.asarray(source[idx] if idx else source, dtype=np.float32)
        b = np.asarray(decoded[idx] if idx else decoded, dtype=np.float32)
        d = np.abs(a - b)
        out[idx] = d.mean(axis=-1) if rgb else d
    return out


def signed_difference(source: Any, decoded: np.ndarray, rgb: bool) -> np.ndarray:
    """``decoded - source`` as float32 in the source's units, plane by plane.

    For colour images the luma of the difference, ``0.299 dR + 0.587 dG + 0.114 dB``
    (:data:`LUMA`; alpha is ignored): one signed value per pixel, which a diverging
    colormap can show, weighted as the eye weighs the channels.  Reading ``source`` one
    plane at a time keeps a dask stack lazy.
    """
    out_shape = decoded.shape[:-1] if rgb else decoded.shape
    out = np.empty(out_shape, dtype=np.float32)
    weights = np.asarray(LUMA, dtype=np.float32)
    for idx in np.ndindex(*out_shape[:-2]):
        a = np.asarray(source[idx] if idx else source)
        b = np.asarray(decoded[idx] if idx else decoded)
        if rgb:
            d = b[..., :3].astype(np.float32) - a[..., :3].astype(np.float32)
            out[idx] = d @ weights
        else:
            np.subtract(b, a, out=out[idx], dtype=np.float32)
    return out


@dataclass
class ErrorMap:
    """An error map to add beside a result.

    Attributes
    ----------
    data : ndarray
        float32, one value per pixel (the source's shape less its colour axis).
    kind : {"signed", "absolute"}
    limit : float
        Contrast limits are ``[-limit, limit]`` (signed) or ``[0, limit]`` (absolute).
    """

    data: np.ndarray
    kind: str
    limit: float


def error_map(source: Any, decoded: np.ndarray, rgb: bool, kind: str = "signed") -> ErrorMap:
    """The error map of ``kind`` (:data:`ERROR_MAPS`) of a result, with its contrast limit.

    Signed: :func:`signed_difference`, limits symmetric about 0 at the
    :data:`SIGNED_PERCENTILE` percentile of ``|error|`` (of a subsample of at most a
    million pixels).  Absolute: :func:`difference`, limits from 0 to its maximum.
    """
    if kind not in ERROR_MAPS:
        raise ValueError(f"kind must be one of {', '.join(ERROR_MAPS)}, got {kind!r}")
    if kind == "absolute":
        data = difference(source, decoded, rgb)
        top = float(data.max()) if data.size else 0.0
    else:
        data = signed_difference(source, decoded, rgb)
        flat = data.reshape(-1)
        sample = flat[:: max(1, flat.size // _LIMIT_SAMPLES)]
        top = float(np.percentile(np.abs(sample), SIGNED_PERCENTILE)) if sample.size else 0.0
        if top <= 0 and flat.size:
            top = float(np.abs(flat).max())
    return ErrorMap(data=data, kind=kind, limit=top if top > 0 else 1.0)


def add_result(
    viewer: napari.viewer.Viewer,
    result: Result,
    source: Image,
    error_map: ErrorMap | np.ndarray | None = None,
    digest: str | None = None,
) -> tuple[Run, list[Callable[[], Any]]]:
    """Add ``result`` as a hidden layer over ``source``; return its run and the steps left.

    Adding a layer costs napari work (Qt controls, the vispy node) and showing it a
    texture upload: for a 24-megapixel image each takes a good part of the 250 ms the
    event loop may be blocked.  So the layer is added hidden, and the returned steps,
    to run one per turn of the event loop (:meth:`.job.JobRunner.later`), show it and
    then add and show the error map.

    Returns
    -------
    run : Run
        The result layer (named ``"<source> [<method> <settings>]"``, with the figures
        and the bundle in its metadata) and its figures.
    steps : list of callable

    ``error_map`` is an :class:`ErrorMap` (:func:`error_map`), or a plain
    ``|difference|`` array as :func:`difference` returns it; ``digest`` the image's
    :func:`~napari_svd_compress._napari.writer.pixel_digest`, if the job computed it.
    """
    figures = result.figures()
    name = f"{source.name} [{result.label}]"
    # Under the plugin's key, JSON-safe, with the proof that the layer shows the bundle
    # (the .svdz writer checks it, so an edited duplicate is not saved as this bundle).
    metadata = {
        META_KEY: layer_entry(
            result.bundle,
            result.image,
            digest=digest,
            figures=figures,
            source_layer=source.name,
            label=result.label,
            info=result.info,
        )
    }
    kwargs: dict[str, Any] = {
        "name": name,
        "rgb": bool(source.rgb),
        "scale": source.scale,
        "translate": source.translate,
        "contrast_limits": list(source.contrast_limits),
        "metadata": metadata,
        "visible": False,
    }
    if not source.rgb:
        kwargs["colormap"] = source.colormap
        kwargs["gamma"] = source.gamma
    layer = viewer.add_layer(Image(result.image, **kwargs))
    run = Run(
        layer=layer,
        source=source.name,
        method=result.method,
        params=result.params,
        figures=figures,
    )
    steps: list[Callable[[], Any]] = [lambda: setattr(layer, "visible", True)]
    if error_map is not None:
        added: list[Image] = []
        steps.append(lambda: added.append(_add_error_map(viewer, error_map, name, figures, source)))
        steps.append(lambda: setattr(added[0], "visible", True))
    return run, steps


def _add_error_map(
    viewer: napari.viewer.Viewer,
    error_map: ErrorMap | np.ndarray,
    name: str,
    figures: dict[str, Any],
    source: Image,
) -> Image:
    if not isinstance(error_map, ErrorMap):
        top = float(error_map.max()) if error_map.size else 0.0
        error_map = ErrorMap(error_map, "absolute", top if top > 0 else 1.0)
    data, signed = error_map.data, error_map.kind == "signed"
    layer = viewer.add_layer(
        Image(
            data,
            name=f"{name} {'signed error' if signed else 'error'}",
            scale=source.scale[-data.ndim :],
            translate=source.translate[-data.ndim :],
            colormap=SIGNED_COLORMAP if signed else "magma",
            contrast_limits=[-error_map.limit if signed else 0.0, error_map.limit],
            # The signed map is a picture of its own (white is "no error"); the
            # absolute one glows over the result.
            blending="translucent" if signed else "additive",
            metadata={
                META_KEY: json_safe(
                    {"figures": figures, "error_map_of": name, "error_kind": error_map.kind}
                )
            },
            visible=False,
        )
    )
    if signed:
        layer.colorbar.visible = True
    return layer
