"""What the `gift` commands print (issue 19): nothing a user copies is cut at 80 columns or when piped, `--json` on the
list commands, `--version`, help text as written, one labelled line per evaluation, Ctrl-C saying what is kept,
and figures that say what they show."""

from __future__ import annotations

import json
from importlib.metadata import version

import numpy as np
import pytest
import typer
from PIL import Image

from cli.common import clean_errors, console, out, setup_logging
from cli.progress import TrainProgress
from pipeline.datasets import catalog
from pipeline.evaluation.cil_report import curves_figure, step_heatmap_figure
from shards.manifest import load_manifest
from shards.preview import contact_sheet

from .conftest import only_set, run_gift

NARROW = {"COLUMNS": "80"}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """A 10-image eurosat set of the tiny (random) Stable Diffusion, under a long path (pytest's tmp folders)."""
    root = tmp_path_factory.mktemp("a-root-whose-path-is-long-enough-to-be-cut-in-an-eighty-column-table")
    r = run_gift("generate", "eurosat", "--model", "tiny", "--size", "32", "--steps", "2", "--per-class", "1",
                 "--out", root)
    assert r.returncode == 0, r.stderr
    return only_set(root)


def test_shards_ls_never_cuts_the_hash_or_the_path_at_80_columns(tiny_set):
    m = load_manifest(tiny_set)
    assert len(str(tiny_set)) > 80  # the path alone is wider than the terminal
    r = run_gift("shards", "ls", tiny_set.parents[1], env=NARROW)
    assert r.returncode == 0, r.stderr
    assert m["spec_hash"][:16] in r.stdout and f"\n{tiny_set}\n" in r.stdout  # whole, on a line of its own
    assert max(len(line) for line in r.stdout.splitlines() if "┃" in line or "│" in line) <= 80  # the table fits
    r = run_gift("shards", "ls", tiny_set.parents[1], "--json", env=NARROW)
    [row] = json.loads(r.stdout)
    assert (row["task"], row["hash"], row["spec_hash"], row["path"]) == ("eurosat", m["spec_hash"][:16],
                                                                       m["spec_hash"], str(tiny_set))
    assert (row["samples"], row["planned_samples"], row["complete"]) == (10, 10, True)


def test_shards_ls_of_a_store_prints_each_pull_address_whole(tiny_set, tmp_path):
    store = tmp_path / "a-store-folder-with-a-long-name-so-that-the-pull-address-is-wider-than-the-terminal"
    r = run_gift("shards", "push", tiny_set, store)
    assert r.returncode == 0, r.stderr
    url = f"file://{store}"
    address = f"{url}/eurosat/{tiny_set.name}"
    r = run_gift("shards", "ls", url, env=NARROW)
    assert r.returncode == 0, r.stderr
    assert f"\ngift shards pull {address}\n" in r.stdout, r.stdout
    r = run_gift("shards", "ls", url, "--json")
    [row] = json.loads(r.stdout)
    assert (row["address"], row["hash"], row["complete"], row["problem"]) == (address, tiny_set.name, True, None)


def test_list_commands_print_json():
    r = run_gift("settings", "--json")
    settings = {s["setting"]: s for s in json.loads(r.stdout)}
    assert settings["tinyimagenet-5"]["classes_per_step"] == [100, 20, 20, 20, 20, 20]
    assert settings["seq-cifar10"]["class_order"] == "natural"
    assert settings["cifar100-10"]["class_order"][:3] == [87, 0, 52]
    assert settings["mini-cil"]["replay_sets"] == ["mini-cil-base", "mini-digits"]
    r = run_gift("tasks", "--json")
    tasks = {t["task"]: t for t in json.loads(r.stdout)}
    assert tasks["eurosat"]["classes"] == 10 and tasks["cil-tinyimagenet"]["classes"] == 200
    assert len(tasks) == len(json.loads(r.stdout))  # each once
    r = run_gift("table", "--list", "--order", "cifar100-10", "--json")
    listing = json.loads(r.stdout)
    gift = next(p for p in listing["presets"] if p["preset"] == "gift")
    assert gift["published"] == {"Avg": 85.11, "Last": 77.7} and gift["source"] == "Tab. 7"


