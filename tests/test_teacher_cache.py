"""Teacher features computed once (GIFT's draw, EWC's Fisher, ZSCL's captions) against the same step computed
on the fly; every rank of a torchrun job holding the whole matrix."""

import functools
import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pipeline.bench.step import OnTheFlyGift
from pipeline.dist import Dist
from pipeline.methods import TaskContext, frozen
from pipeline.methods.base import student_features
from pipeline.methods.ewc import EWC
from pipeline.methods.gift import Gift
from pipeline.methods.zscl import ZSCL, caption_features
from pipeline.models import ClipFeatures, ClipSpec, encode_images, load_clip, normalize_uint8, tokenizer
from pipeline.replay.streams import SynthBatch, SyntheticStream
from pipeline.replay.synthetic import SyntheticBatchSource
from pipeline.training.config import TrainConfig
from pipeline.training.step import run_step

CPU = torch.device("cpu")
PROMPTS = ["a photo of a cat.", "a photo of a dog.", "a photo of a container ship.", "a photo of a tree frog."]


def source(n: int = 12, full_width: bool = False) -> SyntheticBatchSource:
    g = torch.Generator().manual_seed(0)
    prompts = [PROMPTS[k % 3 if k < 6 else k % 4] for k in range(n)]  # duplicates: ITA's shared positives
    tokens = tokenizer(trim=not full_width)(prompts)
    return SyntheticBatchSource(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), tokens, prompts)


def context(config: TrainConfig, synthetic: SyntheticBatchSource, seed: int = 1,
            dtype: torch.dtype = torch.float32) -> TaskContext:
    student = load_clip(ClipSpec("tiny", "none", seed=seed)).to(dtype)
    initial = {k: v + 0.02 * torch.randn_like(v) if v.is_floating_point() else v  # a teacher ≠ the student
               for k, v in student.state_dict().items()}
    params = [p for p in student.parameters() if p.requires_grad]
    return TaskContext(0, "mini-a", student, initial, config, CPU, params, [p.detach().clone() for p in params],
                       synthetic=synthetic)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp(min=1e-30)).item()


def step_both_ways(distill: str, dtype: torch.dtype, same_width: bool = False):
    """Losses and gradients of two whole steps (replay terms, AWC, CE): the cached path (teacher features of the
    draw once, ids trimmed) and the step before issue 11 (teacher forward of every batch, ids at 77 columns, or
    trimmed with ``same_width``)."""
    config = TrainConfig(teacher="initial", synthetic_batch=6, distill=distill)
    results = []
    for method_cls, full in ((Gift, False), (OnTheFlyGift, not same_width)):
        ctx = context(config, source(full_width=full), dtype=dtype)
        method = method_cls(config)
        method.begin_task(ctx)
        if method_cls is Gift:
            assert not hasattr(method, "teacher")  # the cache replaced the teacher
        with torch.no_grad():  # away from the anchors: AWC's penalty gradient is not zero
            for p in ctx.params:
                p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())).to(dtype))
        stream = SyntheticStream(ctx.synthetic, 6, 3, ctx.dist, CPU)
        real = SynthBatch(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(dtype), None, [],
                          torch.tensor([0, 1, 2, 1]))
        class_tokens = tokenizer(trim=not full)([f"a photo of the number {k}." for k in range(5)])
        optimizer = torch.optim.SGD(ctx.params, lr=0.0)
        steps = []
        for _ in range(2):  # two batches of the draw (the second wraps around the 12 samples)
            batch = stream.next()
            batch.images = batch.images.to(dtype)
            losses = run_step(ctx, method, batch, real, class_tokens, optimizer, torch.autocast("cpu", enabled=False))
            steps.append((losses, [p.grad.clone() for p in ctx.params]))
        results.append(steps)
    return zip(*results, strict=True)


@pytest.mark.parametrize("distill", ["contrastive", "image-only"])
def test_gift_step_with_cached_teacher_features_equals_the_step_computed_on_the_fly(distill):
    """In float64, where rounding cannot hide a difference: losses and every gradient to 1e-6 relative (they agree
    to ~1e-14: the same computation)."""
    for (cached_losses, cached_grads), (fly_losses, fly_grads) in step_both_ways(distill, torch.float64):
        assert set(cached_losses) == set(fly_losses) == {"ce", "cd", "ita", "awc"}
        for k in cached_losses:
            assert cached_losses[k].item() == pytest.approx(fly_losses[k].item(), rel=1e-6), k
        for a, b in zip(cached_grads, fly_grads, strict=True):
            assert relative(a, b) <= 1e-6


