"""The command line: compress/decompress/info round trips, seed flags, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

import napari_svd_compress as nsc
from napari_svd_compress.cli import main


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "photo.png"
    Image.fromarray(data.astronaut()[::2, ::2]).save(path)
    return path


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_svd_compress.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_compress_decompress_round_trip_with_seed_flags(photo, tmp_path):
    out = tmp_path / "out.svdz"
    done = run("compress", "--file", str(photo), "--percent", "0.9", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "PSNR" in done.stdout and f"wrote {out}" in done.stdout
    png = tmp_path / "back.png"
    done = run("decompress", str(out), "-o", str(png))
    assert done.returncode == 0, done.stderr
    back = np.asarray(Image.open(png))
    np.testing.assert_array_equal(back, nsc.decompress(out))
    assert back.shape == (256, 256, 3)


def test_seed_style_invocation_without_subcommand(photo, tmp_path):
    code = main(
        ["--file", str(photo), "--percent", "0.5", "--save_encoded", str(tmp_path / "a.svdz")]
    )
    assert code == 0
    assert nsc.decompress(tmp_path / "a.svdz").shape == (256, 256, 3)


def test_save_encoded_default_name_goes_to_cwd(photo, tmp_path):
    done = run("compress", str(photo), "--rank", "8", "--save_encoded", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "photo.svdz").exists()


def test_jpg_and_json_figures(photo, tmp_path):
    jpg = tmp_path / "x.jpg"
    done = run(
        "compress",
        str(photo),
        "--rank",
        "20",
        "-o",
        str(tmp_path / "x.svdz"),
        "--jpg",
        str(jpg),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["bytes"] == (tmp_path / "x.svdz").stat().st_size
    assert figures["params"]["rank"] == 20
    assert Image.open(jpg).format == "JPEG"


def test_info_prints_manifest_and_file_figures(photo, tmp_path):
    out = tmp_path / "i.svdz"
    assert main(["compress", str(photo), "--rank", "5", "-o", str(out)]) == 0
    done = run("info", str(out), "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["manifest"]["codec"] == "svd"
    assert info["figures"]["bytes"] == out.stat().st_size
    text = run("info", str(out)).stdout
    assert "svd" in text and "256x256x3 uint8" in text


def test_raw_input(tmp_path):
    from napari_svd_compress.fileio.raw import write_dng

    dng = write_dng(tmp_path / "cam.dng", data.astronaut()[:128, :192])
    done = run("compress", str(dng), "--rank", "10", "-o", str(tmp_path / "cam.svdz"))
    assert done.returncode == 0, done.stderr
    assert nsc.decompress(tmp_path / "cam.svdz").ndim == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compress", "nothere.png"], "no such file"),
        (["compress", "PHOTO", "--rank", "0"], "rank must be >= 1"),
        (["compress", "PHOTO", "--rank", "3", "--percent", "0.5"], "only one"),
        (["compress", "PHOTO", "--method", "svd", "--k", "5"], None),
        (["decompress", "BAD"], "not a .svdz bundle"),
        (["info", "BAD"], "not a .svdz bundle"),
        (["compress", "BAD"], "not a .svdz bundle"),
    ],
)
def test_errors_are_one_clean_line(photo, tmp_path, args, message):
    bad = tmp_path / "bad.svdz"
    bad.write_bytes(b"this is not a bundle")
    args = [str(photo) if a == "PHOTO" else str(bad) if a == "BAD" else a for a in args]
    done = run(*args, cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    if message:
        assert message in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_refuses_to_overwrite_its_input(photo, tmp_path):
    src = tmp_path / "same.png"
    src.write_bytes(photo.read_bytes())
    done = run("compress", str(src), "--rank", "4", "--no-bundle", "--png", str(src))
    assert done.returncode == 1 and "overwrite" in done.stderr
    assert src.read_bytes() == photo.read_bytes()


def test_help_documents_the_codec_parameters():
    done = run("compress", "--help")
    assert done.returncode == 0
    for flag in (
        "--rank",
        "--percent",
        "--energy",
        "--target-psnr",
        "--target-bpp",
        "--color",
        "--file",
        "--save_encoded",
        "--show_compressed",
        "--jpg",
    ):
        assert flag in done.stdout


def test_decompress_with_a_named_model(photo, tmp_path):
    from napari_svd_compress.codecs.learned.model import BUILTIN_PATH

    bundle = tmp_path / "l.svdz"
    assert main(["compress", str(photo), "--method", "learned", "-o", str(bundle)]) == 0
    out = tmp_path / "l.npy"
    assert main(["decompress", str(bundle), "--model", str(BUILTIN_PATH), "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), nsc.decompress(bundle))
    done = run("decompress", str(bundle), "--model", str(tmp_path / "none.svdm"), "-o", str(out))
    assert done.returncode != 0 and "none.svdm" in done.stderr
    assert "Traceback" not in done.stderr