def test_settings_keep_every_name_whole_at_80_columns():
    r = run_gift("settings", env=NARROW)
    assert r.returncode == 0
    assert max(len(line) for line in r.stdout.splitlines()) <= 80
    for name in [*catalog.cil_settings(), "cil-tinyimagenet", "mini-cil-base"]:
        assert f" {name} " in r.stdout, name


def test_version_and_help_text():
    r = run_gift("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"gift-cl {version('gift-cl')}"
    r = run_gift("train", "--help", env={"COLUMNS": "250"})
    assert "pip install -e '.[tracking]'" in r.stdout  # not eaten as rich markup
    assert "<bool>" not in r.stdout and "--compile " in r.stdout  # a flag takes no value
    r = run_gift("shards", "push", "--help", env={"COLUMNS": "250"})
    assert "ssh://[user@]host[:port]/path" in r.stdout


def test_each_evaluation_is_one_labelled_line():
    with out.capture() as captured:
        TrainProgress().evaluated(1, "mini-cil/02", [90.0, 70.0, float("nan")], {"seen": 80.5, "router": 95.0})
        TrainProgress().evaluated(0, "mini-a", [90.0, 10.0, 50.0])
    cil, mtil = " ".join(captured.get().split()).split(" after ")  # (rich wraps a line at the terminal's width)
    assert cil == ("after step 2 (mini-cil/02): each step's classes 90.0 70.0 · all seen classes 80.5 · "
                   "router picks the right step 95.0")  # no unweighted mean of the steps beside it
    assert mtil == "task 1 (mini-a): each dataset 90.0 10.0 50.0 · mean 50.0"


def test_train_log_records_stay_off_the_terminal():
    import logging

    setup_logging()
    with console.capture() as captured:
        logging.getLogger("gift.train").info("after mini-a: shown once", extra={"file_only": True})
        logging.getLogger("gift.train").info("a line for the terminal")
    assert "shown once" not in captured.get() and "a line for the terminal" in captured.get()


def test_ctrl_c_says_what_the_command_keeps():
    with console.capture() as captured, pytest.raises(typer.Exit) as stopped:
        with clean_errors("finished tasks are kept (checkpoint, report); re-run the same command to resume."):
            raise KeyboardInterrupt
    assert stopped.value.exit_code == 130
    assert "interrupted: finished tasks are kept" in captured.get() and "shards" not in captured.get()


def test_cil_figures_label_their_steps():
    setting = catalog.get_setting("mini-cil")
    acc = np.full((3, 5), np.nan)
    for i in range(3):
        acc[i, : i + 1] = 90 - 10 * i
    curves = curves_figure(acc, [90.0, 80.0, 70.0], setting, "t")
    labels = [t.get_text() for t in curves.axes[0].get_legend().get_texts()]
    assert labels == ["classes of step 1", "classes of step 2", "classes of step 3", "all seen classes"]
    heat = step_heatmap_figure(acc, setting.step_names, "t")
    assert heat.axes[0].get_xlabel() == "test images of the classes of step"
    assert heat.axes[0].get_ylabel() == "after training step"


def test_a_tiny_sd_contact_sheet_says_it_shows_noise(tiny_set, tmp_path):
    sheet = tmp_path / "sheet.png"
    assert contact_sheet(tiny_set, sheet, n=4, columns=4, cell=64) == 4
    with Image.open(sheet) as image:
        band = np.asarray(image.convert("RGB"))[:12].astype(int)  # above the first row of images
    reddish = (band[..., 0] > 120) & (band[..., 1] < 90) & (band[..., 2] < 90)  # the note's firebrick text
    assert reddish.sum() > 20
