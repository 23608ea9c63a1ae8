"""Batch compression on dask.distributed: manifest, failures, restarts, the CLI."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from PIL import Image

from napari_svd_compress import compress, decompress
from napari_svd_compress.cli import batch as batch_cli
from napari_svd_compress.fileio import raw
from napari_svd_compress.pipelines.batch import (
    MANIFEST_CSV,
    MANIFEST_JSONL,
    batch,
    expand_inputs,
    read_manifest,
)
from napari_svd_compress.pipelines.stack import compress_stack

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    )
    with Client(cluster) as c:
        yield c
    cluster.close()


def _picture(h: int, w: int, seed: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    rgb = np.stack(
        [
            128 + 100 * np.sin(x / (7 + seed)),
            128 + 100 * np.cos(y / (9 + seed)),
            (x + y + 20 * seed) % 256,
        ],
        axis=-1,
    )
    return np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)


def _make_inputs(folder: Path, n_png: int = 4, size: tuple[int, int] = (48, 64)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n_png):
        p = folder / f"img{i}.png"
        Image.fromarray(_picture(*size, i)).save(p)
        files.append(p)
    files.append(raw.write_dng(folder / "shot.dng", _picture(48, 64, 7)))
    corrupt = folder / "corrupt.dng"
    corrupt.write_bytes(b"II*\x00" + b"\x00garbage" * 20)
    files.append(corrupt)
    (folder / "notes.txt").write_text("not an image: ignored when a folder is given")
    return files


def _tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_expand_inputs(tmp_path):
    files = _make_inputs(tmp_path / "in")
    found = expand_inputs(tmp_path / "in")
    assert sorted(found) == sorted(f.absolute() for f in files)
    pngs = expand_inputs(str(tmp_path / "in" / "*.png"))
    assert [p.name for p in pngs] == [f"img{i}.png" for i in range(4)]
    # Duplicates across items are removed, order kept.
    both = expand_inputs([str(tmp_path / "in" / "img1.png"), tmp_path / "in"])
    assert both[0].name == "img1.png" and len(both) == len(files)


def test_batch_folder_with_corrupt_file(tmp_path, client):
    files = _make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    seen = []
    report = batch(
        tmp_path / "in",
        out,
        "svd",
        client=client,
        jpg=True,
        rank=6,
        progress=lambda done, total, rec: seen.append((done, total, rec["status"])),
    )
    assert len(report.records) == len(files) == 6
    assert [r["input"] for r in report.failed] == [str(tmp_path / "in" / "corrupt.dng")]
    assert "RawError" in report.failed[0]["error"]
    assert len(report.ok) == 5 and not report.skipped
    assert [s[:2] for s in seen] == [(i, 6) for i in range(1, 7)]
    # Each good file: a bundle equal to the API's, a JPEG, and its figures recorded.
    for rec in report.ok:
        src = Path(rec["input"])
        bundle, jpg = (Path(p) for p in rec["outputs"])
        assert bundle.name == src.stem + ".svdz" and jpg.name == src.stem + ".jpg"
        assert bundle.stat().st_size == rec["bytes"]
        decoded = decompress(bundle)
        assert list(decoded.shape) == rec["shape"]
        if src.suffix == ".png":
            expect = compress(np.asarray(Image.open(src)), "svd", rank=6)
            assert bundle.read_bytes() == expect.bundle
            assert rec["psnr"] == pytest.approx(expect.psnr)
        assert rec["params"]["rank"] == 6 and rec["method"] == "svd"
    manifest = read_manifest(out)
    assert set(manifest) == {str(f.absolute()) for f in files}
    assert manifest[str(tmp_path / "in" / "corrupt.dng")]["status"] == "error"
    lines = (out / MANIFEST_JSONL).read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["key"] for line in lines)
    csv_text = (out / MANIFEST_CSV).read_text().splitlines()
    assert csv_text[0].startswith("input,status,error") and len(csv_text) == 7
    assert not _tmp_files(out)

    # A second run does nothing: everything is skipped, no file is rewritten.
    mtimes = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    again = batch(tmp_path / "in", out, "svd", client=client, jpg=True, rank=6)
    assert again.computed == [] and len(again.skipped) == 6
    assert len(again.failed) == 1  # still reported, from the manifest
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes

    # A changed file or changed parameters are done again; the rest is skipped.
    Image.fromarray(_picture(48, 64, 9)).save(tmp_path / "in" / "img2.png")
    third = batch(tmp_path / "in", out, "svd", client=client, jpg=True, rank=6)
    assert [Path(r["input"]).name for r in third.computed] == ["img2.png"]
    fourth = batch(tmp_path / "in" / "img0.png", out, "svd", client=client, rank=7)
    assert len(fourth.computed) == 1 and fourth.ok[0]["params"]["rank"] == 7
    assert len(read_manifest(out)) == 6


def test_batch_retry_failed_and_native(tmp_path, client):
    _make_inputs(tmp_path / "in", n_png=1)
    out = tmp_path / "out"
    first = batch(tmp_path / "in", out, "jpeg", client=client, jpg=True, quality=60)
    assert {Path(p).suffix for r in first.ok for p in r["outputs"]} == {".jpg"}
    retry = batch(tmp_path / "in", out, "jpeg", client=client, retry_failed=True, quality=60)
    assert [Path(r["input"]).name for r in retry.computed] == ["corrupt.dng"]


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from napari_svd_compress.pipelines.batch import batch

    if __name__ == "__main__":
        report = batch(sys.argv[1], sys.argv[2], "svd", workers=1, rank=20, jpg=True)
        print(report.summary())
    """
)


