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


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """The `mini` and `mini-cil` pools rendered by the `reference` generator and a tiny CLIP pre-trained on mini-base."""
    import torch

    from pipeline.datasets import mini
    from pipeline.generation.generate import generate, resolve_spec
    from pipeline.training.pretrain import pretrain_tiny_clip

    CPU = torch.device("cpu")
    root = tmp_path_factory.mktemp("mini")
    reference = mini.export_reference(root / "reference")
    for task in ("mini-base", "mini-a", "mini-b", "mini-cil-base", "mini-digits"):  # MTIL mini, then CIL mini-cil
        spec = resolve_spec(task, model=f"reference:{reference}", per_class=16, size=32, device=CPU)
        generate(spec, root / "shards", device=CPU)
    weights = pretrain_tiny_clip(root / "tiny-clip.safetensors")
    return root, weights


def mini_config(workspace, **kw):
    from pipeline.training.config import TrainConfig

    root, weights = workspace
    base = dict(order="mini", runs=str(root / "runs"), shards=str(root / "shards"), clip_arch="tiny",
                clip_weights=str(weights), batch_size=32, synthetic_batch=32, synthetic_budget=96, warmup=10, workers=0)
    return TrainConfig(**{**base, **kw})


def cli_args(workspace, *extra) -> list[str]:
    root, weights = workspace
    return ["train", "--order", "mini", "--runs", root / "runs", "--shards", root / "shards", "--clip", "tiny",
            "--clip-weights", weights, "--batch-size", "32", "--synthetic-batch", "32", "--synthetic-budget", "96",
            "--warmup", "10", "--workers", "0", "--device", "cpu", *extra]
