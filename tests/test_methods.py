"""Every baseline's distinctive loss or update against a hand-computed value, then every method end to end on the
`mini` benchmark (tiny CLIP, real images, the real loop)."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.methods import METHODS, TaskContext
from pipeline.methods.ewc import EWC
from pipeline.methods.icarl import herding
from pipeline.methods.lwf import EOT, SOT, distill_on_teacher_texts, frozen_copy, random_sentences
from pipeline.methods.wise_ft import interpolate_
from pipeline.methods.zscl import ZSCL, Ensemble
from pipeline.models import ClipSpec, encode_images, load_clip, tokenizer
from pipeline.replay.streams import SyntheticStream
from pipeline.replay.synthetic import SyntheticBatchSource
from pipeline.training.config import TrainConfig
from pipeline.training.train import train
from tests.conftest import cli_args, mini_config, run_gift

CPU = torch.device("cpu")


def tiny_pair():
    student = load_clip(ClipSpec("tiny", "none", seed=1))
    teacher = frozen_copy(student)
    with torch.no_grad():  # a teacher that differs from the student
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return student, teacher


def ctx_for(student, config=None, **kw) -> TaskContext:
    params = [p for p in student.parameters() if p.requires_grad]
    return TaskContext(0, "mini-a", student, {}, config or TrainConfig(), CPU, params,
                       [p.detach().clone() for p in params], **kw)


def test_lwf_distils_student_images_against_the_teachers_texts():
    student, teacher = tiny_pair()
    images = torch.randn(4, 3, 32, 32)
    texts = F.normalize(torch.randn(3, 64), dim=-1)  # stand-in teacher text features of 3 prompts
    loss = distill_on_teacher_texts(ctx_for(student), teacher, images, texts, T=2.0)
    # by hand: S = 100·s_img·textsᵀ, S′ = 100·t_img·textsᵀ; T²·[H(S′/T rows, S/T rows) + H(columns)]
    s, t = encode_images(student, images), encode_images(teacher, images).detach()
    S, St = 100 * s @ texts.T, 100 * t @ texts.T
    rows = -(torch.softmax(St / 2, 1) * torch.log_softmax(S / 2, 1)).sum(1).mean()
    cols = -(torch.softmax(St.T / 2, 1) * torch.log_softmax(S.T / 2, 1)).sum(1).mean()
    assert loss.item() == pytest.approx((4 * (rows + cols)).item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in student.transformer.parameters())  # the student's text tower plays no part
    assert student.visual.conv1.weight.grad.abs().sum() > 0


def test_lwf_vr_random_sentences_draw_over_the_whole_vocabulary():
    tokens = random_sentences(1000, 10, seed=0)
    assert tokens.shape == (1000, 77)
    assert (tokens[:, 0] == SOT).all() and (tokens[:, 11] == EOT).all() and (tokens[:, 12:] == 0).all()
    # the reference's virtual_vocab: ids uniform over 0..49407 (start and end ids included), from the seed
    expected = torch.randint(0, 49408, (1000, 10), generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens[:, 1:11], expected) and len({tuple(r) for r in tokens[:, 1:11].tolist()}) == 1000
    assert torch.equal(tokens, random_sentences(1000, 10, seed=0))
    assert not torch.equal(tokens, random_sentences(1000, 10, seed=1))
    many = random_sentences(20000, 10, seed=3)[:, 1:11]  # 200,000 draws: the top ids do occur
    assert many.min() == 0 and many.max() == EOT and (many == SOT).any()
    # a sentence holding the end id early is read there, as open_clip reads it (argmax: the first largest id)
    early = many.eq(EOT).any(dim=1).nonzero()[0, 0]
    assert random_sentences(20000, 10, seed=3)[early].argmax() < 11


def _unit(*rows):
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("distill", ["image-only", "text-only"])
def test_image_only_and_text_only_distil_and_align_on_the_mixed_matrix_by_hand(distill):
    """The released code's Table 4a rows: S_mix = 100·s_img·t_txtᵀ (image-only) or 100·t_img·s_txtᵀ (text-only)
    is the student's matrix for CD and for ITA; the other student tower is not involved at all."""
    from pipeline.methods.gift import gift_terms

    # image-only: t_txt = I, so S_mix = 100·s_img and S′ = 100·t_img; text-only mirrors it with t_img = I.
    # S_mix = [[60,80],[80,60]], S′ = [[60,100],[80,0]]  (the contrastive test's matrices, test_losses.py)
    student = _unit([0.6, 0.8], [0.8, 0.6]).requires_grad_()
    teacher_other = _unit([0.6, 1.0], [0.8, 0.0]).T.contiguous() if distill == "text-only" else _unit([0.6, 1.0], [0.8, 0.0])
    eye = torch.eye(2, dtype=torch.float64).requires_grad_()  # the teacher's side that meets the student
    teacher_other.requires_grad_()
    if distill == "image-only":
        s_img, s_txt, t_img, t_txt = student, None, teacher_other, eye
    else:  # S_mix = 100·t_img·s_txtᵀ = 100·s_txtᵀ: s_txt = studentᵀ keeps S_mix = [[60,80],[80,60]] (symmetric)
        s_img, s_txt, t_img, t_txt = None, student, eye, teacher_other
    config = TrainConfig(distill=distill)
    terms = gift_terms(config, s_img, s_txt, t_img, t_txt, torch.tensor([0, 1]))
    # CD = T²·[(H0+H1)/2 + (Hc0+Hc1)/2] = 2·[4L + 10(σ(-10)+σ(-20)+σ(-40)+σ(-50))], L = log(1+e^-10)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    L = math.log1p(math.exp(-10))
    assert terms["cd"].item() == pytest.approx(2 * (4 * L + 10 * (sig(-10) + sig(-20) + sig(-40) + sig(-50))), rel=1e-9)
    # ITA on S_mix, distinct prompts: Y = I smoothed to [[.9,.1],[.1,.9]]; each row's CE = 0.9·(20 + l) + 0.1·l
    # = 18 + l, l = log(1+e^-20), in both directions (S_mix is symmetric): ITA = β·2·(18 + l)
    assert terms["ita"].item() == pytest.approx(0.25 * 2 * (18 + math.log1p(math.exp(-20))), rel=1e-9)
    (terms["ita"]).backward()
    # ∂ITA/∂S_mix = β·(A + Aᵀ), A = (softmax(S_mix) − Y′)/B; S_mix = 100·student (or its transpose): ×100
    a = (sig(-20) - 0.9) / 2
    grad = 100 * 0.25 * 2 * torch.tensor([[a, -a], [-a, a]], dtype=torch.float64)
    torch.testing.assert_close(student.grad, grad, rtol=1e-9, atol=1e-12)
    assert eye.grad is None and teacher_other.grad is None  # the teacher receives nothing


