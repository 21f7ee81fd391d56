"""Each loss against values computed by hand (the arithmetic is in the comments)."""

import math

import pytest
import torch

from pipeline import losses

f64 = torch.float64


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_classification_loss_smoothing_by_hand():
    # Two classes, logits 100·cos: img·txt = [[1, 0]] -> logits [100, 0]; log_softmax ≈ [0, -100].
    # Smoothed target for label 0: [0.9, 0.1] -> CE ≈ 0.1·100 = 10 (+ log(1+e^-100) ≈ 0).
    img = torch.tensor([[1.0, 0.0]], dtype=f64)
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=f64)
    assert losses.classification_loss(img, txt, torch.tensor([0])).item() == pytest.approx(10.0, rel=1e-9)
    assert losses.classification_loss(img, txt, torch.tensor([1])).item() == pytest.approx(0.9 * 100, rel=1e-9)


def test_contrastive_distillation_both_directions_by_hand():
    # Student: s_img = I, s_txt rows (0.6,0.8),(0.8,0.6) -> S = 100·s_img·s_txtᵀ = [[60,80],[80,60]].
    # Teacher: t_img = I, t_txt rows (0.6,0.8),(1,0)  -> S' = [[60,100],[80,0]].  T = 2:
    #   S/T = [[30,40],[40,30]], S'/T = [[30,50],[40,0]];  L = log(1+e^-10).
    # rows: H0 = 10σ(-20) + L,  H1 = L + 10σ(-40)
    # cols: (S'ᵀ/T rows [30,40],[50,0] vs Sᵀ/T rows [30,40],[40,30]): Hc0 = 10σ(-10) + L, Hc1 = L + 10σ(-50)
    # CD = T²·[(H0+H1)/2 + (Hc0+Hc1)/2] = 2·[4L + 10(σ(-10)+σ(-20)+σ(-40)+σ(-50))]
    L = math.log1p(math.exp(-10))
    expected = 2 * (4 * L + 10 * (sig(-10) + sig(-20) + sig(-40) + sig(-50)))
    eye = torch.eye(2, dtype=f64)
    s_txt = torch.tensor([[0.6, 0.8], [0.8, 0.6]], dtype=f64)
    t_txt = torch.tensor([[0.6, 0.8], [1.0, 0.0]], dtype=f64)
    cd = losses.contrastive_distillation(eye, s_txt, eye, t_txt, T=2.0)
    assert cd.item() == pytest.approx(expected, rel=1e-9)
    # Rows alone would give 2·[2L + 10σ(-20) + 10σ(-40)]: the column term is really there.
    assert cd.item() != pytest.approx(2 * 2 * (2 * L + 10 * sig(-20) + 10 * sig(-40)), rel=1e-3)


def test_distillation_gradient_reaches_only_the_student():
    s = torch.nn.functional.normalize(torch.randn(4, 3, dtype=f64), dim=1).requires_grad_()
    t = torch.nn.functional.normalize(torch.randn(4, 3, dtype=f64), dim=1).requires_grad_()
    losses.contrastive_distillation(s, s, t, t).backward()
    assert s.grad is not None and t.grad is None


def test_alignment_targets_share_duplicate_prompts():
    Y = losses.alignment_targets(["a", "b", "a"])
    assert Y.tolist() == [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]
    assert torch.equal(losses.alignment_targets(["x", "y"]), torch.eye(2))


