"""napari writers of ``.ome.zarr`` stores: lossless, or with our codecs in the chunks.

Two writer contributions share the extension; napari's save dialog lists both:

- *OME-Zarr (lossless)*: :func:`write_ome_zarr`, Blosc-zstd chunks;
- *OME-Zarr, svdz chunks*: :func:`write_ome_zarr_svdz`, each chunk compressed by the
  Compress widget's current method and settings (when the widget is docked in the
  viewer), else by the method the layer was made with (a layer from the widget or a
  ``.svdz`` file), else by ``pca`` with its defaults.

Both write OME-NGFF 0.4 (the version every OME-Zarr reader opens) with the layer's axes
(its ``axis_labels`` when they are t, c, z, y, x names), scale, translation and units, a
pyramid for planes over 1024 pixels a side, and an RGB layer's colours as a channel axis;
the store appears at ``path`` only once it is complete (see
:func:`napari_svd_compress.fileio.ome_zarr.write_ome_zarr`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["layer_options", "widget_settings", "write_ome_zarr", "write_ome_zarr_svdz"]


def _full_resolution(data: Any, attributes: Mapping[str, Any]) -> Any:
    if attributes.get("multiscale") or isinstance(data, list | tuple):
        return data[0]
    return data


def layer_options(data: Any, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The :func:`~napari_svd_compress.fileio.ome_zarr.write_ome_zarr` keywords of a layer:
    rgb, axes, scale, translate, units, name and contrast limits from its attributes."""
    from ..fileio.ome_zarr import axis_names

    rgb = bool(attributes.get("rgb", False))
    ndim = len(data.shape) - (1 if rgb else 0)
    options: dict[str, Any] = {"rgb": rgb}
    labels = attributes.get("axis_labels")
    if labels is not None and axis_names(ndim, labels) is not None:
        options["axes"] = list(labels)
    for key in ("scale", "translate"):
        values = attributes.get(key)
        if values is not None and len(values) == ndim:
            options[key] = [float(v) for v in values]
    units = attributes.get("units")
    if units is not None and len(units) == ndim:
        options["units"] = [None if u is None else str(u) for u in units]
    if attributes.get("name"):
        options["name"] = str(attributes["name"])
    limits = attributes.get("contrast_limits")
    if limits is not None and len(limits) == 2:
        options["contrast_limits"] = [float(limits[0]), float(limits[1])]
    return options


def write_ome_zarr(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write an image layer as a lossless OME-Zarr store (Blosc-zstd chunks).

    Returns
    -------
    list of str
        ``[path]``.
    """
    from ..fileio.ome_zarr import write_ome_zarr as _write

    image = _full_resolution(data, attributes)
    written = _write(path, image, compression="blosc", **layer_options(image, attributes))
    return [os.fspath(written)]


def widget_settings(metadata: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The method and parameters for svdz chunks.

    The Compress widget's current ones when it is docked in the current viewer; else
    those a layer was made with (``metadata["svd_compress"]``: the manifest the .svdz
    reader records, or the figures the widgets record); else ``("pca", {})``.
    """
    from .. import registry
    from .writer import META_KEY

    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # no Qt application, no viewer: fall through
        viewer = None
    if viewer is not None:
        from .widgets.compress import CompressWidget

        try:
            docked = list(viewer.window.dock_widgets.values())
        except Exception:
            docked = []
        for widget in docked:
            if isinstance(widget, CompressWidget) and widget.method_name():
                return str(widget.method_name()), dict(widget.current_params())
    entry = (metadata or {}).get(META_KEY)
    # The reader records the bundle's manifest; the widgets the figures of the run.
    for key, name in (("manifest", "codec"), ("figures", "method")):
        made = entry.get(key) if isinstance(entry, Mapping) else None
        if isinstance(made, Mapping) and made.get(name) in registry.available():
            params = made.get("params")
            return str(made[name]), dict(params) if isinstance(params, Mapping) else {}
    return "pca", {}


def write_ome_zarr_svdz(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write an image layer as OME-Zarr whose chunks are compressed by our codecs
    (the ``svdz`` numcodecs codec), with :func:`widget_settings`' method and parameters.

    Returns
    -------
    list of str
        ``[path]``.
    """
    from ..fileio.ome_zarr import write_ome_zarr as _write

    image = _full_resolution(data, attributes)
    method, params = widget_settings(attributes.get("metadata"))
    written = _write(
        path,
        image,
        compression="svdz",
        method=method,
        params=params,
        **layer_options(image, attributes),
    )
    return [os.fspath(written)]