def test_feature_ablation_is_a_mean_squared_error_and_aligns_on_the_students_matrix():
    from pipeline.methods.gift import gift_terms

    s_img, s_txt = _unit([1.0, 0.0], [0.0, 1.0]), _unit([0.6, 0.8], [0.8, 0.6])
    t_img, t_txt = _unit([0.0, 1.0], [0.0, 1.0]), _unit([0.6, 0.8], [0.0, 1.0])
    terms = gift_terms(TrainConfig(distill="feature", alpha=2.0), s_img, s_txt, t_img, t_txt, torch.tensor([0, 1]))
    # image (1+1+0+0)/4 = 0.5, text (0+0+0.64+0.16)/4 = 0.2, weight α = 2
    assert terms["cd"].item() == pytest.approx(2 * 0.7, rel=1e-12)
    # ITA on the student's own S = 100·s_img·s_txtᵀ = [[60,80],[80,60]]: as above, β·2·(18 + l)
    assert terms["ita"].item() == pytest.approx(0.25 * 2 * (18 + math.log1p(math.exp(-20))), rel=1e-9)


@pytest.mark.parametrize("order, smoothing", [("I", 0.2), ("cifar100-10", 0.2), ("tinyimagenet-10", 0.0)])
def test_ita_is_smoothed_with_the_runs_label_smoothing(order, smoothing):
    """GIFT's released step smooths ITA with the run's label smoothing (`args.ls`): 0.2 on MTIL and CIFAR100, none on
    TinyImageNet CIL."""
    from pipeline.methods.gift import gift_terms

    config = TrainConfig(order=order, method="gift", cd=False)
    assert config.label_smoothing == smoothing
    s_img, s_txt = _unit([1.0, 0.0], [0.0, 1.0]), _unit([0.6, 0.8], [0.8, 0.6])
    terms = gift_terms(config, s_img, s_txt, s_img, s_txt, torch.tensor([0, 1]))
    # S = [[60,80],[80,60]], Y = I smoothed to (1 − ε/2) on the diagonal, ε/2 off it; row CE = (1 − ε/2)·(20 + l) +
    # ε/2·l, l = log(1+e^-20): 18 + l at ε = 0.2, 20 + l unsmoothed; both directions alike: ITA = β·2·CE
    l = math.log1p(math.exp(-20))  # noqa: E741
    row = (1 - smoothing / 2) * (20 + l) + smoothing / 2 * l
    assert terms["ita"].item() == pytest.approx(0.25 * 2 * row, rel=1e-9)
    assert set(terms) == {"ita"}


