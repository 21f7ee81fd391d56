"""`gift doctor` on CPU fixtures, one per outcome: ready (exit 0), missing weights, missing datasets (every one
listed), missing / incomplete pool sets (and the fix it names renders them), too little disk, the cost.

Weights are looked up, never loaded, so a Hugging Face cache with the real layout (refs/main -> snapshots/<commit>/)
and placeholder files is what the real look-ups find; an empty cache is what they miss.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from huggingface_hub import constants

from pipeline.datasets import catalog
from pipeline.datasets.required import MissingDatasetsError, require_datasets
from pipeline.doctor import diagnose
from pipeline.doctor.cost import check_disk, cost_lines
from pipeline.doctor.weights import check_weights, weight_entries
from pipeline.training.config import TrainConfig
from shards.layout import tar_path
from tests.conftest import run_gift
from tests.test_mtil_data import make_eurosat, make_mnist

COMMIT = "0" * 40


def hf_repo(cache, repo: str, files: list[str]) -> None:
    """A model repo in the Hugging Face cache layout, each file a placeholder."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    for name in files:
        path = root / "snapshots" / COMMIT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"placeholder")


def by_name(findings, section: str) -> dict:
    return {f.name: f for f in findings if f.section == section}


def test_weights_missing_name_hf_download_and_found_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    entries = weight_entries("sd15", "ViT-B-16", "openai", "blip", captions_needed=True)
    assert [e.name for e in entries] == ["Stable Diffusion v1.5", "CLIP ViT-B-16 (OpenAI)", "BLIP captioner"]
    missing = check_weights(entries)
    assert [f.status for f in missing] == ["missing"] * 3
    assert [f.fix.split("`")[1] for f in missing] == ["hf download stable-diffusion-v1-5/stable-diffusion-v1-5",
                                                       "hf download timm/vit_base_patch16_clip_224.openai",
                                                       "hf download Salesforce/blip-image-captioning-base"]
    # BLIP only matters to runs that replay captions: otherwise a note, not a problem
    assert not check_weights(weight_entries("sd15", "ViT-B-16", "openai", "blip", captions_needed=False))[2].problem

    hub = tmp_path / "hub"
    hf_repo(hub, "stable-diffusion-v1-5/stable-diffusion-v1-5",
            ["model_index.json", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
             "text_encoder/model.safetensors"])
    hf_repo(hub, "timm/vit_base_patch16_clip_224.openai", ["open_clip_model.safetensors"])
    hf_repo(hub, "Salesforce/blip-image-captioning-base", ["config.json", "model.safetensors"])
    found = check_weights(entries)
    assert [f.status for f in found] == ["ok"] * 3 and COMMIT in found[0].detail
    # a diffusers snapshot without its UNet weights is not SD
    shutil.rmtree(hub / "models--stable-diffusion-v1-5--stable-diffusion-v1-5" / "snapshots" / COMMIT / "unet")
    assert "lacks weights of unet" in check_weights(entries[:1])[0].detail


def test_every_missing_dataset_is_listed_by_doctor_and_by_train(tmp_path):
    data = tmp_path / "data"
    make_mnist(data)
    make_eurosat(data)
    config = TrainConfig(order="II", data_root=str(data), clip_arch="tiny", clip_weights="none",
                         shards=str(tmp_path / "shards"), runs=str(tmp_path / "runs"), iterations=10)
    result = diagnose(config, model="tiny", captioner="tiny")
    datasets = by_name(result.findings, "datasets")
    order = catalog.get_order("II")
    assert list(datasets) == order  # every dataset of the order, in its order
    assert [n for n, f in datasets.items() if f.problem] == [t for t in order if t not in ("mnist", "eurosat")]
    assert "food-101.tar.gz" in datasets["food"].fix and datasets["mnist"].status == "ok"
    # no pool yet: 11 sets, the last task (eurosat) not among them, one command for all
    pool = by_name(result.findings, "pool")
    assert list(pool) == ["imagenet", *order[:-1]] and all(f.status == "missing" for f in pool.values())
    assert {f.fix for f in pool.values()} == {f"gift generate --order II --out {tmp_path / 'shards'} --model tiny; "
                                              "re-running it resumes"}
    planned = sum(catalog.default_per_class(t) * catalog.get_task(t).num_classes for t in pool)
    assert result.cost.images == planned and result.cost.steps == 11 * 10
    if not torch.cuda.is_available():  # a real order without a GPU is a problem (the mini orders: a note)
        assert by_name(result.findings, "gpu")["GPU"].problem

    with pytest.raises(MissingDatasetsError) as e:  # gift train / gift table: all of them at once, then the doctor
        require_datasets("II", data)
    text = str(e.value)
    assert text.startswith("9 datasets of order II missing") and "gift doctor --order II" in text
    assert all(f"{t}: dataset not found" in text for t in order if t not in ("mnist", "eurosat"))


