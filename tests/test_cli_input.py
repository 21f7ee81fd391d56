"""Bad input to the real `gift` entry point: one line naming the option and what it accepts, a non-zero exit, no
traceback, and nothing left behind that blocks the corrected command (issue 19). Every case fails before a model
loads, so each costs one interpreter start-up."""

from __future__ import annotations

import json

import pytest

from cli.table_cmd import _list_presets
from pipeline.datasets import catalog
from pipeline.methods import get_method
from pipeline.names import closest, unknown_name
from pipeline.tables.presets import resolve_presets
from pipeline.training.config import TrainConfig
from pipeline.training.rundir import RunDirError, prepare_run_dir

from .conftest import run_gift


def one_line(text: str) -> str:
    return " ".join(text.split())  # rich wraps a long message at the terminal's width


def refused(r, *words: str, code: int = 2) -> str:
    """The command exited with ``code`` and said every one of ``words``, without a traceback; returns what it said."""
    said = one_line(r.stderr + r.stdout)
    assert r.returncode == code, (r.returncode, said)
    assert "Traceback" not in r.stderr, r.stderr
    for word in words:
        assert word in said, (word, said)
    return said


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--synthetic-budget", "0"], "--synthetic-budget must be at least 1, got 0"),
    (["--lr", "-0.1"], "--lr must be above 0, got -0.1"),
    (["--iterations", "0"], "--iterations must be at least 1, got 0"),
    (["--order", "mini-cil", "--epochs", "-1"], "--epochs must be above 0, got -1"),
    (["--teacher", "wise:1.5"], "--teacher 'wise:1.5' is not last, initial or wise:x with 0 <= x <= 1"),
    (["--label-smoothing", "1"], "--label-smoothing must be at least 0 and below 1, got 1"),
    (["--distill", "both"], "--distill 'both' is not one of contrastive, feature, image-only, text-only"),
    (["--seed", "-3"], "--seed must be at least 0, got -3"),
])
def test_train_refuses_out_of_range_values_before_any_run_directory(tmp_path, args, message):
    runs = tmp_path / "runs"
    r = run_gift("train", "--order", "mini", "--runs", runs, "--device", "cpu", *args)
    refused(r, "error:", message)
    assert not runs.exists()  # nothing written that a corrected command would trip over


def test_an_unknown_device_is_one_line_not_torchs_traceback(tmp_path):
    r = run_gift("train", "--order", "mini", "--runs", tmp_path / "runs", "--device", "gpu")
    refused(r, "--device 'gpu' is not a device: use cpu, cuda or cuda:N")
    assert not (tmp_path / "runs").exists()


def test_table_checks_the_shared_train_options_once_before_any_preset_runs(tmp_path):
    runs = tmp_path / "runs"
    r = run_gift("table", "--order", "mini", "--methods", "finetune,gift", "--runs", runs, "--batch-size", "0")
    said = refused(r, "--batch-size must be at least 1, got 0")
    assert said.count("--batch-size must") == 1 and "failed" not in said  # one line, not one failed row per preset
    assert not runs.exists()


def test_table_refuses_gpus_instead_of_dropping_it(tmp_path):
    runs = tmp_path / "runs"
    r = run_gift("table", "--order", "mini", "--methods", "finetune", "--runs", runs, "--gpus", "2")
    refused(r, "--gpus is `gift train`'s", "gift train --gpus N")
    assert not runs.exists()


@pytest.mark.parametrize("command", ["generate", "train"])
def test_gpus_must_be_one_or_more(tmp_path, command):
    args = ["mini-a", "--model", "tiny", "--out", tmp_path] if command == "generate" else ["--order", "mini"]
    r = run_gift(command, *args, "--gpus", "0")
    refused(r, "Invalid value for '--gpus'", "greater than or equal to 1")
    assert list(tmp_path.iterdir()) == []


