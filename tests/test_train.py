"""Stage 2 on the `mini` benchmark: real images, a tiny CLIP "pre-trained" on mini-base, replay sets rendered by
the `reference` generator (real held-out images of each class), the real training loop and CLI."""

import json
import math
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.datasets import mini
from pipeline.training.config import TrainConfig, lr_at
from pipeline.training.rundir import RunDirError
from pipeline.training.step import NonFiniteLossError
from pipeline.training.train import Progress, train
from shards.errors import ShardSetError
from tests.conftest import cli_args, mini_config, run_gift

CPU = torch.device("cpu")


def test_lr_schedule_by_hand():
    # warm-up: base·(s+1)/100; then base·½(1+cos(π(s−100)/900))
    assert lr_at(0, 1e-5, 100, 1000) == pytest.approx(1e-7)
    assert lr_at(99, 1e-5, 100, 1000) == pytest.approx(1e-5)
    assert lr_at(100, 1e-5, 100, 1000) == pytest.approx(1e-5)
    assert lr_at(550, 1e-5, 100, 1000) == pytest.approx(0.5e-5)
    assert lr_at(999, 1e-5, 100, 1000) == pytest.approx(1e-5 * 0.5 * (1 + math.cos(math.pi * 899 / 900)))


def test_per_dataset_learning_rates_follow_the_reference():
    config = TrainConfig()
    assert [config.lr_for(t) for t in ("aircraft", "mnist", "cars", "sun397")] == [5e-5, 5e-5, 1e-5, 1e-5]
    assert TrainConfig(lr=3e-4).lr_for("aircraft") == 3e-4


def test_finetune_forgets_task_one_and_gift_forgets_clearly_less(workspace):
    acc = {}
    for method in ("finetune", "gift"):
        run_dir = train(mini_config(workspace, method=method, iterations=200), device=CPU)
        acc[method] = np.load(run_dir / "acc_matrix.npy")
        assert {"results.md", "acc_matrix.csv", "acc_matrix.png", "curves.png", "state.json"} <= {
            p.name for p in run_dir.iterdir()}
    drop = {m: a[0, 0] - a[1, 0] for m, a in acc.items()}  # task-1 accuracy lost by training task 2
    print("task-1 accuracy after task 1 / after task 2:",
          {m: (round(a[0, 0], 1), round(a[1, 0], 1), round(a[2, 0], 1)) for m, a in acc.items()})
    assert acc["finetune"][0, 0] > 90 and acc["gift"][0, 0] > 75  # both learn task 1
    assert drop["finetune"] > 15  # continual fine-tuning visibly forgets
    assert drop["gift"] < drop["finetune"] - 15  # GIFT forgets clearly less
    assert acc["gift"][2].mean() > acc["finetune"][2].mean() + 15  # and ends far better on average


class _HoldInTask2(Progress):
    """The training loop's own progress hooks, used to hold a run at a known point: step 6 of task 2 (after
    task 1's checkpoint, before task 2's), where it waits until it is killed."""

    def __init__(self, marker: Path):
        self.marker, self.index, self.steps = marker, -1, 0

    def start_task(self, index: int, task: str, steps: int) -> None:
        self.index, self.steps = index, 0

    def step(self, losses: dict[str, float]) -> None:
        self.steps += 1
        if self.index == 1 and self.steps == 6:
            self.marker.touch()
            threading.Event().wait()  # forever: only the test's SIGKILL ends this process


def _train_until_killed(config: TrainConfig, marker: Path) -> None:
    train(config, _HoldInTask2(marker), CPU)


def kill_in_task_2(config: TrainConfig, marker: Path) -> None:
    """Train ``config`` in a child process held at step 6 of task 2, then SIGKILL it there: the kill lands at the
    same step on any machine, never after the run has finished."""
    child = multiprocessing.get_context("spawn").Process(target=_train_until_killed, args=(config, marker))
    child.start()
    try:
        deadline = time.time() + 600  # only a hang takes this long
        while not marker.exists():
            assert child.is_alive() and time.time() < deadline, "the run to kill never reached task 2"
            time.sleep(0.05)
    finally:
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
        child.join()


def test_killed_run_resumes_to_exactly_the_uninterrupted_matrix(workspace, tmp_path):
    root, _ = workspace
    args = cli_args(workspace, "--method", "gift", "--iterations", "12")
    r = run_gift(*args, "--name", "whole")
    assert r.returncode == 0, r.stderr
    # The run to kill is the CLI's config, trained in a child process that waits at step 6 of task 2: the kill
    # lands there on any machine, never after the run has finished.
    kill_in_task_2(mini_config(workspace, method="gift", iterations=12, name="killed"), tmp_path / "in-task-2")
    state = json.loads((root / "runs" / "killed" / "state.json").read_text())
    assert state["finished"] == 1 and state["checkpoint"] == "checkpoint-task01.safetensors"
    r = run_gift(*args, "--name", "killed")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    whole = np.load(root / "runs" / "whole" / "acc_matrix.npy")
    resumed = np.load(root / "runs" / "killed" / "acc_matrix.npy")
    assert whole.shape == (3, 3) and np.array_equal(whole, resumed)
    assert len(list((root / "runs" / "killed").glob("checkpoint-*.safetensors"))) == 1


