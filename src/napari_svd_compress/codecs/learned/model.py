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

The sessions do not run the stored graphs as they are: transposed convolutions (the
synthesis) are rewritten as sub-pixel convolutions at load time (:func:`subpixel_graph`;
the file is not changed, and a graph the rewrite does not cover, or whose rewrite
disagrees with it on a test input, runs as stored).

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import (
    BundleContentError,
    BundleError,
    BundleFormatError,
    BundleLimitError,
    BundleVersionError,
    ParameterError,
)

__all__ = [
    "BUILTIN_PATH",
    "LearnedModel",
    "load_model",
    "pack_model",
    "release_options",
    "subpixel_graph",
]

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


def pack_model(
    *,
    name: str,
    version: str,
    levels: list[int],
    analysis: bytes,
    synthesis: bytes,
    arrays: dict[str, np.ndarray],
    info: dict[str, Any] | None = None,
) -> bytes:
    """The bytes of a ``.svdm`` model file (the trainer writes them atomically).

    Parameters
    ----------
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
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
        for k, v in members.items():
            zf.writestr(k, v)
    return buf.getvalue()


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
    _runtime: dict[str, bytes] = field(default_factory=dict, repr=False)
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

        ``threads`` is onnxruntime's ``intra_op_num_threads`` (0: its default, one per
        physical core).  The session runs :meth:`runtime_graph`, which computes the same
        function as the stored graph.
        """
        key = (which, threads)
        with self._lock:
            sess = self._sessions.get(key)
            if sess is None:
                sess = _make_session(self._runtime_graph_locked(which), threads)
                self._sessions[key] = sess
            return sess

    def runtime_graph(self, which: str) -> bytes:
        """The ONNX graph the sessions of ``which`` run (see :func:`subpixel_graph`).

        The stored graph with every transposed convolution replaced by its sub-pixel
        form, when that rewrite applies and a test run agrees with the stored graph;
        otherwise the stored graph itself.
        """
        with self._lock:
            return self._runtime_graph_locked(which)

    def _runtime_graph_locked(self, which: str) -> bytes:
        graph = self._runtime.get(which)
        if graph is None:
            graph = self._runtime[which] = _checked_rewrite(self.graphs[f"{which}.onnx"])
        return graph


def release_options():
    """``RunOptions`` for a job's last run: the session's memory arena gives its free
    blocks back, so that an idle cached session holds no tile buffers."""
    import onnxruntime as ort

    ro = ort.RunOptions()
    ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return ro


