"""Shared helpers: run the real `gift` entry point in a subprocess, compare shard sets byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Fast tiny-model settings: 32 px images, few denoising steps.
FAST = ["--model", "tiny", "--size", "32", "--steps", "2"]


def gift_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *map(str, args)]


def run_gift(*args: str, env: dict | None = None, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(gift_cmd(*args), capture_output=True, text=True, env=full_env, cwd=cwd or ROOT, **kw)


def set_files(set_path: Path) -> dict[str, bytes]:
    """Every shard and record file of a set (manifest excluded: it carries a timestamp)."""
    return {p.name: p.read_bytes() for p in sorted(set_path.iterdir()) if p.suffix in {".tar", ".parquet"}}


def only_set(root: Path) -> Path:
    sets = sorted(p.parent for p in root.glob("*/*/manifest.json"))
    assert len(sets) == 1, sets
    return sets[0]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # Nothing in the suite may reach a model hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
