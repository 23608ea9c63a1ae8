"""Everything under tests/_napari is a GUI test: marked ``gui`` (``-m "not gui"`` skips it)."""

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.gui)
