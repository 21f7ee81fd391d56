"""What a CLTS run reports: the CIL protocol's report (the class-IL step matrix, Avg / Last, figures) with CLTS's own
numbers added, through the same run-directory, tracking and table machinery.

``results.md`` gains a CLTS section: the average task accuracy after the last step (mean over steps of the accuracy
on their classes: the matrix's last row), the average incremental accuracy (Avg), and per step the class-IL accuracy,
the router's accuracy (test images sent to their own task), the oracle-task accuracy (each image given its own task's
head: task-aware), and the captions kept; then the memory table (``pipeline/clts/memory.py``) after the last finished step. Files:
``clts.csv`` (those per-step numbers) and ``memory.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pipeline.clts.memory import memory_csv, memory_markdown, memory_rows
from pipeline.clts.params import saved_parts
from pipeline.datasets import catalog
from pipeline.evaluation.cil_report import write_cil_report
from pipeline.evaluation.metrics import summarize_cil
from pipeline.evaluation.report import _atomic_write_text
from pipeline.methods.facts import fact_lines
from pipeline.replay.captioned import caption_memory

from .protocol import CilProtocol


def _matrix(state: dict, rows: int | None = None) -> np.ndarray:
    acc = state["acc"][:rows] if rows is not None else state["acc"]
    return np.array([[math.nan if v is None else v for v in row] for row in acc], dtype=float)


def task_average(acc: np.ndarray) -> float:
    """Average task accuracy after the last finished step: the mean over the steps seen of the accuracy on their
    classes (class-IL, no task id), i.e. the mean of the matrix's last row (each step weighs the same)."""
    last = acc[-1]
    return float(np.nanmean(last[: len(acc)]))


class CltsProtocol(CilProtocol):
    """CIL's protocol (steps, data, test split, step matrix) reporting CLTS's router, oracle and memory too."""

    def kept(self, run_dir: Path, finished: int) -> tuple[int, int] | None:
        """(captions, UTF-8 bytes) kept after ``finished`` steps: the captions of every class seen."""
        if not finished:
            return 0, 0
        seen = self.setting.seen(finished - 1)
        return caption_memory(run_dir, {self.setting.caption_task: list(seen)})

    def clts_lines(self, run_dir: Path, state: dict) -> tuple[list[str], str, str]:
        """(markdown lines of the CLTS section, clts.csv, memory.csv)."""
        acc = _matrix(state)
        k = len(acc)
        summary = summarize_cil(state["seen"], acc)
        names = self.setting.step_names
        kept = [self.kept(run_dir, i + 1) or (0, 0) for i in range(k)]
        lines = ["## CLTS: router, task heads and memory", "",
                 f"Average task accuracy after {'the last step' if k == len(names) else f'step {k}'} (mean over the "
                 f"steps of the accuracy on their classes, no task id): **{task_average(acc):.1f}**. Average "
                 f"incremental accuracy (mean of the accuracy on all seen classes after each step): "
                 f"**{summary.avg:.1f}**. Routing: {self.config.routing}.", "",
                 "| after step | classes seen | class-IL accuracy | router accuracy | oracle-task accuracy | captions kept "
                 "| caption bytes |", "|---|---:|---:|---:|---:|---:|---:|"]
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["after_step", "classes_seen", "seen_acc", "router_acc", "oracle_acc", "task_avg", "captions",
                         "caption_bytes"])
        for i in range(k):
            row = [names[i], len(self.setting.seen(i)), state["seen"][i], state["router"][i], state["oracle"][i]]
            lines.append(f"| {row[0]} | {row[1]} | {row[2]:.1f} | {row[3]:.1f} | {row[4]:.1f} | {kept[i][0]:,} | "
                         f"{kept[i][1]:,} |")
            writer.writerow([*row[:2], *(f"{v:.2f}" for v in (*row[2:], task_average(acc[: i + 1]))), *kept[i]])
        lines += ["", "Router accuracy: the share of the seen classes' test images the router sends to their own "
                  "step (100 after the first step: one head). Oracle-task accuracy: each image classified by its own "
                  "step's head (task-aware, an upper bound for the routing).", ""]
        record = json.loads((run_dir / "captions.json").read_text()) if (run_dir / "captions.json").exists() else {}
        used = record.get("sets", {}).get(self.setting.caption_task, {})
        parts = saved_parts(run_dir / state["checkpoint"]) if state.get("checkpoint") else None
        rows = memory_rows(*kept[-1], catalog.native_shape(self.setting.dataset),
                           params=(parts.what, parts.params, parts.bytes) if parts else None)
        lines += [f"### Memory after {names[k - 1]}", "",
                  f"What CLTS keeps of the tasks' data is their captions ({kept[-1][0]:,} captions of the "
                  f"{len(self.setting.seen(k - 1))} classes seen); the images it trains its router on are rendered "
                  "from them, and no real image is kept. Beside them it keeps its task heads and router, parameters "
                  "beyond the frozen CLIP, counted from the checkpoint.", "",
                  *memory_markdown(rows, used.get("captioner"), used.get("generator")), ""]
        return lines, table.getvalue(), memory_csv(rows)

    def write_report(self, run_dir: Path, state: dict) -> None:
        run_dir = Path(run_dir)
        lines, steps_csv, mem_csv = self.clts_lines(run_dir, state)
        write_cil_report(run_dir, setting=self.setting, acc=_matrix(state), seen=state["seen"], method=self.config.method,
                         comparable=True, extra=lines, facts=fact_lines(run_dir, asdict(self.config), state))  # no published CLTS numbers: the report says so
        _atomic_write_text(run_dir / "clts.csv", steps_csv)
        _atomic_write_text(run_dir / "memory.csv", mem_csv)

    def tracked(self, state: dict, index: int):
        values, totals, figures = super().tracked(state, index)
        values["accuracy/router"] = state["router"][index]
        values["accuracy/oracle"] = state["oracle"][index]
        totals["task_avg"] = task_average(_matrix(state, index + 1))
        return values, totals, figures
