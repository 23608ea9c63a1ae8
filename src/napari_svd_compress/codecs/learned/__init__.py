"""The ``learned`` codec: a small factorized-prior autoencoder with per-level gains.

Importing this package registers the codec; onnxruntime and the model file are loaded
on first use (see :mod:`.model`).  Training lives in :mod:`napari_svd_compress.training`
and needs the optional ``train`` extra (torch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...registry import Codec, Container, Encoded, Param, register
from . import codec as _codec

__all__ = ["LEVELS", "decode", "encode"]

#: Quality levels of the built-in model (1 = smallest files).
LEVELS = 6


def encode(
    plane: np.ndarray,
    params: dict[str, Any],
    progress: Callable[[float], None],
    container: Container,
) -> Encoded:
    """Encode one plane (see :func:`.codec.encode`); ``container`` is unused."""
    return _codec.encode(plane, params, progress)


def decode(
    meta: Mapping[str, Any], payloads: Mapping[str, bytes], shape: tuple[int, ...]
) -> np.ndarray:
    """Decode one plane (see :func:`.codec.decode`)."""
    return _codec.decode(meta, payloads, shape)


CODEC = register(
    Codec(
        name="learned",
        label="Learned (neural)",
        description=(
            "A small neural image codec (factorized-prior autoencoder, Ballé et al. 2018, "
            "with per-quality channel gains): analysis/synthesis transforms run with "
            "onnxruntime and the latents are range coded. Works on grayscale and RGB."
        ),
        params=(
            Param(
                "quality",
                int,
                3,
                "Quality level: 1 gives the smallest files, 6 the best fidelity.",
                low=1,
                high=LEVELS,
            ),
            Param(
                "model",
                str,
                "",
                "A .svdm model file trained with 'napari-svd-compress train'; "
                "empty uses the built-in model.",
                path=True,
            ),
        ),
        encode=encode,
        decode=decode,
        channels=(1, 3),
        sweep=("quality", tuple(range(1, LEVELS + 1))),
        short=lambda p: f"q={p['quality']}",
    )
)
