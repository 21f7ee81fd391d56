"""CLTS stage 2 (`gift train --method clts`) end to end on mini-cil: tiny-BLIP captions of the digits, images
rendered from them by the `reference` generator (a real held-out digit of the caption's class), task heads and a
router on frozen tiny-CLIP features; routing, resume, the report and memory table, `gift table`'s memory column,
GIFT's --replay-captions, and bad input through the real CLI."""

from __future__ import annotations

import csv
import inspect
import io
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.captioning.caption import caption_task
from pipeline.clts.heads import CltsModel, balanced, predict, predict_oracle
from pipeline.clts.memory import human, memory_rows
from pipeline.datasets import catalog
from pipeline.generation.generate import generate, resolve_spec
from pipeline.methods import METHODS
from pipeline.replay.captioned import find_renders, write_captions_record
from pipeline.tables import presets
from pipeline.tables import table as tbl
from pipeline.training.config import TrainConfig
from pipeline.training.train import Progress, train
from shards.captions import load_caption_set
from shards.errors import ShardSetError
from tests.conftest import run_gift
from tests.test_report import table_row

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def clts_root(workspace, tmp_path_factory):
    """A caption set of mini-digits (tiny BLIP, 4 random training images per class), its renders (4 per caption,
    `reference`), and the class-prompt base set GIFT's --replay-captions pool starts from, under one --shards root."""
    root, _ = workspace
    out = tmp_path_factory.mktemp("clts")
    reference = root / "reference"
    made = caption_task("mini-digits", out / "captions", per_class=4, selection="random", captioner="tiny", device=CPU)
    captions = load_caption_set(made.set_path)
    generate(resolve_spec("mini-digits", model=f"reference:{reference}", captions=captions, per_caption=4, size=32,
                          device=CPU), out / "shards", device=CPU, captions=captions)
    generate(resolve_spec("mini-cil-base", model=f"reference:{reference}", per_class=16, size=32, device=CPU),
             out / "shards", device=CPU)
    return out, captions


def config(workspace, clts_root, **kw) -> TrainConfig:
    (_, weights), (out, _) = workspace, clts_root
    base = dict(order="mini-cil", method="clts", runs=str(out / "runs"), shards=str(out / "shards"),
                captions=str(out / "captions"), clip_arch="tiny", clip_weights=str(weights), workers=0)
    merged = {**base, **kw}
    # the caption renders here are real held-out digits (`reference`): taken only as the ablation, --real-renders
    renders = merged["method"] == "clts" or merged.get("replay_captions")
    return TrainConfig(**{"real_renders": bool(renders), **merged})


def load(run_dir):
    state = json.loads((run_dir / "state.json").read_text())
    acc = np.array([[np.nan if v is None else v for v in row] for row in state["acc"]], dtype=float)
    return acc, state


def old_classes(acc: np.ndarray) -> float:
    """Mean accuracy on the earlier steps' classes after steps 2..T (one prediction over every seen class)."""
    return float(np.mean([np.mean(acc[i, :i]) for i in range(1, len(acc))]))


@pytest.fixture(scope="module")
def runs(workspace, clts_root):
    """The run directories of clts and finetune on mini-cil (finetune at the setting's defaults)."""
    return {"clts": train(config(workspace, clts_root, name="clts"), device=CPU),
            "finetune": train(config(workspace, clts_root, method="finetune", name="finetune", batch_size=32),
                              device=CPU)}