@pytest.mark.parametrize("distill", ["image-only", "text-only"])
def test_one_tower_ablations_leave_the_other_tower_to_ce_and_awc_gives_it_one_millionth(distill):
    """On the tiny CLIP: the replay backward reaches only the distilled tower; AWC then adds 2λ·1e-6·(θ−θ₀) to
    every tensor of the other tower (the released code's F = 1e-6), the Fisher penalty to the rest."""
    from pipeline.methods.gift import Gift

    student = load_clip(ClipSpec("tiny", "none", seed=4))
    config = TrainConfig(distill=distill, synthetic_batch=4, lam=3.0)
    ctx = ctx_for(student, config, synthetic=_synthetic_source(), replay_seed=2)
    method = Gift(config)
    method.begin_task(ctx)
    stream = SyntheticStream(ctx.synthetic, 4, 2, ctx.dist, CPU)
    with torch.no_grad():  # away from the anchors, so the penalty gradient is not zero
        for p in ctx.params:
            p.add_(0.01 * torch.randn_like(p))
    terms = method.replay_terms(ctx, stream.next())
    sum(terms.values()).backward()
    names = {id(p): n for n, p in student.named_parameters()}
    other = (lambda n: not n.startswith("visual.")) if distill == "image-only" else (lambda n: n.startswith("visual."))
    reached = [p for p in ctx.params if not other(names[id(p)])]
    unreached = [p for p in ctx.params if other(names[id(p)])]
    assert unreached and all(p.grad is None for p in unreached)
    assert all(p.grad is not None for p in reached) and any(p.grad.abs().sum() > 0 for p in reached)
    method.after_replay_backward(ctx)
    fisher = {id(p): g for p, g in zip(ctx.params, method.fisher_grads, strict=True)}
    for p in ctx.params:
        p.grad = torch.zeros_like(p)
    penalty = method.adjust_gradients(ctx)["awc"]
    expected = 0.0
    for p, a in zip(ctx.params, ctx.anchors, strict=True):
        d = (p.detach() - a).double()
        g = fisher[id(p)]
        F = torch.full_like(d, 1e-6) if g is None else g.double() ** 2 / (g.double() ** 2).mean()
        torch.testing.assert_close(p.grad.double(), 2 * 3.0 * F * d, rtol=1e-4, atol=1e-12)
        expected += 3.0 * (F * d * d).sum().item()
    assert penalty.item() == pytest.approx(expected, rel=1e-5)


def test_wise_ft_interpolation_by_hand():
    params, anchors = [torch.tensor([2.0, -1.0]), torch.tensor([[10.0]])], [torch.tensor([0.0, 1.0]), torch.tensor([[0.0]])]
    interpolate_(params, anchors, 0.8)
    assert params[0].tolist() == pytest.approx([1.6, -0.6]) and params[1].item() == pytest.approx(8.0)