def test_shards_ls_of_a_missing_root_a_file_or_a_one_slash_url_fails_clearly(tmp_path):
    refused(run_gift("shards", "ls", tmp_path / "missing"), f"{tmp_path / 'missing'} does not exist")
    some_file = tmp_path / "some-file.txt"
    some_file.write_text("not a set\n")
    refused(run_gift("shards", "ls", some_file), f"{some_file} is a file")
    said = refused(run_gift("shards", "ls", "ssh:/host/path"), "ssh:/host/path is neither a folder nor a store URL")
    assert "ssh://host/path" in said  # the spelling it meant
    # an existing folder with no sets is no error, but says so (the table's header alone said nothing)
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_gift("shards", "ls", empty)
    assert r.returncode == 0 and f"no shard sets under {empty}" in one_line(r.stdout), r.stdout
    r = run_gift("shards", "ls", empty, "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == []


@pytest.mark.parametrize("text, message", [
    ("3\n1\nabc\n0\n", "line 3: 'abc' is not a class label (a whole number)"),
    ("class_order: [3, 1,\n  2, 0\n", "line 1: the list opened with '[' is never closed"),
    ("class_order: [3, 1, 2, 0]\nincrement: 2\n", "line 2: 'increment' is not class_order"),
    ("[3, 1.5, 2, 0]\n", "line 1: '1.5' in '[3, 1.5, 2, 0]' is not a class label"),
])
def test_a_bad_class_order_file_names_its_line(tmp_path, text, message):
    order = tmp_path / "order.yaml"
    order.write_text(text)
    r = run_gift("train", "--order", "seq-cifar10", "--class-order", order, "--runs", tmp_path / "runs")
    refused(r, "--class-order", message)
    assert not (tmp_path / "runs").exists()


def test_class_order_files_in_every_documented_form_parse():
    for text in ("[2, 0, 1]", "class_order: [2, 0, 1]  # the harness's", "2\n0\n1\n", "2, 0, 1",
                 "class_order:\n  - 2\n  - 0\n  - 1\n"):
        assert catalog.parse_class_order(text) == (2, 0, 1), text


def test_caption_cifar10_suggests_cil_cifar10_and_lists_each_task_once():
    said = refused(run_gift("caption", "cifar10"), "unknown task 'cifar10' (did you mean cil-cifar10")
    listed = said.split("valid tasks: ")[1].split(", or a CIL step")[0].split(", ")
    assert len(listed) == len(set(listed)) and {"cil-cifar10", "mini-digits", "eurosat"} <= set(listed)


def test_unknown_names_share_the_closest_match_helper():
    assert closest("cifar10", ["cifar100", "cil-cifar10", "mnist"])[0] == "cil-cifar10"  # a whole part first
    assert closest("aircarft", ["aircraft", "cars"]) == ["aircraft"]  # then the nearest spelling
    assert closest("zzz", ["aircraft", "cars"]) == []
    assert unknown_name("method", "x", ["a", "b", "a"]) == "unknown method 'x'; valid methods: a, b"
    with pytest.raises(ValueError, match=r"unknown order 'cifar100' \(did you mean cifar100-10"):
        catalog.get_order("cifar100")
    with pytest.raises(ValueError, match=r"unknown CIL setting 'seq-cifar' \(did you mean seq-cifar10 or seq-cifar100\?\)"):
        catalog.get_setting("seq-cifar")
    with pytest.raises(ValueError, match=r"unknown method 'gifts' \(did you mean gift\?\); valid methods: zeroshot"):
        get_method("gifts")
    with pytest.raises(ValueError, match=r"unknown preset 'gfit' \(did you mean gift\b"):
        resolve_presets("gfit")
    with pytest.raises(ValueError, match=r"unknown order 'mini-cill' \(did you mean mini-cil\b"):
        _list_presets("mini-cill", as_json=False)  # `gift table --list` listed MTIL's presets for any unknown order


def test_a_run_directory_with_no_finished_task_does_not_block_a_corrected_command(tmp_path):
    first = TrainConfig(order="mini", method="finetune", runs=str(tmp_path), name="run", iterations=5)
    run_dir, _ = prepare_run_dir(first)
    (run_dir / "metrics.jsonl").write_text('{"index": 0, "step": 0, "loss": 1.0}\n')  # an interrupted first task
    corrected = TrainConfig(order="mini", method="finetune", runs=str(tmp_path), name="run", iterations=7)
    again, state = prepare_run_dir(corrected)
    assert again == run_dir and state["finished"] == 0
    assert json.loads((run_dir / "config.json").read_text())["iterations"] == 7  # the run is the corrected one now
    assert not (run_dir / "metrics.jsonl").exists()  # no rows of the other configuration in its log
    # once a task is finished, the directory holds a result: another configuration is refused, naming the way out
    (run_dir / "state.json").write_text(json.dumps({"finished": 1, "acc": [[50.0]], "checkpoint": None}))
    with pytest.raises(RunDirError, match="differs in: iterations.*pass --name to start a new run"):
        prepare_run_dir(first)
