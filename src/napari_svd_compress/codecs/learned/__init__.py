"""The ``learned`` codec: a small factorized-prior autoencoder with per-level gains.

Importing this package only registers the codec; onnxruntime, constriction and the
model file are loaded on first use (see :mod:`.codec` and :mod:`.model`).  Training
lives in :mod:`.train` and needs the optional ``train`` extra (torch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...registry import Codec, Encoded, Param, register

__all__ = ["LEVELS", "decode", "encode"]

#: Quality levels of the built-in model (1 = smallest files).
LEVELS = 6


def encode(plane: np.ndarray, params: dict[str, Any], progress: Callable[[float], None]) -> Encoded:
    """Encode one plane (see :func:`.codec.encode`); imports the run time lazily."""
    from .codec import encode as _encode

    return _encode(plane, params, progress)


def decode(
    meta: Mapping[str, Any], payloads: Mapping[str, bytes], shape: tuple[int, ...]
) -> np.ndarray:
    """Decode one plane (see :func:`.codec.decode`)."""
    from .codec import decode as _decode

    return _decode(meta, payloads, shape)


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