def test_clts_routes_above_chance_and_keeps_old_classes_better_than_finetune(runs, clts_root):
    run_dir = runs["clts"]
    acc, state = load(run_dir)
    assert acc.shape == (5, 5) and state["finished"] == 5
    # The router sends the seen classes' test images to their own step far more often than chance (1 / steps seen).
    for k, router in enumerate(state["router"]):
        assert router > 100 / (k + 1) + (10 if k else -1), (k, state["router"])
    # The oracle (true task's head) bounds hard routing: a wrong route can only cost accuracy.
    assert all(o >= s - 1e-9 for o, s in zip(state["oracle"], state["seen"], strict=True))
    finetune, fstate = load(runs["finetune"])
    print("clts seen", np.round(state["seen"], 1), "router", np.round(state["router"], 1), "old", old_classes(acc))
    print("finetune seen", np.round(fstate["seen"], 1), "old", old_classes(finetune))
    assert old_classes(acc) > old_classes(finetune) + 10
    # What the run directory holds: heads 1..5 (2 classes each) and the last router (5 steps) in the checkpoint,
    # both losses in metrics.jsonl, the report with CLTS's section and memory table, the caption sets it used.
    weights = load_file(run_dir / state["checkpoint"])
    assert [weights[f"heads.{t}.weight"].shape[0] for t in range(5)] == [2] * 5 and "heads.5.weight" not in weights
    assert weights["router.2.weight"].shape[0] == 5
    logged = set().union(*(json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()))
    assert {"head", "router"} <= logged
    md = (run_dir / "results.md").read_text()
    assert "## CLTS: router, task heads and memory" in md and "### Memory after mini-cil/05" in md
    captions = json.loads((run_dir / "captions.json").read_text())["sets"]["mini-digits"]
    assert captions["caption_hash"] == clts_root[1].spec_hash and captions["generator"] == "reference"
    total = sum(len(r.caption.encode()) for r in clts_root[1].records)
    memory = (run_dir / "memory.csv").read_text().splitlines()
    assert memory[1] == f"captions kept (UTF-8),40,{total},1.00"
    # beside the captions, the heads and router it keeps, counted from the checkpoint: 5 heads of (D·2 + 2) and a
    # router D -> 512 -> 5, on the tiny CLIP's feature width D
    dim = weights["heads.0.weight"].shape[1]
    params = 5 * (dim * 2 + 2) + (dim * 512 + 512) + (512 * 5 + 5)
    assert memory[2] == f"learned parameters beyond CLIP: 5 task heads + router (items = parameters),{params}," \
                        f"{4 * params},{4 * params / total:.2f}"
    assert memory[3].startswith(f"captions + learned parameters,40,{total + 4 * params},")
    assert json.loads((run_dir / "config.json").read_text())["real_renders"] is True
    assert "- Replayed: real images (--real-renders ablation)\n" in md
    assert f"- Extra parameters (beyond the one CLIP every method has): {human(4 * params)} ({params:,} parameters: " \
           "5 task heads + router)\n" in md
    steps = (run_dir / "clts.csv").read_text().splitlines()
    assert len(steps) == 6 and steps[-1].endswith(f",40,{total}")


def test_an_interrupted_clts_run_resumes_to_the_uninterrupted_result(workspace, clts_root):
    """Stopped inside step 3, the same command continues after step 2: the same matrix, router and oracle numbers,
    and the same heads and router weights as an uninterrupted run."""

    class Stop(Progress):
        def start_task(self, index, task, steps):
            if index == 2:
                raise KeyboardInterrupt

    whole = train(config(workspace, clts_root, name="clts-whole", routing="soft"), device=CPU)
    with pytest.raises(KeyboardInterrupt):
        train(config(workspace, clts_root, name="clts-cut", routing="soft"), progress=Stop(), device=CPU)
    assert load(clts_root[0] / "runs" / "clts-cut")[1]["finished"] == 2
    resumed = train(config(workspace, clts_root, name="clts-cut", routing="soft"), device=CPU)
    (a, s), (b, t) = load(whole), load(resumed)
    np.testing.assert_array_equal(a, b)
    assert [s[k] for k in ("seen", "router", "oracle")] == [t[k] for k in ("seen", "router", "oracle")]
    w, r = load_file(whole / s["checkpoint"]), load_file(resumed / t["checkpoint"])
    assert w.keys() == r.keys() and all(torch.equal(w[k], r[k]) for k in w)


def test_hard_and_soft_routing_by_hand():
    """Two heads over 2-d features; the router is made to prefer task 0 a little for x = (1, 0). Hard routing
    follows the router to head 0's class; soft routing weighs p(t|x)·p(c|x,t): head 1 is far surer, so its class
    wins. The oracle uses the given task."""
    model = CltsModel(2, 4)
    with torch.no_grad():
        for head, w in ((model.add_head(2), [[1.0, 0.0], [0.0, 0.0]]), (model.add_head(2), [[0.0, 0.0], [9.0, 0.0]])):
            head.weight.copy_(torch.tensor(w))
            head.bias.zero_()
        router = model.new_router(2)
        for p in router.parameters():
            p.zero_()
        router[0].weight[0, 0] = 1.0  # hidden unit 0 = relu(x0)
        router[2].weight[0, 0] = 0.2  # task 0 logit = 0.2 x0, task 1 logit = 0
    x = torch.tensor([[1.0, 0.0]])
    classes = [(3, 7), (1, 5)]
    p0 = torch.sigmoid(torch.tensor(0.2))  # p(task 0 | x)
    head0 = torch.softmax(torch.tensor([1.0, 0.0]), 0)  # p(c | x, task 0): class 3 at 0.73
    head1 = torch.softmax(torch.tensor([0.0, 9.0]), 0)  # p(c | x, task 1): class 5 at 0.9999
    assert p0 * head0[0] < (1 - p0) * head1[1]
    assert predict(model, x, classes, "hard")[0].tolist() == [3]
    assert predict(model, x, classes, "soft")[0].tolist() == [5]
    assert predict(model, x, classes, "soft")[1].tolist() == [0]  # the routed task is the router's either way
    assert predict_oracle(model, x, torch.tensor([1]), classes).tolist() == [5]
    with pytest.raises(ValueError, match="hard or soft"):
        predict(model, x, classes, "sharp")


