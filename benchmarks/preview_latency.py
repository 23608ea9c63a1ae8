"""The SVD spectrum widget's live rank preview: latency of a slider move, stalls of napari.

In a shown napari viewer, the preview is turned on for an RGB layer (factored once, timed),
then the slider is moved to a series of ranks, waiting each time until the preview layer
holds that rank at full resolution.  Reported per move: the seconds from the move to the
data in the layer; and the longest stall of the event loop (a 10 ms heartbeat timer) over
all the moves.  A drag is also simulated (the slider held down, several positions, then let
go): drafts while held, the full plane after.

Usage (it needs a display)::

    xvfb-run -a -s "-screen 0 1600x1200x24" python benchmarks/preview_latency.py \\
        [--size 6000x4000] [--ranks 10,50,200,500,30]

The astronaut is upscaled (bicubic) to the size with camera-like noise (sigma 3 levels).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np


def make_image(size: tuple[int, int]) -> np.ndarray:
    from PIL import Image
    from skimage import data

    w, h = size
    img = Image.fromarray(data.astronaut()).resize((w, h), Image.BICUBIC)
    arr = np.asarray(img).astype(np.float32)
    arr += np.random.default_rng(0).normal(0, 3, arr.shape).astype(np.float32)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT")
    parser.add_argument("--ranks", default="10,50,200,500,30")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    w, h = (int(n) for n in args.size.lower().split("x"))
    ranks = [int(k) for k in args.ranks.split(",")]

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_svd_compress._napari.widgets.preview import slider_of

    image = make_image((w, h))
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    app = QApplication.instance()
    _, widget = viewer.window.add_plugin_dock_widget("napari-svd-compress", "SVD spectrum")
    viewer.add_image(image, name="photo")
    preview = widget.preview

    def wait(cond, limit: float = args.timeout) -> bool:
        end = time.monotonic() + limit
        while not cond() and time.monotonic() < end:
            app.processEvents()
            time.sleep(0.002)
        return cond()

    wait(lambda: widget._shown is not None and not widget.running)
    t0 = time.perf_counter()
    preview.set_enabled(True)
    if not wait(lambda: preview.factorisation is not None and preview.layer is not None):
        print("the factorisation did not finish", file=sys.stderr)
        return 1
    factor_s = time.perf_counter() - t0
    wait(lambda: not preview.busy)
    kmax = preview.max_rank

    beats: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    timer.start(10)
    preview.latencies.clear()
    for k in ranks:
        preview.slider.setValue(slider_of(min(k, kmax), kmax))
        wait(lambda: preview._shown == (preview.rank, 1))
    wait(lambda: False, 0.3)  # the size of the last one, drawing
    # A drag: held down, three positions, let go.
    drag_start = time.perf_counter()
    preview.slider.setSliderDown(True)
    drafts = []
    for k in (40, 80, 160):
        t = time.perf_counter()
        preview.slider.setValue(slider_of(min(k, kmax), kmax))
        wait(lambda: preview._shown == (preview.rank, 2) or preview._shown == (preview.rank, 1))
        drafts.append(time.perf_counter() - t)
    preview.slider.setSliderDown(False)
    preview._on_released()  # what Qt calls when the mouse lets go
    wait(lambda: preview._shown == (preview.rank, 1))
    drag_s = time.perf_counter() - drag_start
    wait(lambda: not preview.busy)
    timer.stop()
    stall = float(np.max(np.diff(beats))) if len(beats) > 1 else float("nan")

    print(f"{w}x{h} RGB, max rank {kmax}, {os.cpu_count()} CPUs, {platform.processor()}")
    print(f"factorisation: {factor_s:.1f} s")
    for k, s in preview.latencies[: len(ranks)]:
        print(f"  rank {k:4d}: {s:.3f} s from the move to the full plane in the layer")
    print(
        "  drag drafts (s):", " ".join(f"{s:.3f}" for s in drafts), f"; whole drag {drag_s:.2f} s"
    )
    print(f"longest event-loop stall: {stall * 1000:.0f} ms")
    print(f"size at rank {preview.rank}: {preview.nbytes} bytes; PSNR {preview.psnr:.2f} dB")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
