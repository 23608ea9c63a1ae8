"""The learned codec's networks (torch).

A factorized-prior autoencoder in the style of Ballé et al. (2018, "Variational image
compression with a scale hyperprior", the "factorized" baseline): four 5x5 stride-2
convolutions with GDN in the analysis transform, four transposed convolutions with
inverse GDN in the synthesis transform, and a learned per-channel non-parametric
density for the quantised latents.  One network serves every quality level: following
Cui et al. (2021, "Asymmetric Gained Deep Image Compression"), each level ``q`` has a
per-channel gain ``g_q`` applied before rounding and an inverse gain ``h_q`` applied
after it, plus its own factorized prior.

The exported run time (:mod:`napari_svd_compress.codecs.learned`) uses the analysis and
synthesis transforms as ONNX graphs, the gains as arrays and the priors as integer
tables; see :mod:`.export`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LAMBDAS",
    "M_CHANNELS",
    "N_CHANNELS",
    "STRIDE",
    "GDN",
    "Analysis",
    "FactorizedPriors",
    "GainedFactorized",
    "Synthesis",
    "build_model",
]

#: Rate-distortion trade-off per quality level (1 = smallest files): the model has one
#: gain vector and one prior per entry.  Same scale as CompressAI's
#: ``lambda * 255**2 * MSE + bpp`` models; level 6 is about twice level 5, and so on.
LAMBDAS: tuple[float, ...] = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483)

#: Width of the transforms (N) and number of latent channels (M).
N_CHANNELS = 96
M_CHANNELS = 128
#: Pixels per latent position along each axis (four stride-2 layers).
STRIDE = 16


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016), or its inverse.

    ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``; the inverse multiplies.
    ``beta`` and ``gamma`` are kept non-negative with ``abs`` so that the ONNX export
    folds them into a plain 1x1 convolution.

    Parameters
    ----------
    ch : int
        Channels.
    inverse : bool
        Multiply instead of divide (IGDN, in the synthesis transform).
    """

    def __init__(self, ch: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(ch))
        self.gamma = nn.Parameter(0.1 * torch.eye(ch) + 1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (B, C, H, W) across channels."""
        c = x.shape[1]
        beta = self.beta.abs() + 1e-6
        gamma = self.gamma.abs().view(c, c, 1, 1)
        norm = F.conv2d(x * x, gamma, beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)


def _deconv(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


class Analysis(nn.Module):
    """The analysis transform: ``(B, 3, H, W)`` in [0, 1] to ``(B, m, H/16, W/16)``.

    Parameters
    ----------
    n : int
        Width of the hidden layers.
    m : int
        Latent channels.
    """

    def __init__(self, n: int, m: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _conv(3, n), GDN(n), _conv(n, n), GDN(n), _conv(n, n), GDN(n), _conv(n, m)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Latents of images ``x`` in [0, 1]."""
        # Centred input for better conditioning.
        return self.net(x - 0.5)


class Synthesis(nn.Module):
    """The synthesis transform: latents ``(B, m, h, w)`` to ``(B, 3, 16 h, 16 w)``.

    Parameters
    ----------
    n : int
        Width of the hidden layers.
    m : int
        Latent channels.
    """

    def __init__(self, n: int, m: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _deconv(m, n),
            GDN(n, True),
            _deconv(n, n),
            GDN(n, True),
            _deconv(n, n),
            GDN(n, True),
            _deconv(n, 3),
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Images (nominally in [0, 1]) from latents ``y``."""
        return self.net(y) + 0.5


class FactorizedPriors(nn.Module):
    """``Q x M`` univariate densities (Ballé et al. 2018, appendix 6.1).

    Each is the derivative of a monotone cumulative ``c(v)`` built from small positive
    matrices, biases and tanh "factors" (filters 3,3,3).  All levels' parameters live
    in stacked tensors so a batch may mix levels.

    Parameters
    ----------
    q : int
        Quality levels.
    m : int
        Latent channels.
    filters : tuple of int
        Widths of the hidden layers of each density.
    init_scale : float
        Initial width of the densities.
    """

    def __init__(
        self, q: int, m: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0
    ) -> None:
        super().__init__()
        dims = (1, *filters, 1)
        scale = init_scale ** (1.0 / (len(filters) + 1))
        self.n_layers = len(filters) + 1
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(self.n_layers):
            init = math.log(math.expm1(1.0 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((q, m, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.rand(q, m, dims[i + 1], 1) - 0.5))
            if i < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(q, m, dims[i + 1], 1)))

    def logits_cdf(self, v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """The cumulative's logits at ``v``: (B, M, 1, L) values, ``q``: (B,) levels."""
        logits = v
        for i in range(self.n_layers):
            logits = F.softplus(self.matrices[i][q]) @ logits + self.biases[i][q]
            if i < self.n_layers - 1:
                logits = logits + torch.tanh(self.factors[i][q]) * torch.tanh(logits)
        return logits

    def likelihood(self, y: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Probability mass of ``[y - 1/2, y + 1/2]`` for latents ``y`` (B, M, ...)."""
        b, m = y.shape[:2]
        v = y.reshape(b, m, 1, -1)
        lower = self.logits_cdf(v - 0.5, q)
        upper = self.logits_cdf(v + 0.5, q)
        # Evaluate in the tail where the sigmoid is not saturated (numerics).
        sign = -torch.sign(lower + upper).detach()
        lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return lik.clamp_min(1e-9).reshape(y.shape)


class GainedFactorized(nn.Module):
    """Analysis + per-level gains + factorized priors + synthesis.

    Parameters
    ----------
    n : int
        Width of the transforms.
    m : int
        Latent channels.
    levels : int
        Quality levels (one gain vector and one prior each).
    """

    def __init__(self, n: int = N_CHANNELS, m: int = M_CHANNELS, levels: int = 6) -> None:
        super().__init__()
        self.n, self.m, self.levels = n, m, levels
        self.g_a = Analysis(n, m)
        self.g_s = Synthesis(n, m)
        # Higher levels get larger gains (finer quantisation); learned from here.
        start = torch.linspace(-1.0, 1.5, levels).view(levels, 1).repeat(1, m)
        self.log_gain = nn.Parameter(start.clone())
        self.log_inv_gain = nn.Parameter(-start.clone())
        self.priors = FactorizedPriors(levels, m)

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and latent likelihoods of images ``x`` at levels ``q`` (0-based).

        The likelihoods are those of the latents with additive uniform noise (the usual
        relaxation of rounding); the synthesis sees the latents rounded with a
        straight-through gradient ("mixed quantisation"), so it is trained on what it
        decodes.
        """
        y = self.g_a(x) * torch.exp(self.log_gain[q])[:, :, None, None]
        noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        rounded = y + (torch.round(y) - y).detach()
        lik = self.priors.likelihood(noisy, q)
        x_hat = self.g_s(rounded * torch.exp(self.log_inv_gain[q])[:, :, None, None])
        return x_hat, lik


def build_model(
    levels: int = len(LAMBDAS), n: int = N_CHANNELS, m: int = M_CHANNELS
) -> GainedFactorized:
    """A new (untrained) model.

    Parameters
    ----------
    levels : int
        Quality levels.
    n, m : int
        Width of the transforms and latent channels.

    Returns
    -------
    GainedFactorized
    """
    return GainedFactorized(n, m, levels)
