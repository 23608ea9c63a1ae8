"""Training of the learned codec (needs the optional ``train`` extra: torch).

The network is a factorized-prior autoencoder in the style of Ballé et al. (2018,
"Variational image compression with a scale hyperprior", the "factorized" baseline):
four 5x5 stride-2 convolutions with GDN in the analysis transform, four transposed
convolutions with inverse GDN in the synthesis transform, and a learned per-channel
non-parametric density for the quantised latents.  One network serves every quality
level: following Cui et al. (2021, "Asymmetric Gained Deep Image Compression"), each
level ``q`` has a per-channel gain ``g_q`` applied before rounding and an inverse gain
``h_q`` applied after it, plus its own factorized prior.  Each training sample draws a
level at random, so all levels share the transforms' training steps.

Loss per sample: ``lambda_q * 255**2 * MSE + bpp`` with ``bpp`` from additive uniform
noise (the usual relaxation); the synthesis transform sees the latents rounded with a
straight-through gradient ("mixed quantisation"), so it is trained on what it decodes.

Torch is imported lazily inside functions: importing this module works without it.
The runtime never reads what this module pickles (checkpoints); it reads the exported
``.svdm`` file (ONNX graphs + integer tables, see :mod:`.model`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LAMBDAS", "add_arguments", "run"]

#: Rate-distortion trade-off per quality level (1 = smallest files).  Same scale as
#: CompressAI's ``lambda * 255**2 * MSE + bpp`` models; level 6 is about twice
#: level 5, and so on.
LAMBDAS: tuple[float, ...] = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483)

#: Width of the transforms (N) and number of latent channels (M).
N_CHANNELS = 96
M_CHANNELS = 128
STRIDE = 16

#: Skimage's bundled colour photographs used in addition to the user's folder.
SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)

_INSTALL_HINT = (
    "training a learned model needs PyTorch; install the extra with\n"
    "    pip install 'napari-svd-compress[train]'"
)


# --------------------------------------------------------------------------- model


def _build_model_classes() -> dict[str, Any]:
    """Define the torch modules (inside a function so that torch is imported lazily)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class GDN(nn.Module):
        """Generalized divisive normalization (Ballé et al. 2016), or its inverse.

        ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``; the inverse multiplies.
        ``beta`` and ``gamma`` are kept non-negative with ``abs`` so that the ONNX
        export folds them into a plain 1x1 convolution.
        """

        def __init__(self, ch: int, inverse: bool = False) -> None:
            super().__init__()
            self.inverse = inverse
            self.beta = nn.Parameter(torch.ones(ch))
            self.gamma = nn.Parameter(0.1 * torch.eye(ch) + 1e-3)

        def forward(self, x):
            c = x.shape[1]
            beta = self.beta.abs() + 1e-6
            gamma = self.gamma.abs().view(c, c, 1, 1)
            norm = F.conv2d(x * x, gamma, beta)
            return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)

    def conv(cin: int, cout: int):
        return nn.Conv2d(cin, cout, 5, stride=2, padding=2)

    def deconv(cin: int, cout: int):
        return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)

    class Analysis(nn.Module):
        def __init__(self, n: int, m: int) -> None:
            super().__init__()
            self.net = nn.Sequential(
                conv(3, n), GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), conv(n, m)
            )

        def forward(self, x):  # x in [0, 1]; centre it for better conditioning
            return self.net(x - 0.5)

    class Synthesis(nn.Module):
        def __init__(self, n: int, m: int) -> None:
            super().__init__()
            self.net = nn.Sequential(
                deconv(m, n),
                GDN(n, True),
                deconv(n, n),
                GDN(n, True),
                deconv(n, n),
                GDN(n, True),
                deconv(n, 3),
            )

        def forward(self, y):
            return self.net(y) + 0.5

    class FactorizedPriors(nn.Module):
        """``Q x M`` univariate densities (Ballé et al. 2018, appendix 6.1).

        Each is the derivative of a monotone cumulative ``c(v)`` built from small
        positive matrices, biases and tanh "factors" (filters 3,3,3).  All levels'
        parameters live in stacked tensors so a batch may mix levels.
        """

        def __init__(self, q: int, m: int, filters=(3, 3, 3), init_scale: float = 10.0):
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

        def logits_cdf(self, v, q):
            """``v``: (B, M, 1, L) values; ``q``: (B,) level indices."""
            logits = v
            for i in range(self.n_layers):
                logits = F.softplus(self.matrices[i][q]) @ logits + self.biases[i][q]
                if i < self.n_layers - 1:
                    logits = logits + torch.tanh(self.factors[i][q]) * torch.tanh(logits)
            return logits

        def likelihood(self, y, q):
            b, m = y.shape[:2]
            v = y.reshape(b, m, 1, -1)
            lower = self.logits_cdf(v - 0.5, q)
            upper = self.logits_cdf(v + 0.5, q)
            # Evaluate in the tail where the sigmoid is not saturated (numerics).
            sign = -torch.sign(lower + upper).detach()
            lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
            return lik.clamp_min(1e-9).reshape(y.shape)

    class GainedFactorized(nn.Module):
        """Analysis + per-level gains + factorized priors + synthesis."""

        def __init__(self, n: int = N_CHANNELS, m: int = M_CHANNELS, levels: int = 6):
            super().__init__()
            self.n, self.m, self.levels = n, m, levels
            self.g_a = Analysis(n, m)
            self.g_s = Synthesis(n, m)
            # Higher levels get larger gains (finer quantisation); learned from here.
            start = torch.linspace(-1.0, 1.5, levels).view(levels, 1).repeat(1, m)
            self.log_gain = nn.Parameter(start.clone())
            self.log_inv_gain = nn.Parameter(-start.clone())
            self.priors = FactorizedPriors(levels, m)

        def forward(self, x, q):
            y = self.g_a(x) * torch.exp(self.log_gain[q])[:, :, None, None]
            noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
            rounded = y + (torch.round(y) - y).detach()
            lik = self.priors.likelihood(noisy, q)
            x_hat = self.g_s(rounded * torch.exp(self.log_inv_gain[q])[:, :, None, None])
            return x_hat, lik

    return {"GainedFactorized": GainedFactorized}