def test_router_data_is_balanced_per_task():
    """Task sizes 2, 5 and 3: each epoch takes 5 samples of every task (small tasks cycled, each member once per
    pass), so every task weighs the same; a fractional epoch cuts the last one."""
    groups = [torch.tensor([0, 1]), torch.tensor([10, 11, 12, 13, 14]), torch.tensor([20, 21, 22])]
    stream = balanced(groups, 2, torch.Generator().manual_seed(0))
    assert len(stream) == 2 * 15
    for epoch in stream.view(2, 15):
        task = epoch // 10
        assert torch.bincount(task).tolist() == [5, 5, 5]
        assert set(epoch[task == 1].tolist()) == {10, 11, 12, 13, 14}
    for members in groups:
        counts = torch.bincount(stream[torch.isin(stream, members)] - members[0])
        assert counts.max() - counts.min() <= 2  # cycled: no member drawn more than one pass ahead of another
    assert len(balanced(groups, 0.5, torch.Generator().manual_seed(0))) == 8


def test_memory_ratio_of_seq_cifar10_defaults(clts_root):
    """seq-cifar10 with `gift caption`'s default 10 captions per class (100 captions): against as many 32×32×3 uint8
    images at BLIP base's caption length (the paper's ≈49 B), ≥ 50×; against a 500-image replay buffer even with tiny
    BLIP's captions at the default decoding (≤ 30 new tokens; random weights run to the limit: a pessimistic
    length), ≥ 50×."""
    setting = catalog.get_setting("seq-cifar10")
    per_class = inspect.signature(caption_task).parameters["per_class"].default
    captions = per_class * len(setting.classnames)
    records = clts_root[1].records
    mean = sum(len(r.caption.encode()) for r in records) / len(records)
    assert mean > 50  # long, worst-case captions
    rows = memory_rows(captions, round(captions * mean), catalog.native_shape(setting.dataset))
    kept, same, buffer200, buffer500 = rows
    assert (kept.items, same.items, same.bytes, buffer200.bytes, buffer500.bytes) == \
        (100, 100, 100 * 3072, 200 * 3072, 500 * 3072)
    assert same.ratio == pytest.approx(3072 / mean, rel=1e-2) and buffer500.ratio == pytest.approx(2.5 * buffer200.ratio)
    assert buffer500.ratio >= 50, buffer500
    # The paper's 63× is images against as many captions: 3,072 B per CIFAR image over BLIP base's ~49 B captions.
    paper = memory_rows(captions, captions * 49, catalog.native_shape(setting.dataset))[1]
    assert paper.ratio == pytest.approx(3072 / 49) and paper.ratio >= 50
    tiny = memory_rows(100, 5000, catalog.native_shape("tinyimagenet"))
    assert tiny[1].bytes == 100 * 64 * 64 * 3 and tiny[1].ratio == pytest.approx(245.76)


