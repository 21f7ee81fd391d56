"""The comparison table: math on hand-made run directories, presets, the run/reuse loop, and `gift table` end to end."""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.evaluation.report import WARN_MARK
from pipeline.methods import METHODS
from pipeline.tables import presets
from pipeline.tables import table as tbl
from pipeline.training.config import TrainConfig
from tests.conftest import run_gift
from tests.test_metrics import A3
from tests.test_report import assert_png, formula_11, table_row

FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
# l2's matrix on mini: transfer_b = 50, transfer_c = (40 + 44) / 2 = 42 -> Transfer 46.0;
# rows sum to 170, 199, 225 -> Avg 594 / 9 = 66.0; Last 225 / 3 = 75.0.
L3 = [[80.0, 50.0, 40.0], [70.0, 85.0, 44.0], [60.0, 75.0, 90.0]]
# A3 (tests/test_metrics.py): Transfer 36.5, Avg 636 / 9 = 70.67, Last 263 / 3 = 87.67.


def fake_run(runs: Path, method: str, acc, order: str = "mini", name: str | None = None, **overrides) -> Path:
    """A run directory as train() leaves it: config.json (the resolved TrainConfig) and state.json."""
    config = TrainConfig(order=order, method=method, name=name, runs=str(runs), **overrides)
    run_dir = runs / config.run_name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(config)))
    rows = [list(map(float, r)) for r in acc]
    (run_dir / "state.json").write_text(json.dumps({"finished": len(rows), "acc": rows, "checkpoint": None}))
    return run_dir


def paper_setting(**kw) -> dict:
    return {"clip_arch": "ViT-B-16", "clip_weights": "openai", "iterations": 1000, **kw}


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        return {r["method"]: r for r in csv.DictReader(fh)}


# --------------------------------------------------------------------------- table math


def test_delta_against_l2_partial_mark_and_csv(tmp_path):
    runs = tmp_path / "runs"
    dirs = [fake_run(runs, "finetune", A3), fake_run(runs, "l2", L3), fake_run(runs, "gift", A3[:2])]
    table = tbl.build_table("mini", dirs)
    assert [r.name for r in table.rows] == ["finetune", "l2", "gift"]
    out = tbl.write_table(table, runs)
    md = out["md"].read_text(encoding="utf-8")
    # finetune − l2: 36.5 − 46.0 = −9.5; 70.67 − 66.0 = +4.67; 87.67 − 75.0 = +12.67
    # ... then what the row replayed and the learned parameters it keeps beyond CLIP, then its status
    assert table_row(md, "`finetune`") == ["`finetune`", "Continual Finetune", "36.5", "-9.5", "70.7", "+4.7", "87.7",
                                           "+12.7", "nothing", "none", "finished"]
    assert table_row(md, "`l2`")[2:8] == ["46.0", "+0.0", "66.0", "+0.0", "75.0", "+0.0"]
    # gift finished 2 of 3 tasks: transfer_b = 40, transfer_c = (30 + 36) / 2 = 33 -> 36.5; Avg 373 / 6 = 62.17;
    # Last = (85 + 92 + 36) / 3 = 71.0
    assert table_row(md, "`gift`") == ["`gift`", "GIFT", "36.5", "-9.5", "62.2", "-3.8", "71.0", "-4.0",
                                       "pool sets (not recorded)", "none", "partial (2/3 tasks)"]
    assert "`gift` 2/3" in md
    assert "Published numbers are not shown" in md and "⚠" not in md  # tiny/mini: nothing comparable
    rows = read_csv(out["csv"])
    assert list(rows) == ["finetune", "l2", "gift"]
    assert rows["finetune"]["transfer"] == "36.50" and rows["finetune"]["delta_transfer"] == "-9.50"
    assert rows["finetune"]["avg"] == "70.67" and rows["finetune"]["delta_last"] == "12.67"
    assert rows["gift"]["status"] == "partial" and rows["gift"]["finished"] == "2" and rows["gift"]["tasks"] == "3"
    assert rows["l2"]["published_transfer"] == "" and rows["l2"]["differs_avg"] == ""
    assert_png(out["png"])
    assert sorted(p.name for p in runs.iterdir() if p.is_file()) == ["table-mini.csv", "table-mini.md",
                                                                    "table-mini.png"]


