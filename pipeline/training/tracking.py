"""What a training run reports to TensorBoard / W&B (``gift train --report-to``): the ``train.Tracker`` hooks.

On one global step axis, the steps of the tasks before + the step in the task, so tasks follow each other and a
resumed run lands on the steps it would have had:

    train/<term>, train/lr        every row of metrics.jsonl (every 10 steps and a task's last step)
    train/steps_per_s             between two such rows of one task (wall clock of rank 0)
    accuracy/..., summary/...     after each task, at its last step, what its protocol reports (``Protocol.tracked``):
                                  MTIL the accuracy-matrix row and Transfer / Avg. / Last, CIL the accuracy on every
                                  seen class, on each step's classes, and Avg / Last / forgetting (summary also the
                                  W&B run summary)
    acc_matrix, curves            the report's heat map and curves, as images, at the same step

Everything is written under the run directory (``tensorboard/``, ``wandb/``, ``tracking.json``), by rank 0 only.
On opening, what a backend lacks of the tasks already finished is logged from the run directory itself
(metrics.jsonl and the accuracy rows): a backend added when the run resumes, or a W&B run whose process was killed
before W&B wrote what it had been given. Steps it holds are never sent twice.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from PIL import Image

from pipeline.tracking import Trackers

from .config import TrainConfig
from .protocol import Protocol

# metrics.jsonl fields that say where a row is, not what was measured
POSITION = ("task", "index", "step")


class TrainTracking:
    """``pipeline.training.train.Tracker`` for ``--report-to``: one :class:`pipeline.tracking.Trackers` per run.

    Reusable across runs (``gift table`` trains several): ``open`` starts one, ``close`` ends it.
    """

    def __init__(self, report_to: Sequence[str]):
        self.report_to = tuple(report_to)
        self.tracker: Trackers | None = None
        self.offsets: list[int] = [0]
        self.last: tuple[int, int, float] | None = None  # (task index, global step, time) of the previous row

    def open(self, run_dir: Path, config: TrainConfig, protocol: Protocol, state: dict, offsets: list[int]) -> None:
        """Start (or continue) the run's log; ``state`` (state.json) holds the tasks already finished; ``offsets[i]``
        is task i's first global step."""
        self.tracker = Trackers(run_dir, self.report_to, name=config.run_name, config=asdict(config))
        self.offsets = list(offsets)
        self.last = None
        self._replay(run_dir, protocol, state)

    def _replay(self, run_dir: Path, protocol: Protocol, state: dict) -> None:
        """Log the finished tasks' metrics.jsonl rows and accuracy rows that some backend does not hold yet."""
        done = state["finished"]
        if not done or not self.tracker.wants(self.offsets[done] - 1):
            return
        metrics = run_dir / "metrics.jsonl"
        rows: dict[int, dict] = {}  # by global step; an interrupted task's rows were written again by its rerun
        for line in metrics.read_text().splitlines() if metrics.exists() else []:
            record = json.loads(line)
            if record["index"] < done:
                rows[self.offsets[record["index"]] + record["step"]] = record
        for index in range(done):
            for step in sorted(s for s, r in rows.items() if r["index"] == index):
                self.tracker.log(_values(rows[step]), step)
            self.evaluated(index, protocol, state)

    def metrics(self, record: dict, step: int) -> None:
        values = _values(record)
        now = time.perf_counter()
        if self.last is not None and self.last[0] == record["index"] and step > self.last[1]:
            values["train/steps_per_s"] = (step - self.last[1]) / max(now - self.last[2], 1e-9)
        self.last = (record["index"], step, now)
        self.tracker.log(values, step)

    def evaluated(self, index: int, protocol: Protocol, state: dict) -> None:
        """After task ``index`` (``state`` holds at least its row): what the protocol reports, the summary, the figures."""
        step = self.offsets[index + 1] - 1
        if not self.tracker.wants(step):
            return  # held already (replaying a resumed run): skip drawing the figures
        values, totals, figures = protocol.tracked(state, index)
        self.tracker.log({**values, **{f"summary/{k}": v for k, v in totals.items()}}, step,
                         images={name: _png(fig) for name, fig in figures.items()})
        self.tracker.summary({**totals, "tasks_finished": index + 1})
        self.last = None  # evaluation is not training time

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None


def _values(record: dict) -> dict[str, float]:
    """A metrics.jsonl row as tags: every loss term and the learning rate under ``train/``."""
    return {f"train/{k}": v for k, v in record.items() if k not in POSITION and isinstance(v, int | float)}


def _png(fig) -> Image.Image:
    """A matplotlib figure rendered as report.py saves it, then closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")
