"""Stacks and dask-backed arrays compressed plane by plane as dask tasks.

:func:`compress_stack` writes exactly the bundle :func:`napari_svd_compress.compress`
writes for the same array (same manifest, same ``p{i}/`` payload prefixes, same
figures), but each plane is one dask task: a plane is read from the source array
inside its task, encoded, decoded and measured there, and only its payloads and
figures come back.  The whole stack is never in memory, neither as input nor as
output: ``Result.image`` is a lazy dask array over the bundle.

With a :class:`distributed.Client` the planes run on the cluster; without one on
dask's local threaded scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from typing import Any

import numpy as np

from .. import registry
from .._image import ImageSpec, inspect
from .._memory import large_work
from ..api import PlaneFigures, Result, compress_plane, decompress, make_result
from ..errors import ImageError
from ..fileio.atomic import atomic_write

__all__ = ["compress_stack", "plane_tasks"]


def _plane_task(
    plane: Any, index: int, spec: ImageSpec, method: str, resolved: dict[str, Any]
) -> tuple[int, PlaneFigures]:
    """Compress one plane; send back its index, bytes and figures (no pixels)."""
    # The codec is looked up on the worker: codec objects hold functions, and the
    # registry is rebuilt by importing the package there anyway.
    codec = registry.get(method)
    original = spec.plane(plane, ())
    with large_work():  # as compress() holds it; tasks running together share it
        return index, compress_plane(original, spec, codec, resolved).figures()


def _is_dask(array: Any) -> bool:
    return type(array).__module__.startswith("dask.")


def plane_tasks(array: Any, spec: ImageSpec, method: str, resolved: dict[str, Any]) -> list[Any]:
    """One ``dask.delayed`` task per plane of ``array``, in C order over the stack axes.

    A dask array's plane is passed as a dask array, so each task depends only on the
    chunks of its own plane; a NumPy (or other in-memory) array's plane is sliced
    here, so each task carries only its plane.
    """
    from dask import delayed
    from dask.base import tokenize

    token = tokenize(method, resolved, spec)
    lazy = _is_dask(array)
    tasks = []
    for i, idx in enumerate(np.ndindex(*spec.stack_shape)):
        plane = array[idx] if idx else array
        if not lazy:
            plane = np.asarray(plane)
        name = f"compress-plane-{token}-{i}"
        tasks.append(
            delayed(_plane_task, pure=True)(plane, i, spec, method, resolved, dask_key_name=name)
        )
    return tasks


def compress_stack(
    array: Any,
    method: str = "svd",
    *,
    client: Any = None,
    rgb: bool | None = None,
    progress: Callable[[float], None] | None = None,
    out: str | PathLike[str] | None = None,
    **params: Any,
) -> Result:
    """Compress an n-D stack (or one plane) with one dask task per plane.

    Parameters
    ----------
    array : array_like
        Anything :func:`napari_svd_compress.compress` takes; dask arrays are read one
        plane per task and never computed whole.
    method : str
        A registry name (native single-file codecs such as ``jpeg`` take one plane only).
    client : distributed.Client, optional
        Run the plane tasks on this cluster (the workers need the package installed).
        Without one, dask's local threaded scheduler runs them.
    rgb : bool, optional
        Whether the last axis is colour (napari's rule by default).
    progress : callable, optional
        Called with the fraction of planes done.
    out : path, optional
        Also write the bundle there, atomically.
    **params
        The method's parameters.

    Returns
    -------
    Result
        Equal to ``compress(array, method, **params)`` in bundle and figures (the
        timings are the sums over the tasks); ``image`` is ``decompress(bundle,
        lazy=True)``, a dask array for stacks.
    """
    codec = registry.get(method)
    resolved = codec.resolve(params)
    spec = inspect(array, rgb=rgb, codec=codec)
    n = spec.n_planes
    if codec.native and n > 1:
        raise ImageError(f"method {method!r} writes one image file; it cannot hold a stack")
    tasks = plane_tasks(array, spec, codec.name, resolved)
    done = sorted(_run(tasks, client, progress), key=lambda item: item[0])
    # The same assembly as api.compress, so the figures and the bundle match.
    result = make_result(codec, resolved, spec, [figures for _, figures in done])
    result.image = decompress(result.bundle, lazy=True)
    if out is not None:
        atomic_write(out, result.bundle)
    return result


def _run(
    tasks: list[Any], client: Any, progress: Callable[[float], None] | None
) -> list[tuple[int, PlaneFigures]]:
    n = len(tasks)
    report = progress or (lambda f: None)
    report(0.0)
    if client is not None:
        from distributed import as_completed

        futures = client.compute(tasks)
        out = []
        try:
            for future in as_completed(futures):
                out.append(future.result())
                report(len(out) / n)
        finally:
            # A failed plane (or a Cancelled from progress) must not leave tasks running.
            client.cancel([f for f in futures if not f.done()])
        return out
    import dask
    from dask.callbacks import Callback

    keys = {t.key for t in tasks}
    done = [0]

    class _Count(Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
            if key in keys:
                done[0] += 1
                report(done[0] / n)

    with _Count():
        return list(dask.compute(*tasks, scheduler="threads"))