def test_zeroshot_rows_are_the_initial_model(workspace):
    run_dir = train(mini_config(workspace, method="zeroshot", name="zs"), device=CPU)
    acc = np.load(run_dir / "acc_matrix.npy")
    assert acc.shape == (3, 3) and (acc == acc[0]).all()


def test_a_run_directory_is_never_reused_for_another_config(workspace):
    train(mini_config(workspace, method="finetune", iterations=2, name="fixed"), device=CPU)
    with pytest.raises(RunDirError, match="differs in: iterations"):
        train(mini_config(workspace, method="finetune", iterations=3, name="fixed"), device=CPU)
    # how the data is fed is not what the run computes: another worker count resumes (here: finds it finished)
    again = train(mini_config(workspace, method="finetune", iterations=2, name="fixed", workers=None), device=CPU)
    assert json.loads((again / "config.json").read_text())["workers"] == 0  # the directory keeps its record


def test_default_worker_count_is_a_number_from_the_cores(monkeypatch):
    """`--workers` unset (None) resolves to a count, never reaches a DataLoader as None: one per spare core of
    this process's share of the node, at most 8; an explicit count is kept."""
    import os

    from pipeline.training.config import loader_workers

    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loader_workers(TrainConfig()) == max(0, min(8, cores - 1))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores))  # one process per core: nothing to spare
    assert loader_workers(TrainConfig()) == 0
    assert loader_workers(TrainConfig(workers=3)) == 3


def test_real_batches_do_not_depend_on_the_worker_count():
    """Crops are seeded per sample and batches come from a seeded index stream: 0 and 2 loader processes give
    the same batches, bit for bit, across an epoch boundary (what lets `--workers` default to the cores)."""
    from PIL import Image

    from pipeline.dist import Dist
    from pipeline.models import train_transform
    from pipeline.replay.streams import ImageStream

    rng = np.random.default_rng(0)
    data = [(Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)), k % 3) for k in range(10)]
    batches = {}
    for workers in (0, 2):
        stream = ImageStream(data, train_transform(32, uint8=True), 4, 7, Dist(), CPU, workers=workers)
        batches[workers] = [stream.next() for _ in range(5)]  # 20 draws of 10 images: two epochs
    for a, b in zip(batches[0], batches[2], strict=True):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    crops = torch.cat([b.images for b in batches[0]])
    assert len({c.sum().item() for c in crops}) == len(crops)  # every draw is its own random crop


def test_missing_pool_set_names_the_generate_command(workspace, tmp_path):
    root, _ = workspace
    (tmp_path / "mini-base").symlink_to(root / "shards" / "mini-base", target_is_directory=True)
    with pytest.raises(ShardSetError, match="make generate TASK=mini-a"):
        train(mini_config(workspace, method="gift", shards=str(tmp_path), name="nopool"), device=CPU)
    assert not (root / "runs" / "nopool").exists()  # checked before the run directory is made


def test_non_finite_loss_stops_and_names_the_term(workspace):
    with pytest.raises(NonFiniteLossError, match=r"(ce|cd|ita|awc).* became non-finite at task 1 \(mini-a\)"):
        train(mini_config(workspace, method="gift", lr=1e12, warmup=1, iterations=20, name="nan"), device=CPU)
    root, _ = workspace
    assert not list((root / "runs" / "nan").glob("checkpoint-*"))  # nothing half-trained saved as finished


def test_cli_bad_input(workspace):
    r = run_gift(*cli_args(workspace, "--method", "l2p"))
    assert r.returncode == 2 and "unknown method 'l2p' (did you mean l2?); valid methods: zeroshot, finetune, l2, lwf" in r.stderr
    r = run_gift(*cli_args(workspace, "--order", "III"))
    assert r.returncode == 2 and "unknown order 'III'" in r.stderr
    r = run_gift("train", "--order", "I", "--clip", "tiny", "--clip-weights", "none", "--data-root", "/nonexistent")
    assert r.returncode == 2 and "fgvc-aircraft-2013b" in " ".join(r.stderr.split())


def _weights(run_dir):
    from safetensors.torch import load_file

    state = json.loads((run_dir / "state.json").read_text())
    return state["acc"], load_file(run_dir / state["checkpoint"])


