"""The ``.svdm`` model file: reading (with validation), writing, and cached sessions.

An ``.svdm`` file is a ZIP archive holding

``manifest.json``
    ``format`` (``"napari-svd-compress/learned-model"``), ``format_version`` (1),
    ``name``, ``version``, ``levels`` (quality levels it provides), ``latent_channels``,
    ``stride``, ``sha256`` (of all other members, see :func:`_digest`), ``files``
    (member name to size and sha256) and free-form ``info`` (training details).
``analysis.onnx`` / ``synthesis.onnx``
    The transforms: image ``(1, 3, H, W)`` in [0, 1] to latent ``(1, M, H/16, W/16)``,
    and back.  Quality-independent.
``gain.npy`` / ``inv_gain.npy``
    float32 ``(L, M)``: per-level channel gains applied before rounding and after it.
``pmf.npy``, ``lo.npy``, ``size.npy``
    int32 tables of the entropy model: for level ``l`` and channel ``c`` the symbols
    ``lo[l, c] + k`` for ``k < size[l, c]`` have integer frequencies ``pmf[l, c, k]``
    and ``pmf[l, c, size[l, c]]`` is the frequency of the escape symbol.

Nothing is unpickled: arrays are read with ``allow_pickle=False``, and every member is
checked (sizes, dtypes, shapes, digest) before use.  Errors are
:class:`~napari_svd_compress.errors.BundleError` subclasses; a path that does not name
a file is a :class:`~napari_svd_compress.errors.ParameterError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...atomic import atomic_target
from ...errors import (
    BundleContentError,
    BundleError,
    BundleFormatError,
    BundleLimitError,
    BundleVersionError,
    ParameterError,
)

__all__ = ["BUILTIN_PATH", "LearnedModel", "load_model", "write_model"]

FORMAT = "napari-svd-compress/learned-model"
FORMAT_VERSION = 1
BUILTIN_PATH = Path(__file__).parent / "weights" / "builtin.svdm"

_GRAPHS = ("analysis.onnx", "synthesis.onnx")
_ARRAYS = ("gain", "inv_gain", "pmf", "lo", "size")
_MAX_FILE = 256 * 2**20  # a model file larger than this is refused
_MAX_MEMBER = 128 * 2**20
_MAX_MANIFEST = 2**20
_MAX_LEVELS = 64
_MAX_CHANNELS = 1024
_MAX_ALPHABET = 1 << 16
_MAX_SYMBOL = 1 << 24  # latent magnitude bound (|lo| and |lo + size|)


def _digest(members: dict[str, bytes]) -> str:
    """sha256 over the members' names, lengths and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(members):
        data = members[name]
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def write_model(
    path: str | os.PathLike,
    *,
    name: str,
    version: str,
    levels: list[int],
    analysis: bytes,
    synthesis: bytes,
    arrays: dict[str, np.ndarray],
    info: dict[str, Any] | None = None,
) -> Path:
    """Write a ``.svdm`` model file and return its path.

    Parameters
    ----------
    path : path-like
        Output file.
    name, version : str
        Model identity, recorded in every encoded plane.
    levels : list of int
        Quality levels (1-based) the model provides; ``arrays`` rows are indexed by
        ``level - 1`` and must cover the largest level.
    analysis, synthesis : bytes
        Serialised ONNX graphs.
    arrays : dict
        ``gain``, ``inv_gain`` (float32), ``pmf``, ``lo``, ``size`` (int32).
    info : dict, optional
        JSON-safe training details stored in the manifest.
    """
    members = {"analysis.onnx": analysis, "synthesis.onnx": synthesis}
    casts = {"gain": np.float32, "inv_gain": np.float32}
    for key in _ARRAYS:
        members[f"{key}.npy"] = _npy_bytes(np.asarray(arrays[key], casts.get(key, np.int32)))
    gain = np.asarray(arrays["gain"])
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": str(name),
        "version": str(version),
        "levels": [int(v) for v in levels],
        "latent_channels": int(gain.shape[1]),
        "stride": 16,
        "sha256": _digest(members),
        "files": {
            k: {"size": len(v), "sha256": hashlib.sha256(v).hexdigest()}
            for k, v in sorted(members.items())
        },
        "info": info or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
        for k, v in members.items():
            zf.writestr(k, v)
    return path


