"""The plugin's menu contributions: in the manifest, in napari's menus, and what they do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import synthetic_rgb
from napari_svd_compress import _napari
from napari_svd_compress._napari.widgets.compress import CompressWidget
from napari_svd_compress._napari.widgets.rate_distortion import RateDistortionWidget
from napari_svd_compress._napari.widgets.spectrum import SpectrumWidget

PLUGIN = "napari-svd-compress"
MANIFEST = Path(_napari.__file__).with_name("napari.yaml")
ITEMS = {
    "napari/file/io_utilities": ["napari-svd-compress.open_raw_preview"],
    "napari/layers/filter": ["napari-svd-compress.compress_layer"],
    "napari/layers/measure": ["napari-svd-compress.spectrum_layer", "napari-svd-compress.rd_layer"],
    "napari/layers/visualize": ["napari-svd-compress.compare_layer"],
}


def test_manifest_contributes_layer_menu_items():
    from napari._app_model.constants._menus import is_menu_contributable
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(MANIFEST)
    menus = pm.contributions.menus
    assert {m: [item.command for item in items] for m, items in menus.items()} == ITEMS
    titles = {c.id: c.title for c in pm.contributions.commands}
    assert titles["napari-svd-compress.compress_layer"] == "Compress with SVD…"
    assert titles["napari-svd-compress.spectrum_layer"] == "Show SVD spectrum"
    assert titles["napari-svd-compress.rd_layer"] == "Rate-distortion curves"
    for menu_id, items in menus.items():
        assert is_menu_contributable(menu_id)  # napari keeps them (it drops the others)
        for item in items:
            if menu_id.startswith("napari/layers/"):
                assert str(item.when) == "active_layer_type == 'image'"
    # The widgets stay in the Plugins menu, as before.
    assert {w.display_name for w in pm.contributions.widgets} == {
        "Compress",
        "Rate-distortion",
        "SVD spectrum",
    }


def _menu_items(menu_id: str):
    from napari._app_model import get_app_model

    return {
        item.command.id: item
        for item in get_app_model().menus.get_menu(menu_id)
        if hasattr(item, "command") and item.command.id.startswith(PLUGIN)
    }


@pytest.mark.gui
def test_items_are_in_napari_layers_menus_for_image_layers_only(make_napari_viewer):
    from napari._app_model.context import get_context

    viewer = make_napari_viewer()
    image = viewer.add_image(synthetic_rgb(32, 40), name="photo")
    labels = viewer.add_labels(np.zeros((32, 40), np.uint8), name="labels")
    for menu_id, commands in ITEMS.items():
        found = _menu_items(menu_id)
        assert sorted(found) == sorted(commands)
        if not menu_id.startswith("napari/layers/"):
            continue  # File > IO Utilities: always there
        for item in found.values():
            viewer.layers.selection.active = image
            assert item.when.eval(get_context(viewer.layers))
            viewer.layers.selection.active = labels
            assert not item.when.eval(get_context(viewer.layers))


def _run_command(command: str) -> None:
    from napari._app_model import get_app_model

    get_app_model().commands.execute_command(command).result()


@pytest.mark.gui
@pytest.mark.parametrize(
    ("command", "name", "kind"),
    [
        ("napari-svd-compress.compress_layer", "Compress", CompressWidget),
        ("napari-svd-compress.spectrum_layer", "SVD spectrum", SpectrumWidget),
        ("napari-svd-compress.rd_layer", "Rate-distortion", RateDistortionWidget),
    ],
)
def test_menu_item_opens_its_widget_on_the_active_layer(make_napari_viewer, command, name, kind):
    viewer = make_napari_viewer()
    first = viewer.add_image(synthetic_rgb(32, 40), name="first")
    viewer.add_image(synthetic_rgb(24, 30), name="second")
    viewer.layers.selection.active = first
    _run_command(command)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)  # the one just docked
    assert isinstance(widget, kind)
    assert widget.current_layer() == first
    if kind is CompressWidget:
        assert widget.method_name() == "svd"
    # Again, from another layer: the same widget, on that layer.
    viewer.layers.selection.active = viewer.layers["second"]
    _run_command(command)
    _, again = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    assert again == widget and widget.current_layer().name == "second"


@pytest.mark.gui
def test_compare_menu_item(make_napari_viewer, qtbot, monkeypatch, notifications):
    monkeypatch.setattr(CompressWidget, "use_process", False)
    viewer = make_napari_viewer()
    source = viewer.add_image(synthetic_rgb(32, 40), name="photo")
    _run_command("napari-svd-compress.compare_layer")  # no results yet: says so
    assert any("no compression results" in m for m in notifications.messages())
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Compress")
    widget.set_layer(source)
    widget.set_param("rank", 4)
    widget.compress()
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    viewer.layers.selection.active = source
    _run_command("napari-svd-compress.compare_layer")
    assert viewer.canvas.grid.enabled
    assert {ly.name for ly in viewer.layers if ly.visible} == {"photo", widget.runs[0].layer.name}
    widget.compare(False)
    assert not viewer.canvas.grid.enabled
