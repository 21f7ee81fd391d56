"""What every benchmark section shares: timing, formatting, and writing a section of BENCHMARKS.md in place."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

NOT_ON_GPU = "not measured on a GPU yet"
HEADER = ("# Benchmarks\n\nWritten by `make bench`. Every figure is measured in that run; limits are computed from "
          "counted FLOPs and datasheet peaks and say so.\n\n")


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench-{name}:start -->", f"<!-- bench-{name}:end -->"


def write_section(path: Path, name: str, body: str, top: bool = False) -> None:
    """Put ``body`` between the section's markers in ``path``: in place if present, else appended (or, with
    ``top``, placed before the first other section)."""
    start, end = markers(name)
    section = f"{start}\n{body.strip()}\n{end}\n"
    text = path.read_text() if path.exists() else HEADER
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end) + 1 :]
    elif top and "<!-- bench-" in text:
        at = text.index("<!-- bench-")
        text = text[:at] + section + "\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def times(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` calls after ``warmup`` untimed ones (lazy init, allocator warm-up)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def seconds(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"
