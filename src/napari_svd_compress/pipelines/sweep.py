"""Rate-distortion sweeps: compress one image at several settings of several methods.

>>> from skimage import data
>>> table = sweep(data.camera()[::4, ::4], methods=("svd", "jpeg"))
>>> table.columns
('method', 'param', 'bytes', 'bpp', 'psnr', 'ssim', 'seconds')
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any

from .. import registry
from ..api import compress_many
from ..fileio.atomic import atomic_write

__all__ = ["COLUMNS", "SweepTable", "plot_rd", "sweep"]

COLUMNS = ("method", "param", "bytes", "bpp", "psnr", "ssim", "seconds")
DEFAULT_METHODS = ("svd", "pca", "kmeans", "jpeg", "webp")


@dataclass
class SweepTable:
    """Rows of a sweep, each a dict with the keys :data:`COLUMNS`.

    ``param`` is a text such as ``"rank=8"``; ``seconds`` is the encode time (without
    the decode and the metrics; work shared by a method's points, such as one
    factorisation for every rank, counts in its first point).  ``region`` says which
    part of the image was measured, when not the whole of it.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: tuple[str, ...] = COLUMNS
    region: str | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]

    @property
    def methods(self) -> list[str]:
        """Methods in the order they first appear."""
        return list(dict.fromkeys(r["method"] for r in self.rows))

    def curve(self, method: str, key: str = "psnr") -> tuple[list[float], list[float]]:
        """``(bpp, key)`` of one method, sorted by rate."""
        pts = sorted((r["bpp"], r[key]) for r in self.rows if r["method"] == method)
        return [p[0] for p in pts], [p[1] for p in pts]

    def to_csv_text(self) -> str:
        """The table as CSV text with the header :data:`COLUMNS`."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(self.columns), lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _fmt(row[k]) for k in self.columns})
        return buf.getvalue()

    def to_csv(self, path: str | PathLike[str]) -> None:
        """Write the table as CSV (atomically)."""
        atomic_write(path, self.to_csv_text().encode())


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.6g}"
    return value


def sweep(
    image: Any,
    methods: Iterable[str] = DEFAULT_METHODS,
    points: Mapping[str, Sequence[Any]] | None = None,
    progress: Callable[[float], None] | None = None,
    *,
    rgb: bool | None = None,
    region: str | None = None,
) -> SweepTable:
    """Compress ``image`` with each method over a range of its sweep parameter.

    Parameters
    ----------
    image : array_like
        Anything :func:`~napari_svd_compress.compress` takes.
    methods : iterable of str
        Registry names.  Each varies the parameter named in its codec's ``sweep``.
    points : mapping, optional
        Per method, the values to use instead of the codec's defaults.  A value may
        also be a dict of parameters (for sweeps over more than one parameter).
    progress : callable, optional
        Called with the fraction done; may raise
        :class:`~napari_svd_compress.errors.Cancelled`.
    rgb : bool, optional
        Passed to :func:`~napari_svd_compress.compress`.
    region : str, optional
        What part of the source ``image`` is (e.g. ``"full image"`` or
        ``"visible region y 0:2000, x 0:3000"``): kept with the table and shown on plots.

    Returns
    -------
    SweepTable
        One row per (method, value), in the order run.
    """
    methods = list(methods)
    points = dict(points or {})
    jobs: list[tuple[str, dict[str, Any]]] = []
    for name in methods:
        codec = registry.get(name)
        if name in points:
            values = points[name]
            pname = codec.sweep[0] if codec.sweep else None
        elif codec.sweep is not None:
            pname, values = codec.sweep
        else:
            pname, values = None, [{}]
        for v in values:
            params = dict(v) if isinstance(v, Mapping) else {pname: v}
            jobs.append((name, params))
    table = SweepTable(region=region)
    done = 0
    # One method at a time, so that its points share work (compress_many).
    for name in dict.fromkeys(n for n, _ in jobs):
        sets = [params for n, params in jobs if n == name]
        report = None
        if progress is not None:
            report = _scaled(progress, done / len(jobs), len(sets) / len(jobs))
        results = compress_many(image, name, sets, rgb=rgb, progress=report)
        for params, res in zip(sets, results, strict=True):
            table.rows.append(
                {
                    "method": name,
                    "param": " ".join(f"{k}={v}" for k, v in params.items()),
                    "bytes": res.nbytes,
                    "bpp": res.bpp,
                    "psnr": res.psnr,
                    "ssim": res.ssim,
                    "seconds": res.encode_s,
                }
            )
            done += 1
            if progress is not None:
                progress(done / len(jobs))
    return table


def _scaled(progress: Callable[[float], None], start: float, width: float):
    return lambda f: progress(start + width * min(max(float(f), 0.0), 1.0))


def plot_rd(
    table: SweepTable | Sequence[Mapping[str, Any]], path_or_axes: Any, *, title: str | None = None
) -> Any:
    """Plot PSNR (left) and SSIM (right) against bits per pixel, one curve per method.

    Parameters
    ----------
    table : SweepTable or sequence of row dicts
    path_or_axes : path-like or pair of matplotlib Axes
        A file name (written atomically with the Agg backend; the format follows the
        suffix) or two axes to draw into.
    title : str, optional
        Figure title.

    Returns
    -------
    The figure (when drawing to a file) or the axes.
    """
    rows = table.rows if isinstance(table, SweepTable) else list(table)
    region = table.region if isinstance(table, SweepTable) else None
    tab = SweepTable(rows=list(rows))
    to_file = isinstance(path_or_axes, (str, PathLike))
    if to_file:
        # The Agg canvas works without a display and leaves pyplot's state alone.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(11, 4.5), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2)
    else:
        axes = path_or_axes
        fig = axes[0].figure
    for method in tab.methods:
        for ax, key in zip(axes, ("psnr", "ssim"), strict=True):
            x, y = tab.curve(method, key)
            keep = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(b)]
            if keep:
                ax.plot(*zip(*keep, strict=True), marker="o", ms=3, label=method)
    for ax, label in zip(axes, ("PSNR (dB)", "SSIM"), strict=True):
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    if region:
        title = f"{title} ({region})" if title else f"measured on: {region}"
    if title:
        fig.suptitle(title)
    if to_file:
        buf = io.BytesIO()
        suffix = str(path_or_axes).rsplit(".", 1)[-1].lower()
        fig.savefig(buf, format=suffix if suffix in ("png", "pdf", "svg") else "png", dpi=110)
        atomic_write(path_or_axes, buf.getvalue())
        return fig
    return axes
