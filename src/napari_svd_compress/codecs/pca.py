"""The ``pca`` codec: principal components of the image's blocks or rows.

The engine lives in :mod:`._blocks`, which ``svd`` shares for its patch mode; this module
only registers the codec, so that importing ``svd`` does not register ``pca`` first.
"""

from ..registry import Codec, register
from ._blocks import PARAMS, _short, decode, encode, encode_many

CODEC = register(
    Codec(
        name="pca",
        label="PCA (learned block transform)",
        description=(
            "Principal components of the image's b x b blocks (all channels together) "
            "or of its rows; the basis and the quantised, context-coded coefficients "
            "are stored, and blocks are smoothed by a deblocking filter on decoding."
        ),
        params=PARAMS,
        encode=encode,
        decode=decode,
        encode_many=encode_many,
        sweep=("step", (400.0, 280.0, 200.0, 140.0, 96.0, 64.0, 44.0, 30.0, 20.0, 14.0, 10.0, 7.0)),
        short=_short,
    )
)
