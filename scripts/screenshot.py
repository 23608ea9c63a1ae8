"""Save docs/screenshot.png: napari with the Compress widget after compressing the sample RAW.

Run under a virtual display::

    xvfb-run -a python scripts/screenshot.py [--out docs/screenshot.png] [--rank 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--rank", type=int, default=30)
    args = parser.parse_args(argv)

    from qtpy.QtWidgets import QApplication

    from napari_svd_compress._napari.viewer import build_viewer

    viewer, widget = build_viewer(None)
    viewer.window._qt_window.resize(1400, 860)
    app = QApplication.instance()
    widget.set_method("svd")
    widget.set_param("rank", args.rank)
    if not compress_and_wait(widget, app) or not widget.runs:
        print("the compression did not finish", file=sys.stderr)
        return 1
    # Show the original beside the result: hide nothing, but select the result's table row.
    save(viewer, app, Path(args.out))
    return 0


def compress_and_wait(widget, app, seconds: float = 300) -> bool:
    """Click Compress and run the event loop until the run ends; whether it did."""
    widget.compress()
    deadline = time.monotonic() + seconds
    while widget.running and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    return not widget.running


def save(viewer, app, out: Path) -> None:
    """Let the canvas draw for a second, save the window to ``out`` and close it."""
    for _ in range(50):
        app.processEvents()
        time.sleep(0.02)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    viewer.close()
    print(f"wrote {out}")


if __name__ == "__main__":  # the guard also keeps the compression process from re-running it
    sys.exit(main())
