"""--report-to tensorboard,wandb, offline: what TensorBoard and W&B hold, read back with their own formats, equals
what the run directory (metrics.jsonl, the accuracy matrix) and the shard set say, also across a killed run."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation.metrics import summarize
from tests.conftest import FAST, ROOT, cli_args, gift_cmd, only_set, run_gift

GENERATE = ["generate", "mnist", *FAST, "--per-class", "2", "--shard-size", "4", "--batch-size", "2"]
TERMS = ("ce", "cd", "ita", "awc", "lr")
ORDER = ("mini-a", "mini-b", "mini-c")


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory) -> dict[str, str]:
    """W&B offline, with its cache, config and temporary files in the test's own folder, not the home directory."""
    home = tmp_path_factory.mktemp("wandb-home")
    for sub in ("cache", "config", "data", "tmp"):
        (home / sub).mkdir()
    return {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CACHE_DIR": str(home / "cache"),
            "WANDB_CONFIG_DIR": str(home / "config"), "WANDB_DATA_DIR": str(home / "data"), "TMPDIR": str(home / "tmp")}


def tensorboard(log_dir: Path):
    """TensorBoard's own reader over a log directory (every event file in it, purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0}).Reload()


def wandb_records(run_file: Path) -> list:
    """The records of a W&B run file (``run-<id>.wandb``: ":W&B" header, then LevelDB-log blocks of 32 KiB whose
    chunks hold serialised ``wandb_internal_pb2.Record`` protobufs)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, records, pending = run_file.read_bytes(), 32768, 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 2):  # full, first
            pending = chunk
        elif kind in (3, 4):  # middle, last
            pending += chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_history(run_file: Path) -> dict[int, dict[str, float]]:
    """Logged rows by step, and the run summary under key None."""
    out: dict = {None: {}}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            out[row["_step"]] = row
        elif kind == "summary":
            out[None].update({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.summary.update})
    return out


def test_report_to_is_checked_before_anything_runs(workspace, tmp_path):
    root, _ = workspace
    r = run_gift(*cli_args(workspace, "--name", "badtracker", "--report-to", "tensorboard,mlflow"))
    assert r.returncode == 2 and "unknown --report-to tracker 'mlflow'; valid --report-to trackers: tensorboard, wandb" in " ".join(r.stderr.split())
    # a backend whose package is missing: `sys.modules[name] = None` is Python's own way to make its import fail
    for args, missing in ((cli_args(workspace, "--name", "badtracker", "--report-to", "wandb"), "wandb"),
                          ([*GENERATE, "--out", tmp_path, "--report-to", "tensorboard"], "tensorboard")):
        code = (f"import sys; sys.modules[{missing!r}] = None; sys.argv = ['gift', *{list(map(str, args))!r}]; "
                "from cli.app import main; main()")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        err = " ".join(r.stderr.split())
        assert r.returncode == 2, r.stderr
        assert f"--report-to {missing} needs the {missing} package, which is not installed: pip install -e '.[tracking]'" in err
    assert not (root / "runs" / "badtracker").exists() and not list(tmp_path.iterdir())


