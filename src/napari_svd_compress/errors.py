"""Exception types.  Every error the library raises on bad input is one of these."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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


class BundleDecodeError(BundleContentError):
    """A codec, the container or a library under them failed on the file's data.

    Raised by the one safety net around every decoder (see
    :func:`napari_svd_compress.api.decode_plane`): whatever zipfile, NumPy, constriction
    or onnxruntime raise on hostile data becomes this, with the original exception as
    ``__cause__``.  A well-behaved codec refuses bad data itself, with a plainer
    :class:`BundleContentError`; this class marks the ones the safety net had to catch.
    """


class RawError(SVDCompressError, ValueError):
    """A camera RAW file cannot be decoded."""


class LegacyError(SVDCompressError, ValueError):
    """A legacy pickle is refused (not the expected structure, or would run code)."""


class Cancelled(SVDCompressError):
    """Raised by a progress callback to stop a running job."""


# Exceptions that are not about the data: they always pass through the safety net.
_PASS_THROUGH = (KeyboardInterrupt, SystemExit, GeneratorExit)


def _detail(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def refuse_failures(
    what: str,
    error: type[SVDCompressError] = BundleDecodeError,
    memory_error: type[SVDCompressError] = BundleLimitError,
    keep: tuple[type[SVDCompressError], ...] = (BundleError,),
) -> Iterator[None]:
    """The safety net around code that reads untrusted data: one place that turns
    whatever a library raises on hostile input into the library's own errors.

    Inside the block, the errors in ``keep`` pass as they are (so do interrupts,
    :class:`Cancelled` and ``SystemExit``); :class:`MemoryError` becomes
    ``memory_error``; anything else (``zipfile``'s ``NotImplementedError``, NumPy's
    ``ValueError`` and ``IndexError``, ``OverflowError``, constriction's Rust panics,
    which do not even derive from ``Exception``, onnxruntime's ``Fail``, and the
    library's other errors) becomes ``error``, with the original as ``__cause__``, so
    that a genuine bug still shows where it happened.

    Parameters
    ----------
    what : str
        What was being read, for the message (``"codec 'svd', plane 0"``).
    error, memory_error : type
        The classes to raise.
    keep : tuple of type
        The errors that pass unchanged (by default every :class:`BundleError`).
    """
    try:
        yield
    except (*keep, Cancelled):
        raise
    except MemoryError as exc:
        raise memory_error(f"{what}: not enough memory to decode it") from exc
    except BaseException as exc:
        if isinstance(exc, _PASS_THROUGH):
            raise
        raise error(f"{what}: the data is corrupt or hostile ({_detail(exc)})") from exc
