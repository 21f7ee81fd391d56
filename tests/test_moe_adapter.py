"""MoE-Adapter (pipeline/moe, methods/moe_adapter.py): the equivalence tests of the released code's pieces on a tiny
CLIP (adapter, block, gating, router input, DDAS decision, autoencoder, trainable set, schedules), the parameter counts
at real ViT-B/16 shapes (meta device, nothing allocated), and mini MTIL / mini-cil runs end to end with a kill/resume."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pipeline.models import ClipSpec, encode_images, encode_texts, load_clip
from pipeline.models import tokenizer as clip_tokenizer
from pipeline.moe import block as moe
from pipeline.moe.adapter import Adapter
from pipeline.moe.counts import alexnet_params, ddas_params, meta_moe_clip, moe_params
from pipeline.moe.ddas import AutoEncoder, ae_lr, choose_task, ddas_input, feature_dim, feature_extractor
from pipeline.moe.gating import mix_experts, noisy_top_k_gates

CPU = torch.device("cpu")


def tiny_clip():
    return load_clip(ClipSpec("tiny", "none", seed=0), CPU).eval()


def randomize_experts(model, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaptmlp_list" in name or "router_list" in name or "w_noise_list" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def test_adapter_is_the_scaled_bottleneck_and_starts_at_zero():
    torch.manual_seed(0)
    a = Adapter(8, bottleneck=4).eval()
    x = torch.randn(3, 5, 8)
    assert torch.equal(a(x), torch.zeros(3, 5, 8))  # down.bias, up.weight, up.bias are zero at init
    assert torch.equal(a.down_proj.bias, torch.zeros(4)) and a.down_proj.weight.abs().sum() > 0
    with torch.no_grad():
        for p in a.parameters():
            p.copy_(torch.randn(p.shape))
    wd, bd, wu, bu = a.down_proj.weight, a.down_proj.bias, a.up_proj.weight, a.up_proj.bias
    expected = 0.1 * (torch.relu(x @ wd.T + bd) @ wu.T + bu)
    assert torch.allclose(a(x), expected, atol=1e-6)


def test_gates_are_softmax_of_the_top_two_logits_with_and_without_noise():
    h0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    w_g = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 1.0, 0.5, 4.0]])
    w_n = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]])
    gates = noisy_top_k_gates(h0, w_g, w_n, k=2, noisy=False)
    # sample 0: logits (3, 1, 2, 0) -> experts 0, 2; sample 1: (0, 2, 1, 8) -> experts 3, 1
    top = torch.softmax(torch.tensor([3.0, 2.0]), 0)
    assert torch.allclose(gates[0], torch.tensor([top[0], 0, top[1], 0]))
    top = torch.softmax(torch.tensor([8.0, 2.0]), 0)
    assert torch.allclose(gates[1], torch.tensor([0, top[1], 0, top[0]]))
    eps = torch.tensor([[0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 0.0, -4.0]])
    noisy = noisy_top_k_gates(h0, w_g, w_n, k=2, noisy=True, eps=eps)
    # std = softplus(h0 W_n) + 0.01; logits = clean + eps·std
    std = F.softplus(h0 @ w_n) + 0.01
    logits = h0 @ w_g + eps * std
    assert math.isclose(float(logits[0, 1]), 1 + 5 * (math.log(2) + 0.01), rel_tol=1e-6)  # softplus(0) = ln 2
    for b in range(2):
        vals, idx = logits[b].topk(2)
        want = torch.zeros(4).scatter(0, idx, torch.softmax(vals, 0))
        assert torch.allclose(noisy[b], want)
    assert noisy[0, 1] > 0 and noisy[0, 2] == 0  # the noise promoted expert 1 over expert 2
    assert torch.allclose(noisy.sum(1), torch.ones(2)) and ((noisy > 0).sum(1) == 2).all()


def test_moe_block_with_zero_up_is_the_clip_block_bit_for_bit_in_both_towers():
    plain = tiny_clip()
    model = copy.deepcopy(plain)
    moe.install(model, moe.MoeSpec(experts=4, top_k=2, slots=3))
    model.eval()
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32)
    tokens = clip_tokenizer()(["a photo of a cat.", "two", "a handwritten seven."])
    with torch.no_grad():
        for slot in (0, 2):  # random down weights; the zero up projections make every expert output 0
            moe.set_route(model, slot)
            assert torch.equal(encode_images(model, images), encode_images(plain, images))
            assert torch.equal(encode_texts(model, tokens), encode_texts(plain, tokens))
    # the CLIP keys are unchanged: a CLIP checkpoint loads into the MoE model (the adapters aside)
    missing = set(model.state_dict()) - set(plain.state_dict())
    assert missing and all(any(k in m for k in ("adaptmlp_list", "router_list", "w_noise_list", "frozen"))
                           for m in missing)


def test_moe_block_equals_the_dense_mixture_and_route_minus_one_is_zero_shot_clip():
    plain = tiny_clip()
    model = copy.deepcopy(plain)
    moe.install(model, moe.MoeSpec(experts=4, top_k=2, slots=2))
    randomize_experts(model)
    model.eval()
    moe.set_route(model, 1)
    block, base = model.visual.transformer.resblocks[0], plain.visual.transformer.resblocks[0]
    torch.manual_seed(0)
    x = torch.randn(2, 17, 64)  # L > 1 tokens
    with torch.no_grad():
        h = x + base.attention(base.ln_1(x))
        gates = noisy_top_k_gates(h[:, 0, :], block.router_list[1], block.w_noise_list[1], 2, noisy=False)
        dense = h + base.mlp(base.ln_2(h)) + sum(gates[:, e].view(-1, 1, 1) * block.adaptmlp_list[e](h)
                                                 for e in range(4))
        out = block(x)
    assert torch.allclose(out, dense, atol=1e-5) and not torch.allclose(out, base(x), atol=1e-3)
    # the sparse dispatch (experts run on their samples only) equals the dense sum
    assert torch.allclose(mix_experts(block.adaptmlp_list, h, gates, 2),
                          sum(gates[:, e].view(-1, 1, 1) * block.adaptmlp_list[e](h) for e in range(4)), atol=1e-6)
    # task id -1: the zero-shot path, exactly CLIP's features in both towers
    moe.set_route(model, -1)
    images, tokens = torch.randn(2, 3, 32, 32), clip_tokenizer()(["a cat.", "a dog on grass."])
    with torch.no_grad():
        assert torch.equal(encode_images(model, images), encode_images(plain, images))
        assert torch.equal(encode_texts(model, tokens), encode_texts(plain, tokens))


def test_router_reads_token_zero_so_every_prompt_gets_the_same_text_gates_at_eval():
    model = tiny_clip()
    moe.install(model, moe.MoeSpec(experts=4, top_k=2, slots=1))
    randomize_experts(model)
    model.eval()
    seen: list[torch.Tensor] = []
    for _, _, block in moe.blocks(model):
        block.gates = (lambda h0, f=block.gates: seen.append(f(h0)) or seen[-1])
    tokens = clip_tokenizer()(["a photo of a cat.", "one", "a handwritten seven on a page."])
    with torch.no_grad():
        encode_texts(model, tokens)
        text_gates = list(seen)
        seen.clear()
        encode_images(model, torch.randn(3, 3, 32, 32))
    assert len(text_gates) == 2 and all(torch.equal(g, g[:1].expand_as(g)) for g in text_gates)
    assert not torch.equal(seen[0], seen[0][:1].expand_as(seen[0]))  # CLS tokens differ per image
    # and the gates depend on token 0 only: changing the other tokens of h leaves them unchanged
    block = model.visual.transformer.resblocks[1]
    h = torch.randn(2, 5, 64)
    g1 = noisy_top_k_gates(h[:, 0], block.router_list[0], block.w_noise_list[0], 2, False)
    h[:, 1:] = torch.randn(2, 4, 64)
    assert torch.equal(g1, noisy_top_k_gates(h[:, 0], block.router_list[0], block.w_noise_list[0], 2, False))


def test_ddas_decision_cases():
    thr = 0.0655
    everyone = list(range(5))
    assert choose_task([0.07, 0.08, 0.09, 0.1, 0.2], everyone, thr) == -1  # least error above the threshold
    assert choose_task([0.01, 0.02, 0.03, 0.04, 0.05], everyone, thr) == -1  # autoencoder 0 wins: zero-shot
    assert choose_task([0.05, 0.02, 0.03, 0.01, 0.05], everyone, thr) == 2  # argmin 3 -> task 2
    assert choose_task([0.05, 0.02, 0.02, 0.03, 0.05], everyone, thr) == 0  # a tie: the lowest index wins
    assert choose_task([0.02, 0.03, 0.02, 0.05, 0.05], everyone, thr) == -1  # tie with autoencoder 0
    assert choose_task([0.07, 0.0655, 0.07, 0.07, 0.07], everyone, thr) == 0  # equal to the threshold: kept
    # only autoencoder 0 and the trained ones compete: an untrained one's lower error is ignored
    assert choose_task([0.05, 0.03, 0.01, 0.04, 0.04], [0, 1], thr) == 0


def test_autoencoder_features_shapes_loss_and_lr():
    extractor = feature_extractor("none")
    assert feature_dim(extractor, 224) == 43264 and feature_dim(extractor, 32) == 256
    s = ddas_input(extractor, torch.randn(2, 3, 224, 224))
    assert s.shape == (2, 43264) and (s > 0).all() and (s < 1).all()
    assert type(extractor[-1]).__name__ == "Conv2d"  # features[:-2]: conv5 without its ReLU and max-pool
    ae = AutoEncoder(43264)
    assert sum(p.numel() for p in ae.parameters()) == 8_696_164 == ddas_params(43264, 1)
    small = AutoEncoder(6)
    x = torch.rand(3, 6)
    assert torch.allclose(small.loss(x), ((small(x) - x) ** 2).sum() / 18)  # mean over batch × features
    assert ae_lr(0, 7) == 0.01 and ae_lr(69, 7) == 0.01 and math.isclose(ae_lr(70, 7), 0.001)
    assert math.isclose(ae_lr(140, 7), 1e-4)
    assert alexnet_params() == 2_469_696


def test_alexnet_weights_never_download(tmp_path, monkeypatch):
    from pipeline.moe.ddas import AlexNetNotFoundError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(AlexNetNotFoundError, match=r"(?s)alexnet-owt-7be5be79.pth does not exist.*--alexnet-weights"):
        feature_extractor("imagenet")
    assert not any(tmp_path.rglob("*.pth"))
    with pytest.raises(AlexNetNotFoundError, match="--alexnet-weights /nope/alex.pth: no such file"):
        feature_extractor("/nope/alex.pth")
    a, b = feature_extractor("none", seed=3), feature_extractor("none", seed=3)  # random init: seeded, reproducible
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    # a file of torchvision's AlexNet layout: the convolutions are read from it (the classifier is ignored)
    torch.save({**{f"features.{k}": v * 2 for k, v in a.state_dict().items()}, "classifier.1.weight": torch.zeros(1)},
               tmp_path / "alex.pth")
    loaded = feature_extractor(str(tmp_path / "alex.pth"))
    assert all(torch.equal(x * 2, y) for x, y in zip(a.state_dict().values(), loaded.state_dict().values(),
                                                      strict=True))
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training


def test_trainable_set_per_task_and_the_freeze_list():
    model = tiny_clip()
    moe.install(model, moe.MoeSpec(experts=5, top_k=2, slots=3))
    randomize_experts(model)
    params = moe.trainable(model, 0, freeze=True)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(("adaptmlp_list" in names[id(p)]) or names[id(p)].endswith((".router_list.0", ".w_noise_list.0"))
               for p in params)
    assert not any(p.requires_grad for n, p in model.named_parameters() if not any(
        k in n for k in ("adaptmlp_list", "router_list", "w_noise_list")))  # all of CLIP is frozen
    assert len(params) == 4 * (5 * 4 + 2)  # 4 blocks × (5 experts × 4 tensors + gate + noise)
    model.train()
    tokens = clip_tokenizer()(["a cat.", "a dog."])
    img, txt = encode_images(model, torch.randn(4, 3, 32, 32)), encode_texts(model, tokens)
    (img.sum() + txt.sum()).backward()
    for n, p in model.named_parameters():
        if ".router_list.1" in n or ".w_noise_list.2" in n or "logit_scale" in n or ".mlp." in n:
            assert p.grad is None, n
    assert all(int(b.counts.sum()) == 2 * (4 if tower == "image" else 2) for tower, _, b in moe.blocks(model))
    moe.freeze_most_used(model, 0, 2)
    for _, _, b in moe.blocks(model):
        assert int(b.frozen[0].sum()) == 2 and set(b.frozen[0].nonzero().flatten().tolist()) == set(
            b.counts.topk(2).indices.tolist())
    model.zero_grad(set_to_none=True)
    params = moe.trainable(model, 1, freeze=True)
    for _, _, b in moe.blocks(model):
        for e, expert in enumerate(b.adaptmlp_list):
            assert all(p.requires_grad != bool(b.frozen[0, e]) for p in expert.parameters())
        assert b.router_list[1].requires_grad and not b.router_list[0].requires_grad
    assert len(params) == 4 * (3 * 4 + 2)  # two experts per block frozen by task 0
    assert len(moe.trainable(model, 1, freeze=False)) == 4 * (5 * 4 + 2)  # the CIL variant freezes nothing


def test_schedules_and_lrs():
    from pipeline.methods.moe_adapter import LR_BY_DATASET, MoeAdapter
    from pipeline.training.config import TrainConfig, lr_at

    mtil = MoeAdapter(TrainConfig(order="I", method="moe-adapter"))
    steps, span = mtil.schedule(1000)
    assert (steps, span) == (1001, 1000) and mtil.config.warmup == 100
    base = mtil.lr_for("aircraft")
    lrs = [lr_at(s, base, 100, span) for s in (0, 99, 100, 1000)]
    assert base == 5e-3 and lrs[0] == base / 100 and lrs[1] == base and lrs[2] == base and lrs[3] == 0
    assert [mtil.lr_for(t) for t in ("eurosat", "mnist", "cifar100", "oxford_pet")] == [1e-4, 1e-4, 5e-3, 1e-3]
    assert len(LR_BY_DATASET) == 11
    cil = TrainConfig(order="cifar100-10", method="moe-adapter")
    assert (cil.warmup, cil.lr, cil.batch_size, cil.label_smoothing, cil.weight_decay, cil.moe_experts,
            cil.router_noise_at_eval, cil.ddas, cil.moe_freeze) == (30, 1e-3, 128, 0.0, 0.0, 2, True, False, False)
    assert TrainConfig(order="cifar100-50", method="moe-adapter").batch_size == 64
    tiny = TrainConfig(order="tinyimagenet-10", method="moe-adapter")
    assert (tiny.batch_size, tiny.weight_decay, tiny.label_smoothing) == (64, 0.0, 0.0)
    assert TrainConfig(order="I", method="moe-adapter").alexnet_weights == "imagenet"
    assert TrainConfig(order="mini", method="moe-adapter").alexnet_weights == "none"
    assert TrainConfig(order="cifar100-10", method="gift").batch_size == 64


def test_parameter_counts_at_vit_b16():
    assert moe_params(meta_moe_clip(moe.MoeSpec(experts=22, top_k=2, slots=11))) == 51_059_712
    assert moe_params(meta_moe_clip(moe.MoeSpec(experts=2, top_k=2, slots=1))) == 4_027_392
    assert 51_059_712 + ddas_params(43264, 12) + alexnet_params() == 157_883_376


def test_noise_at_evaluation_follows_the_option():
    model = tiny_clip()
    moe.install(model, moe.MoeSpec(experts=2, top_k=2, slots=1))
    randomize_experts(model)
    model.eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(encode_images(model, images), encode_images(model, images))  # MTIL: no noise at eval
        moe.set_noise_at_eval(model, True)  # CIL as its code runs: the noise stays on
        assert not torch.equal(encode_images(model, images), encode_images(model, images))


# ---- end to end on the mini benchmarks (tiny CLIP, a random AlexNet of the real architecture) ----

MOE_MINI = dict(method="moe-adapter", iterations=4, moe_experts=4, ddas_steps=3, ddas_zero_shot_steps=3, warmup=2)


def _moe_state(run_dir):
    from safetensors.torch import load_file

    state = json.loads((run_dir / "state.json").read_text())
    return state, load_file(run_dir / state["checkpoint"])


def test_mini_mtil_run_keeps_experts_routers_freeze_lists_and_autoencoders(workspace, caplog):
    import logging

    from pipeline.methods import get_method
    from pipeline.training.train import train
    from tests.conftest import mini_config

    caplog.set_level(logging.INFO, logger="gift")
    run_dir = train(mini_config(workspace, name="moe", **MOE_MINI), device=CPU)
    state, ckpt = _moe_state(run_dir)
    acc = np.load(run_dir / "acc_matrix.npy")
    assert acc.shape == (3, 3) and np.isfinite(acc).all()
    assert ckpt["ddas.trained"].tolist() == [True] * 4  # autoencoder 0 (mini-base) and one per task
    assert ckpt["ddas.autoencoders.0.encoder.0.weight"].shape == (100, 256)  # 32² images: 256 AlexNet features
    frozen = [v for k, v in ckpt.items() if k.endswith(".frozen")]
    assert len(frozen) == 4 and all(f.shape == (3, 4) and f.sum(1).tolist() == [2, 2, 2] for f in frozen)
    assert ckpt["visual.transformer.resblocks.1.router_list.2"].abs().sum() > 0  # the last task's router trained
    # 5 steps per task (4 + the step at lr 0) in the metrics log, the last at lr 0
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if r["task"] == "mini-a"][-1] == 4 and steps[-1]["lr"] == 0
    extra = get_method("moe-adapter").extra(run_dir, json.loads((run_dir / "config.json").read_text()), state)
    moe_n = sum(v.numel() for k, v in ckpt.items() if any(x in k for x in ("adaptmlp", "router_list", "w_noise")))
    assert extra.count == moe_n + 4 * (2 * 100 * 256 + 100 + 256) + 2_469_696 and extra.bytes == 4 * extra.count
    assert "4 autoencoders" in extra.what
    assert "DDAS after task 3: batches per route" in caplog.text


def test_killed_moe_run_resumes_to_the_uninterrupted_matrix(workspace, tmp_path):

    from pipeline.training.train import train
    from tests.conftest import mini_config
    from tests.test_train import kill_in_task_2

    root, _ = workspace
    held = {**MOE_MINI, "iterations": 6}  # kill_in_task_2 holds the run at step 6 of task 2 (of 7)
    whole = train(mini_config(workspace, name="moe-whole", **held), device=CPU)
    kill_in_task_2(mini_config(workspace, name="moe-killed", **held), tmp_path / "in-task-2")
    killed = root / "runs" / "moe-killed"
    assert json.loads((killed / "state.json").read_text())["finished"] == 1
    train(mini_config(workspace, name="moe-killed", **held), device=CPU)
    assert np.array_equal(np.load(whole / "acc_matrix.npy"), np.load(killed / "acc_matrix.npy"))
    a, b = _moe_state(whole)[1], _moe_state(killed)[1]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_mini_cil_run_one_router_two_experts_no_freezing(workspace):
    from pipeline.methods import get_method
    from pipeline.training.train import train
    from tests.conftest import mini_config

    config = mini_config(workspace, order="mini-cil", method="moe-adapter", name="moe-cil", epochs=1.0)
    assert (config.moe_experts, config.router_noise_at_eval, config.ddas, config.moe_freeze) == (2, True, False, False)
    run_dir = train(config, device=CPU)
    state, ckpt = _moe_state(run_dir)
    assert len(state["seen"]) == 5 and all(0 <= s <= 100 for s in state["seen"])
    assert not any(k.startswith("ddas.") for k in ckpt)
    assert {k.split(".router_list.")[1] for k in ckpt if ".router_list." in k} == {"0"}
    assert all(not v.any() for k, v in ckpt.items() if k.endswith(".frozen"))
    assert ckpt["transformer.resblocks.0.adaptmlp_list.1.up_proj.weight"].abs().sum() > 0
    extra = get_method("moe-adapter").extra(run_dir, {}, state)
    # 2 experts (2·64·64 + 64 + 64) and one gate + noise slot (2 · 64 · 2) in each of 4 blocks; no autoencoders
    assert extra.count == 4 * (2 * (2 * 64 * 64 + 64 + 64) + 2 * 64 * 2) and extra.what.startswith("MoE 0.1 M")


def test_cli_moe_adapter_bad_input_is_one_clear_line(tmp_path):
    import os

    from tests.conftest import run_gift

    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}
    r = run_gift("train", "--order", "I", "--method", "moe-adapter", "--clip", "tiny", "--clip-weights", "none",
                 "--runs", tmp_path / "runs", "--data-root", tmp_path, env=env)
    assert r.returncode != 0 and "alexnet-owt-7be5be79.pth does not exist" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "runs").exists()
    from pipeline.methods.moe_adapter import MoeAdapter
    from pipeline.training.config import TrainConfig

    with pytest.raises(ValueError, match="--moe-top-k 2 must be between 1 and --moe-experts 1"):
        MoeAdapter.check(TrainConfig(order="mini", method="moe-adapter", moe_experts=1))
    with pytest.raises(ValueError, match=r"its CIL variant has one router \(pass --no-ddas\)"):
        MoeAdapter.check(TrainConfig(order="mini-cil", method="moe-adapter", ddas=True))
    with pytest.raises(ValueError, match="--ddas-eval-batch must be at least 1, got 0"):
        TrainConfig(order="mini", method="moe-adapter", ddas_eval_batch=0)
    with pytest.raises(ValueError, match="TinyImageNet's train split: pass --data-root"):
        MoeAdapter.check(TrainConfig(order="II", method="moe-adapter", alexnet_weights="none"))


def test_counted_flops_of_the_experts_router_and_ddas():
    from pipeline.moe.flops import ddas_flops, image_forward_flops, moe_step_flops

    spec = moe.MoeSpec(experts=4, top_k=2, slots=1)
    # tiny image tower: 2 blocks, 17 tokens of width 64; per token an expert is down + up = 2·(2·64·64) FLOPs, two
    # experts per sample; the router adds h0 @ W_g = 2·64·4 per sample (no noise at evaluation)
    b = 3
    extra = image_forward_flops(spec, b, "tiny") - image_forward_flops(spec, b, "tiny", slot=-1)
    assert extra == 2 * (2 * b * 17 * 4 * 64 * 64 + 2 * b * 64 * 4)
    # DDAS per batch: each autoencoder is 2·256·100 FLOPs per layer and sample at 32² (256 AlexNet features)
    assert ddas_flops(batch=5, autoencoders=3, image=32) - ddas_flops(batch=5, autoencoders=1, image=32) == (
        2 * 5 * 2 * (2 * 256 * 100))
    assert moe_step_flops("mini-a", spec, batch=4, arch="tiny") > image_forward_flops(spec, 4, "tiny")
