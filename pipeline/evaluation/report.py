"""Human-facing outputs of a run directory, written from its accuracy matrix.

:func:`write_report` writes, into ``run_dir``:

* ``acc_matrix.csv`` / ``acc_matrix.npy``: the ``(k, T)`` accuracy matrix (``k`` finished tasks, ``T``
  datasets; see :mod:`pipeline.evaluation.metrics`);
* ``results.md``: the paper's Transfer / Avg. / Last table, the full matrix, and (for comparable runs)
  our numbers next to the published ones;
* ``acc_matrix.png``: a heat map of the matrix;
* ``curves.png``: each dataset's accuracy after every finished task.

Every file is written under a temporary name in ``run_dir`` and moved into place with ``os.replace``,
so an interrupted run never leaves a half-written output (an older complete one may remain).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from shards.layout import atomic_write_bytes  # noqa: E402

from .metrics import Summary, summarize, validate  # noqa: E402

# Published Transfer / Avg. / Last (percent) of ViT-B/16 on MTIL, by (method, order): the paper's Tab. 1 (Order I)
# and Tab. 2 (Order II). The ablations' numbers are with their presets in pipeline/tables/presets.py.
PUBLISHED: dict[tuple[str, str], tuple[float, float, float]] = {
    ("gift", "I"): (69.3, 77.3, 86.0),
    ("gift", "II"): (65.9, 75.7, 85.3),
    ("zscl", "I"): (68.1, 75.4, 83.6),
    ("zscl", "II"): (64.2, 74.5, 83.4),
    ("finetune", "I"): (44.6, 55.9, 77.3),
    ("finetune", "II"): (46.6, 56.2, 67.4),
    ("l2", "I"): (61.0, 62.7, 75.9),
    ("l2", "II"): (60.6, 68.8, 77.2),
    ("zeroshot", "I"): (69.4, 65.3, 65.3),
    ("zeroshot", "II"): (65.4, 65.3, 65.3),
    ("lwf", "I"): (56.9, 64.7, 74.6),
    ("lwf", "II"): (53.2, 62.2, 71.9),
    ("icarl", "I"): (50.4, 65.7, 80.1),
    ("icarl", "II"): (50.9, 56.9, 71.6),
    ("lwf-vr", "I"): (57.2, 65.1, 76.6),
    ("lwf-vr", "II"): (53.1, 60.6, 68.3),
    ("wise-ft", "I"): (52.3, 60.7, 77.7),
    ("wise-ft", "II"): (51.0, 61.5, 72.2),
}

# Zero-shot ViT-B/16 accuracy (percent) of the Order I datasets, in that order (mean 65.3).
ZERO_SHOT_ORDER_I: dict[str, float] = {
    "aircraft": 24.3,
    "caltech101": 88.4,
    "cifar100": 68.2,
    "dtd": 44.6,
    "eurosat": 54.9,
    "flowers": 71.0,
    "food": 88.5,
    "mnist": 59.4,
    "oxford_pet": 89.0,
    "cars": 64.7,
    "sun397": 65.2,
}

METRICS = ("Transfer", "Avg.", "Last")
DASH = "–"
WARN_MARK = "⚠ differs by > 1 point"
# A difference is flagged when |ours (1 decimal) - published| exceeds this many points.
TOLERANCE = 1.0


# --------------------------------------------------------------------------- atomic writes


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write`` on an in-memory buffer (reports are small), then write it atomically onto ``path``."""
    buf = io.BytesIO()
    write(buf)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _atomic_write_text(path: Path, text: str) -> Path:
    return _atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


# --------------------------------------------------------------------------- matrix files


def matrix_csv(acc: np.ndarray, names: Sequence[str]) -> str:
    """CSV text of a ``(k, T)`` matrix: header ``after_task,<names>``, one row per finished task, 2 decimals."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["after_task", *names])
    for i, row in enumerate(acc):
        writer.writerow([names[i], *(f"{v:.2f}" for v in row)])
    return buf.getvalue()


def _write_npy(path: Path, acc: np.ndarray) -> Path:
    return _atomic_write(path, lambda fh: np.save(fh, acc, allow_pickle=False))


# --------------------------------------------------------------------------- markdown


def _fmt(value: float) -> str:
    return DASH if math.isnan(value) else f"{value:.1f}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "---:") -> list[str]:
    """Markdown table lines; the first column is left-aligned, the others use ``align``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---", *[align] * (len(header) - 1)]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def summary_table(summary: Summary, names: Sequence[str], zero_shot: Sequence[float] | None = None) -> list[str]:
    """The paper's layout: rows Transfer / Avg. / Last (optionally Zero-shot first), columns datasets + Average."""
    rows: list[list[str]] = []
    if zero_shot is not None:
        rows.append(["Zero-shot", *(_fmt(v) for v in zero_shot), _fmt(float(np.mean(zero_shot)))])
    for label, key, total in zip(METRICS, ("transfer", "avg", "last"), _totals(summary), strict=True):
        rows.append([label, *(_fmt(summary.per_dataset[n][key]) for n in names), _fmt(total)])
    return _md_table(["", *names, "Average"], rows)


