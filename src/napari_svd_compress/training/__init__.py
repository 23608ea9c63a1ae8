"""Training of the learned codec (needs the optional ``train`` extra: torch).

The modules of this package import torch at module level; importing this package
itself does not, so the command line can say that torch is missing before it imports
them (``napari-svd-compress train``, see :mod:`napari_svd_compress.cli.train`).

Modules
-------
:mod:`.networks`
    The torch networks: a factorized-prior autoencoder with per-level gains.
:mod:`.data`
    Training images and random crops (NumPy and Pillow only, no torch).
:mod:`.loop`
    :func:`~.loop.train`: the training loop, with checkpoints and a CSV log.
:mod:`.export`
    :func:`~.export.export_model`: a checkpoint to a ``.svdm`` model file, the only
    thing the codec's run time reads (ONNX graphs + integer tables, see
    :mod:`napari_svd_compress.codecs.learned.model`).

The training code runs on torch 2.11 and later (the extra pins the tested version).

Examples
--------
>>> from napari_svd_compress.training.loop import train  # doctest: +SKIP
>>> from napari_svd_compress.training.export import export_model  # doctest: +SKIP
>>> ckpt = train("run.d", images="photos/", steps=20000)  # doctest: +SKIP
>>> export_model(ckpt, "model.svdm", name="photos")  # doctest: +SKIP
"""

from __future__ import annotations

#: One line on what to install when torch is missing.
INSTALL_HINT = "training a learned model needs PyTorch: pip install 'napari-svd-compress[train]'"

__all__ = ["INSTALL_HINT"]