def build_model(levels: int = len(LAMBDAS), n: int = N_CHANNELS, m: int = M_CHANNELS):
    """Return a new (untrained) torch model."""
    return _build_model_classes()["GainedFactorized"](n, m, levels)


# --------------------------------------------------------------------------- data


def _load_rgb(path: Path) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:  # unreadable files are skipped, not fatal
        print(f"skipping {path}: {exc}", file=sys.stderr)
        return None


def _resize(img: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.LANCZOS))


def load_training_images(
    folder: str | None, crop: int, use_skimage: bool = True, max_side: int = 1024
) -> list[np.ndarray]:
    """Load the training pyramid: every image at several downscales (uint8 HxWx3).

    Large photographs (e.g. 2560 px wallpapers) are first reduced to ``max_side``
    (which also removes JPEG blocking), then added at scales 1, 0.7 and 0.5.  Images
    smaller than ``crop`` after scaling are dropped.
    """
    sources: list[np.ndarray] = []
    if folder:
        exts = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}
        for p in sorted(Path(folder).iterdir()):
            if p.suffix.lower() in exts:
                img = _load_rgb(p)
                if img is not None:
                    sources.append(img)
    if use_skimage:
        import skimage.data

        for name in SKIMAGE_PHOTOS:
            try:
                img = getattr(skimage.data, name)()
            except Exception:  # some need a download; never fetch anything
                continue
            if img.ndim == 3 and img.shape[2] >= 3:
                sources.append(np.ascontiguousarray(img[..., :3]))
    out = []
    for img in sources:
        side = max(img.shape[:2])
        if side > max_side:
            img = _resize(img, max_side / side)
        for s in (1.0, 0.7, 0.5):
            r = img if s == 1.0 else _resize(img, s)
            if min(r.shape[:2]) >= crop:
                out.append(np.ascontiguousarray(r))
    return out