def test_image_text_alignment_with_duplicates_by_hand():
    # s_img = I, s_txt rows (0.8,0.6,0),(0,1,0),(0,0.6,0.8): S[i][j] = 100·s_txt[j][i] = [[80,0,0],[60,100,60],[0,0,80]].
    # Prompts a,b,a -> Y rows [.5,0,.5],[0,1,0],[.5,0,.5]; smoothed y' = 0.8·Y + 0.2/3:
    #   rows 0 and 2 -> [w_hi, w_lo, w_hi], row 1 -> [w_lo, .8667, w_lo]  with w_lo = .0667, w_hi = .4667.
    # log_softmax(S) rows ≈ [0,-80,-80], [-40,0,-40], [-80,-80,0]  (e^-40 terms negligible), so
    #   CE rows = w_lo·80 + w_hi·80, 2·w_lo·40, w_hi·80 + w_lo·80.
    # Sᵀ = [[80,60,0],[0,100,0],[0,60,80]]: log_softmax ≈ [0,-20,-80], [-100,0,-100], [-80,-20,0], so
    #   CE rows = w_lo·20 + w_hi·80, 2·w_lo·100, w_hi·80 + w_lo·20.
    eye = torch.eye(3, dtype=f64)
    s_txt = torch.tensor([[0.8, 0.6, 0], [0, 1, 0], [0, 0.6, 0.8]], dtype=f64)
    Y = losses.alignment_targets(["a", "b", "a"]).to(f64)
    a, b = losses.image_text_alignment(eye, s_txt, Y)
    w_lo, w_hi = 0.2 / 3, 0.4 + 0.2 / 3
    assert a.item() == pytest.approx((2 * (w_lo * 80 + w_hi * 80) + 2 * w_lo * 40) / 3, rel=1e-6)
    assert b.item() == pytest.approx((2 * (w_lo * 20 + w_hi * 80) + 2 * w_lo * 100) / 3, rel=1e-6)


def test_image_text_alignment_paper_variant_by_hand():
    # Identity targets, no smoothing. s_img = I, s_txt rows (0.6,0.8),(0.8,0.6): S = [[60,80],[80,60]].
    # Each row's diagonal is 20 below the other entry: CE = 20 + log(1+e^-20) per row, both directions.
    eye = torch.eye(2, dtype=f64)
    s_txt = torch.tensor([[0.6, 0.8], [0.8, 0.6]], dtype=f64)
    a, b = losses.image_text_alignment(eye, s_txt, eye, smoothing=0.0)
    assert a.item() == pytest.approx(20 + math.log1p(math.exp(-20)), rel=1e-12)
    assert b.item() == pytest.approx(a.item(), rel=1e-12)


def _params():
    # θ = ([1, 1], [5]),  θ₀ = ([0, 2], [3])  ->  θ−θ₀ = ([1, -1], [2])
    params = [torch.tensor([1.0, 1.0], dtype=f64), torch.tensor([5.0], dtype=f64)]
    anchors = [torch.tensor([0.0, 2.0], dtype=f64), torch.tensor([3.0], dtype=f64)]
    for p in params:
        p.grad = torch.zeros_like(p)
    return params, anchors


def test_awc_fisher_normalisation_penalty_and_gradient_by_hand():
    # Distillation gradients g = ([1, 2], [3]); mean(g²) per tensor = 2.5 and 9
    # -> F = g²/mean(g²) = ([0.4, 1.6], [1.0]).
    grads = [torch.tensor([1.0, 2.0], dtype=f64), torch.tensor([3.0], dtype=f64)]
    scales = losses.fisher_scales(grads)
    assert scales.tolist() == pytest.approx([1 / 2.5, 1 / 9]) and scales.device == grads[0].device
    params, anchors = _params()
    penalty = losses.add_awc_gradient(params, anchors, grads, lam=1.0)
    # λ·Σ F·(θ−θ₀)² = 0.4·1 + 1.6·1 + 1.0·4 = 6;   gradient 2λ·F·(θ−θ₀) = ([0.8, -3.2], [4.0])
    assert penalty.item() == pytest.approx(6.0)
    assert params[0].grad.tolist() == pytest.approx([0.8, -3.2]) and params[1].grad.tolist() == pytest.approx([4.0])


def test_awc_without_normalisation_and_against_autograd():
    grads = [torch.tensor([1.0, 2.0], dtype=f64), torch.tensor([3.0], dtype=f64)]
    params, anchors = _params()
    penalty = losses.add_awc_gradient(params, anchors, grads, lam=0.5, normalize=False)
    # F = g² = ([1, 4], [9]): 0.5·(1 + 4 + 9·4) = 20.5; gradient 2·0.5·F·(θ−θ₀) = ([1, -4], [18])
    assert penalty.item() == pytest.approx(20.5)
    assert params[0].grad.tolist() == pytest.approx([1.0, -4.0]) and params[1].grad.tolist() == pytest.approx([18.0])
    # The same gradient by autograd of the explicit penalty with F held fixed:
    leaves = [p.detach().clone().requires_grad_() for p in params]
    explicit = 0.5 * sum(((g * g) * (p - a) ** 2).sum() for g, p, a in zip(grads, leaves, anchors, strict=True))
    explicit.backward()
    for leaf, p in zip(leaves, params, strict=True):
        assert torch.allclose(leaf.grad, p.grad)


