"""Shared by the benchmarks: write one section of a markdown report."""

from __future__ import annotations

from pathlib import Path

from napari_svd_compress.fileio.atomic import atomic_write


def replace_section(path: str | Path, marker: str, lines: list[str]) -> None:
    """Put ``lines`` (starting with the ``marker`` heading) into the markdown file at
    ``path``, replacing the previous section with that heading and keeping the others."""
    out = Path(path)
    text = out.read_text() if out.exists() else "# Benchmarks\n\n"
    if marker in text:
        head, _, rest = text.partition(marker)
        nxt = rest.find("\n## ")
        # A section ends with a blank line before the next heading, however it was written.
        section = "\n".join(lines).rstrip("\n") + "\n"
        text = head + section + ("\n" + rest[nxt + 1 :] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines).rstrip("\n") + "\n"
    atomic_write(out, text.encode())


def machine() -> str:
    """``"x86_64 (CPU model), N logical CPUs"``: which machine a table was measured on
    (T0 ratios move with the CPU: its matmul rate against its other rates)."""
    import os
    import platform

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    model = model or platform.processor()
    cpu = f"{platform.machine()} ({model})" if model else platform.machine()
    return f"{cpu}, {os.cpu_count()} logical CPUs"
