"""The npe2 manifest: valid, importable, and in step with the library."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from napari_svd_compress import _napari
from napari_svd_compress.fileio.raw import RAW_EXTENSIONS

MANIFEST = Path(_napari.__file__).with_name("napari.yaml")


def test_npe2_validate_with_imports():
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent))
    if npe2 is None:
        pytest.skip("npe2 is not installed")
    proc = subprocess.run(
        [npe2, "validate", "napari-svd-compress", "--imports"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def test_manifest_contributions():
    from npe2 import PluginManifest

    pm = PluginManifest.from_file(MANIFEST)
    assert pm.name == "napari-svd-compress"
    widgets = {w.display_name for w in pm.contributions.widgets}
    assert widgets == {"Compress", "Rate-distortion", "SVD spectrum"}
    writers = {ext for w in pm.contributions.writers for ext in w.filename_extensions}
    assert {".jpg", ".svdz"} <= writers
    samples = {s.key for s in pm.contributions.sample_data}
    assert {"raw", "astronaut"} <= samples


def test_raw_patterns_cover_every_extension_in_both_cases():
    data = yaml.safe_load(MANIFEST.read_text())
    readers = data["contributions"]["readers"]
    raw_reader = next(r for r in readers if r["command"].endswith("get_raw_reader"))
    patterns = set(raw_reader["filename_patterns"])
    for ext in RAW_EXTENSIONS:
        assert f"*{ext.lower()}" in patterns
        assert f"*{ext.upper()}" in patterns
    assert len(patterns) == 2 * len(RAW_EXTENSIONS)