def test_published_only_where_the_setting_matches_and_marked_beyond_one_point(tmp_path):
    runs = tmp_path / "runs"
    big = formula_11()  # Transfer 69.5, Avg 79.64, Last 86.0 (tests/test_report.py)
    dirs = [
        fake_run(runs, "gift", big, order="I", **paper_setting()),  # published 69.3 / 77.3 / 86.0
        fake_run(runs, "gift", big, order="I", name="gift-short", **paper_setting(iterations=500)),  # not comparable
        fake_run(runs, "gift", big, order="I", name="gift-cd-awc-orderI", **paper_setting(ita=False)),  # Tab. 3
        fake_run(runs, "gift", big, order="I", name="custom", **paper_setting(ita=False)),  # found by its config
        fake_run(runs, "gift", big, order="I", name="gift-b128", **paper_setting(batch_size=128)),  # other scale
        fake_run(runs, "gift", big, order="I", name="gift-lam2", **paper_setting(lam=2.0)),  # no preset's setting
        fake_run(runs, "l2", big[:5], order="I", **paper_setting()),
        fake_run(runs, "gift", big, order="I", name="gift-3k-orderI", **paper_setting(synthetic_budget=3000)),
        fake_run(runs, "ewc", big, order="I", **paper_setting()),  # ewc_samples 256 by default: Tab. 6's last row
    ]
    table = tbl.build_table("I", dirs)
    md = tbl.table_markdown(table)
    assert table.rows[0].published == (69.3, 77.3, 86.0)
    # Avg. 79.6 vs 77.3: +2.3 > 1 point -> marked; Transfer +0.2 and Last +0.0 are not.
    # l2 after 5 of 11 tasks (1-based i <= 5): transfer_j = 50 + 3j for j = 2..6 and 56 + 2j for j = 7..11,
    # (310 + 370) / 10 = 68.0; rows sum to 731, 775, 814, 848, 877 -> Avg 4045 / 55 = 73.55; Last 877 / 11 = 79.73.
    # Δ = 69.5 − 68.0 = +1.5; 79.64 − 73.55 = +6.1; 86.0 − 79.73 = +6.3
    cells = table_row(md, "`gift`")
    assert cells[2:11] == ["69.5", "69.3", "+1.5", "79.6 ⚠", "77.3", "+6.1", "86.0", "86.0", "+6.3"]
    assert table.rows[0].differs() == (False, True, False)
    assert table.rows[1].published is None and table_row(md, "`gift-short`")[1:4] == ["GIFT", "69.5", "–"]
    assert [(r.name, r.preset) for r in table.rows[2:4]] == [("gift-cd-awc", "gift-cd-awc"), ("custom", "gift-cd-awc")]
    assert table.rows[2].published == (68.7, 77.0, 85.8) == table.rows[3].published
    assert table_row(md, "`custom`")[1] == "+CD +AWC"
    assert table.rows[4].preset == "gift" and table.rows[4].published is None  # batch 128 is not the paper's
    assert table.rows[5].preset == "" and table.rows[5].published is None  # λ = 2 is no preset's setting
    # l2 after 5 of 11 tasks: Δ is taken against it all the same, and the row says it is partial.
    assert table.rows[6].partial and "partial (5/11 tasks)" in table_row(md, "`l2`")
    assert table.rows[6].published == (61.0, 62.7, 75.9) and table.rows[6].differs() == (False, False, False)
    assert "not checked against the published numbers" in md
    assert table.rows[7].name == "gift-3k" and table.rows[7].published is None  # GIFT with 3K images: no such row
    assert table.rows[8].name in ("ewc", "ewc-orderI") and table.rows[8].published == (68.0, 76.8, 86.2)
    assert WARN_MARK.split()[0] in md and "differs from it by more than 1 point" in md
    assert "MoE-Adapter (`moe-adapter`, no run in this table): published 68.9/76.7/85.0" in md
    rows = read_csv(tbl.write_table(table, runs)["csv"])
    assert rows["gift"]["published_avg"] == "77.3" and rows["gift"]["differs_avg"] == "true"
    assert rows["gift"]["differs_transfer"] == "false" and rows["gift"]["source"] == "Tab. 1/2"


def test_build_refuses_mixed_orders_and_non_runs(tmp_path):
    runs = tmp_path / "runs"
    mini = fake_run(runs, "finetune", A3)
    with pytest.raises(ValueError, match="not 'I'"):
        tbl.build_table("I", [mini])
    with pytest.raises(ValueError, match="no config.json"):
        tbl.build_table("mini", [tmp_path])


# --------------------------------------------------------------------------- presets


