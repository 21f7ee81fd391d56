"""The class-incremental protocol end to end: the real loop on fixtures in CIFAR100's and TinyImageNet's on-disk
layouts, mini-cil (scikit-learn digits, reference replay sets) with GIFT against finetune, resume, the per-setting
defaults, the comparison table, and bad input through the real CLI."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cli.app import app
from pipeline.datasets import catalog
from pipeline.tables import table as tbl
from pipeline.training.config import TrainConfig
from pipeline.training.train import Progress, train
from tests.conftest import run_gift
from tests.test_cil_data import make_cifar100_full, make_tinyimagenet
from tests.test_report import table_row

CPU = torch.device("cpu")


def mini_cil(workspace, **kw) -> TrainConfig:
    root, weights = workspace
    base = dict(order="mini-cil", runs=str(root / "runs"), shards=str(root / "shards"), clip_arch="tiny",
                clip_weights=str(weights), batch_size=32, synthetic_batch=32, synthetic_budget=96, workers=0)
    return TrainConfig(**{**base, **kw})


def load(run_dir):
    state = json.loads((run_dir / "state.json").read_text())
    acc = np.array([[np.nan if v is None else v for v in row] for row in state["acc"]], dtype=float)
    return acc, np.array(state["seen"])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cil-data")
    make_cifar100_full(root, train_per_class=2, test_per_class=1)
    make_tinyimagenet(root)
    return root


def test_setting_defaults_are_recorded_and_mtil_defaults_unchanged():
    mtil = TrainConfig(order="II", method="zscl")
    assert (mtil.iterations, mtil.epochs, mtil.lr, mtil.warmup, mtil.label_smoothing, mtil.weight_decay) == (
        1000, None, None, 100, 0.2, 0.0)
    assert (mtil.alpha, mtil.ensemble_every, mtil.memory_size) == (1.0, 100, 10000)
    cifar = TrainConfig(order="cifar100-10", method="gift")
    assert (cifar.iterations, cifar.epochs, cifar.lr, cifar.warmup, cifar.label_smoothing, cifar.weight_decay) == (
        None, 1.0, 7.1e-6, 30, 0.2, 0.0)
    assert cifar.steps_for(5000) == 79 and cifar.alpha == 1.0  # one epoch of a 10-class step: ceil(5000 / 64)
    tiny = TrainConfig(order="tinyimagenet-10", method="zscl")
    assert (tiny.label_smoothing, tiny.weight_decay, tiny.alpha, tiny.ensemble_every) == (0.0, 0.1, 5.0, 10)
    assert TrainConfig(order="tinyimagenet-10", method="icarl").memory_size == 5000
    # options win over the setting's defaults; --iterations replaces the epoch rule
    chosen = TrainConfig(order="tinyimagenet-10", lr=1e-5, weight_decay=0.0, iterations=7)
    assert (chosen.lr, chosen.weight_decay, chosen.iterations, chosen.epochs, chosen.steps_for(50000)) == (
        1e-5, 0.0, 7, None, 7)
    assert asdict(TrainConfig(**asdict(cifar))) == asdict(cifar)  # config.json round-trips
    with pytest.raises(ValueError, match="exclude each other"):
        TrainConfig(order="cifar100-10", iterations=5, epochs=2)
    with pytest.raises(ValueError, match="--class-order applies to CIL settings"):
        TrainConfig(order="I", class_order="0 1")


def test_cil_runs_on_cifar100_and_tinyimagenet_layouts(data_root, tmp_path):
    """finetune on cifar100-10 (2 images per class, one iteration per step) and zero-shot on tinyimagenet-5: the step
    matrix is lower-triangular, every seen class is evaluated after every step, the report is written."""
    common = dict(runs=str(tmp_path), data_root=str(data_root), clip_arch="tiny", clip_weights="none", workers=0,
                  batch_size=8)
    run = train(TrainConfig(order="cifar100-10", method="finetune", iterations=1, **common), device=CPU)
    acc, seen = load(run)
    assert acc.shape == (10, 10) and len(seen) == 10
    assert np.isnan(acc[np.triu_indices(10, 1)]).all() and np.isfinite(acc[np.tril_indices(10)]).all()
    # 1 test image per class: after step k, 10 (k+1) images; acc_k is their mean accuracy = mean of the row
    np.testing.assert_allclose(seen, [np.nanmean(acc[k]) for k in range(10)])
    md = (run / "results.md").read_text()
    assert "| Method | 10 steps Avg | 10 steps Last |" in md and "after cifar100-10/10" in md
    assert {"acc_matrix.csv", "acc_matrix.npy", "acc_matrix.png", "curves.png"} <= {p.name for p in run.iterdir()}
    assert json.loads((run / "config.json").read_text())["lr"] == 7.1e-6
    tiny = train(TrainConfig(order="tinyimagenet-5", method="zeroshot", **common), device=CPU)
    acc, seen = load(tiny)
    assert acc.shape == (6, 6) and np.isfinite(seen).all()
    # the head grows with the seen classes: base-step images are never easier to classify among more classes
    assert (np.diff(acc[:, 0]) <= 1e-9).all()
    # the test split was decoded once into the cache shared with every run under --runs
    assert len(list((tmp_path / ".cache" / "test").glob("tinyimagenet-*.npy"))) == 2  # images + labels


def test_an_interrupted_cil_run_resumes_to_the_uninterrupted_result(workspace):
    """Stopped inside step 3, the same config continues after step 2 and ends with the same matrix and Avg / Last."""

    class Stop(Progress):
        def start_task(self, index, task, steps):
            if index == 2:
                raise KeyboardInterrupt

    whole = train(mini_cil(workspace, method="finetune", epochs=1, name="cil-whole"), device=CPU)
    with pytest.raises(KeyboardInterrupt):
        train(mini_cil(workspace, method="finetune", epochs=1, name="cil-cut"), progress=Stop(), device=CPU)
    cut = mini_cil(workspace, method="finetune", epochs=1, name="cil-cut")
    assert json.loads((workspace[0] / "runs" / "cil-cut" / "state.json").read_text())["finished"] == 2
    resumed = train(cut, device=CPU)
    (a, s), (b, t) = load(whole), load(resumed)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(s, t)


@pytest.mark.parametrize("method", ["zeroshot", "finetune", "lwf", "lwf-vr", "icarl", "zscl", "gift"])
def test_every_cil_baseline_runs_mini_cil(workspace, method):
    """Table 7's methods through the CIL loop (2 steps per task): each logs its own term; iCaRL's memory holds the
    steps' classes, cut back as classes arrive; the distillation weight is the setting's 5 for LwF / iCaRL / ZSCL,
    ZSCL adds no l2 in CIL; the report says what each replayed."""
    from tests.test_methods import _captions

    root, _ = workspace
    extra = {"icarl": dict(memory_size=20),
             "zscl": dict(reference_images=str(root / "reference"), reference_texts=str(_captions(workspace)))}
    config = mini_cil(workspace, method=method, name=f"cil-all-{method}", iterations=2, batch_size=16,
                      synthetic_batch=16, **extra.get(method, {}))
    assert config.alpha == (5.0 if method in ("lwf", "lwf-vr", "icarl", "zscl") else 1.0)
    acc, seen = load(train(config, device=CPU))
    assert acc.shape == (5, 5) and len(seen) == 5 and ((seen >= 0) & (seen <= 100)).all()
    run_dir = root / "runs" / f"cil-all-{method}"
    if method != "zeroshot":
        logged = set().union(*(json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()))
        own = {"lwf": "lwf", "lwf-vr": "lwf", "zscl": "zscl", "icarl": "icarl", "gift": "awc"}
        assert own.get(method, "ce") in logged, logged
        assert "l2" not in logged  # zscl: the harness's CIL configs have no l2
    replayed = {"zeroshot": "nothing", "finetune": "nothing", "lwf": "the current task's images (real)",
                "lwf-vr": "the current task's images (real)", "icarl": "exemplars (real images)",
                "zscl": "reference images (real)", "gift": "real images"}  # gift: the `reference` pool sets
    assert f"- Replayed: {replayed[method]}\n" in (run_dir / "results.md").read_text()
    if method == "icarl":  # 6 classes seen after 3 steps: 20 // 6 = 3 exemplars each
        memory = json.loads((run_dir / "icarl-memory-task03.json").read_text())
        assert set(memory) == {"mini-cil/01", "mini-cil/02", "mini-cil/03"}
        assert all(len(ids) == 3 for by_class in memory.values() for ids in by_class.values())


def test_gift_keeps_earlier_classes_better_than_finetune(workspace):
    """mini-cil (digits in 5 steps of 2, replay sets of real held-out digits): after each step, the accuracy on the
    classes of earlier steps (one head over every seen class) is clearly higher with GIFT than with finetune."""
    old = {}
    for method in ("finetune", "gift"):
        acc, seen = load(train(mini_cil(workspace, method=method, name=f"cil-{method}"), device=CPU))
        old[method] = np.mean([np.mean(acc[i, :i]) for i in range(1, 5)])  # earlier steps' classes after step i
        print(method, "seen-class accuracy", np.round(seen, 1), "earlier classes", round(old[method], 1))
    assert old["gift"] > old["finetune"] + 10


def test_cil_table_sets_published_rows_beside_ours(tmp_path):
    runs = tmp_path / "runs"

    def fake(method, seen, **overrides):
        config = TrainConfig(order="cifar100-10", method=method, runs=str(runs), **overrides)
        run_dir = runs / config.run_name
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps(asdict(config)))
        acc = [[80.0] * (k + 1) + [None] * (9 - k) for k in range(len(seen))]
        (run_dir / "state.json").write_text(json.dumps({"finished": len(seen), "acc": acc, "checkpoint": None,
                                                        "seen": seen}))
        return run_dir

    dirs = [fake("finetune", [70.0] * 10), fake("gift", [90.0] * 9 + [80.0]), fake("zscl", [75.0] * 4, iterations=3)]
    table = tbl.build_table("cifar100-10", dirs)
    md = tbl.write_table(table, runs)["md"].read_text()
    # ... | replayed | memory kept | extra parameters | status (these fake runs recorded no replay.json)
    assert table_row(md, "`gift`") == ["`gift`", "GIFT", "89.0 ⚠", "85.11", "80.0 ⚠", "77.70", "pool sets (not recorded)",
                                       "nothing (renders of class names)", "none", "finished"]
    assert table_row(md, "`finetune`") == ["`finetune`", "CLIP Fine-tune", "70.0 ⚠", "65.46", "70.0 ⚠", "53.23",
                                           "nothing", "nothing", "none", "finished"]
    # not the paper's setting (3 iterations per step): no published numbers; partial
    assert table_row(md, "`zscl`") == ["`zscl`", "ZSCL", "75.0", "–", "75.0", "–", "reference images (real)", "nothing",
                                       "none", "partial (4/10 tasks)"]
    assert "Transfer" not in md and "Δ l2" not in md
    assert "**Published only**" in md and table_row(md, "DER") == ["DER", "74.64", "64.35"]


def test_gift_table_list_shows_table_7(monkeypatch):
    result = CliRunner().invoke(app, ["table", "--order", "cifar100-10", "--list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    for row in ("CLIP Zero-shot", "CLIP Fine-tune", "LwF-VR", "ZSCL", "GIFT", "85.11/77.7 (Tab. 7)", "alpha=5.0",
                "icarl keeps 5000 exemplars", "zscl ensembles every 10 iterations", "DyTox+", "Published only"):
        assert row in out, row


def test_cli_bad_input(tmp_path, workspace):
    runs = tmp_path / "runs"
    common = ["--runs", runs, "--clip", "tiny", "--clip-weights", "none", "--device", "cpu", "--workers", "0"]
    r = run_gift("train", "--order", "cifar100-7", *common)
    assert r.returncode == 2 and "cifar100-10, cifar100-20, cifar100-50, tinyimagenet-5" in r.stderr
    r = run_gift("train", "--order", "tinyimagenet-5", "--data-root", tmp_path / "nothing", *common)
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "tiny-imagenet-200" in err and "tiny-imagenet-200.zip" in err and "wnids.txt" in err
    order = tmp_path / "order.yaml"
    order.write_text("class_order: [" + ", ".join(map(str, range(99))) + ", 7]\n")
    r = run_gift("train", "--order", "cifar100-10", "--class-order", order, *common)
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "does not match cifar100" in err and "repeated labels: 7" in err
    assert "missing labels: 99" in err
    root, weights = workspace
    (tmp_path / "pool").mkdir()
    r = run_gift("train", "--order", "mini-cil", "--method", "gift", "--shards", tmp_path / "pool", "--name", "nopool",
                 *common)
    assert r.returncode == 2 and "make generate TASK=mini-cil-base" in " ".join(r.stderr.split())
    tiny = make_tinyimagenet(tmp_path / "partial")
    (tiny / "wnids.txt").write_text("\n".join((tiny / "wnids.txt").read_text().split()[:150]) + "\n")
    r = run_gift("train", "--order", "tinyimagenet-5", "--data-root", tmp_path / "partial", *common)
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "found 150 classes, expected 200 (partial download or extraction?)" in err
    assert "val/val_annotations.txt" in err  # the expected layout
    assert not runs.exists()  # nothing was created by any of these


def test_a_class_order_file_changes_what_each_step_learns(workspace, tmp_path):
    """--class-order: step 1 of mini-cil learns 'nine' and 'eight'; the run records the order itself."""
    order = tmp_path / "order.txt"
    order.write_text("\n".join(map(str, range(9, -1, -1))))
    root, weights = workspace
    r = run_gift("train", "--order", "mini-cil", "--method", "zeroshot", "--class-order", order, "--runs",
                 tmp_path / "runs", "--clip", "tiny", "--clip-weights", weights, "--device", "cpu", "--workers", "0")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "zeroshot-ordermini-cil"
    assert json.loads((run / "config.json").read_text())["class_order"] == "9,8,7,6,5,4,3,2,1,0"
    natural = train(mini_cil(workspace, method="zeroshot", name="cil-natural"), device=CPU)
    # zero-shot after the last step sees every class either way: the same accuracy
    assert load(run)[1][-1] == pytest.approx(load(natural)[1][-1])
    assert catalog.get_setting("mini-cil", "9 8 7 6 5 4 3 2 1 0").task(0).classnames == ("nine", "eight")
