"""The package's import graph, read from the source: rooms (sub-packages) and arrows.

    python scripts/import_graph.py            # rooms and the arrows between them, as text
    python scripts/import_graph.py --dot | dot -Tsvg > imports.svg   # Graphviz
    python scripts/import_graph.py --modules  # module by module

Only module-level imports count (those inside functions run later, on demand).
tests/test_architecture.py checks the layout's rules with the same reader.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

PACKAGE = "napari_svd_compress"
ROOT = Path(__file__).resolve().parent.parent / "src" / PACKAGE

GUI_LIBRARIES = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt"}
GUI_LIBRARIES |= {"vispy", "npe2", "app_model"}
DEFERRING_ROOMS = ("cli", "_napari")

# Rooms from the bottom up; a module may import (at module level) only from its own
# room or rooms below it.
LAYERS = [
    {"errors", "_version", "_image", "_threads", "_memory"},
    {"registry", "metrics"},
    {"format"},
    {"codecs"},
    {"api", "__init__"},
    {"fileio"},
    {"pipelines"},
    {"training"},
    {"cli"},
    {"_napari"},
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The package's modules an import statement loads (its own targets, not parents)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
    if node.level == 0:
        base = node.module or ""
        if base.split(".")[0] != PACKAGE:
            return []
    else:
        parts = module.split(".")
        if not is_package:
            parts = parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if sub in MODULES else base)
    return out


def _imports(path: Path) -> list[tuple[ast.stmt, bool]]:
    """Every import statement of a file, with whether it runs at import time."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[ast.stmt, bool]] = []

    def visit(node: ast.AST, in_function: bool, in_type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, not in_function and not in_type_checking))
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, True, in_type_checking)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, in_function, True)
            else:
                visit(child, in_function, in_type_checking)

    visit(tree, False, False)
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module: str) -> int:
    room = _room(module)
    for i, rooms in enumerate(LAYERS):
        if room in rooms:
            return i
    raise AssertionError(f"{module} is in no layer: add its room to LAYERS and the docs")


def module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        is_package = path.name == "__init__.py"
        edges = set()
        for node, at_import in _imports(path):
            if at_import:
                edges.update(t for t in _resolve(module, is_package, node) if t != module)
        graph[module] = edges
    return graph


def _external(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name.split(".")[0] for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module.split(".")[0]]
    return []


def room_graph() -> dict[str, set[str]]:
    """Arrows between rooms (sub-packages and top-level modules)."""
    rooms: dict[str, set[str]] = {}
    for module, targets in module_graph().items():
        src = _room(module)
        rooms.setdefault(src, set()).update(_room(t) for t in targets if _room(t) != src)
    return rooms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dot", action="store_true", help="print Graphviz DOT")
    parser.add_argument("--modules", action="store_true", help="modules, not rooms")
    args = parser.parse_args(argv)
    graph = module_graph() if args.modules else room_graph()
    if args.dot:
        print("digraph imports {\n  rankdir=BT;")
        for src in sorted(graph):
            for dst in sorted(graph[src]):
                print(f'  "{src}" -> "{dst}";')
        print("}")
        return 0
    order = sorted(graph, key=lambda m: (_layer(m if args.modules else f"{PACKAGE}.{m}"), m))
    for src in reversed(order):
        print(f"{src} -> {', '.join(sorted(graph[src])) or '(nothing of the package)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