def test_presets_groups_and_aliases_resolve():
    names = [p.name for p in presets.resolve_presets("finetune, l2,table3,gift-cd-ita,gift")]
    assert names == ["finetune", "l2", "zeroshot", "gift-ita-only", "gift-cd", "gift-noawc", "gift-cd-awc", "gift"]
    assert [p.name for p in presets.resolve_presets("gift-ita0")] == ["gift-cd"]
    for group in presets.GROUPS:
        assert presets.resolve_presets(group)
    assert {m for m in METHODS} <= set(presets.all_presets())  # every method is a preset of its own
    assert [p.name for p in presets.resolve_presets(presets.DEFAULT_METHODS)] == presets.COMPARISON


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown preset 'gfit' \(did you mean gift\b.*\); valid presets: .*finetune.*gift-cd.*table3"):
        presets.resolve_presets("finetune,gfit")
    moe = presets.resolve_presets("table1")
    assert "moe-adapter" in [p.name for p in moe] and presets.PRESETS["moe-adapter"].published_for("I") == (
        68.9, 76.7, 85.0)
    assert presets.PRESETS["moe-adapter"].source_for("cifar100-10") == "MoE-Adapters4CL logs (not in GIFT)"
    with pytest.raises(ValueError, match="no methods"):
        presets.resolve_presets(" , ")


def test_presets_whose_fields_exist_build_their_config():
    available = [p for p in presets.PRESETS.values() if p.method in METHODS and set(p.overrides) <= FIELDS
                 and not any(isinstance(v, presets.ShardFamily) for v in p.overrides.values())]
    assert {"gift", "gift-cd-awc", "l2"} <= {p.name for p in available}
    for preset in available:
        config = presets.config_for(preset, "I", {"runs": "r", "iterations": 7})
        assert config.method == preset.method and config.iterations == 7 and config.order == "I"
        assert all(getattr(config, k) == v for k, v in preset.overrides.items())
        assert Path(config.runs, config.run_name).name == preset.dir_name("I")
        assert presets.preset_matches(preset, asdict(config))
    assert presets.config_for(presets.PRESETS["gift-cd-awc"], "I", {}).run_name == "gift-cd-awc-orderI"
    assert presets.config_for(presets.PRESETS["l2"], "I", {}).run_name == "l2-orderI"  # the same directory as `gift train`


def test_missing_field_or_method_fails_at_run_time_with_a_clear_error():
    with pytest.raises(ValueError, match="preset p needs TrainConfig field 'no_such_field', not available in this version"):
        presets.config_for(presets.Preset("p", "gift", {"no_such_field": 1}), "I", {})
    with pytest.raises(ValueError, match="preset q needs method 'no-such-method', not available in this version"):
        presets.config_for(presets.Preset("q", "no-such-method"), "I", {})
    for preset in presets.PRESETS.values():  # the presets waiting for the lead's fields fail the same way, not at import
        if preset.method in METHODS and not set(preset.overrides) <= FIELDS:
            missing = next(k for k in preset.overrides if k not in FIELDS)
            with pytest.raises(ValueError, match=f"needs TrainConfig field '{missing}'"):
                presets.config_for(preset, "I", {})


def test_shard_family_selector(tmp_path):
    from pipeline.datasets import mini
    from pipeline.generation.generate import generate, resolve_spec
    from pipeline.replay.synthetic import spec_family
    from shards.manifest import load_manifest

    # a one-image-per-class `reference` set of mini-base stands in for a pool set
    spec = resolve_spec("mini-base", model=f"reference:{mini.export_reference(tmp_path / 'imgs')}", per_class=1,
                        size=8, device=torch.device("cpu"))
    set_path = generate(spec, tmp_path / "shards", device=torch.device("cpu")).set_path
    family = spec_family(load_manifest(set_path)["spec"])
    base = {"shards": str(tmp_path / "shards")}
    assert presets.ShardFamily((("generator", "reference"),)).resolve(base) == family
    with pytest.raises(ValueError, match=r"steps=25.*found none.*gift generate TASK --model sd15 --steps 25"):
        presets.ShardFamily((("generator", "sd15"), ("steps", 25))).resolve(base)


# --------------------------------------------------------------------------- running presets (fake training)


