"""Nothing is lost on a kill: ``compress`` and ``batch`` SIGKILLed at random moments.

Each kill is followed by the checks a user would make: the target is absent or a
complete, valid bundle (the old one or the new one, never a mix); the batch manifest
lists every input once; the next run finishes the job and removes the temporary files
the killed writers left.  Half the kills are at a uniformly random moment of the run,
half at a moment picked inside the write itself (once its temporary file exists), so
the critical window is always covered.  The random generator is seeded: a failure
names the seed and the kill.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import napari_svd_compress as nsc
from napari_svd_compress.cli import main as cli_main
from napari_svd_compress.fileio.atomic import atomic_write
from napari_svd_compress.pipelines.batch import MANIFEST_JSONL

SEED = 20240611
KILLS = 20

# The CLI, with each fsync made slower, so that a kill can land while a file is being
# written (on a fast disk the write takes microseconds of a run of a second).
DRIVER = """
import os, sys, time
_fsync = os.fsync
def _slow_fsync(fd):
    time.sleep(float(os.environ.get("NSC_TEST_FSYNC_DELAY", "0")))
    return _fsync(fd)
os.fsync = _slow_fsync
from napari_svd_compress.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _image(seed: int, height: int = 40, width: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    img = (
        np.stack([np.sin(x / (5 + seed % 4)), np.cos(y / 6), np.sin((x + y) / 9)], axis=-1) * 0.4
        + 0.5
    )
    img += rng.normal(0, 0.03, img.shape)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(".") and p.suffix == ".tmp")


def _start(args: list[str], delay: float = 0.0) -> subprocess.Popen:
    env = dict(os.environ, NSC_TEST_FSYNC_DELAY=str(delay), PYTHONWARNINGS="ignore")
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )


def _kill(proc: subprocess.Popen) -> bool:
    """SIGKILL the process (as ``kill -9`` would); True if it was still running."""
    running = proc.poll() is None
    if running:
        proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    # Its children (dask workers) notice their parent is gone and stop; wait for them
    # so that the checks see the files as the next run would.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
    return running


def _check_bundle(path: Path, allowed: tuple[bytes, ...], where: str) -> None:
    if not path.exists():
        return
    data = path.read_bytes()
    assert data in allowed, f"{where}: {path.name} is neither the old nor the new bundle"
    nsc.decompress(data)


