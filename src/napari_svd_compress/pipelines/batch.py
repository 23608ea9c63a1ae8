"""Batch compression of many files on dask.distributed: one task per file.

:func:`batch` submits one task per input file to a :class:`distributed.Client` (its
own :class:`distributed.LocalCluster` when none is given).  Each task reads its file,
compresses it with :func:`napari_svd_compress.compress` and writes its outputs
atomically itself, so the workers must see OUTPUT_DIR (a shared file system on a
real cluster).  The client collects results as they complete and rewrites the
manifest, ``batch-manifest.jsonl`` and ``batch-manifest.csv`` in OUTPUT_DIR,
atomically after each one.

Restarting is safe: a file is skipped when the manifest already has a record with the
same key (input path, size, modification time, method and resolved parameters) and
its outputs exist.  A file that failed is skipped too while it is unchanged (it would
fail again) unless ``retry_failed`` is set.  Every output goes through
:func:`~napari_svd_compress.fileio.atomic.atomic_write`, so a batch killed at any moment
leaves complete files or none; the temporary files of a killed write are removed when
the batch is run again.
"""

from __future__ import annotations

import csv
import datetime as _dt
import glob
import hashlib
import io
import json
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from .. import registry
from ..api import compress
from ..errors import ParameterError
from ..fileio.atomic import atomic_write
from ..fileio.images import read_image, write_jpeg
from ..fileio.raw import RAW_EXTENSIONS, is_raw_path

__all__ = ["IMAGE_EXTENSIONS", "BatchReport", "batch", "expand_inputs"]

MANIFEST_JSONL = "batch-manifest.jsonl"
MANIFEST_CSV = "batch-manifest.csv"

#: Extensions picked up when an input is a folder (RAW extensions are added below).
IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".tif",
    ".tiff",
    ".bmp",
    ".webp",
    ".gif",
    ".npy",
)

CSV_COLUMNS = (
    "input",
    "status",
    "error",
    "method",
    "params",
    "shape",
    "dtype",
    "bytes",
    "bpp",
    "ratio",
    "psnr",
    "ssim",
    "encode_s",
    "decode_s",
    "seconds",
    "outputs",
    "worker",
    "finished",
    "size",
    "mtime_ns",
    "key",
)

PathLikeStr = str | PathLike[str]


@dataclass
class BatchReport:
    """The outcome of a :func:`batch` run.

    Attributes
    ----------
    records : list of dict
        One manifest record per input file, in input order: the ones computed in this
        run and the ones skipped (taken from the manifest).
    skipped : list of str
        Inputs that were already done (or had already failed, unchanged).
    output_dir : Path
        Where the outputs and the manifest are.
    seconds : float
        Wall-clock time of the run, cluster start-up excluded.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    output_dir: Path = Path(".")
    seconds: float = 0.0

    @property
    def ok(self) -> list[dict[str, Any]]:
        """Records of the files compressed (now or before)."""
        return [r for r in self.records if r["status"] == "ok"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Records of the files that failed (now or, unchanged, before)."""
        return [r for r in self.records if r["status"] != "ok"]

    @property
    def computed(self) -> list[dict[str, Any]]:
        """Records of the files processed in this run (not skipped)."""
        skipped = set(self.skipped)
        return [r for r in self.records if r["input"] not in skipped]

    @property
    def manifest_path(self) -> Path:
        """The JSON-lines manifest in the output folder."""
        return self.output_dir / MANIFEST_JSONL

    @property
    def files_per_second(self) -> float:
        """Files processed in this run per second of wall time (NaN before any)."""
        n = len(self.computed)
        return n / self.seconds if self.seconds > 0 else float("nan")

    def summary(self) -> str:
        """One line: counts and throughput."""
        return (
            f"{len(self.records)} files: {len(self.ok)} ok, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped (already done); {len(self.computed)} processed "
            f"in {self.seconds:.1f} s"
        )


def _extensions() -> tuple[str, ...]:
    return tuple(dict.fromkeys((*IMAGE_EXTENSIONS, *RAW_EXTENSIONS)))