def matrix_table(acc: np.ndarray, names: Sequence[str]) -> list[str]:
    """The full ``(k, T)`` matrix as a markdown table; diagonal entries (just-trained dataset) in bold."""
    rows = []
    for i, row in enumerate(acc):
        cells = [f"**{v:.1f}**" if i == j else f"{v:.1f}" for j, v in enumerate(row)]
        rows.append([f"after {names[i]}", *cells])
    return _md_table(["after task ↓ / dataset →", *names], rows)


def _totals(summary: Summary) -> tuple[float, float, float]:
    return summary.transfer, summary.avg, summary.last


def published_lines(summary: Summary, key: tuple[str, str], partial: bool) -> list[str]:
    """'Ours vs published' table for ``key = (method, order)``; rows whose |Δ| > 1 point carry ``WARN_MARK``.

    Δ is taken between our value rounded to 1 decimal (as displayed) and the published value.
    """
    rows = []
    for label, ours, pub in zip(METRICS, _totals(summary), PUBLISHED[key], strict=True):
        delta = round(round(ours, 1) - pub, 1)
        mark = WARN_MARK if abs(delta) > TOLERANCE else "ok"
        rows.append([label, _fmt(ours), f"{pub:.1f}", f"{delta:+.1f}", mark])
    lines = [f"## Ours vs published ({key[0]}, Order {key[1]}, ViT-B/16)", ""]
    if partial:
        lines += [
            "The run is not finished: published numbers are for the full sequence, so this comparison is provisional.",
            "",
        ]
    return lines + _md_table(["Metric", "Ours", "Published", "Δ", "Check"], rows)


def _comparison_section(summary: Summary, method: str, order: str | None, comparable: bool, partial: bool) -> list[str]:
    if not comparable:
        return [
            "Published numbers are not shown: this run's setting differs from the paper's "
            "(e.g. tiny models / mini benchmark), so they are not comparable."
        ]
    key = (method.lower(), order or "")
    if key not in PUBLISHED:
        return [f"No published numbers for method {method!r}, order {order!r}."]
    return published_lines(summary, key, partial)


def _order_text(order: str | None) -> str:
    return f"Order {order}" if order else "custom order"


def results_markdown(
    acc: np.ndarray,
    names: Sequence[str],
    *,
    method: str,
    order: str | None,
    comparable: bool,
    title: str | None = None,
    zero_shot: Sequence[float] | None = None,
    facts: Sequence[str] = (),
) -> str:
    """The text of ``results.md`` for a ``(k, T)`` matrix; ``facts``: lines on what the run replayed and keeps, under
    its status line."""
    summary = summarize(acc, names)
    k, t = acc.shape
    order_txt = _order_text(order)
    status = "finished" if k == t else f"in progress: {k} of {t} tasks done; metrics use the finished rows only"
    lines = [f"# {title or f'Results: {method}, {order_txt}'}", "", f"Method `{method}`, {order_txt}, {status}.", "",
             *facts]
    lines += ["## Transfer / Avg. / Last (%)", "", *summary_table(summary, names, zero_shot), ""]
    lines += ["## Accuracy matrix (%)", "", "Rows: after training task i; columns: test datasets.", ""]
    lines += [*matrix_table(acc, names), ""]
    lines += [*_comparison_section(summary, method, order, comparable, partial=k < t), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def _save_figure(fig: plt.Figure, path: Path) -> Path:
    try:
        return _atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


def heatmap_figure(acc: np.ndarray, names: Sequence[str], title: str, columns: str = "test dataset",
                   rows: str = "after task") -> plt.Figure:
    """Heat map of a ``(k, T)`` matrix: rows '``rows`` i', columns ``columns`` (datasets; a CIL run's steps), every cell
    annotated (NaN cells, as above a CIL matrix's diagonal, are left blank; beyond 20 columns the cells are not
    annotated)."""
    k, t = acc.shape
    scale = 1.0 if t <= 20 else 20 / t  # a 50-step CIL matrix keeps a readable figure size
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * t * scale, 1.4 + 0.55 * k * scale))
    cmap = plt.get_cmap("viridis")
    im = ax.imshow(acc, cmap=cmap, vmin=0.0, vmax=100.0, aspect="auto")
    for i in range(k):
        for j in range(t):
            if np.isnan(acc[i, j]) or t > 20:  # CIL: nothing above the diagonal; long settings: colours only
                continue
            bright = np.mean(cmap(acc[i, j] / 100.0)[:3]) > 0.5
            weight = "bold" if i == j else "normal"
            ax.text(
                j,
                i,
                f"{acc[i, j]:.1f}",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if bright else "white",
                fontweight=weight,
            )
    ax.set_xticks(range(t), labels=list(names), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels=[f"after {i + 1}: {names[i]}" for i in range(k)])
    ax.set_xlabel(columns)
    ax.set_ylabel(rows)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="top-1 accuracy (%)", fraction=0.04, pad=0.02)
    return fig


