"""Human-facing outputs of a class-incremental run directory, and the published CIL numbers (GIFT Tables 7 / 8).

:func:`write_cil_report` writes, into ``run_dir`` (each file by rename, as :mod:`report` does):

* ``acc_matrix.csv`` / ``acc_matrix.npy``: the ``(k, T)`` step matrix (accuracy on step j's classes after step i;
  empty / NaN above the diagonal), the CSV also with the accuracy on all seen classes after each step;
* ``results.md``: Avg / Last in the layout of Tables 7 / 8, the published row beside ours when the run's setting is
  the paper's, the seen-class accuracy after every step, and the step matrix;
* ``acc_matrix.png`` (heat map) and ``curves.png`` (seen-class accuracy, and each step's classes, after every step).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.datasets import catalog
from pipeline.datasets.catalog import CilSetting

from .metrics import CilSummary, summarize_cil
from .report import (
    DASH,
    TOLERANCE,
    WARN_MARK,
    _atomic_write,
    _atomic_write_text,
    _md_table,
    _save_figure,
    heatmap_figure,
    plt,
)

# The paper's tables by dataset, and the row of each method of this project in them (the other rows are published
# results of methods not built here: shown as "published only").
PUBLISHED_TABLES = {"cifar100": ("gift_paper_table7_cifar100", "Tab. 7"),
                    "tinyimagenet": ("gift_paper_table8_tinyimagenet", "Tab. 8")}
CLIP_ROWS = {"zeroshot": "CLIP Zero-shot", "finetune": "CLIP Fine-tune", "lwf": "LwF", "icarl": "iCaRL",
             "lwf-vr": "LwF-VR", "zscl": "ZSCL", "gift": "GIFT"}
Pair = tuple[float | None, float | None]  # Avg, Last (percent; None where the paper has no entry)


def published_cil(setting: str) -> tuple[str, dict[str, Pair]] | None:
    """(source, {paper row: (Avg, Last)}) for one of GIFT's six CIL settings; None for the others."""
    data = catalog._load("cil.json")
    if setting not in data["settings"]:
        return None
    key, source = PUBLISHED_TABLES[data["settings"][setting]["dataset"]]
    steps = f"{setting.rsplit('-', 1)[1]}steps"
    return source, {row: (v[steps]["avg"], v[steps]["last"]) for row, v in data["published"][key].items()}


def published_for_method(method: str, setting: str) -> Pair | None:
    """The published (Avg, Last) of ``method``'s row on ``setting`` (None if the paper has none)."""
    found = published_cil(setting)
    if found is None or method not in CLIP_ROWS:
        return None
    pair = found[1].get(CLIP_ROWS[method])
    return pair if pair and pair[0] is not None else None


def describe(setting: CilSetting) -> str:
    """'CIFAR100, 10 steps of 10 classes' / 'tinyimagenet: a base step of 100 classes, then 5 steps of 20'."""
    sizes, order = setting.sizes, "natural class order" if setting.natural else "the harness's class order"
    if len(set(sizes)) == 1:
        return f"{setting.dataset}, {len(sizes)} steps of {sizes[0]} classes ({order})"
    return (f"{setting.dataset}, a base step of {sizes[0]} classes then {len(sizes) - 1} steps of {sizes[1]} "
            f"({order})")


def _fmt(v: float | None) -> str:
    return DASH if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def matrix_csv(acc: np.ndarray, seen: Sequence[float], setting: CilSetting) -> str:
    """``after_step,classes_seen,seen_acc,<steps>``: one row per finished step, 2 decimals, empty above the diagonal."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["after_step", "classes_seen", "seen_acc", *setting.step_names])
    for i, row in enumerate(acc):
        writer.writerow([setting.step_names[i], len(setting.seen(i)), f"{seen[i]:.2f}",
                         *("" if math.isnan(v) else f"{v:.2f}" for v in row)])
    return buf.getvalue()


def comparison_lines(summary: CilSummary, method: str, setting: CilSetting, comparable: bool, partial: bool) -> list[str]:
    """Ours vs the paper's row, in the layout of Tables 7 / 8 (one step count: Avg, Last)."""
    found = published_cil(setting.name)
    n = len(setting.sizes) - (1 if len(set(setting.sizes)) > 1 else 0)  # TinyImageNet counts steps after the base
    header = ["Method", f"{n} steps Avg", f"{n} steps Last"]
    rows = [[f"`{method}` (ours)", _fmt(summary.avg), _fmt(summary.last)]]
    notes = []
    pair = published_for_method(method, setting.name)
    if not comparable:
        notes.append("Published numbers are not shown: this run's setting differs from the paper's (ViT-B/16 OpenAI "
                     "weights, the setting's defaults and class order).")
    elif pair is None:
        notes.append(f"No published numbers for method {method!r} on {setting.name}.")
    else:
        source = found[0]
        marks = [abs(round(round(o, 1) - p, 1)) > TOLERANCE for o, p in zip((summary.avg, summary.last), pair,
                                                                             strict=True)]
        rows.append([f"{CLIP_ROWS[method]} (published, {source})", f"{pair[0]:.2f}", f"{pair[1]:.2f}"])
        rows.append(["Δ", *(f"{round(o, 1) - p:+.1f}" + (" ⚠" if m else "") for o, p, m in
                            zip((summary.avg, summary.last), pair, marks, strict=True))])
        if any(marks):
            notes.append(f"⚠ = {WARN_MARK}.")
        if partial:
            notes.append("The run is not finished: published numbers are for the whole sequence, so this comparison "
                         "is provisional.")
    return [*_md_table(header, rows), "", *notes]


