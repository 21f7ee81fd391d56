"""What `gift doctor` reports: one finding per thing it looked at, each problem with the command or step that fixes it."""

from __future__ import annotations

from dataclasses import dataclass

OK = "ok"
NOTE = "note"  # worth knowing, not a problem (an optional weight that is absent, no GPU for a mini order)


@dataclass(frozen=True)
class Finding:
    """``section``: weights | datasets | pool | disk | gpu. ``status``: ok, note, or the problem (missing,
    incomplete, broken, too little, ...). ``fix``: what to run or do; empty when nothing is to be done."""

    section: str
    name: str
    status: str
    detail: str
    fix: str = ""

    @property
    def problem(self) -> bool:
        return self.status not in (OK, NOTE)


def split_message(message: str) -> tuple[str, str]:
    """A "not found" error of the loaders -> (what was searched, how to provide it): the first line and the lines
    that follow, without the trailing ``(ExceptionType: ...)`` cause."""
    lines = [line for line in message.strip().splitlines() if not (line.startswith("(") and line.endswith(")"))]
    return lines[0], " ".join(lines[1:])


def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"