def test_in_fp32_the_cached_step_equals_the_on_the_fly_one_to_rounding():
    """The default precision: the cache alone changes losses by nothing and gradients (AWC squares them) by fp32
    rounding; trimming changes matmul shapes, hence rounding, by a few 1e-6 of a gradient tensor's norm."""
    for same_width, grads_tol in ((True, 3e-6), (False, 2e-5)):
        for (cached_losses, cached_grads), (fly_losses, fly_grads) in step_both_ways("contrastive", torch.float32,
                                                                                      same_width):
            for k in cached_losses:
                assert cached_losses[k].item() == pytest.approx(fly_losses[k].item(), rel=2e-6), k
            assert max(relative(a, b) for a, b in zip(cached_grads, fly_grads, strict=True)) <= grads_tol


def test_ewc_static_fisher_from_the_cache_equals_the_one_computed_on_the_fly():
    class OnTheFlyEWC(EWC, OnTheFlyGift):
        pass

    config = TrainConfig(teacher="initial", synthetic_batch=4, ewc_samples=8)
    fishers = []
    for method_cls in (EWC, OnTheFlyEWC):
        ctx = context(config, source(8), seed=2)
        method = method_cls(config)
        method.begin_task(ctx)
        fishers.append(method.fisher)
    for a, b in zip(*fishers, strict=True):
        assert relative(a, b) <= 1e-5  # a mean of squared gradients, normalised per tensor


def test_cache_rows_are_the_teachers_features_of_each_sample():
    ctx = context(TrainConfig(teacher="initial"), source(12))
    method = Gift(ctx.config)
    method.begin_task(ctx)
    teacher = load_clip(ClipSpec("tiny", "none"))
    teacher.load_state_dict(ctx.initial_state)
    teacher.eval()
    with torch.no_grad():
        img = encode_images(teacher, normalize_uint8(ctx.synthetic.images))
        txt = F.normalize(teacher.encode_text(tokenizer(trim=False)(ctx.synthetic.prompts)), dim=-1)
    torch.testing.assert_close(method.t_img, img, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(method.t_txt, txt, rtol=1e-5, atol=1e-6)
    assert method.prompt_ids.tolist() == [0, 1, 2, 0, 1, 2, 2, 3, 0, 1, 2, 3]


def test_zscl_distils_every_image_against_all_captions_and_caches_them_once_per_run(tmp_path):
    captions = ["a dog on a sofa.", "two cats.", "a red car parked by a tree.", "a plate of food.", "a river."]
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(captions) + "\n\n")
    config = TrainConfig(method="zscl", reference_texts=str(path), temperature=2.0, alpha=1.0)
    ctx = context(config, None, seed=3)
    ctx.run_dir = tmp_path
    teacher = load_clip(ClipSpec("tiny", "none"))
    teacher.load_state_dict(ctx.initial_state)
    teacher.eval()
    texts = caption_features(teacher, ctx.initial_state, str(path), ctx)
    cached = list(tmp_path.glob("zscl-captions-*.safetensors"))
    assert len(cached) == 1 and texts.shape == (5, 64)
    with torch.no_grad():  # direct: the initial CLIP's features of every caption, open_clip's own encode_text
        direct = F.normalize(teacher.encode_text(tokenizer(trim=False)(captions)), dim=-1)
    torch.testing.assert_close(texts, direct, rtol=1e-5, atol=1e-6)
    # the step's loss: S = 100·s_img·textsᵀ [B, N], S′ = 100·t_img·textsᵀ; T²·[H(rows) + H(columns)]
    method = ZSCL(config)
    method.teacher, method.texts = teacher, texts
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loss = method.replay_terms(ctx, SynthBatch(images, None, []))["zscl"]
    with torch.no_grad():
        s, t = encode_images(ctx.student, images), encode_images(teacher, images)
    S, St = 100 * s @ direct.T, 100 * t @ direct.T
    rows = -(torch.softmax(St / 2, 1) * torch.log_softmax(S / 2, 1)).sum(1).mean()
    cols = -(torch.softmax(St.T / 2, 1) * torch.log_softmax(S.T / 2, 1)).sum(1).mean()
    assert S.shape == (3, 5) and loss.item() == pytest.approx((4 * (rows + cols)).item(), rel=1e-5)
    # a resumed run reads the file instead of encoding: what it reads is what the file holds
    stored = load_file(cached[0])
    marked = {"texts": stored["texts"] * 0 + 0.5}
    with safe_open(str(cached[0]), "pt") as f:
        meta = f.metadata()
    save_file(marked, cached[0], metadata=meta)
    assert (caption_features(teacher, ctx.initial_state, str(path), ctx) == 0.5).all()
    # other captions, or another teacher, are another key: a second file, computed afresh
    path.write_text("\n".join(captions[:3]))
    assert caption_features(teacher, ctx.initial_state, str(path), ctx).shape == (3, 64)
    other = {k: v + 1 if k == "ln_final.bias" else v for k, v in ctx.initial_state.items()}
    caption_features(teacher, other, str(path), ctx)
    assert len(list(tmp_path.glob("zscl-captions-*.safetensors"))) == 3
    assert not list(tmp_path.glob(".*tmp*"))  # written under a temporary name, renamed


