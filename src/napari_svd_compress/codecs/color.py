"""Colour transforms on float planes in [0, 1]."""

from __future__ import annotations

import numpy as np

# Full-range BT.601 (the JPEG/JFIF convention): Y in [0, 1], Cb and Cr centred on 0.5.
_RGB_TO_YCBCR = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.168735892, -0.331264108, 0.5],
        [0.5, -0.418687589, -0.081312411],
    ],
    dtype=np.float64,
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)
_OFFSET = np.array([0.0, 0.5, 0.5], dtype=np.float32)

COLOR_SPACES = ("rgb", "ycbcr")


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float RGB in [0, 1] to YCbCr (float32, same layout)."""
    out = rgb.astype(np.float32, copy=False) @ _RGB_TO_YCBCR.T.astype(np.float32)
    out += _OFFSET
    return out


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr` (no clipping)."""
    return (ycc.astype(np.float32, copy=False) - _OFFSET) @ _YCBCR_TO_RGB.T.astype(np.float32)


def to_space(plane: np.ndarray, space: str) -> np.ndarray:
    """Convert an (H, W, C) unit plane to ``space`` (grayscale passes through)."""
    if space == "rgb" or plane.shape[-1] != 3:
        return plane
    return rgb_to_ycbcr(plane)


def from_space(plane: np.ndarray, space: str) -> np.ndarray:
    """Inverse of :func:`to_space`."""
    if space == "rgb" or plane.shape[-1] != 3:
        return plane
    return ycbcr_to_rgb(plane)
