"""Save docs/screenshot-compare.png: the Compress widget's Compare, source beside results.

The sample photograph is compressed with SVD at two ranks (with a signed error map for
the second), both results are selected in the table and Compare shows them beside the
source in napari's grid mode.  Run under a virtual display::

    xvfb-run -a -s "-screen 0 1600x1200x24" python scripts/screenshot_compare.py \\
        [--out docs/screenshot-compare.png] [--ranks 8,40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from screenshot import compress_and_wait, save

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot-compare.png"))
    parser.add_argument("--ranks", default="8,40")
    args = parser.parse_args(argv)
    ranks = [int(k) for k in args.ranks.split(",")]

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_svd_compress._napari.widgets.compress import CompressWidget

    CompressWidget.use_process = False  # a screenshot needs no helper process
    viewer = napari.Viewer(title="napari-svd-compress: Compare")
    viewer.window._qt_window.resize(1500, 820)
    app = QApplication.instance()
    (source,) = viewer.open_sample("napari-svd-compress", "astronaut")
    source.name = "astronaut"
    _, widget = viewer.window.add_plugin_dock_widget("napari-svd-compress", "Compress")
    widget.set_layer(source)
    widget.set_method("svd")
    for rank in ranks:
        widget.set_param("rank", rank)
        if not compress_and_wait(widget, app):
            print("the compression did not finish", file=sys.stderr)
            return 1
    widget.select_runs(widget.runs)
    if not widget.compare(True):
        print("Compare showed nothing", file=sys.stderr)
        return 1
    viewer.reset_view()
    save(viewer, app, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
