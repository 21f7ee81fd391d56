"""The comparison table: many runs of one order side by side, in the paper's Transfer / Avg. / Last layout.

The rows are presets (:mod:`pipeline.tables.presets`: a method plus TrainConfig overrides, e.g. ``gift-cd`` = GIFT with CD
only on the l2 baseline; groups such as ``table3`` name the presets of one of the paper's tables).

:func:`run_table` trains every preset that has no finished run (reusing finished runs, resuming unfinished ones;
one preset's failure does not stop the others), then :func:`build_table` reads each run directory's
``config.json`` / ``state.json`` and :func:`write_table` writes ``table-<order>.md`` / ``.csv`` / ``.png``:

    | Method | paper row | Transfer | paper | Δ l2 | Avg. | paper | Δ l2 | Last | paper | Δ l2 | status |

Δ l2 is ours minus our own ``l2`` row. The published number of a row is shown only where the run's setting is the
paper's (ViT-B/16 OpenAI weights, 1,000 iterations, Order I/II, the preset's exact options); ours is marked
``⚠`` when it differs from it by more than one point. On a CIL setting the table has Avg. / Last only (the layout of
Tables 7 / 8, no Δ), and lists the paper's rows of methods not built here as "published only". Run directories: ``<method>-order<order>`` for a plain method
(the same directory ``gift train`` uses), ``<preset>-order<order>`` otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.datasets import catalog
from pipeline.evaluation import report
from pipeline.evaluation.cil_report import CLIP_ROWS, describe, published_cil
from pipeline.evaluation.metrics import CilSummary, Summary, summarize, summarize_cil
from pipeline.evaluation.spread import mean_std
from pipeline.methods import METHODS, Extra, Kept
from pipeline.methods.facts import extra_text, kept_text, replayed_text
from pipeline.training.config import TrainConfig
from pipeline.training.rundir import RunDirError, prepare_run_dir
from pipeline.training.train import Progress, train

from .presets import PRESETS, Preset, Triple, all_presets, config_for, identify, published_for, run_stem

log = logging.getLogger("gift.table")

MARK = "⚠"


# --------------------------------------------------------------------------- the table


@dataclass
class Row:
    name: str  # preset name (or the run directory's name when it is no preset's)
    label: str  # the paper's row name
    run_dir: Path | None
    method: str
    tasks: int  # T
    finished: int = 0  # k: finished tasks
    preset: str = ""  # the preset whose setting the run has ("" when none)
    summary: Summary | CilSummary | None = None
    published: Triple | None = None
    source: str = ""
    error: str | None = None
    kept: Kept | None = None  # the memory of task data the run keeps (its method's ``kept``)
    extra: Extra | None = None  # the learned parameters it keeps beyond CLIP (its method's ``extra``)
    replayed: str = report.DASH  # what it replayed (SD renders, tiny-SD renders, real images, ...)
    # A row over several seeds (``gift table --seed 0,1,2``): (Transfer, Avg., Last) of each seed's finished run;
    # the row's values are their mean, ``std`` their sample standard deviation.
    seeds: tuple[int, ...] = ()
    seed_values: list[Triple] = field(default_factory=list)

    @property
    def values(self) -> Triple | None:
        if self.seeds:
            return tuple(mean_std([v[m] for v in self.seed_values])[0] for m in range(3)) if self.seed_values else None
        return None if self.summary is None else (self.summary.transfer, self.summary.avg, self.summary.last)

    @property
    def std(self) -> Triple | None:
        """Per metric, the standard deviation over the seeds (``None`` for a single run)."""
        if not self.seeds or not self.seed_values:
            return None
        return tuple(mean_std([v[m] for v in self.seed_values])[1] for m in range(3))

    @property
    def partial(self) -> bool:
        return 0 < self.finished < self.tasks

    @property
    def status(self) -> str:
        """``finished``, ``partial``, ``not started`` or ``failed`` (the CSV's status column)."""
        if self.error:
            return "failed"
        if self.finished == self.tasks:
            return "finished"
        return "partial" if self.finished else "not started"

    @property
    def status_text(self) -> str:
        done = f" ({self.finished}/{self.tasks} tasks)" if self.finished < self.tasks and self.finished else ""
        over = f", {len(self.seed_values)} of {len(self.seeds)} seeds" if self.seeds else ""
        return ("**failed**" if self.error else self.status) + done + over

    def differs(self) -> tuple[bool, ...]:
        """Per metric, whether ours (1 decimal, as shown) is more than ``report.TOLERANCE`` from the published.

        Never for a partial run: the published numbers are for the whole sequence."""
        if self.values is None or self.published is None or self.partial:
            return (False, False, False)
        return tuple(abs(round(round(o, 1) - p, 1)) > report.TOLERANCE
                     for o, p in zip(self.values, self.published, strict=True))


@dataclass
class Table:
    order: str
    datasets: list[str]
    rows: list[Row]
    seeds: tuple[int, ...] = (0,)  # the training seeds of the runs (several: every cell is mean ± std over them)

    @property
    def stem(self) -> str:
        """The files' name: ``table-<order>`` for seed 0 (what `gift table` always wrote), ``table-<order>-seed1``,
        ``table-<order>-seeds0-1-2``."""
        if self.seeds == (0,):
            return f"table-{self.order}"
        return f"table-{self.order}-seed{'s' if len(self.seeds) > 1 else ''}{'-'.join(map(str, self.seeds))}"

    @property
    def cil(self) -> bool:
        return catalog.is_cil(self.order)

    @property
    def metrics(self) -> tuple[int, ...]:
        """Which of (Transfer, Avg., Last) the table shows: all three (MTIL), Avg. and Last (CIL)."""
        return (1, 2) if self.cil else (0, 1, 2)

    @property
    def baseline(self) -> Row | None:
        """The ``l2`` row Δ is taken against (the first run of method l2 with results; none in a CIL table)."""
        if self.cil:
            return None
        return next((r for r in self.rows if r.method == "l2" and r.values is not None), None)

    def delta(self, row: Row) -> tuple[float, ...] | None:
        """Ours − the l2 row's, per metric (``None`` without an l2 row or without results)."""
        base = self.baseline
        if base is None or base.values is None or row.values is None:
            return None
        return tuple(o - b for o, b in zip(row.values, base.values, strict=True))

    @property
    def failed(self) -> list[Row]:
        return [r for r in self.rows if r.error]


def read_run(run_dir: Path) -> tuple[dict, dict]:
    """(config.json, state.json) of a run directory; state is empty-but-valid for a run with no finished task."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise ValueError(f"{run_dir} is not a run directory (no config.json)")
    cfg = json.loads((run_dir / "config.json").read_text())
    state_file = run_dir / "state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"finished": 0, "acc": []}
    return cfg, state


def build_table(order: str, run_dirs: Sequence[Path], *, errors: Mapping[Path, str] | None = None,
                presets: Mapping[Path, Preset] | None = None, foreign: Sequence[Path] = ()) -> Table:
    """One row per run directory, in the given order. ``errors``: run directory -> why it failed (its row is kept,
    with whatever tasks it finished); ``presets``: run directory -> the preset it was run as (else identified from
    its name and config). A directory that does not exist, or is in ``foreign`` (it holds a run of another
    configuration, whose numbers are not this row's), gives an empty row (it must then have an error)."""
    datasets = catalog.get_order(order)
    errors, presets = errors or {}, presets or {}
    rows = []
    for run_dir in map(Path, run_dirs):
        error = errors.get(run_dir)
        if not (run_dir / "config.json").exists() or run_dir in foreign:
            if error is None:
                raise ValueError(f"{run_dir} is not a run directory (no config.json)")
            preset = presets.get(run_dir)
            rows.append(Row(preset.name if preset else run_dir.name, preset.label_for(order) if preset else "", run_dir,
                            preset.method if preset else "?", len(datasets), preset=preset.name if preset else "",
                            error=error))
            continue
        cfg, state = read_run(run_dir)
        if cfg.get("order") != order:
            raise ValueError(f"{run_dir} is a run of order {cfg.get('order')!r}, not {order!r}")
        preset = presets.get(run_dir) or identify(run_dir, cfg)
        rows_acc = [[math.nan if v is None else v for v in r] for r in state["acc"]]  # CIL: null above the diagonal
        acc = np.array(rows_acc, dtype=float).reshape(len(rows_acc), len(datasets))
        # A row is named after its preset when it was run as that preset or its directory is the preset's (seed 0),
        # else after the directory (a table built from folders that hold several seeds' runs names each apart).
        name = preset.name if preset and (run_dir in presets or run_dir.name == preset.dir_name(order)) else run_dir.name
        row = Row(name, preset.label_for(order) if preset else "", run_dir, cfg["method"], len(datasets),
                  finished=len(acc), preset=preset.name if preset else "", published=published_for(preset, cfg),
                  source=preset.source_for(order) if preset else "", error=error)
        if len(acc):
            row.summary = summarize_cil(state["seen"], acc) if catalog.is_cil(order) else summarize(acc, datasets)
        if cfg["method"] in METHODS:
            row.kept = METHODS[cfg["method"]].kept(run_dir, cfg, state)
            row.extra = METHODS[cfg["method"]].extra(run_dir, cfg, state)
        row.replayed = replayed_text(run_dir, cfg)
        rows.append(row)
    return Table(order, datasets, rows)


def find_runs(root: Path, order: str | None = None) -> list[Path]:
    """Run directories directly under ``root`` (of ``order`` when given), in the preset registry's order."""
    found = [p.parent for p in sorted(Path(root).glob("*/config.json"))]
    if order is not None:
        found = [p for p in found if json.loads((p / "config.json").read_text()).get("order") == order]
    rank = {name: i for i, name in enumerate(all_presets())}
    return sorted(found, key=lambda p: (rank.get(run_stem(p.name), len(rank)), p.name))


# --------------------------------------------------------------------------- outputs


def _num(v: float | None) -> str:
    return report.DASH if v is None or math.isnan(v) else f"{v:.1f}"


def _csv_num(v: float | None, digits: int) -> str:
    return "" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def _cell(v: float | None, std: float | None) -> str:
    """``85.4``, or ``85.4 ± 1.2`` over several seeds."""
    return _num(v) if std is None or v is None or math.isnan(v) else f"{v:.1f} ± {std:.1f}"


def _signed(v: float | None) -> str:
    return report.DASH if v is None or math.isnan(v) else f"{v:+.1f}"


def table_markdown(table: Table) -> str:
    """``table-<order>.md``: the comparison in the paper's layout, then notes on partial / failed rows."""
    show_paper = any(r.published is not None for r in table.rows)
    delta_column = not table.cil
    header = ["Method", "paper row"]
    for m in table.metrics:
        header += [report.METRICS[m], *(["paper"] if show_paper else []), *(["Δ l2"] if delta_column else [])]
    header.append("replayed")  # renders, or real images: a table says which, row by row
    if table.cil:  # CIL: what of the tasks' data each method keeps (exemplars, captions, nothing)
        header.append("memory kept")
    header += ["extra parameters", "status"]
    lines_rows = []
    for row in table.rows:
        values = row.values or (None, None, None)
        delta = table.delta(row) or (None, None, None)
        published = row.published or (None, None, None)
        std = row.std or (None, None, None)
        cells = [f"`{row.name}`", row.label or report.DASH]
        for m in table.metrics:
            cells.append(_cell(values[m], std[m]) + (f" {MARK}" if row.differs()[m] else ""))
            if show_paper:  # the paper's own precision: 2 decimals in Tab. 7 / 8
                cells.append(_csv_num(published[m], 2) or report.DASH if table.cil else _num(published[m]))
            if delta_column:
                cells.append(_signed(delta[m]))
        cells.append(row.replayed)
        if table.cil:
            cells.append(kept_text(row.kept))
        cells += [extra_text(row.extra), row.status_text]
        lines_rows.append(cells)
    if table.cil:
        what = f"CIL {table.order} ({describe(catalog.get_setting(table.order))})"
        lines = [f"# Comparison, {what}", ""]
    else:
        title = f"Order {table.order}" if table.order in ("I", "II") else f"order {table.order}"
        lines = [f"# Comparison, {title} ({len(table.datasets)} tasks: {', '.join(table.datasets)})", ""]
    if len(table.seeds) > 1:
        lines[0] += f", seeds {', '.join(map(str, table.seeds))}: mean ± std"
    elif table.seeds != (0,):
        lines[0] += f", seed {table.seeds[0]}"
    lines += report._md_table(header, lines_rows)
    lines += [""]
    if len(table.seeds) > 1:
        lines.append(f"Each number: mean ± sample standard deviation over the finished runs of seeds "
                     f"{', '.join(map(str, table.seeds))} (one run directory per seed, `-seedN` after the name for N > 0); "
                     "Δ l2 is taken between the means.")
    base = table.baseline
    if delta_column:
        lines.append(f"Δ l2 = ours − our `l2` row (`{base.name}`)." if base else "Δ l2: no `l2` run in this table.")
    else:
        lines.append("Avg. = mean over steps of the accuracy on all classes seen so far (one head, no task id); Last = "
                     "that accuracy after the last step.")
    if show_paper:
        lines.append(f"paper = the published number (Wu et al., CVPR 2025; table in the CSV's `source`), shown where the "
                     f"run's setting is the paper's; {MARK} = ours differs from it by more than "
                     f"{report.TOLERANCE:g} point.")
    else:
        lines.append("Published numbers are not shown: no run here has the paper's setting (ViT-B/16 OpenAI weights, "
                     + ("the setting's defaults and class order" if table.cil else "1,000 iterations, Order I/II")
                     + ", the preset's options).")
    moe = PRESETS["moe-adapter"]
    if not table.cil and show_paper and table.order in moe.published and not any(
            r.method == "moe-adapter" for r in table.rows):
        lines.append(f"MoE-Adapter (`moe-adapter`, no run in this table): published "
                     f"{'/'.join(map(str, moe.published[table.order]))} (Transfer/Avg./Last, {moe.source}).")
    if table.cil and any(r.method == "moe-adapter" for r in table.rows) and show_paper:
        lines.append("MoE-Adapter's paper column on CIL settings: its own released logs (GIFT's Tab. 7 / 8 have no "
                     "MoE-Adapter row).")
    partial = [r for r in table.rows if r.partial]
    if partial:
        lines.append("Partial rows use their finished tasks only (see `pipeline.evaluation.metrics`): "
                     + ", ".join(f"`{r.name}` {r.finished}/{r.tasks}" for r in partial)
                     + ("; they are not checked against the published numbers (those are for the whole sequence)."
                        if any(r.published for r in partial) else "."))
    if table.failed:
        lines += ["", "**Failed:**", ""] + [f"- `{r.name}`: {r.error}" for r in table.failed]
    if table.cil:
        lines += published_only_lines(table.order)
    return "\n".join(lines) + "\n"


def published_only_lines(order: str) -> list[str]:
    """The paper's rows of ``order`` for methods not built here (UCIR, DER, DyTox, ...): published numbers only."""
    found = published_cil(order)
    if found is None:
        return []
    source, rows = found
    others = [[label, _csv_num(avg, 2) or report.DASH, _csv_num(last, 2) or report.DASH]
              for label, (avg, last) in rows.items() if label not in CLIP_ROWS.values()]
    return ["", f"**Published only** (not run here; Wu et al., CVPR 2025, {source}, {order}):", "",
            *report._md_table(["paper row", "Avg.", "Last"], others)]


CSV_HEADER = ["method", "preset", "paper_row", "run_dir", "status", "finished", "tasks", "transfer", "avg", "last",
              "delta_transfer", "delta_avg", "delta_last", "published_transfer", "published_avg", "published_last",
              "differs_transfer", "differs_avg", "differs_last", "source", "error", "memory_bytes", "memory", "replayed",
              "extra_params", "extra_bytes", "extra", "seeds", "std_transfer", "std_avg", "std_last"]


def table_csv(table: Table) -> str:
    """One line per row; numbers with 2 decimals (published: 1), empty where there is none; over several seeds the
    numbers are means, ``seeds`` lists the seeds whose finished runs they average and ``std_*`` their spread."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in table.rows:
        values = row.values or (None,) * 3
        delta = table.delta(row) or (None,) * 3
        published = row.published or (None,) * 3
        has_pub = row.published is not None and row.values is not None
        writer.writerow([row.name, row.preset, row.label, str(row.run_dir or ""), row.status, row.finished, row.tasks,
                         *(_csv_num(v, 2) for v in values),
                         *(_csv_num(v, 2) for v in delta),
                         *(_csv_num(v, 2 if table.cil else 1) for v in published),
                         *((str(d).lower() if has_pub else "") for d in row.differs()),
                         row.source, row.error or "",
                         "" if row.kept is None or row.kept.bytes is None else row.kept.bytes,
                         "" if row.kept is None else row.kept.what, row.replayed,
                         *(("", "", "") if row.extra is None else (row.extra.count, row.extra.bytes, row.extra.what)),
                         " ".join(map(str, row.seeds)), *(_csv_num(v, 2) for v in (row.std or (None,) * 3))])
    return buf.getvalue()


def table_figure(table: Table):
    """Grouped bars: Transfer / Avg. / Last per row; published values as black ticks; partial rows hatched."""
    plt = report.plt
    rows = table.rows
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2.0), 4.8))
    width, colors = 0.26, ("tab:blue", "tab:orange", "tab:green")
    for k, m in enumerate(table.metrics):
        color = colors[m]
        for i, row in enumerate(rows):
            if row.values is None:
                continue
            x = i + (k - (len(table.metrics) - 1) / 2) * width
            ax.bar(x, row.values[m], width, color=color, hatch="//" if row.partial else None,
                   edgecolor="white" if row.partial else None)
            top = max(row.values[m], row.published[m] if row.published else 0.0)
            ax.text(x, top + 1, f"{row.values[m]:.1f}", ha="center", va="bottom", fontsize=6, rotation=90)
            if row.published is not None:
                ax.plot([x - width / 2, x + width / 2], [row.published[m]] * 2, color="black", linewidth=2)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[m]) for m in table.metrics]
    labels = [report.METRICS[m] for m in table.metrics]
    if any(r.published is not None for r in rows):
        handles.append(plt.Line2D([0], [0], color="black", linewidth=2))
        labels.append("published")
    if any(r.partial for r in rows):
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="lightgray", hatch="//", edgecolor="white"))
        labels.append("partial run")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    ticks = [r.name + ("\n(failed)" if r.error else f"\n({r.finished}/{r.tasks})" if r.partial else "") for r in rows]
    ax.set_xticks(range(len(rows)), labels=ticks, rotation=30, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("%")
    ax.grid(axis="y", alpha=0.3)
    kind = "CIL" if table.cil else "MTIL Order" if table.order in ("I", "II") else "order"
    ax.set_title(f"{' / '.join(labels[:len(table.metrics)])}, {kind} {table.order}")
    return fig


def write_table(table: Table, out_dir: Path) -> dict[str, Path]:
    """``<table.stem>.md`` / ``.csv`` / ``.png`` in ``out_dir`` (``table-<order>`` for seed 0), each written to a temporary name and renamed (the
    table is derived data: a rerun replaces it, never leaving a half-written file)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / table.stem
    return {
        "md": report._atomic_write_text(stem.with_suffix(".md"), table_markdown(table)),
        "csv": report._atomic_write_text(stem.with_suffix(".csv"), table_csv(table)),
        "png": report._save_figure(table_figure(table), stem.with_suffix(".png")),
    }


# --------------------------------------------------------------------------- running the presets


class TableProgress(Progress):
    """train.Progress plus one call per preset; the default does nothing."""

    def preset(self, index: int, total: int, preset: Preset, run_dir: Path, status: str) -> None: ...
    def failed(self, preset: Preset, error: str) -> None: ...


@dataclass
class TableResult:
    table: Table
    files: dict[str, Path]
    trained: list[str]  # presets trained or resumed by this call
    reused: list[str]  # presets whose finished run was reused


def run_table(order: str, presets: Sequence[Preset], base: Mapping[str, object], *,
              progress: TableProgress | None = None, device=None, out_dir: Path | None = None,
              train_fn: Callable[..., Path] = train, seeds: Sequence[int] = (0,)) -> TableResult:
    """Train (or resume) every preset without a finished run, once per seed in ``seeds`` (seed N > 0 in its own run
    directory, ``Preset.dir_name``), then build and write the table into ``out_dir`` (default: the runs folder,
    ``base['runs']``): one seed's numbers, or each cell as mean ± std over the seeds.

    A preset that fails (missing method or field, data, weights, a non-finite loss, ...) is recorded in its row and
    the others go on; ``TableResult.table.failed`` lists them. Ctrl-C stops everything (the runs resume later).
    """
    progress = progress or TableProgress()
    steps = len(catalog.get_order(order))  # a bad order fails before anything runs
    runs_root = Path(str(base.get("runs") or TrainConfig.runs))
    tables, trained, reused = [], [], []
    for seed in seeds:
        run_dirs, errors, by_dir, foreign = [], {}, {}, []
        for index, preset in enumerate(presets):
            run_dir = runs_root / preset.dir_name(order, seed)
            run_dirs.append(run_dir)
            by_dir[run_dir] = preset
            label = preset.name if len(seeds) == 1 else f"{preset.name} seed {seed}"
            try:
                config = config_for(preset, order, {**base, "runs": str(runs_root), "seed": seed})
                state = prepare_run_dir(config)[1] if (run_dir / "config.json").exists() else {"finished": 0}
                if state["finished"] == steps:
                    progress.preset(index, len(presets), preset, run_dir, "finished, reused")
                    reused.append(label)
                    continue
                progress.preset(index, len(presets), preset, run_dir,
                                f"resuming after task {state['finished']}" if state["finished"] else "training")
                train_fn(config, progress, device)
                trained.append(label)
            except Exception as e:  # noqa: BLE001 -- one preset's failure must not stop the others
                message = str(e) or type(e).__name__
                log.debug("preset %s failed", preset.name, exc_info=True)
                progress.failed(preset, message)
                errors[run_dir] = message
                if isinstance(e, RunDirError):  # the directory holds another configuration's run: not this row's
                    foreign.append(run_dir)
        tables.append(build_table(order, run_dirs, errors=errors, presets=by_dir, foreign=foreign))
    table = tables[0] if len(tables) == 1 else merge_seeds(tables, seeds)
    table.seeds = tuple(seeds)
    return TableResult(table, write_table(table, out_dir or runs_root), trained, reused)


def merge_seeds(tables: Sequence[Table], seeds: Sequence[int]) -> Table:
    """One table over several seeds from one table per seed (same presets, same row order): a row's numbers are the
    mean over its finished runs (``Row.seed_values``), its status the least finished seed's, its error every failed
    seed's. Partial runs are left out of the mean (their numbers cover fewer tasks)."""
    rows = []
    for per_seed in zip(*(t.rows for t in tables), strict=True):
        first = per_seed[0]
        finished = [r for r in per_seed if r.values is not None and r.finished == r.tasks]
        errors = [f"seed {s}: {r.error}" for s, r in zip(seeds, per_seed, strict=True) if r.error]
        rows.append(Row(first.name, first.label, first.run_dir, first.method, first.tasks,
                        finished=min(r.finished for r in per_seed), preset=first.preset,
                        published=first.published, source=first.source, error="; ".join(errors) or None,
                        kept=first.kept, extra=first.extra, replayed=first.replayed, seeds=tuple(seeds),
                        seed_values=[r.values for r in finished]))
    return Table(tables[0].order, tables[0].datasets, rows, tuple(seeds))