def test_table_names_every_missing_dataset_once_before_any_run(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import cli.app
    import cli.table_cmd

    monkeypatch.setattr(cli.table_cmd, "setup_logging", lambda: None)
    make_mnist(tmp_path / "data")
    result = CliRunner().invoke(cli.app.app, ["table", "--order", "II", "--methods", "finetune,l2", "--data-root",
                                              str(tmp_path / "data"), "--runs", str(tmp_path / "runs")])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and text.count("10 datasets of order II missing") == 1, text
    assert "gift doctor --order II" in text and not (tmp_path / "runs").exists()


def mini_args(workspace, shards, runs) -> list[str]:
    root, weights = workspace
    return ["doctor", "--order", "mini", "--shards", shards, "--runs", runs, "--clip", "tiny", "--clip-weights",
            weights, "--model", f"reference:{root / 'reference'}", "--captioner", "tiny", "--iterations", "200",
            "--batch-size", "32", "--synthetic-batch", "32", "--synthetic-budget", "96"]


def test_missing_and_incomplete_pool_sets_then_the_fix_renders_them(workspace, tmp_path):
    root, weights = workspace
    shards = tmp_path / "shards"
    for task in catalog.pool_tasks("mini"):
        shutil.copytree(root / "shards" / task, shards / task)
    shutil.rmtree(shards / "mini-b")
    mini_a = next((shards / "mini-a").iterdir())
    tar_path(mini_a, 0).unlink()  # a lost shard
    config = TrainConfig(order="mini", shards=str(shards), runs=str(tmp_path / "runs"), clip_arch="tiny",
                         clip_weights=str(weights), iterations=200)
    result = diagnose(config, model="sd15", captioner="tiny")
    pool = by_name(result.findings, "pool")
    assert [f.status for f in pool.values()] == ["ok", "incomplete", "missing"]
    assert "000000.tar" in pool["mini-a"].detail and pool["mini-b"].detail == "80 images to render"
    # the options of the sets already there, so the fix renders the same family (not --model sd15)
    fix = pool["mini-b"].fix
    assert fix == (f"gift generate --order mini --out {shards} --model reference:{root / 'reference'} --per-class 16 "
                   "--size 32; re-running it resumes")
    assert list(by_name(result.findings, "weights")) == [f"CLIP tiny ({weights})"]  # reference images need no SD

    r = run_gift(*fix.split(";")[0].split()[1:])  # the fix, as printed
    assert r.returncode == 0, r.stderr
    r = run_gift(*mini_args(workspace, shards, tmp_path / "runs"))  # every set there again: ready, exit 0
    assert r.returncode == 0 and "ready: nothing is missing" in r.stdout, r.stdout + r.stderr
    assert "training steps: 600" in r.stdout  # 3 tasks x --iterations 200
    assert "at the H100's dense bf16 peak" in r.stdout or torch.cuda.is_available()


def test_cli_lists_every_problem_with_its_fix_and_exits_1(workspace, tmp_path):
    r = run_gift("doctor", "--order", "mini", "--shards", tmp_path / "empty", "--runs", tmp_path / "runs",
                 "--clip", "tiny", "--clip-weights", tmp_path / "nope.safetensors", "--replay-captions",
                 env={"HF_HOME": str(tmp_path / "hf")})
    out = " ".join(r.stdout.split())
    assert r.returncode == 1, r.stderr
    assert "6 problems (4 fixes), each with its fix" in out  # SD, CLIP file, BLIP (replayed captions), the pool (3 sets)
    assert "fix: Provide the weights: on a machine with network run `hf download stable-diffusion-v1-5" in out
    assert "`hf download Salesforce/blip-image-captioning-base`" in out
    assert "pool: mini-base (missing" in out and f"fix: gift generate --order mini --out {tmp_path / 'empty'}" in out
    assert not (tmp_path / "runs").exists() and not (tmp_path / "empty").exists()  # the doctor writes nothing


def test_disk_and_cost_lines(tmp_path):
    (finding,) = check_disk({tmp_path / "not-yet" / "shards": 1e18})  # the nearest existing folder's filesystem
    assert finding.problem and finding.status == "too little" and "1000000.0 TB needed" in finding.detail
    assert check_disk({tmp_path: 1.0})[0].status == "ok"
    config = TrainConfig(order="mini", clip_arch="tiny", clip_weights="none", iterations=200, batch_size=32,
                         synthetic_batch=32)
    from pipeline.doctor.cost import estimate

    cost, steps = estimate(config, 1000, "sd15", 50, {}, 0, [])
    assert steps == {"mini-a": 200, "mini-b": 200, "mini-c": 200}
    assert cost.render_tflop == pytest.approx(1000 * 82.9)  # SD v1.5: 82.9 TFLOP per 512² image at 50 steps
    # hours = FLOPs / peak: 82,900 TFLOP alone is 82,900 / 989.4 / 3600 = 0.0233 h on the reference H100
    assert cost.gpu_hours >= 82900 / 989.4 / 3600 and not cost.measured
    assert "a reference: no GPU visible" in cost_lines(cost, [])[-1]


def test_moe_adapter_needs_alexnet_and_tinyimagenet(tmp_path, monkeypatch):
    # MoE-Adapter's DDAS reads AlexNet's ImageNet file from torch's cache (never downloaded) and TinyImageNet's train
    # split (its autoencoder 0): the doctor lists both, with their fixes, beside the order's own needs
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    entries = weight_entries("tiny", "ViT-B-16", "none", "tiny", captions_needed=False, alexnet="imagenet")
    assert [e.name for e in entries] == ["AlexNet (ImageNet)"]
    (finding,) = check_weights(entries)
    assert finding.status == "missing" and "alexnet-owt-7be5be79.pth" in finding.detail + finding.fix
    assert "--alexnet-weights" in finding.fix
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"placeholder")
    assert not check_weights(weight_entries("tiny", "ViT-B-16", "none", "tiny", captions_needed=False,
                                            alexnet="imagenet"))[0].problem
    result = diagnose(TrainConfig(order="I", method="moe-adapter", data_root=str(tmp_path / "data"),
                                  shards=str(tmp_path / "shards"), runs=str(tmp_path / "runs"), clip_weights="none"),
                      model="tiny")
    datasets = by_name(result.findings, "datasets")
    assert datasets["tinyimagenet"].status == "missing" and datasets["aircraft"].status == "missing"
    assert "AlexNet (ImageNet)" in by_name(result.findings, "weights")