def results_markdown(acc: np.ndarray, seen: Sequence[float], setting: CilSetting, *, method: str, comparable: bool,
                     title: str | None = None, extra: Sequence[str] = (), facts: Sequence[str] = ()) -> str:
    """results.md; ``facts``: lines on what the run replayed and keeps, under its status line; ``extra``: a method's
    own sections (lines), after the step matrix."""
    summary = summarize_cil(seen, acc)
    k, t = acc.shape
    status = "finished" if k == t else f"in progress: {k} of {t} steps done; Avg and Last use the finished steps"
    lines = [f"# {title or f'Results: {method}, CIL {setting.name}'}", "",
             f"Method `{method}`, {describe(setting)}, {status}.", "", *facts,
             "## Avg / Last (%)", "",
             "Avg = mean over steps of the accuracy on all classes seen so far (one head, no task id); Last = that "
             "accuracy after the last step.", "",
             *comparison_lines(summary, method, setting, comparable, partial=k < t), ""]
    if not math.isnan(summary.forgetting):
        lines += [f"Forgetting: {summary.forgetting:.1f} points (mean over earlier steps of the best accuracy on "
                  "their classes minus the accuracy after the last step).", ""]
    lines += ["## Accuracy on all seen classes after each step (%)", ""]
    lines += _md_table(["after step", "classes seen", "accuracy"],
                       [[setting.step_names[i], str(len(setting.seen(i))), _fmt(seen[i])] for i in range(k)])
    lines += ["", "## Accuracy on each step's classes after each step (%)", "",
              "Rows: after training step i; columns: the test images of step j's classes, same head.", ""]
    cells = [[f"after {setting.step_names[i]}", *("" if math.isnan(v) else f"**{v:.1f}**" if i == j else f"{v:.1f}"
                                                for j, v in enumerate(row))] for i, row in enumerate(acc)]
    lines += [*_md_table(["after step ↓ / classes of step →", *setting.step_names], cells), "", *extra]
    return "\n".join(lines)


def step_heatmap_figure(acc: np.ndarray, steps: Sequence[str], title: str):
    """The step matrix as a heat map: its columns are the test images of each step's classes, not datasets."""
    return heatmap_figure(acc, steps, title, columns="test images of the classes of step", rows="after training step")


def curves_figure(acc: np.ndarray, seen: Sequence[float], setting: CilSetting, title: str):
    """Accuracy on all seen classes after each step (bold), and on each step's classes from the step it is learnt."""
    k, _ = acc.shape
    x = np.arange(1, k + 1)
    fig, ax = plt.subplots(figsize=(8.0, 4.5))
    colors = plt.get_cmap("viridis")
    for j in range(k):
        # a dot per point: the last step's line is a single point
        ax.plot(x[j:], acc[j:, j], linewidth=0.8, alpha=0.6, color=colors(j / max(1, k - 1)), marker="o", markersize=2.5,
                label=f"classes of step {j + 1}" if k <= 12 else None)  # a 50-step legend would hide the plot
    ax.plot(x, seen, marker="o", markersize=4, linewidth=2.2, color="black", label="all seen classes")
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(0, 100)
    ax.set_xlabel("after training step")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.set_title(f"{title}  (thin lines: each step's classes)")
    # beside the axes: the lines of the early steps run along the bottom where a legend inside would cover them
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig


def write_cil_report(run_dir: Path, *, setting: CilSetting, acc: np.ndarray, seen: Sequence[float], method: str,
                     comparable: bool, title: str | None = None, extra: Sequence[str] = (),
                     facts: Sequence[str] = ()) -> dict[str, Path]:
    """Write the CSV / NPY step matrix, ``results.md`` (``extra``: lines of a method's own sections at its end) and
    the two figures of a CIL run; returns their paths.

    ``acc``: ``(k, T)`` step matrix (NaN above the diagonal), ``seen``: the k seen-class accuracies (percent).
    Raises ``ValueError`` on inconsistent inputs (see :func:`summarize_cil`), before writing anything.
    """
    acc = np.asarray(acc, dtype=float)
    summarize_cil(seen, acc)  # validate first
    if acc.shape[1] != len(setting.sizes):
        raise ValueError(f"step matrix has {acc.shape[1]} columns, setting {setting.name} has {len(setting.sizes)} steps")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fig_title = title or f"{method}, {setting.name}"
    if acc.shape[0] < acc.shape[1]:
        fig_title += f" ({acc.shape[0]} of {acc.shape[1]} steps done)"
    md = results_markdown(acc, seen, setting, method=method, comparable=comparable, title=title, extra=extra,
                          facts=facts)
    return {
        "csv": _atomic_write_text(run_dir / "acc_matrix.csv", matrix_csv(acc, seen, setting)),
        "npy": _atomic_write(run_dir / "acc_matrix.npy", lambda fh: np.save(fh, acc, allow_pickle=False)),
        "md": _atomic_write_text(run_dir / "results.md", md),
        "heatmap": _save_figure(step_heatmap_figure(acc, setting.step_names, fig_title), run_dir / "acc_matrix.png"),
        "curves": _save_figure(curves_figure(acc, seen, setting, fig_title), run_dir / "curves.png"),
    }
