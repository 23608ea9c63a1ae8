"""The codec registry: one table that drives the API, the widget, the CLI and sweeps.

A codec is a pair of pure functions over one image *plane*:

``encode(plane, params, progress, container) -> Encoded``
    ``plane`` is a C-contiguous float32 array of shape ``(H, W, C)`` with values in
    ``[0, 1]`` (the API has already scaled the input dtype's range into it and removed
    any alpha channel, which it stores losslessly itself).  ``C`` is 1 (grayscale) or
    3 (RGB), or any count if the codec's ``channels`` is ``None``.  ``params`` holds
    every parameter of the codec, validated and with defaults filled in, and nothing
    else.  ``progress(fraction)`` may be called with a float in ``[0, 1]``; it raises
    :class:`~napari_svd_compress.errors.Cancelled` when the user cancels, so codecs
    must call it from time to time and let the exception pass.  ``container`` is a
    :class:`Container`: what the API will do around the codec's output (rounding to
    the output dtype, the bundle's bytes around the payloads), for codecs that search
    for a quality or a size target; the others ignore it.
``decode(meta, payloads, shape) -> ndarray``
    ``meta`` is the JSON-safe dict the encoder returned, ``payloads`` a mapping of
    name to bytes, ``shape`` the plane shape ``(H, W, C)``.  Returns float32 of that
    shape, nominally in ``[0, 1]`` (the API clips).  It must validate ``meta`` and the
    payload sizes against ``shape`` before allocating, raising
    :class:`~napari_svd_compress.errors.BundleError` on anything inconsistent.

Registering a codec is the only step needed for it to appear in the widget, on the
command line and in sweeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ParameterError

__all__ = [
    "Codec",
    "Container",
    "Encoded",
    "Param",
    "available",
    "encode_one",
    "get",
    "register",
]

Progress = Callable[[float], None]


@dataclass(frozen=True)
class Param:
    """One parameter of a codec, with what a form or a command line needs to show it.

    Parameters
    ----------
    name : str
        Keyword name (a Python identifier).
    kind : type
        ``int``, ``float``, ``str`` or ``bool``.
    default : object
        Default value; ``None`` means "unset" (used by alternative rules).
    help : str
        One sentence for tooltips and ``--help``.
    low, high : float, optional
        Inclusive bounds for numbers.
    choices : tuple, optional
        Allowed values for strings.
    group : str, optional
        Parameters sharing a group are alternatives: at most one may be set
        (e.g. SVD's rank rules).  The one whose ``default`` is not ``None`` is the
        group's default rule.
    path : bool
        The string is a file path (the widget shows a file picker).
    """

    name: str
    kind: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    group: str | None = None
    path: bool = False

    def check(self, value: Any) -> Any:
        """Return ``value`` converted to ``kind``; raise ParameterError if it is invalid."""
        if value is None:
            return None
        try:
            if self.kind is bool:
                if isinstance(value, str):
                    if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                        raise ValueError(value)
                    value = value.lower() in ("1", "true", "yes")
                v = bool(value)
            elif self.kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                v = int(value)
            else:
                v = self.kind(value)
        except (TypeError, ValueError):
            raise ParameterError(
                f"{self.name} must be of type {self.kind.__name__}, got {value!r}"
            ) from None
        if self.kind in (int, float):
            if not np.isfinite(v):
                raise ParameterError(f"{self.name} must be finite, got {value!r}")
            if self.low is not None and v < self.low:
                raise ParameterError(f"{self.name} must be >= {self.low}, got {v}")
            if self.high is not None and v > self.high:
                raise ParameterError(f"{self.name} must be <= {self.high}, got {v}")
        if self.choices is not None and v not in self.choices:
            raise ParameterError(
                f"{self.name} must be one of {', '.join(map(str, self.choices))}; got {v!r}"
            )
        return v


@dataclass(frozen=True)
class Container:
    """What surrounds a codec's output in the result, for rate and quality searches.

    The API measures a result on the image cast back to the input dtype and on the
    whole file; a codec that searches for a PSNR or a bits-per-pixel target gets these
    figures so that its own estimates match what the API will measure.

    Attributes
    ----------
    quantum : float
        The step of the output dtype in unit range (``1 / (max - min)`` of an integer
        dtype, e.g. ``1/255`` for uint8), so a PSNR search can round as the API will;
        0 for floating dtypes (no rounding).
    overhead : float
        Bytes of container around one plane's payloads: the plane's share of the
        manifest and ZIP directory, plus the alpha payload's member header when the
        image has alpha.  The codec adds its own payloads (with their ZIP member
        headers, see :func:`~napari_svd_compress.format.bundle.member_overhead`) and its
        plane meta as JSON.
    """

    quantum: float = 0.0
    overhead: float = 0.0


@dataclass
class Encoded:
    """What an encoder returns: JSON-safe ``meta`` and named byte ``payloads``."""

    meta: dict[str, Any]
    payloads: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Codec:
    """A registered compression method.

    Attributes
    ----------
    name : str
        Registry key, used on the command line (``--method svd``) and in bundles.
    label : str
        Human name for the widget.
    description : str
        One paragraph for ``--help`` and tooltips.
    params : tuple of Param
        Its parameters, in display order.
    encode, decode : callable
        See the module docstring.
    channels : tuple of int or None
        Channel counts the codec accepts after alpha removal; ``None`` means any.
    sweep : tuple of (str, tuple)
        Parameter to vary in a rate-distortion sweep and its default values
        (spanning about 0.05 to 2 bits per pixel on photographs).
    native : str or None
        When set (``"jpeg"``, ``"webp"``, ``"avif"``), the bundle *is* the codec's own
        file: the single payload ``"file"`` is written as it is, not wrapped in .svdz.
    short : callable, optional
        ``short(params) -> str``: a compact label for layer names, e.g. ``"r=50"``.
    encode_many : callable, optional
        ``encode_many(plane, param_sets, progress, containers) -> iterator of Encoded``:
        the same plane at several parameter sets, in order, sharing the work they have
        in common (one factorisation for every rank); what sweeps use.  Without it
        each set is encoded on its own.
    decode_region : callable, optional
        ``decode_region(meta, payloads, shape) -> region or None``, for codecs that can
        decode part of a plane without the whole of it (svd): it validates the plane
        as ``decode`` does and returns ``region(r0, r1, c0, c1, step)``, which decodes
        rows ``r0:r1`` and columns ``c0:c1`` of the plane averaged over ``step`` x
        ``step`` blocks (coordinates on that coarser grid) as float32 of shape
        ``(r1 - r0, c1 - c0, C)``; or None when this plane cannot be decoded by parts.
        What lets a bundle larger than memory be decoded lazily, tile by tile.
    """

    name: str
    label: str
    description: str
    params: tuple[Param, ...]
    encode: Callable[[np.ndarray, dict[str, Any], Progress, Container], Encoded]
    decode: Callable[[Mapping[str, Any], Mapping[str, bytes], tuple[int, ...]], np.ndarray]
    channels: tuple[int, ...] | None = (1, 3)
    sweep: tuple[str, tuple[Any, ...]] | None = None
    native: str | None = None
    short: Callable[[Mapping[str, Any]], str] | None = None
    encode_many: (
        Callable[[np.ndarray, list[dict[str, Any]], Progress, list[Container]], Iterator[Encoded]]
        | None
    ) = None
    decode_region: (
        Callable[[Mapping[str, Any], Mapping[str, bytes], tuple[int, ...]], Callable | None] | None
    ) = None

    def param(self, name: str) -> Param:
        """The parameter called ``name``; raise ParameterError if there is none."""
        for p in self.params:
            if p.name == name:
                return p
        raise ParameterError(f"method {self.name!r} has no parameter {name!r}")

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Validate user parameters and fill in defaults.

        Unknown names raise; within a group, setting one rule unsets the group's
        default, and setting two is an error.
        """
        names = {p.name for p in self.params}
        unknown = sorted(set(given) - names)
        if unknown:
            raise ParameterError(
                f"method {self.name!r} has no parameter(s) {', '.join(unknown)}; "
                f"it takes {', '.join(sorted(names)) or 'none'}"
            )
        given = {k: v for k, v in given.items() if v is not None}
        out: dict[str, Any] = {}
        groups_set: dict[str, str] = {}
        for p in self.params:
            if p.name in given and p.group is not None:
                if p.group in groups_set:
                    raise ParameterError(f"give only one of {groups_set[p.group]!r} and {p.name!r}")
                groups_set[p.group] = p.name
        for p in self.params:
            if p.name in given:
                out[p.name] = p.check(given[p.name])
            elif p.group is not None and p.group in groups_set:
                out[p.name] = None
            else:
                out[p.name] = p.default
        return out

    def label_for(self, params: Mapping[str, Any]) -> str:
        """Short description of a parameter set, for layer names and tables."""
        if self.short is not None:
            return self.short(params)
        shown = [
            f"{p.name}={params[p.name]}"
            for p in self.params
            if params.get(p.name) is not None and params.get(p.name) != p.default
        ]
        return " ".join(shown)


def encode_one(
    encode_many: Callable[
        [np.ndarray, list[dict[str, Any]], Progress, list[Container]], Iterator[Encoded]
    ],
) -> Callable[[np.ndarray, dict[str, Any], Progress, Container], Encoded]:
    """The ``encode`` of a codec whose ``encode_many`` does its work: that for one set."""

    def encode(
        plane: np.ndarray, params: dict[str, Any], progress: Progress, container: Container
    ) -> Encoded:
        return next(encode_many(plane, [params], progress, [container]))

    return encode


_REGISTRY: dict[str, Codec] = {}


def register(codec: Codec) -> Codec:
    """Add ``codec`` to the registry (replacing one of the same name) and return it."""
    _REGISTRY[codec.name] = codec
    return codec


def get(name: str) -> Codec:
    """Return the codec registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ParameterError(
            f"unknown method {name!r}; available: {', '.join(available())}"
        ) from None


def available() -> list[str]:
    """Names of all registered codecs, in registration order."""
    return list(_REGISTRY)


def all_codecs() -> Sequence[Codec]:
    """All registered codecs, in registration order."""
    return list(_REGISTRY.values())
