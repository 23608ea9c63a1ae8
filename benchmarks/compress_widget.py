"""The Compress widget on a 24-megapixel layer: end to end against ``compress()`` alone.

For each repeat, on the same image in the same process: ``compress()`` called directly,
then the Compress widget's button clicked in a shown napari viewer, timed from the click
until the result layer is added and visible (the helper process's transfer included).
A 10 ms heartbeat timer measures the longest stall of the event loop during the widget
run and the half second after it (the new layer is drawn).  The helper process's own
timing splits its overhead (the transfer of the image there and of the result back).

Usage (it needs a display)::

    xvfb-run -a -s "-screen 0 1600x1200x24" python benchmarks/compress_widget.py \\
        [--image IMAGE.npy] [--method svd] [--repeats 3] [--out docs/performance.md]

Without ``--image`` the astronaut is upscaled (bicubic) to 6000x4000 with camera-like
noise (sigma 3 levels).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import machine, replace_section  # noqa: E402

MARKER = "## The Compress widget on a 24-megapixel layer"


def make_image(size: tuple[int, int] = (6000, 4000)) -> np.ndarray:
    from PIL import Image
    from skimage import data

    w, h = size
    img = Image.fromarray(data.astronaut()).resize((w, h), Image.BICUBIC)
    arr = np.asarray(img).astype(np.float32)
    arr += np.random.default_rng(0).normal(0, 3, arr.shape).astype(np.float32)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def measure(image: np.ndarray, method: str, repeats: int, shared: bool) -> list[dict]:
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    import napari_svd_compress as nsc
    from napari_svd_compress._napari.worker import shared as shared_process

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    _, widget = viewer.window.add_plugin_dock_widget("napari-svd-compress", "Compress")
    source = viewer.add_image(image, name="photo", rgb=image.ndim == 3)
    widget.set_layer(source)
    widget.set_method(method)
    process = shared_process()
    process.use_shared_memory = shared
    process.start()

    def wait(ms: int) -> None:
        end = time.perf_counter() + ms / 1000
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.002)

    steps: list[float] = []
    original_step = widget.jobs._step

    def timed_step() -> None:
        t = time.perf_counter()
        original_step()
        steps.append(time.perf_counter() - t)

    widget.jobs._step = timed_step
    wait(1500)  # the viewer and the source layer drawn, the helper process started
    rows = []
    for i in range(repeats):
        t = time.perf_counter()
        result = nsc.compress(image, method, rgb=image.ndim == 3)
        alone = time.perf_counter() - t
        del result
        wait(300)

        ticks: list[float] = []
        heartbeat = QTimer()
        heartbeat.setInterval(10)
        heartbeat.timeout.connect(lambda ticks=ticks: ticks.append(time.perf_counter()))
        heartbeat.start()
        steps.clear()
        wait(100)
        clicked = time.perf_counter()
        widget.compress_button.click()
        while widget.running:
            app.processEvents()
            time.sleep(0.001)
        shown = time.perf_counter() - clicked
        wait(500)  # the new layer is drawn
        heartbeat.stop()
        timing = dict(process.last_timing)
        gaps = np.diff(ticks)
        rows.append(
            {
                "alone_s": alone,
                "widget_s": shown,
                "stall_ms": float(gaps.max()) * 1000,
                "stall_at_s": ticks[int(np.argmax(gaps)) + 1] - clicked,
                "steps_ms": max(steps, default=0.0) * 1000,
                "to_child_s": timing.get("to_child_s", float("nan")),
                "from_child_s": timing.get("from_child_s", float("nan")),
                "process_s": timing.get("total_s", float("nan")),
                "child_compress_s": timing.get("compress_s", float("nan")),
            }
        )
        r = rows[-1]
        print(
            f"run {i + 1}: compress() {r['alone_s']:.2f} s, widget {r['widget_s']:.2f} s "
            f"(+{r['widget_s'] - r['alone_s']:.2f}); helper process {r['process_s']:.2f} s "
            f"= compress {r['child_compress_s']:.2f} + transfer "
            f"{r['process_s'] - r['child_compress_s']:.2f} (to {r['to_child_s']:.3f}, "
            f"back {r['from_child_s']:.3f}); worst stall {r['stall_ms']:.0f} ms "
            f"ending {r['stall_at_s']:.2f} s after the click, longest "
            f"main-thread step {r['steps_ms']:.0f} ms",
            flush=True,
        )
        for layer in list(viewer.layers)[1:]:
            viewer.layers.remove(layer)
        widget.runs.clear()
        widget.table.setRowCount(0)
        wait(300)
    viewer.close()
    return rows


def report(rows: list[dict], pipe: list[dict], image: np.ndarray, method: str) -> list[str]:
    def med(key: str, data: list[dict] = rows) -> float:
        return statistics.median(r[key] for r in data)

    def overhead(data: list[dict]) -> float:
        return statistics.median(r["process_s"] - r["child_compress_s"] for r in data)

    def added(data: list[dict]) -> float:
        return statistics.median(r["widget_s"] - r["child_compress_s"] for r in data)

    h, w = image.shape[:2]
    lines = [
        MARKER,
        "",
        f"`benchmarks/compress_widget.py`: a {w}x{h}"
        f"{'x' + str(image.shape[2]) if image.ndim == 3 else ''} {image.dtype} layer "
        f"({image.nbytes / 1e6:.0f} MB), method `{method}` with its defaults, in a shown "
        f"napari viewer under Xvfb; medians of {len(rows)} runs, each `compress()` alone and "
        "then the widget, in the same process on the same image. Widget time: from the click "
        "to the result layer added and visible. Stall: the longest gap between two ticks of "
        "a 10 ms timer, from the click until half a second after the layer is shown. "
        f"{machine()}, Python {platform.python_version()}.",
        "",
        "| | seconds |",
        "|---|---|",
        f"| `compress()` alone, in napari's process | {med('alone_s'):.2f} |",
        f"| the widget, end to end | {med('widget_s'):.2f} |",
        f"| widget minus `compress()` alone | {med('widget_s') - med('alone_s'):+.2f} |",
        f"| `compress()` in the helper process (during the widget's run) "
        f"| {med('child_compress_s'):.2f} |",
        f"| widget minus the helper's `compress()`: all the widget adds | {added(rows):.3f} |",
        f"| helper process: transfer (the rest of its run) | {overhead(rows):.3f} |",
        f"| ... of which the image there (copy into shared memory) | {med('to_child_s'):.3f} |",
        f"| ... of which the result back (bundle on the pipe, image copied out) "
        f"| {med('from_child_s'):.3f} |",
        f"| worst event-loop stall | {med('stall_ms') / 1000:.3f} "
        f"(max {max(r['stall_ms'] for r in rows) / 1000:.3f}) |",
        f"| longest main-thread step handling the result | {med('steps_ms') / 1000:.3f} |",
        "",
    ]
    if pipe:
        lines += [
            "Before (every array pickled through the pipe, `use_shared_memory = False`, "
            f"{len(pipe)} runs): transfer {overhead(pipe):.3f} s, of which the image there "
            f"{med('to_child_s', pipe):.3f} s and the result back {med('from_child_s', pipe):.3f}"
            f" s; all the widget adds {added(pipe):.3f} s; worst stall "
            f"{med('stall_ms', pipe) / 1000:.3f} s. Shared memory also saves the pickled "
            "copies (the image and the result, each once in each process).",
            "",
        ]
    lines += [
        "Timings on this shared 2-core machine vary by a second or more from run to run "
        "(other work runs beside it); the transfer and stall figures are the stable ones. "
        "`compress()` in napari's own process and the same call in the helper process "
        "run in different memory (napari's holds the viewer); what the widget adds is "
        "best read against the helper's own `compress()`. The result layer is added with "
        "the source's contrast limits (no min/max scan); the main thread's remaining work "
        "is napari's (the layer's controls and vispy node, one step; the texture upload "
        "when it is shown, the worst stall).",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help=".npy image (default: the astronaut at 6000x4000)")
    parser.add_argument("--method", default="svd")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pipe", action="store_true", help="also measure without shared memory")
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--json", help="also write the measured rows to this file")
    args = parser.parse_args()
    image = np.load(args.image) if args.image else make_image()
    pipe = measure(image, args.method, args.repeats, shared=False) if args.pipe else []
    rows = measure(image, args.method, args.repeats, shared=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"shared": rows, "pipe": pipe}, indent=1))
    lines = report(rows, pipe, image, args.method)
    print("\n".join(lines))
    if not args.no_write:
        replace_section(args.out, MARKER, lines)


if __name__ == "__main__":
    main()
