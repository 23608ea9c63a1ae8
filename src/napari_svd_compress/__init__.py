"""Lossy image compression by truncated SVD, PCA, k-means and a small learned codec.

The library never imports napari or Qt; the napari plugin lives in the private
``_napari`` package.  The rooms and the import rule: docs/architecture.md.

>>> import napari_svd_compress as nsc
>>> from skimage import data
>>> result = nsc.compress(data.camera(), "svd", rank=40)
>>> image = nsc.decompress(result.bundle)
"""

from __future__ import annotations

from ._version import __version__
from .api import Result, compress, decompress
from .errors import BundleError, Cancelled, ImageError, ParameterError, RawError, SVDCompressError
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