def test_zscl_weight_ensemble_after_k_snapshots():
    p = torch.tensor([0.0, 3.0])
    ens = Ensemble([p])  # snapshot 1: the task's start
    for value in ([3.0, 3.0], [6.0, 0.0]):
        p.copy_(torch.tensor(value))
        ens.add([p])
    assert ens.n == 3 and ens.mean[0].tolist() == pytest.approx([3.0, 2.0])  # ((0,3)+(3,3)+(6,0))/3
    # the method snapshots as the harness does, `iteration % every == 0` on the 0-based step: 5 steps, every 2 ->
    # after steps 0, 2 and 4 (updates 1, 3, 5), the first update included
    z = ZSCL(TrainConfig(ensemble_every=2))
    q = torch.zeros(1)
    ctx = ctx_for(load_clip(ClipSpec("tiny", "none")))
    ctx.params = [q]
    z.ensemble = Ensemble([q])
    for step in range(5):
        q.fill_(step + 1.0)  # the weights after step `step`
        z.after_step(ctx, step)
    assert z.ensemble.n == 4 and z.ensemble.mean[0].item() == pytest.approx((0 + 1 + 3 + 5) / 4)


@pytest.mark.parametrize("order, every, steps, members", [
    # MTIL, every 100 over the 1,000 steps run here: after updates 1, 101, ..., 901 (the reference's range(1001)
    # adds a last one after update 1001, which is not run here)
    ("I", 100, 1000, [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]),
    # CIL, every 10 (the harness's avg_freq): after updates 1, 11, 21 of a 25-step task
    ("cifar100-10", 10, 25, [0, 10, 20]),
])
def test_zscl_ensemble_steps_per_setting(order, every, steps, members):
    from pipeline.methods.zscl import ensemble_step

    assert TrainConfig(order=order, method="zscl").ensemble_every == every
    assert [s for s in range(steps) if ensemble_step(s, every)] == members


def test_baseline_weights_and_penalties_resolved_per_setting_and_method():
    """The harness's CIL values (distillation 5 on rows + 5 on columns for lwf, lwf-vr, icarl and zscl; no l2 for
    zscl) against MTIL's (weight 1, l2 1), and what each method's hooks then add."""
    for order in ("I", "II", "mini"):
        for method in ("lwf", "lwf-vr", "icarl", "zscl", "l2", "gift"):
            c = TrainConfig(order=order, method=method)
            assert (c.alpha, c.l2_weight) == (1.0, 1.0), (order, method)
    for order in ("cifar100-10", "tinyimagenet-20", "seq-cifar100", "mini-cil"):
        for method in ("lwf", "lwf-vr", "icarl", "zscl"):
            assert TrainConfig(order=order, method=method).alpha == 5.0, (order, method)
        assert TrainConfig(order=order, method="zscl").l2_weight == 0.0
        assert TrainConfig(order=order, method="l2").l2_weight == 1.0  # the l2 baseline keeps its penalty
        assert TrainConfig(order=order, method="gift").alpha == 1.0  # GIFT's α is its own, 1
    # zscl's hook: an l2 gradient in MTIL, none in CIL (the harness adds l2 only when its weight is > 0)
    student = load_clip(ClipSpec("tiny", "none", seed=3))
    for order, penalised in (("I", True), ("cifar100-10", False)):
        ctx = ctx_for(student, TrainConfig(order=order, method="zscl"))
        ctx.params = [p for p in student.parameters() if p.requires_grad][:2]
        ctx.anchors = [p.detach() + 1.0 for p in ctx.params]  # θ − θ(t−1) = −1 everywhere
        for p in ctx.params:
            p.grad = torch.zeros_like(p)
        terms = ZSCL(ctx.config).adjust_gradients(ctx)
        assert ("l2" in terms) == penalised
        grads = [p.grad.abs().max().item() for p in ctx.params]
        assert grads == ([pytest.approx(2.0)] * 2 if penalised else [0.0, 0.0])  # ∂Σ(θ−a)²/∂θ = 2(θ−a)
        for p in ctx.params:
            p.grad = None