def test_awc_gradient_accumulates_onto_existing_gradients():
    grads = [torch.tensor([1.0, 2.0], dtype=f64), torch.tensor([3.0], dtype=f64)]
    params, anchors = _params()
    params[0].grad = torch.tensor([10.0, 10.0], dtype=f64)  # e.g. CE's gradient from the second backward
    losses.add_awc_gradient(params, anchors, grads, lam=1.0)
    assert params[0].grad.tolist() == pytest.approx([10.8, 6.8])


@pytest.mark.parametrize("normalize", [True, False])
def test_awc_gives_a_tensor_the_distillation_did_not_reach_fisher_one_millionth(normalize):
    # The released code: a trained tensor without a gradient from α·CD + β·ITA (None) gets F = 1e-6 everywhere.
    # θ−θ₀ = ([1, -1], [2]); only the first tensor reached, g = [1, 2] -> F = ([0.4, 1.6] or [1, 4], [1e-6]).
    params, anchors = _params()
    penalty = losses.add_awc_gradient(params, anchors, [torch.tensor([1.0, 2.0], dtype=f64), None], lam=2.0,
                                      normalize=normalize)
    F0 = [0.4, 1.6] if normalize else [1.0, 4.0]
    # λ·Σ F·(θ−θ₀)² = 2·(F0[0] + F0[1] + 1e-6·4);  gradient 2λ·F·(θ−θ₀) = 4·([F0[0], -F0[1]], [1e-6·2])
    assert penalty.item() == pytest.approx(2 * (F0[0] + F0[1] + 4e-6), rel=1e-12)
    assert params[0].grad.tolist() == pytest.approx([4 * F0[0], -4 * F0[1]], rel=1e-12)
    assert params[1].grad.tolist() == pytest.approx([8e-6], rel=1e-12)
    # a tensor that was reached with an all-zero gradient keeps F = 0 (it is not "unreached")
    params, anchors = _params()
    losses.add_awc_gradient(params, anchors, [torch.tensor([1.0, 2.0], dtype=f64), torch.zeros(1, dtype=f64)],
                            lam=2.0, normalize=normalize)
    assert params[1].grad.tolist() == [0.0]


def test_l2_penalty_and_gradient_by_hand():
    params, anchors = _params()
    penalty = losses.add_l2_gradient(params, anchors)
    # Σ(θ−θ₀)² = 1 + 1 + 4 = 6; gradient 2(θ−θ₀) = ([2, -2], [4])
    assert penalty.item() == pytest.approx(6.0)
    assert params[0].grad.tolist() == pytest.approx([2.0, -2.0]) and params[1].grad.tolist() == pytest.approx([4.0])


def test_feature_distillation_is_the_mean_over_all_elements_by_hand():
    # The released code: F.mse_loss(t_img, s_img) + F.mse_loss(t_txt, s_txt), each the mean over all B·D elements.
    # B = 2, D = 2. image: s − t = [[1, -1], [0, 0]] -> (1 + 1 + 0 + 0)/4 = 0.5;
    # text: s − t = [[0, 0], [0.6, -0.8]] -> (0.36 + 0.64)/4 = 0.25.  Total 0.75 (a per-sample sum would be D = 2x).
    s_img = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=f64, requires_grad=True)
    t_img = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=f64, requires_grad=True)
    s_txt = torch.tensor([[0.6, 0.8], [0.6, 0.8]], dtype=f64, requires_grad=True)
    t_txt = torch.tensor([[0.6, 0.8], [0.0, 1.6]], dtype=f64, requires_grad=True)
    loss = losses.feature_distillation(s_img, s_txt, t_img, t_txt)
    assert loss.item() == pytest.approx(0.75, rel=1e-12)
    loss.backward()
    # d/ds of mean((s−t)²) = 2(s−t)/(B·D) = (s−t)/2; the teacher receives nothing
    assert s_img.grad.flatten().tolist() == pytest.approx([0.5, -0.5, 0.0, 0.0])
    assert s_txt.grad.flatten().tolist() == pytest.approx([0.0, 0.0, 0.3, -0.4])
    assert t_img.grad is None and t_txt.grad is None