def expand_inputs(inputs: PathLikeStr | Iterable[PathLikeStr]) -> list[Path]:
    """The input files: folders give their image files (not recursive), strings with
    ``*``, ``?`` or ``[`` are glob patterns (``**`` recurses), other paths are taken
    as they are.  Sorted within each item, duplicates removed, order kept otherwise.
    """
    items = [inputs] if isinstance(inputs, str | PathLike) else list(inputs)
    exts = _extensions()
    out: dict[Path, None] = {}
    for item in items:
        text = os.fspath(item)
        p = Path(text)
        if p.is_dir():
            found = sorted(
                c
                for c in p.iterdir()
                if c.is_file() and not c.name.startswith(".") and c.suffix.lower() in exts
            )
        elif any(ch in text for ch in "*?[") and not p.exists():
            found = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
        else:
            found = [p]
        for f in found:
            out.setdefault(f.absolute(), None)
    return list(out)


def _output_names(files: list[Path]) -> dict[Path, str]:
    """Output stem per input: its stem, or its whole name where stems collide."""
    stems: dict[str, int] = {}
    for f in files:
        stems[f.stem] = stems.get(f.stem, 0) + 1
    return {f: f.stem if stems[f.stem] == 1 else f.name for f in files}


def _key(
    path: Path, size: int, mtime_ns: int, method: str, params: dict[str, Any], extra: dict[str, Any]
) -> str:
    text = json.dumps(
        {
            "input": str(path),
            "size": size,
            "mtime_ns": mtime_ns,
            "method": method,
            "params": params,
            **extra,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _bundle_ext(codec: registry.Codec) -> str:
    if codec.native == "jpeg":
        return ".jpg"
    return f".{codec.native}" if codec.native else ".svdz"


def _record(job: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A manifest record of ``job``: what identifies the input and its settings."""
    keys = ("input", "key", "size", "mtime_ns", "method", "params")
    return {**{k: job[k] for k in keys}, **extra}


def process_file(job: dict[str, Any]) -> dict[str, Any]:
    """The task run on a worker for one file; returns its manifest record.

    Never raises for a bad file: the error goes into the record, so that one corrupt
    file cannot stop the batch.
    """
    t0 = time.perf_counter()
    src = Path(job["input"])
    record = _record(job, worker=socket.gethostname() + f":{os.getpid()}")
    try:
        options = {}
        if is_raw_path(src) and src.suffix.lower() not in (".tif", ".tiff"):
            options = dict(job.get("raw_options") or {})
        image, _ = read_image(src, **options)
        result = compress(image, job["method"], rgb=job.get("rgb"), **job["params"])
        outputs = [str(atomic_write(job["bundle"], result.bundle))]
        if job.get("jpg"):
            decoded = result.image
            is_rgb = job.get("rgb") if job.get("rgb") is not None else _is_rgb(image)
            # A JPEG shows one picture: for a stack, its first plane.
            while decoded.ndim > (3 if is_rgb else 2):
                decoded = decoded[0]
            outputs.append(str(write_jpeg(job["jpg"], decoded)))
        record.update(
            status="ok",
            error="",
            shape=list(image.shape),
            dtype=str(image.dtype),
            outputs=outputs,
            **{k: v for k, v in result.figures().items() if k not in ("method", "params")},
        )
    except Exception as exc:  # any failure of one file is data, not a crash
        record.update(
            status="error",
            error=f"{type(exc).__name__}: {exc}",
            outputs=[],
            traceback=traceback.format_exc(limit=6),
        )
    record["seconds"] = time.perf_counter() - t0
    record["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return record


def _is_rgb(a: Any) -> bool:
    return a.ndim >= 3 and a.shape[-1] in (3, 4)


def read_manifest(output_dir: PathLikeStr) -> dict[str, dict[str, Any]]:
    """The records of ``OUTPUT_DIR/batch-manifest.jsonl`` by input path (last one wins)."""
    path = Path(output_dir) / MANIFEST_JSONL
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # cannot happen with atomic rewrites; tolerate hand edits
        if isinstance(rec, dict) and isinstance(rec.get("input"), str):
            records[rec["input"]] = rec
    return records


def _write_manifest(output_dir: Path, records: dict[str, dict[str, Any]]) -> None:
    # Sorted by input path, so the files do not depend on completion order.
    records = {k: records[k] for k in sorted(records)}
    lines = [json.dumps(r, sort_keys=False, default=str) for r in records.values()]
    atomic_write(output_dir / MANIFEST_JSONL, ("\n".join(lines) + "\n").encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in records.values():
        row = dict(r)
        for name in ("params", "shape", "outputs"):
            if name in row and not isinstance(row[name], str):
                row[name] = json.dumps(row[name])
        writer.writerow(row)
    atomic_write(output_dir / MANIFEST_CSV, buf.getvalue().encode())


def _clean_stale_tmp(output_dir: Path, names: Iterable[str]) -> list[Path]:
    """Remove the temporary files a killed atomic_write left for our outputs."""
    removed = []
    for name in names:
        for tmp in output_dir.glob(f".{glob.escape(name)}.*.tmp"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def _done(rec: dict[str, Any] | None, key: str, outputs: list[str], retry_failed: bool) -> bool:
    if rec is None or rec.get("key") != key:
        return False
    if rec.get("status") == "ok":
        have = set(rec.get("outputs") or [])
        return all(o in have and Path(o).exists() for o in outputs)
    # A worker that died is worth another try; a file that failed to decode is not.
    return not retry_failed and not rec.get("transient")


def _start_progress_bar(futures: list[Any]) -> threading.Thread:
    from distributed import progress as dask_progress

    # distributed.progress blocks until the futures finish; a thread lets the manifest
    # be written as they complete.
    thread = threading.Thread(
        target=dask_progress, args=(futures,), kwargs={"notebook": False}, daemon=True
    )
    thread.start()
    return thread


def batch(
    inputs: PathLikeStr | Iterable[PathLikeStr],
    output_dir: PathLikeStr,
    method: str = "svd",
    *,
    client: Any = None,
    workers: int | None = None,
    jpg: bool = False,
    rgb: bool | None = None,
    raw_options: dict[str, Any] | None = None,
    retry_failed: bool = False,
    progress: bool | Callable[[int, int, dict[str, Any]], None] = False,
    **params: Any,
) -> BatchReport:
    """Compress many files, one dask.distributed task per file.

    Parameters
    ----------
    inputs : path, glob pattern or iterable of them
        Files, folders (their image and RAW files) or glob patterns.
    output_dir : path
        Where ``NAME.svdz`` (or the native codec's file), ``NAME.jpg`` with ``jpg``,
        and the manifest are written; created if missing.  Workers write there, so on
        a multi-machine cluster it must be on a shared file system.
    method : str
        A registry name.
    client : distributed.Client, optional
        The cluster to run on.  Without one a :class:`distributed.LocalCluster` is
        started (``workers`` processes of one thread each) and closed afterwards.
    workers : int, optional
        Worker processes of the local cluster (default: the CPU count, at most 4).
    jpg : bool
        Also write the decoded image as JPEG (a stack's first plane).
    rgb : bool, optional
        Passed to :func:`~napari_svd_compress.compress`.
    raw_options : dict, optional
        Options of :func:`~napari_svd_compress.fileio.raw.read_raw` for camera RAW inputs.
    retry_failed : bool
        Run files again that failed before even when they have not changed.
    progress : bool or callable
        ``True`` shows dask's terminal progress bar (:func:`distributed.progress`); a
        callable is called as ``progress(done, total, record)`` after each file.
    **params
        The method's parameters (checked before anything is submitted).

    Returns
    -------
    BatchReport

    Raises
    ------
    ParameterError
        Unknown method or invalid parameter.
    FileNotFoundError
        An explicit input path that does not exist (glob patterns may match nothing).
    """
    codec = registry.get(method)
    resolved = codec.resolve(params)
    out_dir = Path(output_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    items = [inputs] if isinstance(inputs, str | PathLike) else list(inputs)
    if any(Path(i).is_dir() and Path(i).absolute() == out_dir for i in items):
        raise ParameterError("OUTPUT_DIR must not be an input folder")
    files = [f for f in expand_inputs(items) if f.parent != out_dir or not _is_ours(f)]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"input not found: {', '.join(missing)}")
    ext = _bundle_ext(codec)
    names = _output_names(files)
    previous = read_manifest(out_dir)
    extra = {"rgb": rgb, "raw_options": raw_options or {}}
    jobs: list[dict[str, Any]] = []
    report = BatchReport(output_dir=out_dir)
    results: dict[str, dict[str, Any]] = {}
    stale_names = [MANIFEST_JSONL, MANIFEST_CSV]
    for f in files:
        st = f.stat()
        key = _key(f, st.st_size, st.st_mtime_ns, codec.name, resolved, extra)
        bundle = out_dir / (names[f] + ext)
        jpg_path = out_dir / (names[f] + ".jpg") if jpg and ext != ".jpg" else None
        outputs = [str(bundle)] + ([str(jpg_path)] if jpg_path else [])
        stale_names += [Path(o).name for o in outputs]
        rec = previous.get(str(f))
        if _done(rec, key, outputs, retry_failed):
            assert rec is not None
            results[str(f)] = rec
            report.skipped.append(str(f))
            continue
        jobs.append(
            {
                "input": str(f),
                "key": key,
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "method": codec.name,
                "params": resolved,
                "rgb": rgb,
                "raw_options": raw_options or {},
                "bundle": str(bundle),
                "jpg": str(jpg_path) if jpg_path else None,
            }
        )
    _clean_stale_tmp(out_dir, stale_names)
    manifest = dict(previous)
    t0 = time.perf_counter()
    if jobs:
        own_cluster = client is None
        cluster = None
        if own_cluster:
            client, cluster = _local_client(workers)
        try:
            t0 = time.perf_counter()
            _run_jobs(client, jobs, manifest, results, out_dir, progress)
        finally:
            if own_cluster:
                client.close()
                cluster.close()
    report.seconds = time.perf_counter() - t0
    report.records = [results[str(f)] for f in files if str(f) in results]
    return report


def _is_ours(path: Path) -> bool:
    return path.name in (MANIFEST_JSONL, MANIFEST_CSV)


def _local_client(workers: int | None) -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    n = workers if workers else min(os.cpu_count() or 1, 4)
    cluster = LocalCluster(
        n_workers=n,
        processes=True,
        threads_per_worker=1,
        dashboard_address=None,
    )
    return Client(cluster), cluster


def _run_jobs(
    client: Any,
    jobs: list[dict[str, Any]],
    manifest: dict[str, dict[str, Any]],
    results: dict[str, dict[str, Any]],
    out_dir: Path,
    progress: bool | Callable[[int, int, dict[str, Any]], None],
) -> None:
    from dask.base import tokenize
    from distributed import as_completed

    futures = [
        client.submit(process_file, job, key=f"compress-file-{tokenize(job)}", pure=False)
        for job in jobs
    ]
    by_key = {fut.key: job for fut, job in zip(futures, jobs)}
    bar = _start_progress_bar(futures) if progress is True else None
    total = len(futures)
    last_write, write_cost = -math.inf, 0.0
    try:
        for n_done, future in enumerate(as_completed(futures), start=1):
            job = by_key[future.key]
            try:
                record = future.result()
            except Exception as exc:  # the worker died (KilledWorker, memory, ...)
                record = _record(
                    job,
                    status="error",
                    error=f"{type(exc).__name__}: {exc}",
                    outputs=[],
                    transient=True,
                )
            results[job["input"]] = record
            manifest[job["input"]] = record
            # Rewritten after every file, except that with a huge manifest (thousands
            # of records) rewrites are spaced so that they cost at most ~10% of the time.
            now = time.perf_counter()
            if n_done == total or now - last_write >= min(5.0, 10 * write_cost):
                _write_manifest(out_dir, manifest)
                last_write, write_cost = time.perf_counter(), time.perf_counter() - now
            if callable(progress):
                progress(n_done, total, record)
    finally:
        client.cancel([f for f in futures if not f.done()])
        if bar is not None:
            bar.join(timeout=2)