def _make_session(graph: bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # The arena keeps the buffers of one tile for the next: without it every run maps
    # (and the kernel zeroes) a few hundred megabytes afresh, which cost a third of the
    # run time.  The codec shrinks the arena after a job's last tile (release_options),
    # so memory stays bounded by one tile's activations.
    opts.enable_cpu_mem_arena = True
    # Worker threads sleep rather than spin between operators: the operators here are
    # long (tens of milliseconds), and spinning only takes a core from other work.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])


# --- The sub-pixel rewrite of transposed convolutions ---------------------------------
#
# onnxruntime's CPU ConvTranspose multiplies and then scatters the products back with a
# single-threaded col2im; its Conv has blocked (NCHWc) AVX kernels and is several times
# faster per multiply-add.  A transposed convolution of stride s is s * s ordinary
# stride-1 convolutions, one per output phase, interleaved: a single Conv with s * s
# times the output channels followed by DepthToSpace ("sub-pixel convolution").  The
# rewrite is done on the serialised graph with a minimal protobuf reader and writer
# (the ``onnx`` package is not a run-time dependency); the model file is not changed.
# Field numbers are those of onnx.proto (ModelProto.graph = 7, GraphProto.node = 1,
# .initializer = 5, .input = 11, NodeProto.input/output/name/op_type/attribute/domain =
# 1/2/3/4/5/7, AttributeProto.name/i/s/ints/type = 1/3/4/8/20, TensorProto.dims/
# data_type/float_data/name/raw_data/data_location = 1/2/4/8/9/14).

_U64 = 1 << 64


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any, bytes]]:
    """Fields of one protobuf message: (number, wire type, value, encoded field)."""
    out = []
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _uvarint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _uvarint(buf, pos)
        elif wire == 2:
            size, pos = _uvarint(buf, pos)
            val, pos = buf[pos : pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            val, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated message")
        out.append((num, wire, val, buf[start:pos]))
    return out


def _signed(v: int) -> int:
    return v - _U64 if v >= 1 << 63 else v


def _ints(fields: list, num: int) -> list[int]:
    """A repeated int64 field, packed or not."""
    out: list[int] = []
    for n, wire, val, _ in fields:
        if n != num:
            continue
        if wire == 0:
            out.append(_signed(val))
        elif wire == 2:
            pos = 0
            while pos < len(val):
                v, pos = _uvarint(val, pos)
                out.append(_signed(v))
        else:
            raise ValueError("bad int64 field")
    return out


def _strs(fields: list, num: int) -> list[str]:
    return [bytes(v).decode("utf-8") for n, w, v, _ in fields if n == num and w == 2]


def _ev(v: int) -> bytes:
    v %= _U64
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _ef(num: int, data: bytes | str) -> bytes:
    data = data.encode("utf-8") if isinstance(data, str) else data
    return _ev(num << 3 | 2) + _ev(len(data)) + data


def _attr_ints(name: str, values: list[int]) -> bytes:
    body = _ef(1, name) + b"".join(_ev(8 << 3) + _ev(v) for v in values) + _ev(20 << 3) + _ev(7)
    return _ef(5, body)


def _encode_node(inputs, outputs, name, op_type, attrs: bytes = b"") -> bytes:
    body = b"".join(_ef(1, i) for i in inputs) + b"".join(_ef(2, o) for o in outputs)
    return _ef(1, body + _ef(3, name) + _ef(4, op_type) + attrs)


def _encode_tensor(name: str, a: np.ndarray) -> bytes:
    body = b"".join(_ev(1 << 3) + _ev(d) for d in a.shape) + _ev(2 << 3) + _ev(1)
    return _ef(5, body + _ef(8, name) + _ef(9, np.ascontiguousarray(a, "<f4").tobytes()))


def _tensor_array(fields: list) -> np.ndarray:
    """A float32 initializer as an array (raises ValueError for anything else)."""
    dtype = [v for n, w, v, _ in fields if n == 2 and w == 0]
    if dtype != [1] or any(n == 14 and v for n, _, v, _ in fields):
        raise ValueError("not an inline float32 tensor")
    dims = _ints(fields, 1)
    raw = [v for n, w, v, _ in fields if n == 9 and w == 2]
    if raw:
        a = np.frombuffer(bytes(raw[-1]), "<f4")
    else:
        packed = b"".join(bytes(v) for n, w, v, _ in fields if n == 4 and w in (2, 5))
        a = np.frombuffer(packed, "<f4")
    return a.reshape(dims).astype(np.float32)


def _phase_kernels(w: np.ndarray, stride: int, pad: tuple[int, int], axis: int):
    """Per output phase, the taps of ``w`` (ConvTranspose layout) along one spatial
    axis as a stride-1 correlation: (taps (phase, t) -> kernel index or -1, pad
    before, pad after)."""
    k = w.shape[2 + axis]
    offs = {}
    for r in range(stride):
        for kk in range(k):
            if (r + pad[0] - kk) % stride == 0:
                offs[(r, (r + pad[0] - kk) // stride)] = kk
    lo, hi = min(d for _, d in offs), max(d for _, d in offs)
    if lo > 0 or hi < 0:
        raise ValueError("unsupported transposed convolution")
    taps = np.full((stride, hi - lo + 1), -1)
    for (r, d), kk in offs.items():
        taps[r, d - lo] = kk
    return taps, -lo, hi


def _subpixel_weights(w: np.ndarray, b: np.ndarray, stride: int, pads: list[int]):
    """Conv weights, bias and pads computing ConvTranspose(w, b) before DepthToSpace."""
    cin, cout = w.shape[:2]
    ty, py0, py1 = _phase_kernels(w, stride, (pads[0], pads[2]), 0)
    tx, px0, px1 = _phase_kernels(w, stride, (pads[1], pads[3]), 1)
    k = np.zeros((stride, stride, cout, cin, ty.shape[1], tx.shape[1]), np.float32)
    for ry in range(stride):
        for rx in range(stride):
            for i, ky in enumerate(ty[ry]):
                for j, kx in enumerate(tx[rx]):
                    if ky >= 0 and kx >= 0:
                        k[ry, rx, :, :, i, j] = w[:, :, ky, kx].T
    k = k.reshape(stride * stride * cout, cin, ty.shape[1], tx.shape[1])
    return k, np.tile(b, stride * stride), [py0, px0, py1, px1]


def subpixel_graph(graph: bytes) -> bytes | None:
    """``graph`` with each transposed convolution rewritten as Conv + DepthToSpace, or
    None when it has none or one that this rewrite does not cover (grouped, dilated,
    with an explicit output shape, with weights that are not float32 initializers, or
    whose output is not exactly ``stride`` times its input)."""
    model = _fields(graph)
    gi = [i for i, f in enumerate(model) if f[0] == 7]
    opsets = [_fields(bytes(v)) for n, w, v, _ in model if n == 8 and w == 2]
    default = [v for f in opsets for n, w, v, _ in f if n == 2 and w == 0 and not any(_strs(f, 1))]
    if len(gi) != 1 or not default or max(default) < 11:  # DepthToSpace mode needs 11
        return None
    g = _fields(bytes(model[gi[0]][2]))
    inits = {}
    for n, w, v, _ in g:
        if n == 5 and w == 2:
            f = _fields(bytes(v))
            inits.setdefault(_strs(f, 8)[0] if _strs(f, 8) else "", f)
    names = set(inits)
    nodes = []
    for n, w, v, _ in g:
        if n == 1 and w == 2:
            f = _fields(bytes(v))
            attrs = {}
            for a in (_fields(bytes(x)) for nn, ww, x, _ in f if nn == 5 and ww == 2):
                if any(nn in (6, 11) for nn, *_ in a):  # subgraphs: leave the graph alone
                    return None
                attrs[_strs(a, 1)[0]] = a
            nodes.append((f, attrs))
            names.update(_strs(f, 1) + _strs(f, 2) + _strs(f, 3))
    replaced, extra, used = {}, [], set()
    for idx, (f, attrs) in enumerate(nodes):
        ins, outs = _strs(f, 1), _strs(f, 2)
        if _strs(f, 4) != ["ConvTranspose"]:
            used.update(ins)
            continue
        if _strs(f, 7) not in ([], [""]) or len(outs) != 1 or not 2 <= len(ins) <= 3:
            return None
        if set(attrs) - {"kernel_shape", "strides", "pads", "output_padding", "dilations",
                         "group", "auto_pad"}:  # fmt: skip
            return None
        if ins[1] not in inits or (len(ins) == 3 and ins[2] not in inits):
            return None
        wt = _tensor_array(inits[ins[1]])
        cout = wt.shape[1] if wt.ndim == 4 else 0
        bias = _tensor_array(inits[ins[2]]) if len(ins) == 3 else np.zeros(cout, np.float32)

        def get(name, default, _attrs=attrs):
            return _ints(_attrs[name], 8) if name in _attrs else default

        strides, pads = get("strides", [1, 1]), get("pads", [0, 0, 0, 0])
        opad = get("output_padding", [0, 0])
        auto = [bytes(v) for n, w, v, _ in attrs.get("auto_pad", []) if n == 4]
        ks = get("kernel_shape", list(wt.shape[2:]))
        if (
            wt.ndim != 4
            or bias.shape != (cout,)
            or ks != list(wt.shape[2:])
            or get("dilations", [1, 1]) != [1, 1]
            or ("group" in attrs and _ints(attrs["group"], 3) != [1])
        ):
            return None
        s = strides[0]
        if (
            len(strides) != 2
            or strides[1] != s
            or s < 2
            or len(pads) != 4
            or len(opad) != 2
            or auto not in ([], [b"NOTSET"])
            or any(ks[a] + opad[a] - pads[a] - pads[a + 2] != s for a in (0, 1))
        ):
            return None
        kern, b2, cpads = _subpixel_weights(wt, bias, s, pads)
        tag = f"{outs[0]}__subpixel"
        while any(tag + sfx in names for sfx in ("", "_w", "_b")):
            tag += "_"
        names.update({tag, tag + "_w", tag + "_b"})
        name = (_strs(f, 3) or [tag])[0]
        conv = _encode_node(
            [ins[0], tag + "_w", tag + "_b"],
            [tag],
            name + "__conv",
            "Conv",
            _attr_ints("kernel_shape", list(kern.shape[2:]))
            + _attr_ints("pads", cpads)
            + _attr_ints("strides", [1, 1]),
        )
        d2s_attrs = _ef(5, _ef(1, "blocksize") + _ev(3 << 3) + _ev(s) + _ev(20 << 3) + _ev(2))
        d2s_attrs += _ef(5, _ef(1, "mode") + _ef(4, b"DCR") + _ev(20 << 3) + _ev(3))
        d2s = _encode_node([tag], outs, name + "__d2s", "DepthToSpace", d2s_attrs)
        replaced[idx] = conv + d2s
        extra += [_encode_tensor(tag + "_w", kern), _encode_tensor(tag + "_b", b2)]
        used.add(ins[0])
    if not replaced:
        return None
    graph_inputs = set()
    for n, w, v, _ in g:
        if n in (11, 12) and w == 2:  # a graph input or output keeps its initializer
            graph_inputs.update(_strs(_fields(bytes(v)), 1))
    body, k = [], 0
    for n, w, v, raw in g:
        if n == 1 and w == 2:
            body.append(replaced.get(k, raw))
            k += 1
        elif n == 5 and w == 2:
            nm = _strs(_fields(bytes(v)), 8)
            if not nm or nm[0] in used or nm[0] in graph_inputs:
                body.append(raw)
        else:
            body.append(raw)
    new_graph = b"".join(body + extra)
    return b"".join(_ef(7, new_graph) if i == gi[0] else f[3] for i, f in enumerate(model))


def _checked_rewrite(graph: bytes) -> bytes:
    """:func:`subpixel_graph` of ``graph`` if it computes the same function (checked on
    a small random input), else ``graph``."""
    try:
        new = subpixel_graph(graph)
    except Exception:  # a graph this reader does not understand is used as it is
        return graph
    if new is None:
        return graph
    try:
        a, b = _make_session(graph, 1), _make_session(new, 1)
        ins = a.get_inputs()
        if len(ins) != 1 or [i.name for i in b.get_inputs()] != [ins[0].name]:
            return graph
        shape = [d if isinstance(d, int) and d > 0 else 8 for d in ins[0].shape]
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        ya, yb = a.run(None, {ins[0].name: x}), b.run(None, {ins[0].name: x})
        ok = len(ya) == len(yb) and all(
            p.shape == q.shape and np.all(np.abs(p - q) <= 1e-4 * (1.0 + np.abs(p).max()))
            for p, q in zip(ya, yb)
        )
    except Exception:
        return graph
    return new if ok else graph


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


def trusted_model(identity: Mapping[str, Any]) -> LearnedModel | None:
    """The model with this identity (name, version, sha256) that the user chose, if any.

    A bundle names its model but never where to load it from: a path read from a file
    would let the file make this process open (and run graphs from) any file on the
    machine.  So a bundle decodes with the built-in model, or with a model this process
    loaded at the user's request (:func:`load_model`, the ``model`` parameter when
    encoding, ``decompress --model``); ``None`` when neither matches.
    """
    want = {k: identity.get(k) for k in ("name", "version", "sha256")}
    builtin = load_model(None)
    if builtin.identity() == want:
        return builtin
    with _CACHE_LOCK:
        loaded = list(_CACHE.values())
    return next((m for m in loaded if m.identity() == want), None)
