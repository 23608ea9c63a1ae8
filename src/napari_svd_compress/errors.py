"""Exception types.  Every error the library raises on bad input is one of these."""

from __future__ import annotations


class SVDCompressError(Exception):
    """Base class of the library's errors."""


class ParameterError(SVDCompressError, ValueError):
    """A method name or parameter value is not valid."""


class ImageError(SVDCompressError, ValueError):
    """The input image cannot be compressed (empty, wrong shape or dtype, ...)."""


class BundleError(SVDCompressError, ValueError):
    """A .svdz bundle (or other compressed file) is malformed, hostile or unsupported."""


class BundleFormatError(BundleError):
    """The file is not a readable bundle: wrong magic, truncated, bad ZIP or JSON."""


class BundleVersionError(BundleError):
    """The bundle's format version, codec or model version is not supported."""


class BundleLimitError(BundleError):
    """The bundle declares sizes beyond the reader's limits (absurd shapes, zip bombs)."""


class BundleContentError(BundleError):
    """The manifest and the payloads disagree (shapes, sizes, missing members)."""


class RawError(SVDCompressError, ValueError):
    """A camera RAW file cannot be decoded."""


class LegacyError(SVDCompressError, ValueError):
    """A legacy pickle is refused (not the expected structure, or would run code)."""


class Cancelled(SVDCompressError):
    """Raised by a progress callback to stop a running job."""
