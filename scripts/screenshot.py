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
    widget.compress()
    deadline = time.monotonic() + 300
    while widget.running and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    if widget.running or not widget.runs:
        print("the compression did not finish", file=sys.stderr)
        return 1
    # Show the original beside the result: hide nothing, but select the result's table row.
    for _ in range(50):  # let the new layer draw
        app.processEvents()
        time.sleep(0.02)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    viewer.close()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # the guard also keeps the compression process from re-running it
    sys.exit(main())
