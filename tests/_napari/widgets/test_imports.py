"""The widget modules use only public names: of the library, and of each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from napari_svd_compress._napari import widgets

PACKAGE = "napari_svd_compress"
WIDGETS = sorted(Path(widgets.__file__).parent.glob("*.py"))


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from ... import name`` of the package in ``path``."""
    here = f"{PACKAGE}._napari.widgets".split(".")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""]).strip(".")
        elif (node.module or "").split(".")[0] == PACKAGE:
            base = node.module
        else:
            continue
        found.extend((base, alias.name) for alias in node.names)
    return found


@pytest.mark.parametrize("path", WIDGETS, ids=lambda p: p.name)
def test_widget_modules_import_no_private_names(path):
    wrong = []
    for module, name in _imports(path):
        # _napari is the plugin's own (private) package; inside it, names are public or not.
        parts = [p for p in module.split(".")[1:] if p != "_napari"]
        if name.startswith("_") or any(p.startswith("_") for p in parts):
            wrong.append(f"from {module} import {name}")
    assert not wrong, "\n".join(wrong)