def test_killed_batch_restarts_cleanly(tmp_path, client):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(8):
        Image.fromarray(_picture(320, 400, i)).save(inputs / f"big{i}.png")
    out = tmp_path / "out"
    script = tmp_path / "run_batch.py"
    script.write_text(_KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(inputs), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill reaches its workers too
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not read_manifest(out):
            time.sleep(0.05)
        assert read_manifest(out), "the batch never completed a file"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = read_manifest(out)
    assert 1 <= len(done_before) < 8  # killed mid-way
    # What a kill in the middle of atomic_write leaves behind.
    (out / ".big7.svdz.x1y2z3.tmp").write_bytes(b"half a bundle")
    (out / f".{MANIFEST_JSONL}.abc.tmp").write_bytes(b"{")

    report = batch(inputs, out, "svd", client=client, rank=20, jpg=True)
    assert len(report.records) == 8 and not report.failed
    assert set(report.skipped) == set(done_before)
    assert len(report.computed) == 8 - len(done_before)
    assert not _tmp_files(out)
    manifest = read_manifest(out)
    assert len(manifest) == 8 and all(r["status"] == "ok" for r in manifest.values())
    names = sorted(p.name for p in out.iterdir())
    expected = sorted(
        [f"big{i}.svdz" for i in range(8)]
        + [f"big{i}.jpg" for i in range(8)]
        + [MANIFEST_JSONL, MANIFEST_CSV]
    )
    assert names == expected
    for i in range(8):
        assert decompress(out / f"big{i}.svdz").shape == (320, 400, 3)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="napari-svd-compress")
    sub = parser.add_subparsers(dest="command")
    batch_cli.add_parser(sub)
    args = parser.parse_args(argv)
    return args.run(args)


def test_cli_exit_codes(tmp_path, client, capsys):
    _make_inputs(tmp_path / "in", n_png=2)
    address = client.scheduler.address
    good = _cli(
        [
            "batch",
            str(tmp_path / "in" / "img*.png"),
            str(tmp_path / "out"),
            "--rank",
            "5",
            "--scheduler",
            address,
            "--quiet",
        ]
    )
    assert good == 0
    assert "2 ok, 0 failed" in capsys.readouterr().out
    bad = _cli(["batch", str(tmp_path / "in"), str(tmp_path / "out"), "--scheduler", address])
    assert bad == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.err and "corrupt.dng" in captured.err
    with pytest.raises(Exception, match="does not apply"):
        _cli(["batch", str(tmp_path / "in"), str(tmp_path / "o2"), "--colors", "4"])


def test_stack_on_the_cluster(client):
    rng = np.random.default_rng(3)
    stack = (rng.random((2, 3, 40, 56)) * 60000).astype(np.uint16)
    expect = compress(stack, "svd", rank=4)
    got = compress_stack(stack, "svd", client=client, rank=4)
    assert got.bundle == expect.bundle
    assert got.psnr == expect.psnr and got.ssim == expect.ssim
    np.testing.assert_array_equal(np.asarray(got.image), expect.image)


def test_output_dir_must_not_be_an_input_folder(tmp_path):
    _make_inputs(tmp_path / "in", n_png=1)
    with pytest.raises(ValueError, match="must not be an input folder"):
        batch(tmp_path / "in", tmp_path / "in", "svd", rank=3)
    with pytest.raises(FileNotFoundError):
        batch([tmp_path / "in" / "nope.png"], tmp_path / "out", "svd", rank=3)
    with pytest.raises(ValueError, match="no parameter"):
        batch(tmp_path / "in", tmp_path / "out", "svd", colors=3)
