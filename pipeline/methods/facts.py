"""What a run replayed and keeps, in the words every report (``results.md``) and ``gift table`` row uses.

Three facts per run, each from what the run saved: what it replayed (``replayed_text``: SD renders, tiny-SD renders,
real images, from its ``replay.json``, or the method's own fixed replay), the memory of task data it keeps
(``Method.kept``: exemplars, captions, nothing) and the learned parameters it keeps beyond the one CLIP every method
has (``Method.extra``: task heads, a router, ...).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.clts.memory import human
from pipeline.replay.synthetic import replayed

from . import METHODS
from .base import Extra, Kept

DASH = "—"


def replayed_text(run_dir: Path, cfg: dict) -> str:
    """'SD renders', 'real images (--real-renders ablation)', "exemplars (real images)", 'nothing', ..."""
    method = METHODS.get(str(cfg.get("method")))
    recorded = replayed(run_dir)
    if recorded is None:
        return method.replays if method else DASH
    return recorded + (" (--real-renders ablation)" if cfg.get("real_renders") else "")


def kept_text(kept: Kept | None) -> str:
    """'15.4 MB (5,000 exemplars, 32×32×3 uint8)', '4.9 kB (100 captions, UTF-8)', 'nothing'."""
    if kept is None:
        return DASH
    if kept.bytes is None:
        return kept.what
    return kept.what if kept.bytes == 0 else f"{human(kept.bytes)} ({kept.what})"


def extra_text(extra: Extra | None) -> str:
    """'1.3 MB (319,086 parameters: 10 task heads + router)', 'none'."""
    if extra is None:
        return DASH
    if extra.count == 0:
        return extra.what
    return f"{human(extra.bytes)} ({extra.count:,} parameters: {extra.what})"


def fact_lines(run_dir: Path, cfg: dict, state: dict) -> list[str]:
    """The report's lines: replayed, memory kept, extra parameters (markdown, one bullet each)."""
    method = METHODS.get(str(cfg.get("method")))
    kept = method.kept(run_dir, cfg, state) if method else None
    extra = method.extra(run_dir, cfg, state) if method else None
    return [f"- Replayed: {replayed_text(run_dir, cfg)}",
            f"- Memory kept (task data): {kept_text(kept)}",
            f"- Extra parameters (beyond the one CLIP every method has): {extra_text(extra)}", ""]