def test_tensorboard_and_wandb_hold_the_run_directory_across_a_kill_and_resume(workspace, wandb_env):
    """A run killed in task 2, after it had logged some of task 2's steps, then resumed: TensorBoard holds every
    metrics.jsonl row once (the redone steps not again), W&B's run (same id) holds every row and the summary."""
    root, _ = workspace
    run_dir = root / "runs" / "tracked"
    args = cli_args(workspace, "--method", "gift", "--iterations", "25", "--name", "tracked",
                    "--report-to", "tensorboard,wandb")
    proc = subprocess.Popen(gift_cmd(*args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **wandb_env})
    marks, deadline = run_dir / "tracking.json", time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # until task 2's steps 0 and 10 are in TensorBoard
        if marks.exists() and json.loads(marks.read_text())["tensorboard"]["logged"] >= 35:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((run_dir / "state.json").read_text())["finished"] == 1, "kill the run during task 2"
    killed_mark = json.loads(marks.read_text())
    assert killed_mark["tensorboard"]["logged"] >= 35 and killed_mark["wandb"]["logged"] == -1  # W&B: not closed

    r = run_gift(*args, env=wandb_env)
    assert r.returncode == 0, r.stderr
    # (rows of the killed task that reached metrics.jsonl were written again by the resume: the same values)
    by_step = {r["index"] * 25 + r["step"]: r
               for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}
    steps = sorted(by_step)
    assert steps == [0, 10, 20, 24, 25, 35, 45, 49, 50, 60, 70, 74]
    acc = np.load(run_dir / "acc_matrix.npy")
    summary = summarize(acc, list(ORDER))

    tb = tensorboard(run_dir / "tensorboard")
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2  # the same log dir, continued
    for term in TERMS:  # steps 25 and 35 were in TensorBoard before the kill, and the resume redid them
        events = tb.Scalars(f"train/{term}")
        assert [e.step for e in events] == steps, term  # each step once, in order
        for e in events:
            assert e.value == pytest.approx(by_step[e.step][term], rel=1e-6, abs=1e-12), (term, e.step)
    rates = tb.Scalars("train/steps_per_s")
    assert rates and all(e.value > 0 and e.step % 25 != 0 for e in rates)  # not across evaluations
    for j, name in enumerate(ORDER):
        events = tb.Scalars(f"accuracy/{name}")
        assert [e.step for e in events] == [24, 49, 74]
        assert [e.value for e in events] == pytest.approx(acc[:, j], rel=1e-6)
    assert tb.Scalars("summary/last")[-1].value == pytest.approx(summary.last, rel=1e-6)
    for tag in ("acc_matrix", "curves"):
        images = tb.Images(tag)
        assert [e.step for e in images] == [24, 49, 74]
        assert Image.open(io.BytesIO(images[-1].encoded_image_string)).size == (images[-1].width, images[-1].height)

    ids = json.loads(marks.read_text())
    assert ids["tensorboard"]["logged"] == ids["wandb"]["logged"] == 74
    runs = sorted((run_dir / "wandb").glob(f"offline-run-*-{ids['wandb']['id']}"))
    assert len(runs) == 2  # the killed run's and the resumed one's: the same W&B run id
    # W&B had kept the killed process's points in memory; the resume logged them again from the run directory
    history = wandb_history(runs[-1] / f"run-{ids['wandb']['id']}.wandb")
    assert sorted(s for s in history if s is not None and "train/ce" in history[s]) == steps
    for step in steps:
        for term in TERMS:
            assert history[step][f"train/{term}"] == pytest.approx(by_step[step][term], rel=1e-12, abs=1e-15)
    assert history[74]["accuracy/mini-c"] == pytest.approx(acc[2, 2])
    final = history[None]
    assert (final["transfer"], final["avg"], final["last"]) == pytest.approx((summary.transfer, summary.avg,
                                                                               summary.last))
    assert final["tasks_finished"] == 3 and not math.isnan(final["transfer"])
    assert (runs[-1] / "files" / "media" / "images").is_dir()  # the heat maps and curves


def test_generate_logs_images_per_s_and_one_contact_sheet_per_set(tmp_path, wandb_env):
    r = run_gift(*GENERATE, "--out", tmp_path, "--report-to", "tensorboard,wandb", env=wandb_env)
    assert r.returncode == 0, r.stderr
    set_path = only_set(tmp_path)
    logs = tmp_path / ".tracking" / "mnist" / set_path.name
    tb = tensorboard(logs / "tensorboard")
    rates = tb.Scalars("generate/images_per_s")
    assert [e.step for e in rates] == [0, 1, 2, 3, 4] and all(e.value > 0 for e in rates)
    [sheet] = tb.Images("contact_sheet")
    assert sheet.step == 5
    with Image.open(logs / "contact-sheet.png") as png:  # the contact sheet of shards/preview.py, pixel for pixel
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(sheet.encoded_image_string)).convert("RGB")),
                              np.asarray(png.convert("RGB")))
    assert tb.Scalars("summary/samples")[0].value == 20
    run_id = json.loads((logs / "tracking.json").read_text())["wandb"]["id"]
    [run] = (logs / "wandb").glob(f"offline-run-*-{run_id}")
    history = wandb_history(run / f"run-{run_id}.wandb")
    assert history[None]["samples"] == 20 and history[None]["shards"] == 5 and history[None]["processes"] == 1
    assert sorted(s for s in history if s is not None and "generate/images_per_s" in history[s]) == [0, 1, 2, 3, 4]

    r = run_gift(*GENERATE, "--out", tmp_path, "--report-to", "tensorboard")  # nothing left to do
    assert r.returncode == 0 and "rendered 0, kept 5" in r.stdout
    assert len(tensorboard(logs / "tensorboard").Images("contact_sheet")) == 1  # logged once per set
    assert not list(set_path.glob(".*"))  # nothing added to the set


def test_gift_table_reports_every_run_it_trains(workspace, tmp_path):
    """`gift table` takes `gift train`'s --report-to for each preset's run (here zeroshot: evaluation only, so the
    accuracy rows land at each task's last step of the default 1,000 iterations)."""
    root, weights = workspace
    r = run_gift("table", "--order", "mini", "--methods", "zeroshot", "--runs", tmp_path, "--shards", root / "shards",
                 "--clip", "tiny", "--clip-weights", weights, "--workers", "0", "--device", "cpu",
                 "--report-to", "tensorboard")
    assert r.returncode == 0, r.stderr
    acc = np.load(tmp_path / "zeroshot-ordermini" / "acc_matrix.npy")
    tb = tensorboard(tmp_path / "zeroshot-ordermini" / "tensorboard")
    events = tb.Scalars("accuracy/mini-b")
    assert [e.step for e in events] == [999, 1999, 2999]
    assert [e.value for e in events] == pytest.approx(acc[:, 1], rel=1e-6)
    assert "train/ce" not in tb.Tags()["scalars"]  # nothing trained, nothing invented
