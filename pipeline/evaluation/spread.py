"""Results over several seeds: each number of a results table as mean ± standard deviation.

Runs on tiny models are exact on one machine but differ across CPU types (kernels sum in other orders, and a few
hundred steps amplify it), so one seed's numbers cannot be compared between machines; the spread over seeds can.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .metrics import summarize

MeanStd = tuple[float, float]


def mean_std(values: Sequence[float]) -> MeanStd:
    """Mean and sample standard deviation (divisor n − 1; 0 for a single value) of ``values``."""
    if not values:
        raise ValueError("no values to average")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class Spread:
    """One method over ``seeds`` runs: accuracy on the order's first dataset after each task, and the summary."""

    seeds: int
    first_dataset: list[MeanStd]  # one per task of the order
    transfer: MeanStd
    avg: MeanStd
    last: MeanStd


def spread(matrices: Sequence[np.ndarray], names: Sequence[str]) -> Spread:
    """Mean ± std over ``matrices``: one finished ``(T, T)`` accuracy matrix per seed, columns = ``names``."""
    if any(np.shape(m) != (len(names), len(names)) for m in matrices):
        raise ValueError(f"every run must be finished: a ({len(names)}, {len(names)}) matrix per seed")
    summaries = [summarize(m, names) for m in matrices]
    return Spread(
        seeds=len(matrices),
        first_dataset=[mean_std([float(m[i, 0]) for m in matrices]) for i in range(len(names))],
        transfer=mean_std([s.transfer for s in summaries]),
        avg=mean_std([s.avg for s in summaries]),
        last=mean_std([s.last for s in summaries]),
    )


def fmt(value: MeanStd, seeds: int) -> str:
    """``85.4 ± 1.2`` over several seeds, ``85.4`` for one."""
    return f"{value[0]:.1f} ± {value[1]:.1f}" if seeds > 1 else f"{value[0]:.1f}"


def spread_table(rows: dict[str, Spread], first: str, replayed: dict[str, str] | None = None) -> list[str]:
    """A markdown table, one row per method: ``first`` after each task, then Transfer / Avg. / Last, and (given
    ``replayed[method]``) what the method replayed: renders or real images, said in the table itself."""
    lines = [f"| method | {first} after task {' / '.join(str(i + 1) for i in range(len(next(iter(rows.values())).first_dataset)))} "
             "| Transfer | Avg. | Last |" + (" replayed |" if replayed else ""),
             "|---|---|---:|---:|---:|" + ("---|" if replayed else "")]
    for method, s in rows.items():
        after = " / ".join(fmt(v, s.seeds) for v in s.first_dataset)
        lines.append(f"| {method} | {after} | {fmt(s.transfer, s.seeds)} | {fmt(s.avg, s.seeds)} | {fmt(s.last, s.seeds)} |"
                     + (f" {replayed[method]} |" if replayed else ""))
    return lines


def cil_spread_table(rows: dict[str, tuple[MeanStd, MeanStd]], seeds: int, kept: dict[str, str],
                     replayed: dict[str, str] | None = None, extra: dict[str, str] | None = None) -> list[str]:
    """A markdown table of class-incremental runs, one row per method: Avg. and Last, each as mean ± std, what the
    method replayed (given ``replayed[method]``), what it keeps between steps (``kept[method]``) and the learned
    parameters it keeps beyond CLIP (given ``extra[method]``)."""
    head = ["method", "Avg.", "Last", *(["replayed"] if replayed else []), "memory kept",
            *(["extra parameters"] if extra else [])]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---:|" + "---|" * (len(head) - 3)]
    for method, (avg, last) in rows.items():
        cells = [method, fmt(avg, seeds), fmt(last, seeds), *([replayed[method]] if replayed else []), kept[method],
                 *([extra[method]] if extra else [])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