def test_lwf_vr_draws_new_sentences_for_every_task_and_the_same_across_runs():
    from pipeline.methods.lwf import LwFVR, task_sentences

    config = TrainConfig(order="cifar100-10", method="lwf-vr", random_texts=50, seed=3)
    student = load_clip(ClipSpec("tiny", "none"))
    ctx = ctx_for(student, config)
    per_task = [LwFVR(config).text_tokens(replace(ctx, index=i)) for i in range(3)]
    again = [LwFVR(config).text_tokens(replace(ctx, index=i)) for i in range(3)]  # a second run
    for i in range(3):
        assert torch.equal(per_task[i], again[i]) and per_task[i].shape == (50, 77)
        for j in range(i):
            assert (per_task[i][:, 1:11] != per_task[j][:, 1:11]).any(dim=1).all()  # every sentence differs
    assert torch.equal(per_task[1], task_sentences(50, 3, 1))
    assert not torch.equal(task_sentences(50, 4, 1), per_task[1])  # another seed, other sentences


def test_herding_follows_the_running_mean_not_the_nearest_neighbours():
    feats = torch.tensor([[0.0], [1.0], [2.0], [10.0]])  # mean 3.25
    # k=1: 2 is closest to 3.25; k=2: (2+x)/2 closest -> x=1 (1.5); k=3: (3+x)/3 -> x=10 (4.33); then 0
    assert herding(feats, 4) == [2, 1, 3, 0]
    assert herding(feats, 2) == [2, 1]  # prefix-consistent: a smaller memory keeps the first exemplars
    nearest = torch.argsort((feats[:, 0] - 3.25).abs()).tolist()
    assert nearest == [2, 1, 0, 3]


