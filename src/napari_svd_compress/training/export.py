"""Export of a trained checkpoint to a ``.svdm`` model file (torch).

The file holds what the codec's run time needs and nothing of torch: the analysis and
synthesis transforms as ONNX graphs (the TorchScript exporter, opset 17, constant
folding, dynamic height and width), the per-level gains as arrays, and the priors as
integer frequency tables (see :mod:`napari_svd_compress.codecs.learned.model`).
"""

from __future__ import annotations

import io
import warnings
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..codecs.learned.model import pack_model
from ..fileio.atomic import atomic_write
from .networks import LAMBDAS, STRIDE, GainedFactorized, build_model

__all__ = ["export_model", "pmf_tables"]

#: ONNX opset of the exported graphs (onnxruntime >= 1.17 runs it).
OPSET = 17


def pmf_tables(
    model: GainedFactorized, levels: list[int], max_range: int = 1024
) -> dict[str, np.ndarray]:
    """Integer probability tables per level and channel, from the trained priors.

    For each channel the alphabet is the integers ``[lo, lo + n)`` that hold all but
    about 1e-6 of the density, plus one escape symbol (index ``n``) whose frequency is
    the tail mass.  Frequencies are integers (sum about 2**16, every symbol >= 1), so
    the entropy coder's tables are exact and identical on every machine.

    Parameters
    ----------
    model : GainedFactorized
        The trained model (on the CPU).
    levels : list of int
        The trained levels (tables are made for every level of the model).
    max_range : int
        Largest latent magnitude considered.

    Returns
    -------
    dict
        ``pmf`` (levels x M x width, int32), ``lo`` and ``size`` (levels x M, int32).
    """
    nl, m = model.levels, model.m
    ks = torch.arange(-max_range, max_range + 1, dtype=torch.float32)
    lo = np.zeros((nl, m), np.int32)
    size = np.zeros((nl, m), np.int32)
    pmfs: list[list[np.ndarray]] = []
    with torch.no_grad():
        for lv in range(nl):
            v = ks.view(1, 1, 1, -1).expand(1, m, 1, -1).contiguous()
            lik = model.priors.likelihood(v.view(1, m, 1, -1), torch.tensor([lv]))
            p = lik.view(m, -1).double().numpy()
            row = []
            for c in range(m):
                pc = p[c] / max(p[c].sum(), 1e-12)
                cdf = np.cumsum(pc)
                first = int(np.searchsorted(cdf, 1e-6))
                last = int(np.searchsorted(cdf, 1 - 1e-6))
                last = max(last, first)
                core = pc[first : last + 1]
                tail = max(0.0, 1.0 - core.sum())
                freq = np.maximum(1, np.round(np.append(core, tail) * 65536)).astype(np.int32)
                lo[lv, c] = first - max_range
                size[lv, c] = len(core)
                row.append(freq)
            pmfs.append(row)
    width = max(len(f) for row in pmfs for f in row)
    table = np.zeros((nl, m, width), np.int32)
    for lv in range(nl):
        for c in range(m):
            table[lv, c, : len(pmfs[lv][c])] = pmfs[lv][c]
    return {"pmf": table, "lo": lo, "size": size}


def _onnx_bytes(module: nn.Module, shape: tuple[int, ...], in_name: str, out_name: str) -> bytes:
    """``module`` as an ONNX graph with dynamic height and width."""
    buf = io.BytesIO()
    # dynamo=False: the TorchScript exporter, explicitly.  Recent torch versions
    # default to the torch.export-based one, which reads dynamic_shapes, not dynamic_axes.
    torch.onnx.export(
        module,
        (torch.zeros(shape),),
        buf,
        input_names=[in_name],
        output_names=[out_name],
        dynamic_axes={in_name: {2: "h", 3: "w"}, out_name: {2: "h", 3: "w"}},
        opset_version=OPSET,
        dynamo=False,
        do_constant_folding=True,
    )
    return buf.getvalue()


def export_model(
    checkpoint: str | PathLike[str],
    out: str | PathLike[str],
    *,
    name: str = "custom",
    version: str = "1",
) -> Path:
    """Export a training checkpoint to a ``.svdm`` model file.

    Parameters
    ----------
    checkpoint : path
        A checkpoint written by :func:`napari_svd_compress.training.loop.train`.
    out : path
        The model file to write (atomically).
    name, version : str
        Stored in the file; the codec shows them and records them in bundles.

    Returns
    -------
    Path
        ``out``.
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = build_model()
    model.load_state_dict(state["model"])
    model.eval()
    levels = [int(q) for q in state.get("levels", range(1, len(LAMBDAS) + 1))]
    with warnings.catch_warnings():
        # The TorchScript exporter's deprecation and tracer warnings.
        warnings.simplefilter("ignore")
        analysis = _onnx_bytes(model.g_a, (1, 3, 64, 64), "image", "latent")
        synthesis = _onnx_bytes(model.g_s, (1, model.m, 4, 4), "latent", "image")
    tables = pmf_tables(model, levels)
    with torch.no_grad():
        gains = torch.exp(model.log_gain).numpy().astype(np.float32)
        inv_gains = torch.exp(model.log_inv_gain).numpy().astype(np.float32)
    arrays = {"gain": gains, "inv_gain": inv_gains, **tables}
    info = {
        "architecture": "ballé2018-factorized+gains",
        "n_channels": model.n,
        "latent_channels": model.m,
        "stride": STRIDE,
        "lambdas": list(LAMBDAS),
        "trained_levels": levels,
        "steps": int(state["step"]),
        "train_seconds": round(float(state["elapsed"]), 1),
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    return atomic_write(
        out,
        pack_model(
            name=name,
            version=version,
            levels=levels,
            analysis=analysis,
            synthesis=synthesis,
            arrays=arrays,
            info=info,
        ),
    )
