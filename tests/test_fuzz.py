"""A seeded quick subset of the fuzzer (benchmarks/fuzz.py): every reader of untrusted files,
a few thousand mutants, zero escapes, crashes, hangs or excess allocations.

The full run (10^5 cases) and its report are in docs/reliability.md.  Here, besides the
subset itself, the fuzzer is checked to count what it exists to count: a worker that
crashes, one that hangs and one that allocates too much are reported with reproducers,
and the run goes on.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "benchmarks" / "fuzz.py"
CASES = 2500
SEED = 11


def _fuzz(out: Path, *args: str, timeout: float = 240) -> tuple[dict, subprocess.CompletedProcess]:
    proc = subprocess.run(
        [sys.executable, str(FUZZ), *args, "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    report = json.loads((out / "report.json").read_text())
    return report, proc


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """One folder whose corpus cache the runs share (built once)."""
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.slow
def test_quick_subset_has_no_escape_crash_hang_or_excess_allocation(corpus_dir):
    report, proc = _fuzz(corpus_dir, str(CASES), "--seed", str(SEED), "--workers", "2")
    assert report["complete"] and report["cases"] == CASES
    problems = "\n".join(
        f"case {p['case']} ({p['kind']} from {p['seed_file']}): {p['outcome']}\n{p['detail']}"
        for p in report["problems"]
    )
    assert set(report["totals"]) <= {"refused", "clean"}, problems
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Every kind of file was fuzzed, and each was both refused and decoded at times
    # (mutants that stay valid must still decode).
    assert set(report["by_kind"]) == {"bundle", "native", "legacy", "raw"}
    for kind, counts in report["by_kind"].items():
        assert counts.get("refused", 0) > 0, kind
        assert counts.get("clean", 0) > 0, kind
    # ... and every seed file (every codec, stacks, RGBA, uint16, float) was used.
    assert len(report["by_seed_file"]) >= 30
    # Only the errors each reader's contract names.
    for name in report["refusals_by_class"]:
        kind, _, error = name.partition(": ")
        expected = {"legacy": "LegacyError", "raw": "RawError"}.get(kind, "Bundle")
        assert error.startswith(expected), name


@pytest.mark.slow
def test_the_fuzzer_counts_crashes_hangs_and_memory_and_goes_on(corpus_dir):
    out = corpus_dir / "inject"
    (out / "corpus").mkdir(parents=True)
    for cached in (corpus_dir / "corpus").glob("*.json"):  # reuse the corpus just built
        (out / "corpus" / cached.name).write_bytes(cached.read_bytes())
    report, proc = _fuzz(
        out,
        "60",
        "--seed",
        str(SEED),
        "--workers",
        "2",
        "--timeout",
        "3",
        "--inject",
        "crash:5,hang:17,memory:31",
    )
    assert proc.returncode == 1
    assert report["complete"] and report["cases"] == 60
    got = {p["case"]: p["outcome"] for p in report["problems"]}
    assert got == {5: "crash:SIGSEGV", 17: "hang", 31: "over-memory"}
    for p in report["problems"]:
        saved = Path(p["file"])
        assert saved.exists() and saved.stat().st_size > 0
        assert f"--seed {SEED} --case {p['case']}" in p["reproduce"]


def test_cases_are_reproducible_from_seed_and_index():
    spec = importlib.util.spec_from_file_location("nsc_fuzz", FUZZ)
    fuzz = importlib.util.module_from_spec(spec)
    sys.modules["nsc_fuzz"] = fuzz  # dataclasses look their module up
    try:
        spec.loader.exec_module(fuzz)
    finally:
        sys.modules.pop("nsc_fuzz", None)
    corpus = [
        fuzz.Seed("svd", "bundle", _small_bundle()),
        fuzz.Seed("pkl", "legacy", b"\x80\x04]\x94."),
        fuzz.Seed("jpg", "native", b"\xff\xd8\xff" + bytes(64)),
        fuzz.Seed("dng", "raw", b"II*\x00" + bytes(64)),
    ]
    for index in range(200):
        a = fuzz.make_case(3, index, corpus, "/nonexistent/marker")
        b = fuzz.make_case(3, index, corpus, "/nonexistent/marker")
        assert a == b


def _small_bundle() -> bytes:
    import numpy as np

    import napari_svd_compress as nsc

    return nsc.compress(np.arange(24 * 20, dtype=np.uint8).reshape(24, 20), "svd", rank=2).bundle
