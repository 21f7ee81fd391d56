"""What a training run reports to TensorBoard / W&B (``gift train --report-to``): the ``train.Tracker`` hooks.

On one global step axis, ``task index · iterations + step``, so tasks follow each other and a resumed run lands
on the steps it would have had:

    train/<term>, train/lr        every row of metrics.jsonl (every 10 steps and a task's last step)
    train/steps_per_s             between two such rows of one task (wall clock of rank 0)
    accuracy/<dataset>, /mean     the accuracy-matrix row after each task, at the task's last step
    summary/transfer, avg, last   Transfer / Avg. / Last over the finished rows, at the same step (and the W&B
                                  run summary)
    acc_matrix, curves            report.py's heat map and curves, as images, at the same step

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

import numpy as np
from PIL import Image

from pipeline.evaluation.metrics import summarize
from pipeline.evaluation.report import curves_figure, heatmap_figure
from pipeline.tracking import Trackers

from .config import TrainConfig

# metrics.jsonl fields that say where a row is, not what was measured
POSITION = ("task", "index", "step")


class TrainTracking:
    """``pipeline.training.train.Tracker`` for ``--report-to``: one :class:`pipeline.tracking.Trackers` per run.

    Reusable across runs (``gift table`` trains several): ``open`` starts one, ``close`` ends it.
    """

    def __init__(self, report_to: Sequence[str]):
        self.report_to = tuple(report_to)
        self.tracker: Trackers | None = None
        self.iterations = 1
        self.title = ""
        self.last: tuple[int, int, float] | None = None  # (task index, global step, time) of the previous row

    def open(self, run_dir: Path, config: TrainConfig, names: list[str], acc: list[list[float]]) -> None:
        """Start (or continue) the run's log; ``acc`` holds the rows of the tasks already finished."""
        self.tracker = Trackers(run_dir, self.report_to, name=config.run_name, config=asdict(config))
        self.iterations = config.iterations
        self.title = f"{config.method}, Order {config.order}"
        self.last = None
        self._replay(run_dir, names, acc)

    def _replay(self, run_dir: Path, names: list[str], acc: list[list[float]]) -> None:
        """Log the finished tasks' metrics.jsonl rows and accuracy rows that some backend does not hold yet."""
        if not acc or not self.tracker.wants(len(acc) * self.iterations - 1):
            return
        metrics = run_dir / "metrics.jsonl"
        rows: dict[int, dict] = {}  # by global step; an interrupted task's rows were written again by its rerun
        for line in metrics.read_text().splitlines() if metrics.exists() else []:
            record = json.loads(line)
            if record["index"] < len(acc):
                rows[record["index"] * self.iterations + record["step"]] = record
        for index in range(len(acc)):
            for step in sorted(s for s, r in rows.items() if r["index"] == index):
                self.tracker.log(_values(rows[step]), step)
            self.evaluated(index, names, acc[: index + 1])

    def metrics(self, record: dict, step: int) -> None:
        values = _values(record)
        now = time.perf_counter()
        if self.last is not None and self.last[0] == record["index"] and step > self.last[1]:
            values["train/steps_per_s"] = (step - self.last[1]) / max(now - self.last[2], 1e-9)
        self.last = (record["index"], step, now)
        self.tracker.log(values, step)

    def evaluated(self, index: int, names: list[str], acc: list[list[float]]) -> None:
        """After task ``index``: its row of the ``(index + 1, T)`` accuracy matrix ``acc``, the summary, the figures."""
        step = (index + 1) * self.iterations - 1
        if not self.tracker.wants(step):
            return  # held already (replaying a resumed run): skip drawing the figures
        matrix = np.asarray(acc, dtype=float)
        summary = summarize(matrix, names)
        totals = {"transfer": summary.transfer, "avg": summary.avg, "last": summary.last}
        values = {f"accuracy/{name}": value for name, value in zip(names, matrix[index], strict=True)}
        values["accuracy/mean"] = float(matrix[index].mean())
        values.update({f"summary/{k}": v for k, v in totals.items()})
        title = self.title + (f" ({index + 1} of {len(names)} tasks done)" if index + 1 < len(names) else "")
        images = {"acc_matrix": _png(heatmap_figure(matrix, names, title)),
                  "curves": _png(curves_figure(matrix, names, title))}
        self.tracker.log(values, step, images=images)
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