class _Sampler:
    """Random crops with flips, each image weighted by the square root of its area.

    A fraction ``flat`` of the crops is replaced by synthetic flat colours or ramps.
    """

    def __init__(self, images: list[np.ndarray], crop: int, seed: int, flat: float = 0.04) -> None:
        self.images = images
        self.flat = flat
        self.crop = crop
        w = np.array([math.sqrt(i.shape[0] * i.shape[1]) for i in images])
        self.p = w / w.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> np.ndarray:
        c = self.crop
        out = np.empty((n, 3, c, c), np.float32)
        for k in range(n):
            img = self.images[self.rng.choice(len(self.images), p=self.p)]
            y = self.rng.integers(0, img.shape[0] - c + 1)
            x = self.rng.integers(0, img.shape[1] - c + 1)
            patch = img[y : y + c, x : x + c]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            if self.rng.random() < 0.5:
                patch = patch[::-1]
            out[k] = patch.transpose(2, 0, 1) / 255.0
            if self.rng.random() < self.flat:
                out[k] = self._flat()
        return out

    def _flat(self) -> np.ndarray:
        """A flat colour or a gentle linear ramp: teaches the decoder to keep flats flat
        (photographs have too few exactly flat areas for a short run to learn it)."""
        c = self.crop
        colour = self.rng.random(3).astype(np.float32)
        ramp = self.rng.normal(0, 0.1, size=(3, 2)).astype(np.float32)
        if self.rng.random() < 0.5:
            ramp[:] = 0
        yy, xx = np.mgrid[0:c, 0:c].astype(np.float32) / c - 0.5
        img = colour[:, None, None] + ramp[:, :1, None] * yy + ramp[:, 1:, None] * xx
        return np.clip(img, 0.0, 1.0)


# --------------------------------------------------------------------------- train


