"""ParamForm: a codec's parameter form from its registry entry, with magicgui widgets."""

from __future__ import annotations

import numpy as np
import pytest
from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, LineEdit, SpinBox
from qtpy.QtCore import Qt

from napari_svd_compress import registry
from napari_svd_compress._napari.widgets.params import ParamForm, start_value
from napari_svd_compress.errors import ParameterError
from napari_svd_compress.registry import Codec, Encoded, Param

pytestmark = pytest.mark.gui


def _codec(*params: Param) -> Codec:
    """An unregistered codec with these parameters (the form only reads ``params``)."""
    return Codec(
        name="formtest",
        label="Form test",
        description="Parameters only.",
        params=params,
        encode=lambda plane, params, progress, container=None: Encoded(meta={}),
        decode=lambda meta, payloads, shape: np.zeros(shape, np.float32),
    )


def _defaults(codec: Codec) -> dict:
    return {k: v for k, v in codec.resolve({}).items() if v is not None}


@pytest.mark.parametrize("name", registry.available())
def test_widgets_ranges_choices_and_tooltips_come_from_the_registry(qapp, name):
    codec = registry.get(name)
    form = ParamForm(codec)
    assert set(form.fields) == {p.name for p in codec.params}
    for p in codec.params:
        w = form.fields[p.name]
        assert w.tooltip == p.help
        assert w.native.objectName() == f"param_{p.name}"
        if p.choices:
            assert isinstance(w, ComboBox) and tuple(w.choices) == tuple(p.choices)
        elif p.kind is bool:
            assert isinstance(w, CheckBox)
        elif p.kind in (int, float):
            assert isinstance(w, SpinBox if p.kind is int else FloatSpinBox)
            if p.low is not None:
                assert w.min == pytest.approx(p.low)
            if p.high is not None:
                assert w.max == pytest.approx(p.high)
        else:
            assert isinstance(w, FileEdit if p.path else LineEdit)
        if p.default is not None:
            assert form.value(p.name) == pytest.approx(p.default)
        else:
            assert p.check(form.value(p.name)) is not None  # a valid value to offer
    # The form starts at the codec's defaults.
    assert form.values() == _defaults(codec)


def test_values_round_trip(qapp):
    codec = registry.get("svd")
    form = ParamForm(codec)
    wanted = {"energy": 0.95, "color": "rgb", "chroma": 0.25, "patch": 8, "qloss": 0.05}
    form.set_values(wanted)
    assert form.values() == pytest.approx(wanted)
    assert codec.resolve(form.values())["energy"] == pytest.approx(0.95)
    other = ParamForm(codec)
    other.set_values(form.values())
    assert other.values() == form.values()
    # The smallest bounds survive the spin boxes' decimals.
    form.set_values({"percent": 1e-6})
    assert form.values()["percent"] == pytest.approx(1e-6)
    pca = ParamForm(registry.get("pca"))
    changes = {"deblock": 64, "mode": "rows", "block": 4, "variance": 0.5}
    pca.set_values(changes)
    expected = {**_defaults(pca.codec), **changes}
    del expected["components"]  # the group's default rule, replaced by variance
    assert pca.values() == expected


