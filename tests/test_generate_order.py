"""`gift generate --order`: every set an order's replay pool needs, finished sets skipped, a partial set finished."""

import json

from pipeline.datasets import catalog
from pipeline.replay.synthetic import find_pool_sets
from pipeline.training.config import TrainConfig
from pipeline.training.protocol import protocol_for
from shards.layout import parquet_path, tar_path
from shards.manifest import find_sets, load_manifest
from shards.verify import verify_set
from tests.conftest import FAST, run_gift

# mini (tasks mini-a, -b, -c): its pool is mini-base (12 classes), mini-a and mini-b (5 each; the last task, mini-c,
# is never replayed), at one image per class, in shards of 4.
ARGS = ["generate", "--order", "mini", *FAST, "--per-class", "1", "--shard-size", "4", "--batch-size", "4"]


def test_order_renders_its_pool_skips_finished_sets_and_finishes_a_partial_one(tmp_path):
    out = tmp_path / "shards"
    r = run_gift(*ARGS, "--out", out)
    assert r.returncode == 0, r.stderr
    # exactly the sets training reads, and training finds them as one pool
    pool = protocol_for(TrainConfig(order="mini")).pool_sets
    assert pool == catalog.pool_tasks("mini") == ["mini-base", "mini-a", "mini-b"]
    assert sorted(load_manifest(p)["task"] for p in find_sets(out)) == sorted(pool)
    sets = find_pool_sets(out, pool)
    assert all(load_manifest(p)["complete"] for p in sets.values())
    # 12 + 5 + 5 classes at one image each
    assert "0 of 3 sets done; to render: 22 images in 3 sets" in " ".join(r.stdout.split())
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.tar")}

    r = run_gift(*ARGS, "--out", out)  # again: every set is done, nothing is rendered
    assert r.returncode == 0, r.stderr
    assert "3 of 3 sets done; to render: 0 images" in " ".join(r.stdout.split())
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.tar")} == stamps

    # An interrupted set: mini-base lost its last shard before the manifest said complete.
    base = sets["mini-base"]
    before = tar_path(base, 2).read_bytes()
    tar_path(base, 2).unlink()
    parquet_path(base, 2).unlink()
    manifest = json.loads((base / "manifest.json").read_text())
    manifest.update(complete=False, samples=8, shards=manifest["shards"][:2])
    (base / "manifest.json").write_text(json.dumps(manifest))
    r = run_gift(*ARGS, "--out", out)
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "mini-base │ partial │ 8 / 12" in text and "2 of 3 sets done; to render: 4 images in 1 set" in text
    assert tar_path(base, 2).read_bytes() == before  # the same images as the uninterrupted run
    assert verify_set(base, deep=False).ok and load_manifest(base)["complete"]
    assert {p: t for p, t in stamps.items() if p.parent != base} == {
        p: p.stat().st_mtime_ns for p in out.rglob("*.tar") if p.parent != base}


def test_task_or_order_not_both(monkeypatch):
    from typer.testing import CliRunner

    import cli.app
    import cli.generate_cmd

    monkeypatch.setattr(cli.generate_cmd, "setup_logging", lambda: None)
    for args, message in ((["generate", *FAST], "give a TASK or --order ORDER"),
                          (["generate", "mnist", "--order", "mini", *FAST], "give a TASK or --order ORDER"),
                          (["generate", "--order", "nope", *FAST], "unknown order 'nope'")):
        result = CliRunner().invoke(cli.app.app, args)
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