def _device(name: str):
    """The torch device for ``--device`` (``auto``: CUDA when torch sees a GPU)."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _lr_at(t: float, lr: float, warmup: float = 0.02) -> float:
    """Linear warm-up over the first 2 % of the run, then cosine decay to 5 % of ``lr``."""
    if t < warmup:
        return lr * max(t / warmup, 0.01)
    t = (t - warmup) / (1 - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _threads_for_load(max_threads: int, current: int) -> int:
    """Use 1 thread when other jobs keep the machine busy, else up to ``max_threads``.

    The load average counts this process's own ``current`` threads; subtract them.
    """
    try:
        others = os.getloadavg()[0] - current
    except OSError:
        return 1
    free = (os.cpu_count() or 1) - others
    return max(1, min(max_threads, int(free + 0.3)))


def train(args: argparse.Namespace) -> Path:
    """Run (or resume) training; return the path of the last checkpoint."""
    import torch

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    levels = _parse_levels(args.quality)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt_path = workdir / "checkpoint.pt"
    log_path = workdir / "log.csv"

    device = _device(args.device)
    # On the device before the optimiser exists, so that resumed optimiser state lands
    # there too.
    model = build_model().to(device)
    # The priors and gains get a 10x larger learning rate: their parameters must move
    # by O(1) (e.g. narrowing the initial density) and a short run cannot wait for that.
    fast = [p for n, p in model.named_parameters() if n.startswith(("priors.", "log_"))]
    slow = [p for n, p in model.named_parameters() if not n.startswith(("priors.", "log_"))]
    opt = torch.optim.Adam([{"params": slow, "mult": 1.0}, {"params": fast, "mult": 10.0}])
    step = 0
    elapsed = 0.0
    if ckpt_path.exists() and not args.restart:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        print(f"resumed from {ckpt_path} at step {step}")
    elif args.init:
        state = torch.load(args.init, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        print(f"initialised from {args.init}")

    images = load_training_images(args.images, args.crop, not args.no_skimage)
    if not images:
        raise SystemExit(f"no usable training images (need at least {args.crop} px)")
    print(f"{len(images)} training images (with downscales)", flush=True)
    sampler = _Sampler(images, args.crop, args.seed + step)
    lambdas = torch.tensor(LAMBDAS, dtype=torch.float32, device=device)
    q_choices = torch.tensor([q - 1 for q in levels], device=device)

    new_log = not log_path.exists() or step == 0
    logf = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.writer(logf)
    nl = len(LAMBDAS)
    if new_log:
        writer.writerow(
            ["step", "elapsed_s", "lr", "loss", "bpp", "psnr"]
            + [f"bpp_q{i + 1}" for i in range(nl)]
            + [f"psnr_q{i + 1}" for i in range(nl)]
        )
    window: list[tuple[int, float, float, float]] = []
    t0 = time.time() - elapsed
    model.train()
    budget = args.minutes * 60.0 if args.minutes else math.inf

    def progress() -> float:
        # Fraction of the run done: by steps, or by wall time when a budget is set,
        # so that the learning-rate schedule always completes its decay.
        return max(step / args.steps, (time.time() - t0) / budget)

    while progress() < 1.0:
        if step % 50 == 0 and device.type == "cpu":
            torch.set_num_threads(_threads_for_load(args.threads, torch.get_num_threads()))
        for g in opt.param_groups:
            g["lr"] = _lr_at(progress(), args.lr) * g["mult"]
        x = torch.from_numpy(sampler.batch(args.batch)).to(device)
        q = q_choices[torch.randint(len(q_choices), (args.batch,), device=device)]
        x_hat, lik = model(x, q)
        mse = ((x_hat - x) ** 2).mean(dim=(1, 2, 3))
        bpp = -torch.log2(lik).sum(dim=(1, 2, 3)) / (x.shape[2] * x.shape[3])
        loss = (lambdas[q] * 255.0**2 * mse + bpp).mean()
        if not torch.isfinite(loss):
            print(f"non-finite loss at step {step}; batch skipped", flush=True)
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        mse_np, bpp_np = mse.detach().cpu().numpy(), bpp.detach().cpu().numpy()
        loss_f, q_np = float(loss.detach()), q.cpu().numpy()
        for i in range(args.batch):
            window.append((int(q_np[i]), float(mse_np[i]), float(bpp_np[i]), loss_f))
        done = progress() >= 1.0
        if step % args.log_every == 0 or done:
            arr = np.array(window)
            psnr = lambda m: float(10 * np.log10(1.0 / max(np.mean(m), 1e-12)))  # noqa: E731
            row = [
                step,
                round(time.time() - t0, 1),
                f"{_lr_at(progress(), args.lr):.3g}",
                round(float(arr[:, 3].mean()), 4),
                round(float(arr[:, 2].mean()), 4),
                round(psnr(arr[:, 1]), 3),
            ]
            per_b, per_p = [], []
            for lv in range(nl):
                sel = arr[arr[:, 0] == lv]
                per_b.append(round(float(sel[:, 2].mean()), 4) if len(sel) else "")
                per_p.append(round(psnr(sel[:, 1]), 3) if len(sel) else "")
            writer.writerow(row + per_b + per_p)
            logf.flush()
            print(" ".join(map(str, row)), flush=True)
            window.clear()
        if step % args.ckpt_every == 0 or done:
            state = {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "step": step,
                "elapsed": time.time() - t0,
                "args": vars(args),
                "levels": levels,
            }
            torch.save(state, str(ckpt_path) + ".tmp")
            os.replace(str(ckpt_path) + ".tmp", ckpt_path)
    logf.close()
    return ckpt_path


# --------------------------------------------------------------------------- export


def _pmf_tables(model, levels: list[int], max_range: int = 1024) -> dict[str, np.ndarray]:
    """Integer probability tables per level and channel, from the trained priors.

    For each channel the alphabet is the integers ``[lo, lo + n)`` that hold all but
    about 1e-6 of the density, plus one escape symbol (index ``n``) whose frequency is
    the tail mass.  Frequencies are integers (sum about 2**16, every symbol >= 1), so
    the entropy coder's tables are exact and identical on every machine.
    """
    import torch

    nl, m = model.levels, model.m
    ks = torch.arange(-max_range, max_range + 1, dtype=torch.float32)
    lo = np.zeros((nl, m), np.int32)
    size = np.zeros((nl, m), np.int32)
    pmfs: list[list[np.ndarray]] = []
    with torch.no_grad():
        for lv in range(nl):
            v = ks.view(1, 1, 1, -1).expand(1, m, 1, -1).contiguous()
            lik = model.priors.likelihood(v.view(1, m, 1, -1), torch.tensor([lv]))
            p = lik.view(m, -1).double().numpy()
            row = []
            for c in range(m):
                pc = p[c] / max(p[c].sum(), 1e-12)
                cdf = np.cumsum(pc)
                first = int(np.searchsorted(cdf, 1e-6))
                last = int(np.searchsorted(cdf, 1 - 1e-6))
                last = max(last, first)
                core = pc[first : last + 1]
                tail = max(0.0, 1.0 - core.sum())
                freq = np.maximum(1, np.round(np.append(core, tail) * 65536)).astype(np.int32)
                lo[lv, c] = first - max_range
                size[lv, c] = len(core)
                row.append(freq)
            pmfs.append(row)
    width = max(len(f) for row in pmfs for f in row)
    table = np.zeros((nl, m, width), np.int32)
    for lv in range(nl):
        for c in range(m):
            table[lv, c, : len(pmfs[lv][c])] = pmfs[lv][c]
    return {"pmf": table, "lo": lo, "size": size}


def export(ckpt: str | Path, out: str | Path, name: str = "custom", version: str = "1") -> Path:
    """Export a checkpoint to a ``.svdm`` model file (ONNX graphs + integer tables)."""
    import io

    import torch

    from .model import write_model

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    model = build_model()
    model.load_state_dict(state["model"])
    model.eval()
    levels = list(state.get("levels", range(1, len(LAMBDAS) + 1)))

    def onnx_bytes(module, shape, in_name, out_name) -> bytes:
        buf = io.BytesIO()
        torch.onnx.export(
            module,
            (torch.zeros(shape),),
            buf,
            input_names=[in_name],
            output_names=[out_name],
            dynamic_axes={in_name: {2: "h", 3: "w"}, out_name: {2: "h", 3: "w"}},
            opset_version=17,
            dynamo=False,
            do_constant_folding=True,
        )
        return buf.getvalue()

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = onnx_bytes(model.g_a, (1, 3, 64, 64), "image", "latent")
        synthesis = onnx_bytes(model.g_s, (1, model.m, 4, 4), "latent", "image")
    tables = _pmf_tables(model, levels)
    with torch.no_grad():
        gains = torch.exp(model.log_gain).numpy().astype(np.float32)
        inv_gains = torch.exp(model.log_inv_gain).numpy().astype(np.float32)
    arrays = {"gain": gains, "inv_gain": inv_gains, **tables}
    info = {
        "architecture": "ballé2018-factorized+gains",
        "n_channels": model.n,
        "latent_channels": model.m,
        "stride": STRIDE,
        "lambdas": list(LAMBDAS),
        "trained_levels": levels,
        "steps": int(state["step"]),
        "train_seconds": round(float(state["elapsed"]), 1),
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    return write_model(
        out,
        name=name,
        version=version,
        levels=levels,
        analysis=analysis,
        synthesis=synthesis,
        arrays=arrays,
        info=info,
    )


def plot_log(csv_path: str | Path, png_path: str | Path) -> None:
    """Plot a training log (loss, bpp and PSNR per level over steps) with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    step = np.array([float(r["step"]) for r in rows])

    def col(name: str) -> np.ndarray:
        return np.array([float(r[name]) if r.get(name) else np.nan for r in rows])

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    axes[0].plot(step, col("loss"), lw=0.8)
    axes[0].set(title="loss (lambda*255^2*MSE + bpp)", xlabel="step", yscale="log")
    for i in range(len(LAMBDAS)):
        axes[1].plot(step, col(f"bpp_q{i + 1}"), lw=0.8, label=f"q{i + 1}")
        axes[2].plot(step, col(f"psnr_q{i + 1}"), lw=0.8, label=f"q{i + 1}")
    axes[1].set(title="training bpp (noisy latents)", xlabel="step", yscale="log")
    axes[2].set(title="training PSNR (dB, rounded latents)", xlabel="step")
    axes[2].legend(fontsize=7, ncol=2)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI


def _parse_levels(text: str) -> list[int]:
    n = len(LAMBDAS)
    if text in ("", "all"):
        return list(range(1, n + 1))
    out: set[int] = set()
    for part in text.split(","):
        a, _, b = part.partition("-")
        lo, hi = int(a), int(b or a)
        if not 1 <= lo <= hi <= n:
            raise SystemExit(f"quality levels must lie in 1..{n}, got {part!r}")
        out.update(range(lo, hi + 1))
    return sorted(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` sub-command's options to ``parser``."""
    parser.add_argument("--images", help="folder of training images (JPEG, PNG, TIFF)")
    parser.add_argument(
        "--quality",
        default="all",
        help="quality level(s) to train: 'all' (default), 3, or a list like 1-3,5",
    )
    parser.add_argument("--steps", type=int, default=20000, help="training steps")
    parser.add_argument(
        "--minutes", type=float, default=None, help="wall-time budget (ends before --steps)"
    )
    parser.add_argument("--out", default="model.svdm", help="output model file (.svdm)")
    parser.add_argument("--name", default="custom", help="model name stored in the file")
    parser.add_argument("--model-version", default="1", help="model version string")
    parser.add_argument("--workdir", default=None, help="checkpoints and log (default: OUT.d)")
    parser.add_argument("--batch", type=int, default=8, help="crops per step")
    parser.add_argument("--crop", type=int, default=128, help="crop size in pixels")
    parser.add_argument("--lr", type=float, default=3e-4, help="peak learning rate")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--threads", type=int, default=2, help="max torch threads (CPU)")
    parser.add_argument(
        "--device", default="auto", help="torch device: auto (CUDA when available), cpu, cuda"
    )
    parser.add_argument("--init", default=None, help="start from this checkpoint (.pt)")
    parser.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument(
        "--no-skimage", action="store_true", help="do not add scikit-image's photographs"
    )
    parser.add_argument("--export-only", action="store_true", help="export the checkpoint")
    parser.add_argument("--log-every", type=int, default=50, help=argparse.SUPPRESS)
    parser.add_argument("--ckpt-every", type=int, default=250, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Train (resuming from ``workdir`` when possible) and export a ``.svdm`` model."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print(_INSTALL_HINT, file=sys.stderr)
        return 2
    if args.workdir is None:
        args.workdir = str(args.out) + ".d"
    if not args.export_only:
        ckpt = train(args)
    else:
        ckpt = Path(args.workdir) / "checkpoint.pt"
    path = export(ckpt, args.out, name=args.name, version=args.model_version)
    print(json.dumps({"model": str(path), "size": path.stat().st_size}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m napari_svd_compress.codecs.learned.train``."""
    parser = argparse.ArgumentParser(description="Train a learned-codec model.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
