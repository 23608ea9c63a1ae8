"""The training loop of the learned codec (torch).

Loss per sample: ``lambda_q * 255**2 * MSE + bpp``, with ``bpp`` from the latents with
additive uniform noise (see :class:`.networks.GainedFactorized`).  Each sample draws a
quality level at random, so all levels share the transforms' training steps.

A run keeps its state in a work folder: ``checkpoint.pt`` (model, optimiser, step,
elapsed time; written atomically every ``ckpt_every`` steps and at the end) and
``log.csv`` (loss, bpp and PSNR, overall and per level).  Calling :func:`train` again
on the same folder resumes, so a long run may be split into short ones.  The codec's
run time never reads these files: :func:`.export.export_model` writes the ``.svdm``.
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ImageError, ParameterError
from .data import CropSampler, load_training_images
from .networks import LAMBDAS, STRIDE, build_model

__all__ = ["CHECKPOINT", "LOG", "lr_at", "plot_log", "resolve_device", "train"]

#: File names of a run's state in its work folder.
CHECKPOINT = "checkpoint.pt"
LOG = "log.csv"


def resolve_device(name: str) -> torch.device:
    """The torch device for ``name``; ``"auto"`` is CUDA when torch sees a GPU, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def lr_at(t: float, lr: float, warmup: float = 0.02) -> float:
    """Learning rate at fraction ``t`` of the run.

    Linear warm-up over the first ``warmup`` of the run (2 %), then cosine decay to
    5 % of ``lr``.
    """
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


def _check_levels(levels: Sequence[int] | None) -> list[int]:
    n = len(LAMBDAS)
    if levels is None:
        return list(range(1, n + 1))
    out = sorted({int(q) for q in levels})
    if not out or not all(1 <= q <= n for q in out):
        raise ParameterError(f"quality levels must lie in 1..{n}, got {list(levels)}")
    return out