@pytest.mark.slow
def test_compress_killed_at_random_moments(tmp_path):
    rng = random.Random(SEED)
    image = _image(0)
    src = tmp_path / "photo.png"
    Image.fromarray(image).save(src)
    new = nsc.compress(image, "svd", rank=5).bundle
    old = nsc.compress(image, "svd", rank=2).bundle
    targets: list[Path] = []
    killed = in_window = 0
    per_round = 4
    for rnd in range(KILLS // per_round):
        runs = []
        for j in range(per_round):
            target = tmp_path / f"out-{rnd}-{j}.svdz"
            if rng.random() < 0.5:
                atomic_write(target, old)
            window = j % 2 == 1
            proc = _start(["compress", str(src), "-o", str(target), "--rank", "5"], delay=0.4)
            # A random moment of the whole run (start-up included), or one inside the
            # write: after its temporary file appears, before the rename.
            runs.append(
                {
                    "proc": proc,
                    "target": target,
                    "window": window,
                    "at": rng.uniform(0.0, 2.5),
                    "lag": rng.uniform(0.0, 0.3),
                    "t0": time.monotonic(),
                    "seen": None,
                    "done": False,
                }
            )
            targets.append(target)
        while not all(r["done"] for r in runs):
            now = time.monotonic()
            for r in runs:
                if r["done"]:
                    continue
                if r["window"]:
                    if r["seen"] is None and any(
                        p.name.startswith(f".{r['target'].name}.") for p in tmp_path.iterdir()
                    ):
                        r["seen"] = now
                    due = r["seen"] is not None and now - r["seen"] >= r["lag"]
                    due = due or now - r["t0"] > 30 or r["proc"].poll() is not None
                else:
                    due = now - r["t0"] >= r["at"]
                if due:
                    killed += _kill(r["proc"])
                    in_window += r["window"] and r["seen"] is not None
                    r["done"] = True
                    where = f"seed {SEED}, round {rnd}, {r['target'].name}"
                    _check_bundle(r["target"], (old, new), where)
            time.sleep(0.005)
    assert killed >= KILLS * 3 // 4, f"only {killed} of {KILLS} runs were still running"
    assert in_window >= KILLS // 4, f"only {in_window} kills landed inside a write"
    # The next run to each target finishes the job and removes what the killed ones left.
    for target in targets:
        assert cli_main(["compress", str(src), "-o", str(target), "--rank", "5"]) == 0
        assert target.read_bytes() == new
    assert _temporaries(tmp_path) == []


def _manifest(out: Path) -> list[dict]:
    path = out / MANIFEST_JSONL
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _check_batch_state(out: Path, inputs: list[Path], where: str) -> None:
    records = _manifest(out)  # parses: written atomically, never half a line
    names = [r["input"] for r in records]
    assert len(names) == len(set(names)), f"{where}: an input is listed twice"
    assert set(names) <= {str(p) for p in inputs}, where
    for rec in records:
        if rec["status"] == "ok":
            for o in rec["outputs"]:
                nsc.decompress(Path(o))  # listed outputs exist and are complete
    for bundle in out.glob("*.svdz"):
        nsc.decompress(bundle)  # any bundle that exists is complete


def _written_since(out: Path, t_ns: int) -> int:
    """Outputs (re)written since ``t_ns``."""
    count = 0
    for p in out.glob("*.svdz") if out.exists() else ():
        try:
            count += p.stat().st_mtime_ns >= t_ns
        except OSError:
            pass
    return count


def _kill_batches(lane: int, folder: Path, out: Path, inputs: list[Path], kills: int) -> int:
    """Start the batch into ``out`` and SIGKILL it, ``kills`` times; return the kills that
    hit a running batch."""
    rng = random.Random(SEED + 1 + lane)
    args = ["batch", str(folder), str(out), "--workers", "1", "--quiet", "--rank", "8"]
    killed = 0
    for kill in range(kills):
        started_ns = time.time_ns()
        proc = _start(args, delay=0.05)
        t0 = time.monotonic()
        if kill % 2 == 0:  # a random moment early in the run: start-up, first files
            at = rng.uniform(0.2, 2.5)
            while time.monotonic() - t0 < at and proc.poll() is None:
                time.sleep(0.01)
        else:  # while files are being written: once 1 to 3 more outputs are written
            written, lag = rng.randint(1, 3), rng.uniform(0.0, 0.25)
            seen = None
            while proc.poll() is None and time.monotonic() - t0 < 60:
                if seen is None and _written_since(out, started_ns) >= written:
                    seen = time.monotonic()
                if seen is not None and time.monotonic() - seen >= lag:
                    break
                time.sleep(0.005)
        killed += _kill(proc)
        _check_batch_state(out, inputs, f"seed {SEED + 1 + lane}, lane {lane}, kill {kill}")
    return killed


@pytest.mark.slow
def test_batch_killed_at_random_moments_then_rerun(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = []
    for i in range(48):  # more than the kills can get through: each kill hits work
        path = folder / f"img{i:02d}.png"
        Image.fromarray(_image(i, 96, 128)).save(path)
        inputs.append(path.absolute())
    # Two output folders killed in turn by two threads: twice the kills in the time.
    lanes = 2
    outs = [tmp_path / f"out{lane}" for lane in range(lanes)]
    results: dict[int, Any] = {}

    def lane_run(lane: int) -> None:
        try:
            results[lane] = _kill_batches(lane, folder, outs[lane], inputs, KILLS // lanes)
        except BaseException as exc:  # re-raised in the test's thread
            results[lane] = exc

    threads = [threading.Thread(target=lane_run, args=(lane,)) for lane in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for value in results.values():
        if isinstance(value, BaseException):
            raise value
    killed = sum(results.values())
    assert killed >= KILLS * 3 // 4, f"only {killed} of {KILLS} runs were still running"
    # The rerun finishes: every input exactly once, every output complete, no temporaries.
    for out in outs:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "napari_svd_compress.cli",
                "batch",
                str(folder),
                str(out),
                "--workers",
                "1",
                "--quiet",
                "--rank",
                "8",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        records = _manifest(out)
        assert sorted(r["input"] for r in records) == sorted(str(p) for p in inputs)
        assert all(r["status"] == "ok" for r in records)
        _check_batch_state(out, inputs, "after the rerun")
        assert sorted(p.stem for p in out.glob("*.svdz")) == sorted(p.stem for p in inputs)
        assert _temporaries(out) == []


def test_next_write_removes_temporaries_of_dead_writers_only(tmp_path):
    from napari_svd_compress.fileio import atomic

    target = tmp_path / "out.svdz"
    host = atomic._host_tag()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".out.svdz.{host}-{dead_pid}.abc123.tmp"
    live = tmp_path / f".out.svdz.{host}-{os.getpid()}.def456.tmp"
    foreign_old = tmp_path / ".out.svdz.0badc0de-1.ghi789.tmp"
    foreign_new = tmp_path / ".out.svdz.0badc0de-2.jkl012.tmp"
    legacy = tmp_path / ".out.svdz.x1y2z3.tmp"  # an older writer's name: age decides
    other = tmp_path / ".other.svdz.zzz.tmp"
    for p in (stale, live, foreign_old, foreign_new, legacy, other):
        p.write_bytes(b"half a bundle")
    week_ago = time.time() - 7 * 24 * 3600
    os.utime(foreign_old, (week_ago, week_ago))
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    left = {p.name for p in _temporaries(tmp_path)}
    assert left == {live.name, foreign_new.name, legacy.name, other.name}


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.svdz"
    atomic_write(target, b"old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert _temporaries(tmp_path) == []