def test_clts_parameters_at_vit_b16_widths_beside_seq_cifar100s_images():
    """The learned parameters CLTS keeps at ViT-B/16's feature width (512, from open_clip's config), counted on the
    CltsModel itself: a 10-class head is 512·10 + 10 = 5,130 parameters (20,520 B in fp32), the router after 10 steps
    512·512 + 512 + 512·10 + 10 = 267,786 (1,071,144 B); on seq-cifar100 (10 steps of 10) 1,276,344 B in all, about
    1.3 MB with its 1,000 captions against 3,072,000 B of as many raw CIFAR images."""
    from pipeline.clts.params import clip_feature_dim, planned_parts

    dim = clip_feature_dim("ViT-B-16")
    assert dim == 512
    one = planned_parts(dim, [10])
    assert (one.heads, one.head_params, one.router_params, one.bytes) == (1, 5_130, 0, 20_520)
    setting = catalog.get_setting("seq-cifar100")
    parts = planned_parts(dim, setting.sizes)
    assert (parts.heads, parts.head_params, parts.router_params) == (10, 51_300, 267_786)
    assert parts.bytes == 4 * (51_300 + 267_786) == 1_276_344 and parts.what == "10 task heads + router"
    rows = memory_rows(1000, 1000 * 49, catalog.native_shape(setting.dataset),
                       params=(parts.what, parts.params, parts.bytes))
    assert rows[2].bytes == 1_276_344 + 49_000 and rows[3].bytes == 3_072_000  # ≈ 1.3 MB against 3.07 MB
    with pytest.raises(ValueError, match="unknown CLIP architecture"):
        clip_feature_dim("ViT-Q-99")


def test_table_sets_clts_beside_the_others_with_the_memory_each_keeps(workspace, clts_root, runs):
    """`gift table`'s CIL layout has a memory column: caption bytes for clts (and GIFT --replay-captions), the
    exemplars' raw bytes for icarl, nothing for finetune. GIFT replaying caption renders keeps earlier classes better
    than finetune. The seq-* settings' default group is finetune, icarl, gift, gift with caption replay, clts."""
    out, caption_set = clts_root
    icarl = train(config(workspace, clts_root, method="icarl", name="icarl", iterations=2, batch_size=16,
                         memory_size=20), device=CPU)
    gift = train(config(workspace, clts_root, method="gift", replay_captions=True, name="gift-captions",
                        batch_size=32, synthetic_batch=32, synthetic_budget=96), device=CPU)
    used = json.loads((gift / "captions.json").read_text())["sets"]
    assert set(used) == {"mini-digits"} and used["mini-digits"]["caption_hash"] == caption_set.spec_hash
    assert old_classes(load(gift)[0]) > old_classes(load(runs["finetune"])[0])
    table = tbl.build_table("mini-cil", [runs["finetune"], icarl, gift, runs["clts"]])
    md = tbl.write_table(table, out / "runs")["md"].read_text()
    total = sum(len(r.caption.encode()) for r in caption_set.records)
    cells = {name: table_row(md, f"`{name}`") for name in ("finetune", "icarl", "gift-captions", "clts")}
    kept = {name: row[-3] for name, row in cells.items()}  # ... | replayed | memory kept | extra parameters | status
    assert kept["finetune"] == "nothing"
    assert kept["icarl"] == "1.3 kB (20 exemplars, 8×8×1 uint8)"  # 20 × 64 B
    assert kept["clts"] == kept["gift-captions"] == f"{human(total)} (40 captions, UTF-8)"
    rows = list(csv.DictReader(io.StringIO((out / "runs" / "table-mini-cil.csv").read_text())))
    assert {row["method"]: row["memory_bytes"] for row in rows} == \
        {"finetune": "0", "icarl": "1280", "gift-captions": str(total), "clts": str(total)}
    # what each replayed, in the table itself: the caption "renders" here are real digits, and the rows say so
    assert {name: row[-4] for name, row in cells.items()} == {
        "finetune": "nothing", "icarl": "exemplars (real images)",
        "gift-captions": "real images (--real-renders ablation)", "clts": "real images (--real-renders ablation)"}
    # the learned parameters beyond CLIP: clts's 5 heads and router, from its checkpoint; none for the others
    saved = load_file(runs["clts"] / load(runs["clts"])[1]["checkpoint"])
    params = sum(t.numel() for t in saved.values())
    assert {name: row[-2] for name, row in cells.items()} == {
        "finetune": "none", "icarl": "none", "gift-captions": "none",
        "clts": f"{human(4 * params)} ({params:,} parameters: 5 task heads + router)"}
    assert {row["method"]: (row["extra_params"], row["extra_bytes"]) for row in rows} == {
        "finetune": ("0", "0"), "icarl": ("0", "0"), "gift-captions": ("0", "0"), "clts": (str(params), str(4 * params))}
    assert {row["method"]: row["replayed"] for row in rows}["clts"] == "real images (--real-renders ablation)"
    assert [p.name for p in presets.resolve_presets(presets.default_methods("seq-cifar100"))] == \
        ["finetune", "icarl", "gift", "gift-captions", "clts"]
    assert presets.default_methods("cifar100-10") == "cil" and "clts" in METHODS