def curves_figure(acc: np.ndarray, names: Sequence[str], title: str) -> plt.Figure:
    """Accuracy of each dataset after tasks ``1..k`` (one line each); a large dot where it is trained."""
    k, t = acc.shape
    x = np.arange(1, k + 1)
    fig, ax = plt.subplots(figsize=(8.0, 4.5))
    colors = plt.get_cmap("tab20" if t > 10 else "tab10")
    for j, name in enumerate(names):
        color = colors(j % colors.N)
        ax.plot(x, acc[:, j], marker="o", markersize=3, linewidth=1.4, color=color, label=name)
        if j < k:  # dataset j is trained at step j + 1
            ax.plot(j + 1, acc[j, j], marker="*", markersize=13, color=color, markeredgecolor="black", zorder=3)
    ax.set_xticks(
        x, labels=[f"{i}: {names[i - 1]}" for i in x], fontsize=8, rotation=30, ha="right", rotation_mode="anchor"
    )
    ax.set_xlim(0.5, max(k, 1) + 0.5)
    ax.set_ylim(0, 100)
    ax.set_xlabel("after training task")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.set_title(f"{title}  (★ = dataset just trained)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


# --------------------------------------------------------------------------- entry point


def write_report(
    run_dir: Path,
    *,
    names: Sequence[str],
    acc: np.ndarray,
    method: str,
    order: str | None,
    comparable: bool,
    title: str | None = None,
    zero_shot: Sequence[float] | None = None,
    facts: Sequence[str] = (),
) -> dict[str, Path]:
    """Write the run's CSV / NPY matrix, ``results.md`` and the two figures into ``run_dir``.

    ``acc`` is the ``(k, T)`` accuracy matrix in percent (``k <= T`` finished tasks, ``T == len(names)``);
    ``comparable`` says whether the run's setting matches the paper's (then the published numbers for
    ``(method, order)`` are shown). ``zero_shot`` (length ``T``), if given, adds a Zero-shot row to the
    summary table. Returns ``{"csv", "npy", "md", "heatmap", "curves"}`` -> written paths.
    Raises ``ValueError`` on a malformed matrix (see :func:`pipeline.evaluation.metrics.validate`).
    """
    arr = validate(acc, names)
    if zero_shot is not None and len(zero_shot) != len(names):
        raise ValueError(f"{len(zero_shot)} zero-shot values for {len(names)} datasets")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    md = results_markdown(
        arr, names, method=method, order=order, comparable=comparable, title=title, zero_shot=zero_shot, facts=facts
    )
    fig_title = title or f"{method}, {_order_text(order)}"
    if arr.shape[0] < arr.shape[1]:
        fig_title += f" ({arr.shape[0]} of {arr.shape[1]} tasks done)"
    return {
        "csv": _atomic_write_text(run_dir / "acc_matrix.csv", matrix_csv(arr, names)),
        "npy": _write_npy(run_dir / "acc_matrix.npy", arr),
        "md": _atomic_write_text(run_dir / "results.md", md),
        "heatmap": _save_figure(heatmap_figure(arr, names, fig_title), run_dir / "acc_matrix.png"),
        "curves": _save_figure(curves_figure(arr, names, fig_title), run_dir / "curves.png"),
    }