def test_rule_chooser_sets_exactly_one_of_a_group(qapp):
    form = ParamForm(registry.get("svd"))
    group = form.groups["rule"]
    assert group == ["rank", "percent", "energy", "target_psnr", "target_bpp"]
    chooser = form.choosers["rule"]
    assert chooser.label == "rule" and chooser.native.objectName() == "rule_rule"
    for i, name in enumerate(group):
        help_text = form.param(name).help
        assert chooser.native.itemData(i, Qt.ItemDataRole.ToolTipRole) == help_text
        assert help_text in chooser.tooltip

    def shown() -> list[str]:
        return [n for n in group if not form.fields[n].native.isHidden()]

    assert form.rule("rule") == "rank" and shown() == ["rank"]
    for name in group:
        # As the user does it: pick the rule in the combo box.
        chooser.value = name
        values = form.values()
        assert [n for n in group if n in values] == [name]
        assert shown() == [name]
        assert form.fields[name].label == "value"
        registry.get("svd").resolve(values)  # one rule: valid
    form.set_values({"target_psnr": 33.0})
    assert form.rule("rule") == "target_psnr" and form.values()["target_psnr"] == 33.0
    form.select_rule("energy")  # the energy value chosen earlier is kept
    assert form.values()["energy"] == pytest.approx(start_value(form.param("energy")))
    form.set_values({"rank": None})  # None cannot unchoose a rule: ignored
    assert form.rule("rule") == "energy"
    with pytest.raises(ParameterError, match="only one"):
        form.set_values({"rank": 5, "energy": 0.9})
    with pytest.raises(ParameterError, match="not one of alternative"):
        form.select_rule("color")


def test_invalid_values_raise_and_change_nothing(qapp):
    form = ParamForm(registry.get("svd"))
    before = form.values()
    for bad in ({"chroma": 1.5}, {"color": "lab"}, {"rank": 0}, {"rank": 2.5}, {"nope": 1}):
        with pytest.raises(ParameterError):
            form.set_values({"qloss": 1.0, **bad})
        assert form.values() == before
    with pytest.raises(ParameterError, match="cannot be unset"):
        form.set_values({"chroma": None})


def test_changed_fires_once_per_edit_with_the_values(qapp):
    form = ParamForm(registry.get("jpeg"))
    seen: list[dict] = []
    form.changed.connect(seen.append)
    form.set_values({"quality": 40, "optimize": False})
    assert seen == [{"quality": 40, "optimize": False}]
    form.fields["quality"].value = 90  # the user turns the spin box
    assert seen[-1] == {"quality": 90, "optimize": False}
    svd_form = ParamForm(registry.get("svd"))
    svd_form.changed.connect(seen.append)
    svd_form.choosers["rule"].value = "percent"
    assert "percent" in seen[-1] and "rank" not in seen[-1]


def test_a_subset_of_parameters(qapp):
    form = ParamForm(registry.get("svd"), names=("rank", "percent", "energy", "color", "chroma"))
    assert list(form.fields) == ["rank", "percent", "energy", "color", "chroma"]
    assert form.groups == {"rule": ["rank", "percent", "energy"]}
    assert form.values() == {"rank": 50, "color": "ycbcr", "chroma": 0.5}
    with pytest.raises(ParameterError):
        form.set_values({"qloss": 1.0})  # not in this form
    with pytest.raises(ParameterError):
        ParamForm(registry.get("svd"), names=("rank", "nope"))


def test_paths_text_and_optional_numbers(qapp, tmp_path):
    codec = _codec(
        Param("limit", int, None, "An optional count.", low=1, high=10),
        Param("gain", float, None, "An optional gain.", low=0.5, high=2.0),
        Param("tag", str, None, "Free text."),
        Param("model", str, "", "A file.", path=True),
        Param("note", str, None, "Another file.", path=True),
    )
    form = ParamForm(codec)
    assert isinstance(form.fields["tag"], LineEdit)
    assert isinstance(form.fields["model"], FileEdit) and isinstance(form.fields["note"], FileEdit)
    # Unset optional values are left out; a path with a "" default stays "".
    assert form.values() == {"model": ""}
    assert not form.fields["limit"].enabled  # "auto" is ticked
    path = tmp_path / "weights.onnx"
    form.set_values({"limit": 3, "gain": 1.25, "tag": " hello ", "note": str(path)})
    assert form.values() == {
        "limit": 3,
        "gain": 1.25,
        "tag": "hello",
        "model": "",
        "note": str(path),
    }
    assert form.fields["limit"].enabled
    form.set_values({"limit": None, "tag": None, "note": None})
    assert form.values() == {"gain": 1.25, "model": ""}
    codec.resolve(form.values())
