"""Several nodes on loopback: two torchrun launchers acting as two nodes of one process each (c10d rendezvous, gloo,
CPU), each running the command that the Slurm recipe (scripts/slurm/gift.sbatch) builds for every node."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from pipeline.datasets import mini
from tests.conftest import FAST, ROOT, cli_args, only_set, run_gift, set_files

SBATCH = ROOT / "scripts" / "slurm" / "gift.sbatch"
TIMEOUT_S = 300  # per launcher: a rendezvous or collective that hangs fails the test instead of the suite
# mnist: 10 classes x 2 images = 20 samples in 5 shards of 4 (as tests/test_generate.py)
GENERATE = ["generate", "mnist", *FAST, "--per-class", "2", "--shard-size", "4", "--batch-size", "2"]
TRAIN = ("--method", "gift", "--iterations", "4", "--warmup", "2", "--batch-size", "16", "--synthetic-batch", "16")
# torchrun gives a lone process all cores: one thread per process everywhere, as the one-process yardsticks run
ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}


def free_port() -> int:
    """A port nothing listens on now (the OS picks it); torchrun's c10d store binds it a moment later."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_command(*gift_args, nodes: int = 2, port: int | None = None, job: str = "job") -> list[str]:
    """The torchrun command gift.sbatch runs on every node, for an allocation of ``nodes`` nodes whose first node
    is this machine (the script prints it with GIFT_PRINT_COMMAND=1 instead of handing it to srun)."""
    env = {**os.environ, "GIFT_PRINT_COMMAND": "1", "SLURM_JOB_NUM_NODES": str(nodes), "SLURM_JOB_ID": job,
           "GPUS_PER_NODE": "1", "GIFT_RDZV_HOST": "127.0.0.1", "GIFT_RDZV_PORT": str(port or 29500),
           "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(SBATCH), *map(str, gift_args)], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def run_nodes(*per_node: list, env: dict | None = None) -> list[subprocess.CompletedProcess]:
    """Start one launcher per node (each with its own gift arguments) at once; wait for all of them."""
    port, job = free_port(), uuid.uuid4().hex[:8]
    full_env = {**os.environ, **ENV, **(env or {})}
    procs = [subprocess.Popen(node_command(*args, nodes=len(per_node), port=port, job=job), cwd=ROOT, env=full_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
             for args in per_node]
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT_S)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:  # a hang (or a failed assertion above) must not leave launchers or workers behind
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert len(done) == len(procs), f"a launcher ran past {TIMEOUT_S} s"
    return done


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_the_slurm_recipe_parses_and_builds_one_torchrun_command_for_every_node():
    assert subprocess.run(["bash", "-n", str(SBATCH)]).returncode == 0
    cmd = node_command("train", "--order", "I", "--runs", "/shared/my runs", nodes=4, port=29511, job="42")
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--nnodes", "4", "--nproc_per_node", "1",
                   "--rdzv_backend", "c10d", "--rdzv_endpoint", "127.0.0.1:29511", "--rdzv_id", "gift-42",
                   "-m", "cli", "train", "--order", "I", "--runs", "/shared/my runs"]
    text = SBATCH.read_text()
    assert "#SBATCH --ntasks-per-node=1" in text and 'exec srun --nodes="$nodes" --ntasks-per-node=1' in text
    r = subprocess.run(["bash", str(SBATCH), "generate", "mnist"], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")})
    assert r.returncode != 0 and "submit with sbatch" in r.stderr


def test_two_nodes_render_the_one_process_set_byte_for_byte(tmp_path):
    r = run_gift(*GENERATE, "--out", tmp_path / "one", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    nodes = run_nodes([*GENERATE, "--out", tmp_path / "two"], [*GENERATE, "--out", tmp_path / "two"])
    for node in nodes:
        assert node.returncode == 0, node.stderr
    logs = "".join(node.stderr for node in nodes)
    assert "[rank 0]" in logs and "[rank 1]" in logs  # two ranks, one per launcher
    one, two = only_set(tmp_path / "one"), only_set(tmp_path / "two")
    assert set_files(two) == set_files(one)
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["complete"] and manifest["shards"] == json.loads((one / "manifest.json").read_text())["shards"]
    assert not list(two.glob(".*"))  # the shared-directory marker is gone


def test_two_nodes_with_their_own_out_directories_stop_before_rendering(tmp_path):
    """OUT not shared: each launcher writes to a directory the other cannot see. Every rank stops at the check,
    with one line naming the rank that does not see rank 0's set directory; nothing is rendered or marked complete."""
    nodes = run_nodes([*GENERATE, "--out", tmp_path / "node-a"], [*GENERATE, "--out", tmp_path / "node-b"])
    for node in nodes:
        err = one_line(node.stderr)
        assert node.returncode != 0
        assert re.search(r"error: rank 1 \(on \S+\) stopped: it does not see \S+/node-[ab]/mnist/[0-9a-f]{16}, which "
                         r"rank 0 created on \S+\. OUT must be on a filesystem all nodes share", err), err
        assert "nothing was rendered" in err
        for noise in ("GLHF", "Connection closed", "No such file or directory", "gloo"):
            assert noise not in err, noise
    assert not list(tmp_path.rglob("*.tar")) and not list(tmp_path.rglob("*.parquet"))
    assert not list(tmp_path.rglob("manifest.json"))  # rank 0 removed the set it had opened: nothing looks complete
    assert not list(tmp_path.rglob(".shared-check*"))


def _flat(weights: dict) -> torch.Tensor:
    return torch.cat([weights[k].flatten().double() for k in sorted(weights) if weights[k].is_floating_point()])


def _finished(run_dir: Path) -> tuple[list, torch.Tensor]:
    state = json.loads((run_dir / "state.json").read_text())
    assert state["finished"] == 3
    return state["acc"], _flat(load_file(run_dir / state["checkpoint"]))


def test_two_nodes_train_like_one_process_and_only_rank_0_reports(workspace, tmp_path):
    """Training across two launchers equals one process within the thread-count yardstick of
    tests/test_train.py (two processes must land no farther from the one-process weights than the same one-process
    run with another thread count); --report-to writes one TensorBoard log and one W&B run, from rank 0."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, weights = workspace
    for name, threads in (("nodes-1", "1"), ("nodes-1-threads", "2")):
        r = run_gift(*cli_args(workspace, *TRAIN, "--name", name), env={"OMP_NUM_THREADS": threads})
        assert r.returncode == 0, r.stderr
    args = cli_args(workspace, *TRAIN, "--name", "nodes-2", "--report-to", "tensorboard,wandb")
    wandb_home = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CACHE_DIR": str(tmp_path),
                  "WANDB_CONFIG_DIR": str(tmp_path), "WANDB_DATA_DIR": str(tmp_path)}
    for node in run_nodes(args, args, env=wandb_home):
        assert node.returncode == 0, node.stderr
    (acc1, one), (_, threads), (acc2, two) = (_finished(root / "runs" / n)
                                             for n in ("nodes-1", "nodes-1-threads", "nodes-2"))
    moved = (one - _flat(load_file(weights))).norm()
    assert moved > 0.1  # the three tasks really trained
    noise, apart = (threads - one).norm() / moved, (two - one).norm() / moved
    assert apart <= 1.5 * noise + 0.005, (apart.item(), noise.item())
    one_image = [100 / len(mini.load_split(t, "test")[1]) for t in ("mini-a", "mini-b", "mini-c")]
    assert (np.abs(np.array(acc1) - np.array(acc2)) <= 2 * np.array(one_image) + 1e-9).all(), (acc1, acc2)

    run_dir = root / "runs" / "nodes-2"
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1, events  # rank 1 wrote none
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].name.endswith(json.loads((run_dir / "tracking.json").read_text())["wandb"]["id"])
    logged = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in logged.Scalars("train/ce")] == [r["index"] * 4 + r["step"] for r in rows]


def test_two_nodes_without_a_shared_runs_or_shards_directory_stop_before_training(workspace, tmp_path):
    """--runs (run directory, checkpoints read by every rank on resume, test-set cache) and a local --shards (the
    pool sets every rank reads) must be shared too; a node that does not see them stops every rank up front."""
    root, _ = workspace
    base = cli_args(workspace, *TRAIN, "--name", "unshared")
    nodes = run_nodes([*base, "--runs", tmp_path / "runs-a"], [*base, "--runs", tmp_path / "runs-b"])
    for node in nodes:
        err = one_line(node.stderr)
        assert node.returncode != 0
        assert re.search(r"rank 1 \(on \S+\) stopped: it does not see \S+/runs-[ab], which rank 0 created", err), err
        assert "--runs must be on a filesystem all nodes share" in err and "gloo" not in err
    assert not list(tmp_path.rglob("config.json"))  # no run directory was made

    (tmp_path / "no-pool").mkdir()
    nodes = run_nodes(base, [*base, "--shards", tmp_path / "no-pool"])
    for node in nodes:  # whichever launcher is rank 0, every rank names the one without the pool sets, and why
        err = one_line(node.stderr)
        assert node.returncode != 0
        assert re.search(r"error: rank [01] \(on \S+\) stopped: .*make generate TASK=mini-base", err), err
        assert "gloo" not in err
    assert not (root / "runs" / "unshared").exists()