def test_two_gloo_processes_match_one_process(workspace):
    """torchrun + DistributedDataParallel (gloo, CPU): each rank holds half of every batch, CD and ITA are
    computed on the gathered batch, so two processes train the one-process model up to float summation order.

    AdamW turns summation-order noise in near-zero gradient entries into sign flips of whole steps, so the
    yardstick is the same one-process run with another CPU thread count (a different summation order, same
    maths): two processes must land no farther from the one-process weights than that run does."""
    from safetensors.torch import load_file

    root, weights = workspace
    args = ("--method", "gift", "--iterations", "4", "--warmup", "2", "--batch-size", "16", "--synthetic-batch", "16")
    for name, threads, extra in (("ddp-1", "1", ()), ("ddp-2", "1", ("--gpus", "2")), ("ddp-1-threads", "2", ())):
        r = run_gift(*cli_args(workspace, *args, "--name", name, *extra), env={"OMP_NUM_THREADS": threads})
        assert r.returncode == 0, r.stderr

    def flat(w):
        return torch.cat([w[k].flatten().double() for k in sorted(w) if w[k].is_floating_point()])

    start = flat(load_file(weights))
    (acc1, w1), (acc2, w2), (_, w3) = (_weights(root / "runs" / n) for n in ("ddp-1", "ddp-2", "ddp-1-threads"))
    one, two, threads = flat(w1), flat(w2), flat(w3)
    moved = (one - start).norm()
    assert moved > 0.1  # the three tasks really trained
    noise = (threads - one).norm() / moved
    apart = (two - one).norm() / moved
    assert apart <= 1.5 * noise + 0.005, (apart.item(), noise.item())
    # split evaluation sums the same counts; a test image on a decision boundary may flip with weights that
    # differ in the last bits: at most one image per entry
    one_image = [100 / len(mini.load_split(t, "test")[1]) for t in ("mini-a", "mini-b", "mini-c")]
    assert (np.abs(np.array(acc1) - np.array(acc2)) <= 2 * np.array(one_image) + 1e-9).all(), (acc1, acc2)


def test_uint8_crops_normalised_later_equal_the_float_transform_bit_for_bit():
    """The trainer ships uint8 crops and normalises them on the device: the same tensor as ToTensor + Normalize."""
    from PIL import Image

    from pipeline.models import normalize_uint8, train_transform

    rng = np.random.default_rng(1)
    for k in range(4):
        image = Image.fromarray(rng.integers(0, 256, (60 + 7 * k, 80, 3), dtype=np.uint8))
        torch.manual_seed(k)
        as_float = train_transform(32)(image)
        torch.manual_seed(k)
        as_uint8 = train_transform(32, uint8=True)(image)
        assert as_uint8.dtype == torch.uint8 and as_float.dtype == torch.float32
        assert torch.equal(normalize_uint8(as_uint8[None])[0], as_float)


def test_compiled_training_computes_the_eager_step(workspace):
    """`--compile` changes numerics only: every logged loss of a short GIFT run (the first step's before any update
    included) matches the eager run's, and the student really ran through torch.compile."""
    from torch._dynamo.utils import counters

    counters.clear()
    runs = {c: train(mini_config(workspace, method="gift", iterations=3, name=f"compile-{c}", compile=c), device=CPU)
            for c in (False, True)}
    assert counters["stats"]["unique_graphs"] > 0
    logged = {c: [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for c, d in runs.items()}
    assert [(r["task"], r["step"]) for r in logged[True]] == [(r["task"], r["step"]) for r in logged[False]]
    first = logged[False][0]
    assert first["step"] == 0 and first["cd"] > 0 and first["ita"] > 0
    for a, b in zip(logged[False], logged[True], strict=True):
        for term in ("ce", "cd", "ita", "awc"):
            assert b[term] == pytest.approx(a[term], rel=1e-3, abs=1e-5), (a["task"], a["step"], term)


def test_pool_classes_without_images_are_named_once_and_left_out_of_the_draw(caplog):
    from pipeline.replay.synthetic import SampleRef, draw_schedule

    # mini-base's "zero" (0) and "two" (2) have no image; two pools both list "two": one warning names both, once
    images = {("mini-base", c): [SampleRef("mini-base", 0, f"k{c}-{i}") for i in range(3)] for c in (1, 3)}
    pools = [[("mini-base", 0), ("mini-base", 1), ("mini-base", 2)], [("mini-base", 2), ("mini-base", 3)]]
    with caplog.at_level("WARNING", logger="gift.synthetic"):
        schedule = draw_schedule(pools, images, budget=12, seed=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "2 classes" in warnings[0] and "mini-base 0 (zero), mini-base 2 (two)" in warnings[0]
    assert {r.key[:2] for r in schedule[0]} == {"k1"} and {r.key[:2] for r in schedule[1]} == {"k3"}
    caplog.clear()
    with caplog.at_level("WARNING", logger="gift.synthetic"):
        draw_schedule([[("mini-base", 1)]], images, budget=4, seed=0)
    assert not caplog.records  # nothing missing, nothing said