def test_cli_bad_input(workspace, clts_root, tmp_path):
    root, weights = workspace
    common = ["--runs", tmp_path / "runs", "--clip", "tiny", "--clip-weights", weights, "--device", "cpu",
              "--workers", "0", "--method", "clts"]
    with pytest.raises(ValueError, match="clts is a class-incremental method"):
        train(config(workspace, clts_root, order="mini", name="not-cil"), device=CPU)
    with pytest.raises(ValueError, match="--routing 'sharp' is not one of hard, soft"):  # TrainConfig's own check
        train(config(workspace, clts_root, routing="sharp", name="sharp"), device=CPU)
    r = run_gift("train", "--order", "mini-cil", "--captions", tmp_path / "none", "--shards", clts_root[0] / "shards",
                 *common)
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "no complete caption set of mini-digits" in err and "make caption TASK=mini-digits" in err
    r = run_gift("train", "--order", "mini-cil", "--captions", clts_root[0] / "captions", "--shards",
                 root / "shards", *common)
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "make generate TASK=mini-digits CAPTIONS=" in err
    # Caption "renders" of the `reference` generator are real images: refused without --real-renders, for clts and
    # for GIFT's --replay-captions, before any run directory exists (the corrected command then runs).
    r = run_gift("train", "--order", "mini-cil", "--captions", clts_root[0] / "captions", "--shards",
                 clts_root[0] / "shards", "--name", "refused", *common)
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout
    assert "--method clts: the images of the caption set" in err and "`reference` generator, real images" in err
    assert "pass --real-renders" in err
    with pytest.raises(ShardSetError, match="--replay-captions: .* pass --real-renders"):
        train(config(workspace, clts_root, method="gift", replay_captions=True, real_renders=False,
                     runs=str(tmp_path / "runs"), name="refused-gift", batch_size=32, synthetic_batch=32), device=CPU)
    with pytest.raises(ValueError, match="--real-renders applies to --method clts and --replay-captions"):
        config(workspace, clts_root, method="finetune", real_renders=True)
    assert not (tmp_path / "runs").exists()  # nothing written before the inputs are found
    # Resuming a run with --captions / --shards giving another caption set or render is refused, naming both.
    run_dir = tmp_path / "resumed"
    run_dir.mkdir()
    renders = find_renders(clts_root[0] / "shards", clts_root[1])
    write_captions_record(run_dir, {"mini-digits": renders})
    write_captions_record(run_dir, {"mini-digits": renders})  # the same sets: fine
    record = json.loads((run_dir / "captions.json").read_text())
    record["sets"]["mini-digits"]["caption_hash"] = "0" * 64
    (run_dir / "captions.json").write_text(json.dumps(record))
    with pytest.raises(ShardSetError, match="was trained on the caption set"):
        write_captions_record(run_dir, {"mini-digits": renders})


def test_the_cli_runs_clts_with_soft_routing_and_tracks_router_and_oracle(workspace, clts_root, runs):
    """`gift train --method clts --routing soft --report-to tensorboard` (the features cached by the runs above):
    TensorBoard holds the head and router losses and, per step, the router and oracle accuracy."""
    from tests.test_tracking import tensorboard

    (_, weights), (out, _) = workspace, clts_root
    r = run_gift("train", "--order", "mini-cil", "--method", "clts", "--routing", "soft", "--name", "clts-soft",
                 "--real-renders",
                 "--runs", out / "runs", "--shards", out / "shards", "--captions", out / "captions", "--clip", "tiny",
                 "--clip-weights", weights, "--device", "cpu", "--workers", "0", "--report-to", "tensorboard")
    assert r.returncode == 0, r.stderr
    _, state = load(out / "runs" / "clts-soft")
    assert json.loads((out / "runs" / "clts-soft" / "config.json").read_text())["routing"] == "soft"
    events = tensorboard(out / "runs" / "clts-soft" / "tensorboard")
    scalars = events.Tags()["scalars"]
    assert {"train/head", "train/router", "summary/task_avg"} <= set(scalars)
    assert [e.value for e in events.Scalars("accuracy/router")] == pytest.approx(state["router"])
    assert [e.value for e in events.Scalars("accuracy/oracle")] == pytest.approx(state["oracle"])