def _synthetic_source(n=8):
    g = torch.Generator().manual_seed(0)
    prompts = [f"a photo of a {c}." for c in ("cat", "dog", "ship", "tree")] * (n // 4)
    return SyntheticBatchSource(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                                tokenizer()(prompts), prompts)


def test_ewc_fisher_is_static_during_the_task_and_equals_the_hand_average():
    student = load_clip(ClipSpec("tiny", "none", seed=2))
    config = TrainConfig(synthetic_batch=4, ewc_samples=8, teacher="initial")
    source = _synthetic_source()
    initial = {k: v.clone() + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
               for k, v in student.state_dict().items()}  # teacher ≠ student, so CD has a gradient too
    ctx = ctx_for(student, config, synthetic=source, replay_seed=5)
    ctx.initial_state = initial
    method = EWC(config)
    method.begin_task(ctx)
    # by hand: two batches of 4 from the same seeded stream, F = mean of grad², normalised per tensor
    stream = SyntheticStream(source, 4, 6, ctx.dist, CPU)
    acc = [torch.zeros_like(p) for p in ctx.params]
    for _ in range(2):
        for p in ctx.params:
            p.grad = None
        sum(method.replay_terms(ctx, stream.next()).values()).backward()
        for a, p in zip(acc, ctx.params, strict=True):
            a += p.grad**2 / 2
    for p in ctx.params:
        p.grad = None
    expected = [a / a.mean() if a.mean() > 0 else a for a in acc]
    for f, e in zip(method.fisher, expected, strict=True):
        torch.testing.assert_close(f, e, rtol=1e-4, atol=1e-12)
    before = [f.clone() for f in method.fisher]
    with torch.no_grad():  # a training step moved the weights
        for p in ctx.params:
            p.add_(0.01)
    for p in ctx.params:
        p.grad = torch.zeros_like(p)
    sum(method.replay_terms(ctx, stream.next()).values()).backward()
    method.after_replay_backward(ctx)
    for p in ctx.params:  # isolate the penalty's gradient
        p.grad.zero_()
    penalty = method.adjust_gradients(ctx)["ewc"]
    assert all(torch.equal(f, b) for f, b in zip(method.fisher, before, strict=True))
    # the added gradient is 2λ·F·(θ−θ(t−1)) with the static F; the penalty λ·Σ F·(θ−θ(t−1))²
    diffs = [p.detach() - a for p, a in zip(ctx.params, ctx.anchors, strict=True)]  # ≈ 0.01 everywhere
    for p, f, d in zip(ctx.params, method.fisher, diffs, strict=True):
        torch.testing.assert_close(p.grad, 2 * f * d, rtol=1e-5, atol=1e-12)
    assert penalty.item() == pytest.approx(sum((f * d * d).sum().item() for f, d in zip(method.fisher, diffs, strict=True)), rel=1e-4)


def _captions(workspace):
    root, _ = workspace
    path = root / "captions.txt"
    path.write_text("".join(f"a photo of a {c}.\n" for c in ("digit", "number", "handwritten sign", "photo")))
    return path


@pytest.mark.parametrize("method", sorted(m for m, cls in METHODS.items() if cls.loop == "finetune"))
def test_every_method_runs_the_mini_benchmark(workspace, method):
    """Every method of the fine-tuning loop over the MTIL order mini (clts, CIL only, in test_clts.py)."""
    root, _ = workspace
    extra = {}
    if method == "zscl":
        extra = dict(reference_images=str(root / "reference"), reference_texts=str(_captions(workspace)),
                     ensemble_every=2)
    if method == "icarl":
        extra = dict(memory_size=30)
    if method == "moe-adapter":  # a few autoencoder steps (the full 1,001 + 301 per task: test_moe_adapter.py)
        extra = dict(ddas_steps=3, ddas_zero_shot_steps=3, moe_experts=4)
    config = mini_config(workspace, method=method, name=f"all-{method}", iterations=4, warmup=2, batch_size=16,
                         synthetic_batch=16, ewc_samples=32, **extra)
    run_dir = train(config, device=CPU)
    state = json.loads((run_dir / "state.json").read_text())
    acc = np.array(state["acc"])
    assert acc.shape == (3, 3) and ((acc >= 0) & (acc <= 100)).all()
    logged = set().union(*(json.loads(line).keys() for line in (run_dir / "metrics.jsonl").read_text().splitlines())) \
        if method != "zeroshot" else set()
    own = {"lwf": "lwf", "lwf-vr": "lwf", "zscl": "zscl", "icarl": "icarl", "ewc": "ewc", "gift": "awc", "l2": "l2"}
    if method in own:
        assert own[method] in logged, logged
    if method == "icarl":
        memory = json.loads((run_dir / "icarl-memory-task02.json").read_text())
        sizes = {t: sum(len(ids) for ids in by_class.values()) for t, by_class in memory.items()}
        assert set(sizes) == {"mini-a", "mini-b"} and sum(sizes.values()) <= 30
        # 10 classes seen after two tasks: 3 exemplars each, the first task's cut back from 6
        assert all(len(ids) == 3 for by_class in memory.values() for ids in by_class.values())
        first = json.loads((run_dir / "icarl-memory-task01.json").read_text())["mini-a"]
        assert all(len(ids) == 6 and ids[:3] == memory["mini-a"][c] for c, ids in first.items())


def test_zscl_without_reference_data_fails_before_creating_anything(workspace):
    root, _ = workspace
    r = run_gift(*cli_args(workspace, "--method", "zscl", "--name", "zscl-missing", "--iterations", "2"))
    assert r.returncode == 2 and "--reference-texts" in r.stderr + r.stdout
    assert not (root / "runs" / "zscl-missing").exists()
    r = run_gift(*cli_args(workspace, "--method", "zscl", "--name", "zscl-missing", "--iterations", "2",
                           "--reference-texts", _captions(workspace), "--reference-images", root / "nowhere"))
    assert r.returncode == 2 and "nowhere" in r.stderr + r.stdout
    assert not (root / "runs" / "zscl-missing").exists()



def test_gift_without_awc_runs_the_l2_penalty_in_its_place_when_asked():
    from pipeline.methods.gift import Gift

    student = load_clip(ClipSpec("tiny", "none", seed=3))
    ctx = ctx_for(student)
    with torch.no_grad():
        for p in ctx.params:
            p.add_(0.5)
    for p in ctx.params:
        p.grad = torch.zeros_like(p)
    assert Gift(TrainConfig(awc=False)).adjust_gradients(ctx) == {}
    penalty = Gift(TrainConfig(awc=False, l2_without_awc=True)).adjust_gradients(ctx)["l2"]
    diffs = [p.detach() - a for p, a in zip(ctx.params, ctx.anchors, strict=True)]
    for p, d in zip(ctx.params, diffs, strict=True):
        torch.testing.assert_close(p.grad, 2 * d)
    assert penalty.item() == pytest.approx(sum((d * d).sum().item() for d in diffs), rel=1e-5)
