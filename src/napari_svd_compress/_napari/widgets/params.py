"""A codec's parameter form, generated from its registry entry with magicgui widgets.

Every :class:`~napari_svd_compress.registry.Param` becomes one magicgui value widget: a
``CheckBox`` for bool, a ``SpinBox`` or ``FloatSpinBox`` with the parameter's range for
numbers, a ``ComboBox`` for choices, a ``FileEdit`` for paths and a ``LineEdit`` for other
text; its ``help`` is the tooltip.  Parameters sharing a ``group`` are alternative rules:
a ``ComboBox`` chooses one, and only the chosen rule's value widget is shown and counts.
A codec registered later gets its form with no code here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    LineEdit,
    SpinBox,
)
from magicgui.widgets.bases import ValueWidget, Widget
from psygnal import Signal
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QWidget

from ...errors import ParameterError
from ...registry import Codec, Param

__all__ = ["ParamForm", "start_value"]

# Bounds for numbers the registry leaves open (the spin boxes need some; magicgui's integer
# spin box takes any Python int, so given bounds such as a 32-bit seed's are kept).
_INT_MIN, _INT_MAX = -(2**31) + 1, 2**31 - 1
_FLOAT_BIG = 1e12


def start_value(p: Param) -> Any:
    """The value a form first shows for ``p``: its default, or a sensible one if unset.

    An unset (``None``) default is an unselected rule or an "auto" number; the form
    still needs a value to offer when the user picks it.
    """
    if p.default is not None:
        return p.default
    if p.kind is bool:
        return False
    if p.kind is str:
        return p.choices[0] if p.choices else ""
    if p.choices:
        return p.choices[0]
    lo = p.low if p.low is not None else 0.0
    hi = p.high if p.high is not None else max(lo, 1.0) * 100
    if p.kind is float and hi <= 1.0:
        value = lo + 0.9 * (hi - lo)  # fractions (percent, energy): keep most of it
    elif lo > 0 and hi / lo > 100:
        value = math.sqrt(lo * hi)  # wide positive ranges: the middle on a log scale
        value = float(f"{value:.2g}")
    else:
        value = (lo + hi) / 2
    return round(value) if p.kind is int else value


def _decimals(p: Param) -> int:
    """Enough decimals to reach the low bound of a fraction (and to show 0.95 as such)."""
    lo, hi = p.low, p.high
    if lo is not None and 0 < lo < 1:
        return min(6, max(2, math.ceil(-math.log10(lo))))
    if hi is not None and hi <= 1:
        return 4
    return 2


def _value_widget(p: Param, label: str) -> ValueWidget:
    """The magicgui widget that edits ``p`` (its value not yet set)."""
    common: dict[str, Any] = {"name": p.name, "label": label, "tooltip": p.help}
    if p.choices:
        return ComboBox(choices=tuple(p.choices), **common)
    if p.kind is bool:
        return CheckBox(text=p.name, name=p.name, tooltip=p.help)
    if p.kind is int:
        lo = int(p.low) if p.low is not None else _INT_MIN
        hi = int(p.high) if p.high is not None else _INT_MAX
        return SpinBox(min=lo, max=hi, **common)
    if p.kind is float:
        box = FloatSpinBox(**common)
        # Decimals first: Qt rounds the bounds to them (1e-6 would become 0).
        box.native.setDecimals(_decimals(p))
        box.min = float(p.low) if p.low is not None else -_FLOAT_BIG
        box.max = float(p.high) if p.high is not None else _FLOAT_BIG
        box.step = None  # adaptive: one step is a tenth of the leading digit
        return box
    if p.path:
        return FileEdit(mode="r", nullable=True, **common)
    return LineEdit(**common)


class ParamForm:
    """A form for a codec's parameters, built from its registry entry.

    Parameters
    ----------
    codec : Codec
        The codec whose parameters are edited.
    names : sequence of str, optional
        Show only these parameters (in the codec's order); by default all of them.

    Attributes
    ----------
    codec : Codec
    container : magicgui.widgets.Container
        The form; embed ``container.native`` (or :attr:`native`) in a Qt layout.
    fields : dict of str to magicgui ValueWidget
        The value widget of each parameter shown.
    choosers : dict of str to magicgui.widgets.ComboBox
        The rule chooser of each group of alternative parameters.

    Signals
    -------
    changed : Signal(dict)
        Emitted with :meth:`values` whenever the user (or :meth:`set_values`, once per
        call) changes a value or a rule.
    """

    changed = Signal(dict)

    def __init__(self, codec: Codec, names: Sequence[str] | None = None) -> None:
        self.codec = codec
        wanted = set(names) if names is not None else None
        if wanted is not None:
            for name in wanted:
                codec.param(name)  # raises for a name the codec lacks
        params = [p for p in codec.params if wanted is None or p.name in wanted]
        self._params = {p.name: p for p in params}
        self.fields: dict[str, ValueWidget] = {}
        self.choosers: dict[str, ComboBox] = {}
        self._auto: dict[str, CheckBox] = {}
        self._groups: dict[str, list[Param]] = {}
        for p in params:
            if p.group is not None:
                self._groups.setdefault(p.group, []).append(p)
        self._quiet = 0

        rows: list[Widget] = []
        for p in params:
            if p.group is None:
                rows.append(self._plain_row(p))
            elif p.group not in self.choosers:
                rows.extend(self._group_rows(p.group, self._groups[p.group]))
        self.container = Container(widgets=rows, labels=True)
        self.container.margins = (0, 0, 0, 0)
        self.container.tooltip = codec.description
        for group in self.choosers:
            self._show_rule(group)
        for widget in [*self.fields.values(), *self.choosers.values(), *self._auto.values()]:
            widget.changed.connect(self._on_widget_changed)

    # -- building ---------------------------------------------------------------------------

    def _plain_row(self, p: Param) -> Widget:
        field = self.fields[p.name] = _value_widget(p, p.name)
        field.native.setObjectName(f"param_{p.name}")
        self._write(p, start_value(p))
        if p.default is None and p.kind in (int, float) and not p.choices:
            # An optional number: "auto" (None, the codec decides) or a value.
            auto = self._auto[p.name] = CheckBox(
                text="auto", value=True, tooltip="Let the method decide"
            )
            auto.changed.connect(lambda on, f=field: setattr(f, "enabled", not on))
            field.enabled = False
            return Container(
                widgets=[field, auto], layout="horizontal", labels=False, name=p.name, label=p.name
            )
        return field

    def _group_rows(self, group: str, params: list[Param]) -> list[Widget]:
        names = [p.name for p in params]
        default = next((p.name for p in params if p.default is not None), names[0])
        chooser = ComboBox(
            choices=tuple(names),
            value=default,
            name=f"{group}_rule",
            label=group,
            tooltip="Alternative rules, one at a time:\n"
            + "\n".join(f"{p.name}: {p.help}" for p in params),
        )
        chooser.native.setObjectName(f"rule_{group}")
        for i, p in enumerate(params):
            chooser.native.setItemData(i, p.help, Qt.ItemDataRole.ToolTipRole)
        self.choosers[group] = chooser
        rows: list[Widget] = [chooser]
        for p in params:
            field = self.fields[p.name] = _value_widget(p, "value")
            field.native.setObjectName(f"param_{p.name}")
            self._write(p, start_value(p))
            rows.append(field)
        return rows

    # -- reading and writing ------------------------------------------------------------

    @property
    def native(self) -> QWidget:
        """The form's Qt widget."""
        return self.container.native

    @property
    def groups(self) -> dict[str, list[str]]:
        """The parameter names of each group of alternative rules."""
        return {g: [p.name for p in ps] for g, ps in self._groups.items()}

    def param(self, name: str) -> Param:
        """The registry entry of parameter ``name`` (one the form shows)."""
        try:
            return self._params[name]
        except KeyError:
            raise ParameterError(f"the form of {self.codec.name!r} has no {name!r}") from None

    def rule(self, group: str) -> str:
        """The chosen parameter of ``group``."""
        return self.choosers[group].value

    def select_rule(self, name: str) -> None:
        """Choose the rule ``name`` in its group (its value stays what it was)."""
        p = self.param(name)
        if p.group is None:
            raise ParameterError(f"{name!r} is not one of alternative rules")
        self.choosers[p.group].value = name

    def value(self, name: str) -> Any:
        """What the form holds for ``name`` (None: unset), whether it counts or not."""
        p = self.param(name)
        if name in self._auto and self._auto[name].value:
            return None
        value = self.fields[name].value
        if p.kind is str and not p.choices:
            text = "" if value is None else str(value).strip()
            return text if text or p.default is not None else None
        if p.kind in (int, float) and not p.choices:
            return p.kind(value)
        return value

    def values(self) -> dict[str, Any]:
        """The parameters: each plain one that is set, and the chosen rule of each group."""
        out: dict[str, Any] = {}
        for name, p in self._params.items():
            if p.group is not None and self.rule(p.group) != name:
                continue
            value = self.value(name)
            if value is not None:
                out[name] = value
        return out

    def set_values(self, values: Mapping[str, Any]) -> None:
        """Set parameters; setting a rule also chooses it.

        Values are checked as the codec checks them (type, range, choices) before any is
        set.  ``None`` unsets an optional parameter and is ignored for a rule (a group
        always has one chosen).

        Raises
        ------
        ParameterError
            An unknown name, an invalid value, or two rules of one group.
        """
        checked: dict[str, Any] = {}
        chosen: dict[str, str] = {}
        for name, value in values.items():
            p = self.param(name)
            if p.group is not None:
                if value is None:
                    continue
                if p.group in chosen:
                    raise ParameterError(f"give only one of {chosen[p.group]!r} and {name!r}")
                chosen[p.group] = name
            if value is None and not (name in self._auto or p.kind is str):
                raise ParameterError(f"{name} cannot be unset")
            checked[name] = p.check(value)
        self._quiet += 1
        try:
            for name, value in checked.items():
                self._set(name, value)
            for group, name in chosen.items():
                self.choosers[group].value = name
        finally:
            self._quiet -= 1
        self._on_widget_changed()

    def _set(self, name: str, value: Any) -> None:
        if name in self._auto:
            self._auto[name].value = value is None
            if value is None:
                return
        self._write(self._params[name], value)

    def _write(self, p: Param, value: Any) -> None:
        """Put ``value`` in the widget of ``p``; None and "" mean empty text."""
        if p.path:
            # FileEdit takes None for empty; it would make "" the working directory.
            value = value or None
        elif p.kind is str and not p.choices and value is None:
            value = ""
        self.fields[p.name].value = value

    # -- keeping the form consistent ------------------------------------------------------

    def _show_rule(self, group: str) -> None:
        chosen = self.rule(group)
        for p in self._groups[group]:
            self.fields[p.name].visible = p.name == chosen

    def _on_widget_changed(self, *_: Any) -> None:
        for group in self.choosers:
            self._show_rule(group)
        if not self._quiet:
            self.changed.emit(self.values())