def test_run_table_trains_missing_resumes_partial_reuses_finished_and_survives_a_failure(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "finetune", A3)  # finished: reused
    fake_run(runs, "zeroshot", A3[:1])  # partial: resumed
    calls = []

    def fake_train(config, progress, device):
        calls.append(config.run_name)
        if config.method == "gift":
            raise RuntimeError("pool sets missing")
        run_dir = runs / config.run_name
        run_dir.mkdir(exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(asdict(config)))
        (run_dir / "state.json").write_text(json.dumps({"finished": 3, "acc": L3, "checkpoint": None}))
        return run_dir

    chosen = [*presets.resolve_presets("finetune,zeroshot,gift,l2"), presets.Preset("later", "gift", {"not_yet": 1})]
    result = tbl.run_table("mini", chosen, {"runs": str(runs)}, train_fn=fake_train)
    assert calls == ["zeroshot-ordermini", "gift-ordermini", "l2-ordermini"]
    assert result.reused == ["finetune"] and result.trained == ["zeroshot", "l2"]
    failed = {r.name: r.error for r in result.table.failed}
    assert failed["gift"] == "pool sets missing"
    assert failed["later"] == "preset later needs TrainConfig field 'not_yet', not available in this version"
    md = result.files["md"].read_text(encoding="utf-8")
    assert "`gift`: pool sets missing" in md and table_row(md, "`gift`")[-1] == "**failed**"
    assert table_row(md, "`finetune`")[3] == "-9.5"  # the others are complete
    assert tbl.read_run(runs / "finetune-ordermini")[1]["acc"] == A3.tolist()  # untouched
    # Once everything is finished, nothing trains again.
    calls.clear()
    tbl.run_table("mini", presets.resolve_presets("finetune,zeroshot,l2"), {"runs": str(runs)}, train_fn=fake_train)
    assert calls == []


def test_a_run_directory_of_another_config_is_a_failed_row_not_overwritten(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "l2", L3, iterations=5)
    result = tbl.run_table("mini", presets.resolve_presets("l2"), {"runs": str(runs), "iterations": 6},
                           train_fn=lambda *a: pytest.fail("must not train"))
    assert "differs in: iterations" in result.table.failed[0].error
    assert tbl.read_run(runs / "l2-ordermini")[0]["iterations"] == 5


def test_seeds_train_their_own_runs_and_several_seeds_give_mean_and_std(tmp_path):
    runs = tmp_path / "runs"
    fake_run(runs, "finetune", A3)  # seed 0's finished run (as `gift train` / `gift demo` name it): reused
    calls = []

    def fake_train(config, progress, device):  # seed 1 learns L3, seed 2 fails
        calls.append(config.run_name)
        if config.seed == 2:
            raise RuntimeError("out of memory")
        run_dir = runs / config.run_name
        run_dir.mkdir()
        (run_dir / "config.json").write_text(json.dumps(asdict(config)))
        (run_dir / "state.json").write_text(json.dumps({"finished": 3, "acc": L3, "checkpoint": None}))
        return run_dir

    one = tbl.run_table("mini", presets.resolve_presets("finetune"), {"runs": str(runs)}, train_fn=fake_train,
                        seeds=[1])
    assert calls == ["finetune-ordermini-seed1"]  # `gift demo --seed 1`'s name
    md = one.files["md"].read_text(encoding="utf-8")
    assert one.files["md"].name == "table-mini-seed1.md" and "seed 1" in md.splitlines()[0]
    # seed 1's own numbers (L3: 46.0 / 66.0 / 75.0), not seed 0's beside them
    assert table_row(md, "`finetune`")[2:5:2] == ["46.0", "66.0"] and table_row(md, "`finetune`")[-1] == "finished"
    assert not (runs / "table-mini.md").exists()  # seed 0's table is not overwritten

    calls.clear()
    three = tbl.run_table("mini", presets.resolve_presets("finetune"), {"runs": str(runs)}, train_fn=fake_train,
                          seeds=[0, 1, 2])
    assert calls == ["finetune-ordermini-seed2"]  # seeds 0 and 1 reused
    assert three.reused == ["finetune seed 0", "finetune seed 1"]
    md = three.files["md"].read_text(encoding="utf-8")
    assert three.files["md"].name == "table-mini-seeds0-1-2.md" and "mean ± std" in md.splitlines()[0]
    # over A3 and L3: Avg (70.67 + 66.0) / 2 = 68.33, std 4.67 / sqrt 2 = 3.30; Last 81.33, std 12.67 / sqrt 2 = 8.96
    row = table_row(md, "`finetune`")
    assert row[4] == "68.3 ± 3.3" and row[6] == "81.3 ± 9.0"
    assert row[-1] == "**failed**, 2 of 3 seeds" and "seed 2: out of memory" in md
    csv_row = read_csv(three.files["csv"])["finetune"]
    assert csv_row["transfer"] == "41.25" and csv_row["std_transfer"] == "6.72" and csv_row["seeds"] == "0 1 2"
    # built from the folder (`gift table --runs DIR`): each seed's run a row of its own, named apart
    assert [r.name for r in tbl.build_table("mini", tbl.find_runs(runs, "mini")).rows] == [
        "finetune", "finetune-ordermini-seed1"]


