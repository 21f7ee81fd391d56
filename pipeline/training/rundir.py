"""Run directories: created for one configuration only, and a checkpoint + report written by rename after each task.

    runs/<name>/config.json        the resolved TrainConfig (a run directory is never reused for another config)
               state.json          finished tasks, accuracy rows, the current checkpoint
               checkpoint-taskNN.safetensors, acc_matrix.csv/.npy, results.md, acc_matrix.png, curves.png
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

from pipeline.evaluation.cil import StepResult
from shards.layout import atomic_write_bytes

from .config import FREE_ON_RESUME, TrainConfig

# ``extra=`` of a record for train.log only: the terminal shows the same news as a progress line (the CLI's console
# handler drops these), so it is not printed twice with other labels.
FILE_ONLY = {"file_only": True}


@contextmanager
def run_log(run_dir: Path | None) -> Iterator[None]:
    """While inside, the ``gift`` loggers also write to ``run_dir/train.log`` (appended on resume); None: nothing
    (the ranks other than 0)."""
    if run_dir is None:
        yield
        return
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger("gift").addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger("gift").removeHandler(handler)
        handler.close()


class RunDirError(ValueError):
    """A run directory that holds another configuration."""


log = logging.getLogger("gift.train")
# What a run writes before its first task finishes, besides config.json and train.log (kept: appended, it says
# what happened); dropped when another configuration takes over a run directory with no finished task.
UNFINISHED_FILES = ("metrics.jsonl", "captions.json")


def _finished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` finished a task (state.json, written by rename after each task, says so)."""
    state = run_dir / "state.json"
    return state.exists() and json.loads(state.read_text()).get("finished", 0) > 0


def prepare_run_dir(config: TrainConfig) -> tuple[Path, dict]:
    """Create the run directory, or check it belongs to this very config; returns (dir, saved state)."""
    run_dir = Path(config.runs) / config.run_name
    cfg = asdict(config)
    if (run_dir / "config.json").exists():
        # fields added to TrainConfig after the run was made hold their (setting's) defaults there
        raw = json.loads((run_dir / "config.json").read_text())
        known = {f.name for f in fields(TrainConfig)}
        saved = {**raw, **asdict(TrainConfig(**{k: v for k, v in raw.items() if k in known}))}
        differs = sorted(k for k in set(saved) | set(cfg) if saved.get(k) != cfg.get(k) and k not in FREE_ON_RESUME)
        if differs and _finished(run_dir):
            raise RunDirError(f"{run_dir} holds a run with another configuration (differs in: {', '.join(differs)}); "
                              "pass --name to start a new run, or re-run with the same options to resume it")
        if differs:  # nothing finished under the old configuration: nothing to keep, so this command starts over
            log.warning("%s held no finished task of its earlier configuration (differs in: %s); starting it over "
                        "with this one", run_dir, ", ".join(differs))
            for stale in UNFINISHED_FILES:  # rows of the other configuration's interrupted first task
                (run_dir / stale).unlink(missing_ok=True)
            atomic_write_bytes(run_dir / "config.json", (json.dumps(cfg, indent=1) + "\n").encode())
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / "config.json", (json.dumps(cfg, indent=1) + "\n").encode())
    state_file = run_dir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"finished": 0, "acc": [], "checkpoint": None}
    return run_dir, state


def finish_task(run_dir: Path, state: dict, model, index: int, result: StepResult, protocol) -> None:
    """Checkpoint (new file, then state.json by rename, then drop the old file), then rewrite the report.

    state.json keeps the accuracy rows (``acc``; ``null`` where nothing was evaluated, above a CIL matrix's
    diagonal) and one list per extra value of the step (CIL: ``seen``)."""
    from safetensors.torch import save_file

    config = protocol.config
    name = f"checkpoint-task{index + 1:02d}.safetensors"
    tmp = run_dir / f".{name}.tmp-{os.getpid()}"
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, tmp,
              metadata={"task": protocol.steps[index], "index": str(index), "config": json.dumps(asdict(config))})
    os.replace(tmp, run_dir / name)
    old = state["checkpoint"]
    row = [None if math.isnan(v) else v for v in result.row]
    extra = {k: [*state.get(k, []), v] for k, v in result.extra.items()}
    state.update(finished=index + 1, acc=[*state["acc"], row], checkpoint=name, updated=time.time(), **extra)
    atomic_write_bytes(run_dir / "state.json", (json.dumps(state, indent=1) + "\n").encode())
    if old and old != name:
        (run_dir / old).unlink(missing_ok=True)
    protocol.write_report(run_dir, state)
