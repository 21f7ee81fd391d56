"""CIL evaluation, metrics and report: Avg / Last / forgetting by hand, seen-class evaluation against a brute-force
head, the run directory's files."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.datasets import catalog
from pipeline.evaluation import evaluate as ev
from pipeline.evaluation.cil import SeenClassEvaluation, step_counts, step_result
from pipeline.evaluation.cil_report import published_cil, published_for_method, write_cil_report
from pipeline.evaluation.metrics import summarize_cil
from pipeline.models import ClipSpec, encode_images, encode_texts, eval_resize, load_clip, normalize_uint8, tokenizer
from tests.test_report import assert_png, table_row

NAN = math.nan
# 3 of 4 steps done: acc[i, j] = accuracy on step j's classes after step i.
M = np.array([[90.0, NAN, NAN, NAN], [60.0, 80.0, NAN, NAN], [50.0, 70.0, 85.0, NAN]])
SEEN = [90.0, 70.0, 68.0]


def test_avg_last_forgetting_by_hand():
    s = summarize_cil(SEEN, M)
    assert s.avg == pytest.approx((90 + 70 + 68) / 3) and s.last == 68.0
    # step 1: best of 90, 60 (after steps 1, 2) - 50 = 40; step 2: 80 - 70 = 10 -> 25
    assert s.forgetting == pytest.approx(25.0)
    assert math.isnan(s.transfer) and s.seen == (90.0, 70.0, 68.0)
    one = summarize_cil([55.0], M[:1])
    assert (one.avg, one.last) == (55.0, 55.0) and math.isnan(one.forgetting)
    assert math.isnan(summarize_cil(SEEN).forgetting)  # no matrix, no forgetting


@pytest.mark.parametrize(("seen", "acc", "match"), [
    ([], None, "non-empty"),
    ([90.0, NAN], None, "NaN or infinite"),
    (SEEN, M[:2], r"shape \(2, 4\) for 3 finished steps"),
    (SEEN[:2], np.array([[90.0, NAN], [NAN, 80.0]]), "on or below the diagonal"),
])
def test_summarize_cil_rejects_bad_input(seen, acc, match):
    with pytest.raises(ValueError, match=match):
        summarize_cil(seen, acc)


def test_published_rows_of_tables_7_and_8():
    source, rows = published_cil("cifar100-10")
    assert source == "Tab. 7" and rows["GIFT"] == (85.11, 77.7) and rows["DER"] == (74.64, 64.35)
    assert published_for_method("zscl", "tinyimagenet-20") == (77.18, 68.3)
    assert published_cil("cifar100-50")[1]["RPSNet"] == (None, None)  # not in the paper
    assert published_cil("seq-cifar100") is None and published_for_method("l2", "cifar100-10") is None


def test_report_files(tmp_path):
    setting = dataclasses.replace(catalog.get_setting("cifar100-20"), sizes=(25, 25, 25, 25))  # 4 steps of 25
    out = write_cil_report(tmp_path, setting=setting, acc=M, seen=SEEN, method="gift", comparable=False)
    lines = out["csv"].read_text().splitlines()
    assert lines[0] == "after_step,classes_seen,seen_acc,cifar100-20/01,cifar100-20/02,cifar100-20/03,cifar100-20/04"
    assert lines[2] == "cifar100-20/02,50,70.00,60.00,80.00,,"
    np.testing.assert_array_equal(np.load(out["npy"]), M)
    md = out["md"].read_text(encoding="utf-8")
    assert "in progress: 3 of 4 steps done" in md
    assert table_row(md, "`gift` (ours)") == ["`gift` (ours)", "76.0", "68.0"]  # 228 / 3, acc_3
    assert "Forgetting: 25.0 points" in md and "not shown" in md
    assert table_row(md, "after cifar100-20/02", "each step") == ["after cifar100-20/02", "60.0", "**80.0**", "", ""]
    assert_png(out["heatmap"])
    assert_png(out["curves"])


def test_report_sets_ours_beside_the_published_row(tmp_path):
    setting = catalog.get_setting("tinyimagenet-5")
    acc = np.tril(np.full((6, 6), 80.0)) + np.triu(np.full((6, 6), NAN), 1)
    md = write_cil_report(tmp_path, setting=setting, acc=acc, seen=[81.0] * 5 + [75.0], method="gift",
                          comparable=True)["md"].read_text(encoding="utf-8")
    # Avg (81·5 + 75) / 6 = 80.0, Last 75.0 vs published 81.16 / 77.04: Δ -1.2 (flagged), -2.0 (flagged)
    assert table_row(md, "`gift` (ours)") == ["`gift` (ours)", "80.0", "75.0"]
    assert table_row(md, "GIFT (published, Tab. 8)") == ["GIFT (published, Tab. 8)", "81.16", "77.04"]
    assert table_row(md, "Δ") == ["Δ", "-1.2 ⚠", "-2.0 ⚠"]
    assert "| Method | 5 steps Avg | 5 steps Last |" in md  # TinyImageNet counts the steps after the base


def test_step_counts_from_any_predictor():
    """Predictions of original labels -> per-step (correct, images) and the row: what CLTS's router + heads reuse."""
    setting = catalog.get_setting("seq-cifar10")  # steps (0, 1), (2, 3), ...
    truth = torch.tensor([0, 1, 2, 3, 3, 9])
    predicted = torch.tensor([0, 0, 2, 1, 3, 9])
    counts = step_counts(predicted, truth, setting, 1)  # after step 2: label 9 is not seen yet, ignored
    assert counts.tolist() == [[1.0, 2.0], [2.0, 3.0]]
    result = step_result(counts, setting, 1)
    assert result.row[:2] == [50.0, pytest.approx(200 / 3)] and all(math.isnan(v) for v in result.row[2:])
    assert result.extra["seen"] == 60.0  # 3 of 5 seen images


def test_seen_class_evaluation_is_one_head_over_every_seen_class(tmp_path):
    """Against a brute-force computation: after step k, every test image of steps 0..k is scored against the
    prompts of all seen classes (no task id); the frozen cache gives the same numbers."""
    setting = catalog.get_setting("seq-cifar10", "3 1 4 0 5 9 2 6 8 7")
    rng = np.random.default_rng(0)
    labels = [int(y) for y in rng.integers(0, 10, 60)]
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in labels]
    test = ev.TestSet(list(zip(images, labels, strict=True)), eval_resize(32))
    model = load_clip(ClipSpec("tiny", "none", 3)).eval()
    cpu = torch.device("cpu")
    tok = tokenizer()
    with torch.no_grad():
        img = encode_images(model, normalize_uint8(test.tensors()[0]))
        txt = encode_texts(model, tok([f"a bad photo of a {n}." for n in setting.classnames]))
    for frozen in (False, True):
        evaluate = SeenClassEvaluation(setting, test, tok, cpu, frozen=frozen, batch_size=7)
        for k in range(5):
            result = evaluate(model, k)
            seen = list(setting.seen(k))
            predicted = np.array(seen)[(img @ txt[seen].T).argmax(dim=1).numpy()]
            truth = np.array(labels)
            mask = np.isin(truth, seen)
            assert result.extra["seen"] == pytest.approx(100 * (predicted == truth)[mask].mean())
            for j, step in enumerate(setting.steps):
                in_step = np.isin(truth, step)
                if j <= k:
                    assert result.row[j] == pytest.approx(100 * (predicted == truth)[in_step].mean())
                else:
                    assert math.isnan(result.row[j])