def train(
    workdir: str | PathLike[str],
    *,
    images: str | PathLike[str] | None = None,
    levels: Sequence[int] | None = None,
    steps: int = 20000,
    minutes: float | None = None,
    batch: int = 8,
    crop: int = 128,
    lr: float = 3e-4,
    seed: int = 0,
    threads: int = 2,
    device: str = "auto",
    init: str | PathLike[str] | None = None,
    restart: bool = False,
    use_skimage: bool = True,
    log_every: int = 50,
    ckpt_every: int = 250,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Run (or resume) training in ``workdir``; return the path of the last checkpoint.

    Parameters
    ----------
    workdir : path
        Folder of the run's checkpoint and log (created if needed).  An existing
        checkpoint there is resumed unless ``restart``.
    images : path, optional
        Folder of training images (see :func:`.data.load_training_images`).
    levels : sequence of int, optional
        Quality levels to train (1 to ``len(LAMBDAS)``); all by default.
    steps : int
        Training steps.
    minutes : float, optional
        Wall-time budget; the run ends at whichever of ``steps`` and the budget comes
        first, and the learning-rate schedule follows that fraction.
    batch : int
        Crops per step.
    crop : int
        Crop side in pixels.
    lr : float
        Peak learning rate (the priors and gains get ten times as much).
    seed : int
        Random seed.
    threads : int
        Most torch threads on CPU (fewer while the machine is busy).
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
    init : path, optional
        Start from this checkpoint's model (when not resuming).
    restart : bool
        Ignore an existing checkpoint in ``workdir``.
    use_skimage : bool
        Also train on scikit-image's photographs.
    log_every, ckpt_every : int
        Steps between log rows and between checkpoints.
    log : callable, optional
        Called with each line of progress text (resume, image count, log rows).

    Returns
    -------
    Path
        ``workdir / CHECKPOINT``.

    Raises
    ------
    ParameterError
        For quality levels out of range.
    ImageError
        When no training image is at least ``crop`` pixels on both sides.
    """
    report = log or (lambda text: None)
    levels = _check_levels(levels)
    if min(steps, batch, log_every, ckpt_every) < 1:
        raise ParameterError("steps, batch, log_every and ckpt_every must be at least 1")
    if crop < STRIDE or crop % STRIDE:
        # The transforms map 16 px to one latent and back: other sizes do not round-trip.
        raise ParameterError(f"crop must be a positive multiple of {STRIDE}, got {crop}")
    settings: dict[str, Any] = {
        "images": None if images is None else os.fspath(images),
        "steps": steps,
        "minutes": minutes,
        "batch": batch,
        "crop": crop,
        "lr": lr,
        "seed": seed,
        "device": device,
        "use_skimage": use_skimage,
    }
    torch.manual_seed(seed)
    random.seed(seed)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt_path = workdir / CHECKPOINT
    log_path = workdir / LOG

    dev = resolve_device(device)
    # On the device before the optimiser exists, so that resumed optimiser state lands
    # there too.
    model = build_model().to(dev)
    # The priors and gains get a 10x larger learning rate: their parameters must move
    # by O(1) (e.g. narrowing the initial density) and a short run cannot wait for that.
    fast = [p for n, p in model.named_parameters() if n.startswith(("priors.", "log_"))]
    slow = [p for n, p in model.named_parameters() if not n.startswith(("priors.", "log_"))]
    opt = torch.optim.Adam([{"params": slow, "mult": 1.0}, {"params": fast, "mult": 10.0}])
    step = 0
    elapsed = 0.0
    if ckpt_path.exists() and not restart:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        report(f"resumed from {ckpt_path} at step {step}")
    elif init:
        state = torch.load(init, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        report(f"initialised from {init}")

    pictures = load_training_images(images, crop, use_skimage=use_skimage, log=report)
    if not pictures:
        raise ImageError(f"no usable training images (need at least {crop} px)")
    report(f"{len(pictures)} training images (with downscales)")
    sampler = CropSampler(pictures, crop, seed + step)
    lambdas = torch.tensor(LAMBDAS, dtype=torch.float32, device=dev)
    q_choices = torch.tensor([q - 1 for q in levels], device=dev)

    new_log = not log_path.exists() or step == 0
    nl = len(LAMBDAS)
    window: list[tuple[int, float, float, float]] = []
    t0 = time.time() - elapsed
    model.train()
    budget = minutes * 60.0 if minutes else math.inf

    def progress() -> float:
        # Fraction of the run done: by steps, or by wall time when a budget is set,
        # so that the learning-rate schedule always completes its decay.
        return max(step / steps, (time.time() - t0) / budget)

    with open(log_path, "w" if new_log else "a", newline="") as logf:
        writer = csv.writer(logf)
        if new_log:
            writer.writerow(
                ["step", "elapsed_s", "lr", "loss", "bpp", "psnr"]
                + [f"bpp_q{i + 1}" for i in range(nl)]
                + [f"psnr_q{i + 1}" for i in range(nl)]
            )
        while progress() < 1.0:
            if step % 50 == 0 and dev.type == "cpu":
                torch.set_num_threads(_threads_for_load(threads, torch.get_num_threads()))
            for g in opt.param_groups:
                g["lr"] = lr_at(progress(), lr) * g["mult"]
            x = torch.from_numpy(sampler.batch(batch)).to(dev)
            q = q_choices[torch.randint(len(q_choices), (batch,), device=dev)]
            x_hat, lik = model(x, q)
            mse = ((x_hat - x) ** 2).mean(dim=(1, 2, 3))
            bpp = -torch.log2(lik).sum(dim=(1, 2, 3)) / (x.shape[2] * x.shape[3])
            loss = (lambdas[q] * 255.0**2 * mse + bpp).mean()
            if not torch.isfinite(loss):
                report(f"non-finite loss at step {step}; batch skipped")
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            mse_np, bpp_np = mse.detach().cpu().numpy(), bpp.detach().cpu().numpy()
            loss_f, q_np = float(loss.detach()), q.cpu().numpy()
            for i in range(batch):
                window.append((int(q_np[i]), float(mse_np[i]), float(bpp_np[i]), loss_f))
            done = progress() >= 1.0
            if step % log_every == 0 or done:
                row = _log_row(window, step, time.time() - t0, lr_at(progress(), lr), nl)
                writer.writerow(row)
                logf.flush()
                report(" ".join(map(str, row[:6])))
                window.clear()
            if step % ckpt_every == 0 or done:
                state = {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "step": step,
                    "elapsed": time.time() - t0,
                    "args": settings,
                    "levels": levels,
                }
                torch.save(state, str(ckpt_path) + ".tmp")
                os.replace(str(ckpt_path) + ".tmp", ckpt_path)
    return ckpt_path


def _psnr(mse: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(float(np.mean(mse)), 1e-12)))


def _log_row(
    window: list[tuple[int, float, float, float]], step: int, elapsed: float, lr: float, nl: int
) -> list[Any]:
    """One row of ``log.csv`` from the samples since the last row."""
    arr = np.array(window)
    row: list[Any] = [
        step,
        round(elapsed, 1),
        f"{lr:.3g}",
        round(float(arr[:, 3].mean()), 4),
        round(float(arr[:, 2].mean()), 4),
        round(_psnr(arr[:, 1]), 3),
    ]
    per_b: list[Any] = []
    per_p: list[Any] = []
    for lv in range(nl):
        sel = arr[arr[:, 0] == lv]
        per_b.append(round(float(sel[:, 2].mean()), 4) if len(sel) else "")
        per_p.append(round(_psnr(sel[:, 1]), 3) if len(sel) else "")
    return row + per_b + per_p


def plot_log(csv_path: str | PathLike[str], png_path: str | PathLike[str]) -> None:
    """Plot a training log (loss, bpp and PSNR per level over steps) to a PNG file.

    Parameters
    ----------
    csv_path : path
        A run's ``log.csv``.
    png_path : path
        The figure to write.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    step = np.array([float(r["step"]) for r in rows])

    def col(name: str) -> np.ndarray:
        return np.array([float(r[name]) if r.get(name) else np.nan for r in rows])

    # A figure of its own (not pyplot's): no backend switch, no global state.
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
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