def _rank(rank: int, world: int, init: str, out: str, captions: str, run_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        dist = Dist(rank, world, rank)
        model = load_clip(ClipSpec("tiny", "none", seed=9)).eval()
        src = source(11)  # 11 rows: shares of 6 and 5
        img = frozen.image_features(model, src.images, CPU, dist, batch=4)
        txt = frozen.text_features(model, src.tokens, CPU, dist, batch=4)
        ctx = TaskContext(0, "mini-a", model, model.state_dict(), TrainConfig(), CPU, dist=dist, run_dir=run_dir)
        cap = caption_features(model, model.state_dict(), captions, ctx)  # encoded by shares; rank 0 writes
        torch.distributed.barrier()
        again = caption_features(model, model.state_dict(), captions, ctx)  # as a resumed run: read back
        # image-only under DistributedDataParallel (find_unused_parameters, as train.py wraps the student): the
        # text tower, unused on every rank, keeps no gradient, so AWC gives it F = 1e-6 as on one process
        student = load_clip(ClipSpec("tiny", "none", seed=9))
        config = TrainConfig(distill="image-only", synthetic_batch=4)
        params = [p for p in student.parameters() if p.requires_grad]
        ddp = torch.nn.parallel.DistributedDataParallel(ClipFeatures(student), find_unused_parameters=True)
        ctx = TaskContext(0, "mini-a", student, {}, config, CPU, params, [p.detach().clone() for p in params], dist,
                          forward=functools.partial(student_features, ddp), synthetic=source(8))
        method = Gift(config)
        method.begin_task(ctx)
        sum(method.replay_terms(ctx, SyntheticStream(ctx.synthetic, 4, 1, dist, CPU).next()).values()).backward()
        no_grad = sorted(n for n, p in student.named_parameters() if p.requires_grad and p.grad is None)
        torch.save({"img": img, "txt": txt, "cap": cap, "again": again, "no_grad": no_grad},
                   os.path.join(out, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


def test_every_rank_gets_the_whole_matrix_from_its_share(tmp_path):
    """Two gloo processes: each encodes its share of a fixed set, the shares are gathered once; every rank holds
    the one-process matrix, and rank 0 alone writes ZSCL's caption cache, which both ranks then read back. And
    under DistributedDataParallel the tower an ablation leaves out keeps no gradient on either rank."""
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(f"caption number {k} of a small set" for k in range(7)))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    mp.spawn(_rank, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path), str(captions), str(run_dir)),
             nprocs=2, join=True)
    model = load_clip(ClipSpec("tiny", "none", seed=9)).eval()
    src = source(11)
    one_img, one_txt = frozen.image_features(model, src.images, CPU), frozen.text_features(model, src.tokens, CPU)
    assert len(list(run_dir.glob("zscl-captions-*.safetensors"))) == 1
    ctx = TaskContext(0, "mini-a", model, model.state_dict(), TrainConfig(), CPU)
    one_cap = caption_features(model, model.state_dict(), str(captions), ctx)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["img"].shape == (11, 64) and got["cap"].shape == (7, 64)
        torch.testing.assert_close(got["img"], one_img, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["txt"], one_txt, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got["cap"], one_cap, rtol=1e-5, atol=1e-6)
        assert torch.equal(got["again"], got["cap"])
        text_tower = sorted(n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("visual."))
        assert got["no_grad"] == text_tower