# --------------------------------------------------------------------------- `gift table` end to end


@pytest.mark.slow
def test_gift_table_trains_then_reuses_and_builds_from_run_dirs(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    args = ["table", "--order", "mini", "--methods", "finetune,l2", "--runs", runs, "--shards", tmp_path / "none",
            "--clip", "tiny", "--clip-weights", "none", "--iterations", "2", "--batch-size", "8", "--warmup", "1",
            "--workers", "0", "--device", "cpu"]
    r = run_gift(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in ("finetune-ordermini", "l2-ordermini"):
        state = tbl.read_run(runs / name)[1]
        assert state["finished"] == 3 and np.array(state["acc"]).shape == (3, 3)
    md = (runs / "table-mini.md").read_text(encoding="utf-8")
    assert table_row(md, "`finetune`")[-1] == "finished" and table_row(md, "`l2`")[3] == "+0.0"
    assert set(read_csv(runs / "table-mini.csv")) == {"finetune", "l2"}
    assert_png(runs / "table-mini.png")
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/*") if p.is_file()}

    r = run_gift(*args, cwd=tmp_path)  # the same command again: both runs are finished, nothing retrains
    assert r.returncode == 0, r.stderr
    assert "finished, reused" in r.stdout and "reused finished runs: finetune, l2" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/*") if p.is_file()} == stamps

    # Seeds 0 and 1: seed 0's run reused, seed 1's trained in its own directory, each cell mean ± std.
    r = run_gift(*[a if a != "finetune,l2" else "finetune" for a in args], "--seed", "0,1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert tbl.read_run(runs / "finetune-ordermini-seed1")[0]["seed"] == 1
    assert {p: p.stat().st_mtime_ns for p in runs.glob("finetune-ordermini/*") if p.is_file()} == {
        p: t for p, t in stamps.items() if p.parent.name == "finetune-ordermini"}
    assert " ± " in table_row((runs / "table-mini-seeds0-1.md").read_text(encoding="utf-8"), "`finetune`")[4]

    # In process from here (no new interpreter): build-only from run directories, and bad input.
    from typer.testing import CliRunner

    import cli.app
    import cli.table_cmd

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.table_cmd, "setup_logging", lambda: None)

    def gift(*argv):
        result = CliRunner().invoke(cli.app.app, list(map(str, argv)))
        return result.exit_code, " ".join(result.output.split())

    code, output = gift("table", runs / "l2-ordermini", "--runs", runs / "finetune-ordermini", "--out", "t")
    assert code == 0, output
    assert list(read_csv(tmp_path / "t" / "table-mini.csv")) == ["finetune", "l2"]
    code, output = gift("table", "--runs", runs)  # a folder of runs: every run in it, its order from the runs
    assert code == 0 and "`finetune`" in output, output
    code, output = gift("table", "--order", "mini", "--methods", "l2", "--method", "gift")
    assert code == 2 and "--method is chosen per preset" in output
    code, output = gift("table", "--methods", "finetune,nope")
    assert code == 2 and "unknown preset 'nope'" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "t"]  # nothing written elsewhere


def test_real_renders_reaches_only_the_rows_that_replay_caption_renders(tmp_path):
    """`gift table --real-renders` (the demo's mini-cil table) is for clts and gift-captions; the other rows have no
    caption renders to accept, run as without it, and a run made with it is still its preset's row."""
    base = {"runs": str(tmp_path), "real_renders": True}
    chosen = presets.resolve_presets("finetune,icarl,gift,gift-captions,clts")
    made = {p.name: presets.config_for(p, "mini-cil", base).real_renders for p in chosen}
    assert made == {"finetune": False, "icarl": False, "gift": False, "gift-captions": True, "clts": True}
    run_dir = fake_run(tmp_path, "clts", [[50.0] * 5], order="mini-cil", name="clts-ordermini-cil",
                       real_renders=True)
    assert presets.identify(run_dir, json.loads((run_dir / "config.json").read_text())).name == "clts"
