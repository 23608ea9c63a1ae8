"""The layout's rules, read from the source (docs/architecture.md explains them).

- No import cycle between the package's modules through module-level imports.
- napari, Qt, magicgui, superqt and vispy are imported only under ``_napari/``; torch
  only under ``training/``.
- The package's own modules are imported inside functions only in ``cli/`` and
  ``_napari/`` (entry points that defer heavy work), never to dodge a cycle.
- Module-level imports point down the layers.
- ``import napari_svd_compress`` imports no napari, Qt, dask, torch or onnxruntime.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from import_graph import (
    DEFERRING_ROOMS,
    GUI_LIBRARIES,
    MODULES,
    PACKAGE,
    _external,
    _imports,
    _layer,
    _resolve,
    _room,
    module_graph,
)


def test_every_module_is_in_a_layer():
    for module in MODULES:
        _layer(module)


def test_no_import_cycle_through_module_level_imports():
    graph = module_graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_module_level_imports_point_down():
    wrong = [
        f"{module} imports {target}"
        for module, targets in module_graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    ]
    assert not wrong, "\n".join(wrong)


def test_gui_and_torch_only_in_their_rooms():
    wrong = []
    for module, path in MODULES.items():
        room = _room(module)
        for node, _ in _imports(path):
            for name in _external(node):
                if name in GUI_LIBRARIES and room != "_napari":
                    wrong.append(f"{module} imports {name}")
                if name == "torch" and room != "training":
                    wrong.append(f"{module} imports torch")
    assert not wrong, "\n".join(wrong)


def test_own_modules_imported_inside_functions_only_in_entry_points():
    wrong = []
    for module, path in MODULES.items():
        if _room(module) in DEFERRING_ROOMS:
            continue
        is_package = path.name == "__init__.py"
        for node, at_import in _imports(path):
            if not at_import and _resolve(module, is_package, node):
                wrong.append(f"{module}:{node.lineno} {ast.unparse(node)}")
    assert not wrong, "deferred imports of the package's own modules:\n" + "\n".join(wrong)


def test_the_rules_see_a_cycle_and_a_deferred_import(tmp_path):
    """The parser behind the rules finds what it must (so the tests above can fail)."""
    src = tmp_path / "m.py"
    src.write_text(
        "from . import a\nimport napari\n"
        "def f():\n    from .b import c\n"
        "if TYPE_CHECKING:\n    from .d import e\n"
    )
    found = [(ast.unparse(n), top) for n, top in _imports(src)]
    assert found == [
        ("from . import a", True),
        ("import napari", True),
        ("from .b import c", False),
        ("from .d import e", False),
    ]
    node = ast.parse("from ..format import bundle").body[0]
    assert _resolve(f"{PACKAGE}.codecs.svd", False, node) == [f"{PACKAGE}.format.bundle"]
    node = ast.parse("from .. import __version__").body[0]
    assert _resolve(f"{PACKAGE}.format.bundle", False, node) == [PACKAGE]


@pytest.mark.parametrize("entry", ["napari_svd_compress", "napari_svd_compress.cli"])
def test_import_loads_no_gui_or_heavy_runtime(entry):
    heavy = ["napari", "qtpy", "PyQt6", "PyQt5", "PySide6", "dask", "torch", "onnxruntime"]
    code = f"import sys, {entry}\nprint(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