@dataclass
class LearnedModel:
    """A validated model: identity, tables and (lazily created) ONNX sessions."""

    path: str
    name: str
    version: str
    sha256: str
    levels: tuple[int, ...]
    stride: int
    gain: np.ndarray
    inv_gain: np.ndarray
    pmf: np.ndarray
    lo: np.ndarray
    size: np.ndarray
    info: dict[str, Any]
    graphs: dict[str, bytes] = field(repr=False)
    _sessions: dict[tuple[str, int], Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def channels(self) -> int:
        """Number of latent channels ``M``."""
        return int(self.gain.shape[1])

    def identity(self) -> dict[str, str]:
        """What an encoded plane records to find and check its model."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256}

    def session(self, which: str, threads: int = 0):
        """The cached onnxruntime session for ``"analysis"`` or ``"synthesis"``.

        ``threads`` is onnxruntime's ``intra_op_num_threads`` (0: its default).
        """
        key = (which, threads)
        with self._lock:
            sess = self._sessions.get(key)
            if sess is None:
                sess = _make_session(self.graphs[f"{which}.onnx"], threads)
                self._sessions[key] = sess
            return sess


def _make_session(graph: bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # Without the arena, tile buffers are returned after each run: the peak memory of a
    # 24-megapixel image stays bounded by one tile's activations.
    opts.enable_cpu_mem_arena = False
    return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])


def _read_members(path: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BundleFormatError(
            f"{path}: not a .svdm model file (not a ZIP archive: {exc})"
        ) from None
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        if "manifest.json" not in infos:
            raise BundleFormatError(f"{path}: not a .svdm model file (no manifest.json)")
        wanted = ["manifest.json", *_GRAPHS, *(f"{k}.npy" for k in _ARRAYS)]
        data: dict[str, bytes] = {}
        for n in wanted:
            if n not in infos:
                missing = [m for m in wanted if m not in infos]
                raise BundleContentError(f"{path}: model file lacks {', '.join(missing)}")
            limit = _MAX_MANIFEST if n == "manifest.json" else _MAX_MEMBER
            if infos[n].file_size > limit:
                raise BundleLimitError(
                    f"{path}: member {n} declares {infos[n].file_size} bytes (limit {limit})"
                )
            try:
                with zf.open(n) as f:
                    raw = f.read(limit + 1)  # never trust the declared size
            except Exception as exc:  # zlib errors, bad CRC, encrypted members, ...
                raise BundleFormatError(f"{path}: cannot read member {n}: {exc}") from None
            if len(raw) > limit:
                raise BundleLimitError(f"{path}: member {n} is larger than {limit} bytes")
            data[n] = raw
            if n == "manifest.json":  # a file that is not a model fails here, first
                try:
                    manifest = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise BundleFormatError(
                        f"{path}: manifest.json is not valid JSON: {exc}"
                    ) from None
                if not isinstance(manifest, dict):
                    raise BundleFormatError(f"{path}: manifest.json is not a JSON object")
    del data["manifest.json"]
    return manifest, data


def _load_array(path: Path, name: str, raw: bytes, dtype: type) -> np.ndarray:
    try:
        a = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as exc:
        raise BundleContentError(f"{path}: {name}.npy is not a valid array: {exc}") from None
    if not isinstance(a, np.ndarray) or a.dtype != np.dtype(dtype):
        raise BundleContentError(f"{path}: {name}.npy must be {np.dtype(dtype).name}")
    return a


def _parse(path: Path) -> LearnedModel:
    manifest, data = _read_members(path)
    fmt = manifest.get("format")
    if fmt != FORMAT:
        raise BundleFormatError(f"{path}: not a learned-codec model (format {fmt!r})")
    fv = manifest.get("format_version")
    if not isinstance(fv, int) or fv != FORMAT_VERSION:
        raise BundleVersionError(
            f"{path}: model file format version {fv!r} is not supported "
            f"(this version reads {FORMAT_VERSION}); update napari-svd-compress"
        )
    name, version, sha = manifest.get("name"), manifest.get("version"), manifest.get("sha256")
    levels = manifest.get("levels")
    if not (isinstance(name, str) and isinstance(version, str) and isinstance(sha, str)):
        raise BundleFormatError(f"{path}: manifest needs string name, version and sha256")
    if (
        not isinstance(levels, list)
        or not levels
        or len(levels) > _MAX_LEVELS
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in levels)
        or not all(1 <= v <= _MAX_LEVELS for v in levels)
        or len(set(levels)) != len(levels)
    ):
        raise BundleFormatError(f"{path}: manifest 'levels' must be distinct ints in 1..64")
    if manifest.get("stride") != 16:
        raise BundleVersionError(f"{path}: only stride-16 models are supported")
    if _digest(data) != sha:
        raise BundleContentError(
            f"{path}: the model's contents do not match its sha256 (corrupt or altered file)"
        )
    arrays = {
        k: _load_array(path, k, data[f"{k}.npy"], np.float32 if "gain" in k else np.int32)
        for k in _ARRAYS
    }
    gain, inv_gain, pmf, lo, size = (arrays[k] for k in _ARRAYS)
    if gain.ndim != 2 or not 1 <= gain.shape[1] <= _MAX_CHANNELS:
        raise BundleContentError(f"{path}: gain must be (levels, channels)")
    nl, m = gain.shape
    if max(levels) > nl or inv_gain.shape != (nl, m) or lo.shape != (nl, m):
        raise BundleContentError(f"{path}: gain / inv_gain / lo shapes disagree with levels")
    if size.shape != (nl, m) or pmf.ndim != 3 or pmf.shape[:2] != (nl, m):
        raise BundleContentError(f"{path}: pmf / size shapes disagree with gain")
    if manifest.get("latent_channels") != m:
        raise BundleContentError(f"{path}: manifest latent_channels != {m}")
    if pmf.shape[2] > _MAX_ALPHABET:
        raise BundleLimitError(f"{path}: alphabet of {pmf.shape[2]} symbols is too large")
    if not (np.all(np.isfinite(gain)) and np.all(gain > 0) and np.all(np.isfinite(inv_gain))):
        raise BundleContentError(f"{path}: gains must be finite and positive")
    for lv in levels:
        sz = size[lv - 1]
        if np.any(sz < 1) or np.any(sz >= pmf.shape[2]):
            raise BundleContentError(f"{path}: symbol counts out of range for level {lv}")
        if np.any(np.abs(lo[lv - 1].astype(np.int64)) > _MAX_SYMBOL):
            raise BundleContentError(f"{path}: symbol offsets out of range for level {lv}")
        k = np.arange(pmf.shape[2])[None, :]
        used = pmf[lv - 1][k <= sz[:, None]]
        if np.any(used < 1) or np.any(pmf[lv - 1] < 0):
            raise BundleContentError(f"{path}: frequencies must be >= 1 for level {lv}")
    graphs = {g: data[g] for g in _GRAPHS}
    model = LearnedModel(
        path=str(path),
        name=name,
        version=version,
        sha256=sha,
        levels=tuple(sorted(levels)),
        stride=16,
        gain=gain,
        inv_gain=inv_gain,
        pmf=pmf,
        lo=lo,
        size=size,
        info=manifest.get("info") if isinstance(manifest.get("info"), dict) else {},
        graphs=graphs,
    )
    # Build both sessions now so that a broken graph fails here with a clear message.
    for which, (iname, oname) in {
        "analysis": ("image", "latent"),
        "synthesis": ("latent", "image"),
    }.items():
        try:
            sess = model.session(which)
        except Exception as exc:
            raise BundleContentError(f"{path}: {which}.onnx is not a usable graph: {exc}") from None
        ins, outs = sess.get_inputs(), sess.get_outputs()
        if [i.name for i in ins] != [iname] or [o.name for o in outs] != [oname]:
            raise BundleContentError(f"{path}: {which}.onnx has unexpected inputs/outputs")
        shape = ins[0].shape
        want = 3 if which == "analysis" else m
        if len(shape) != 4 or shape[1] != want:
            raise BundleContentError(f"{path}: {which}.onnx input must be (1, {want}, H, W)")
    return model


_CACHE: dict[tuple[str, int, int], LearnedModel] = {}
_CACHE_LOCK = threading.Lock()


def load_model(path: str | os.PathLike | None = None) -> LearnedModel:
    """Load and validate a model file (``None`` or ``""``: the built-in model).

    Results are cached by path, size and modification time, so the ONNX sessions are
    built once per process.

    Raises
    ------
    ParameterError
        ``path`` does not name a readable file.
    BundleError
        The file is not a valid model (a subclass says why).
    """
    p = BUILTIN_PATH if path in (None, "") else Path(os.fspath(path)).expanduser()
    try:
        st = p.stat()
    except (OSError, ValueError) as exc:
        if p == BUILTIN_PATH:
            raise BundleContentError(f"the built-in model is missing ({p})") from None
        raise ParameterError(f"model file {str(p)!r} cannot be read: {exc}") from None
    if not p.is_file():
        raise ParameterError(f"model {str(p)!r} is not a file")
    if st.st_size > _MAX_FILE:
        raise BundleLimitError(f"{p}: {st.st_size} bytes is too large for a model file")
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    try:
        model = _parse(p)
    except BundleError:
        raise
    except (OSError, MemoryError) as exc:
        raise BundleFormatError(f"{p}: cannot read model file: {exc}") from None
    with _CACHE_LOCK:
        _CACHE[key] = model
    return model
