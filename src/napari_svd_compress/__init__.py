"""Lossy image compression by truncated SVD, PCA, k-means and a small learned codec.

The library never imports napari or Qt; the napari plugin lives in the private
``_reader``, ``_writer``, ``_widget`` and ``_sample_data`` modules.

>>> import napari_svd_compress as nsc
>>> from skimage import data
>>> result = nsc.compress(data.camera(), "svd", rank=40)
>>> image = nsc.decompress(result.bundle)
"""

from __future__ import annotations

try:
    from importlib.metadata import version as _version

    __version__ = _version("napari-svd-compress")
except Exception:  # running from a source tree that is not installed
    __version__ = "0.0.0"

from .api import Result, compress, decompress
from .errors import (
    BundleError,
    Cancelled,
    ImageError,
    ParameterError,
    RawError,
    SVDCompressError,
)
from .registry import available as available_methods
from .registry import get as get_method

__all__ = [
    "BundleError",
    "Cancelled",
    "ImageError",
    "ParameterError",
    "RawError",
    "Result",
    "SVDCompressError",
    "__version__",
    "available_methods",
    "compress",
    "decompress",
    "get_method",
]
