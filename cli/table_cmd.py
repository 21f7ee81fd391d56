"""``gift table``: run the listed presets over one order (reusing finished runs) and write the comparison table.

Every ``gift train`` option (data, shards, model, iterations, batch sizes, GIFT switches, device, ...) is accepted
and applies to every run, parsed by ``gift train``'s own declarations, so the two commands never drift apart;
``--method`` and ``--name`` are the table's to choose (``--methods``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from pathlib import Path

import typer

from cli.common import clean_errors, console, out, parse_device, parse_seeds, print_json, setup_logging
from cli.progress import TrainProgress

TABLE_HELP = (
    "Run every preset in --methods over --order (reusing finished runs, resuming unfinished ones), then write "
    "RUNS/table-<order>.md, .csv and .png. Without --methods, build the table from existing run directories only: "
    "each --runs path (or extra argument) is a run directory, or a folder of them.\n\n"
    "Every `gift train` option is accepted and applies to every run (see `gift train --help`); --method and --name "
    "are chosen per preset. Presets: every method, the ablations (gift-cd, gift-noawc, gift-feature, gift-wise0.2, "
    "ewc128, ...) and the groups comparison (default), table1 ... table11; on a CIL setting (--order cifar100-10, "
    "tinyimagenet-5, ...) the default group is cil = Tab. 7 / 8's CLIP rows. `gift table --list [--order O]` shows "
    "them all, with the published numbers of O."
)

# gift train parameter -> TrainConfig field, where the names differ.
RENAMED = {"clip": "clip_arch", "compile_model": "compile"}
TABLE_OWNED = ("order", "method", "name", "runs")


def train_options(ctx: typer.Context, args: list[str]) -> tuple[dict, str | None, str, list[Path]]:
    """Parse ``args`` with ``gift train``'s own options: (TrainConfig kwargs, --device, --report-to, leftover
    positional paths).

    Only TrainConfig fields are passed on (so an option added to ``gift train`` for a new field works here too).
    """
    sub, kwargs = parse_train_options(ctx, args, skip=TABLE_OWNED)
    # (typer vendors its own click, so the parameter source is compared by name)
    given = [k for k in ("method", "name") if getattr(sub.get_parameter_source(k), "name", "") == "COMMANDLINE"]
    if given:
        raise ValueError(f"--{given[0]} is chosen per preset by `gift table`; list presets with --methods")
    if (sub.params.get("gpus") or 1) > 1:  # not a TrainConfig field: it would be dropped without a word
        raise ValueError("--gpus is `gift train`'s: gift table trains its runs in this one process; train each run on "
                         "several GPUs with `gift train --gpus N` (same options), then `gift table` reuses them")
    return kwargs, sub.params.get("device"), sub.params.get("report_to") or "", [Path(a) for a in sub.args]


def parse_train_options(ctx: typer.Context, args: list[str], skip: tuple[str, ...] = ()) -> tuple[typer.Context, dict]:
    """``args`` parsed by ``gift train``'s own declarations: (its context, the TrainConfig fields among them but
    ``skip``, Paths and enums as the config stores them). `gift table` and `gift doctor` take every train option so."""
    from pipeline.training.config import TrainConfig

    train_cmd = ctx.find_root().command.get_command(ctx, "train")  # `gift train`, as the app declares it
    sub = train_cmd.make_context("(gift train options)", list(args), parent=ctx, allow_extra_args=True)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs = {}
    for key, value in sub.params.items():
        key = RENAMED.get(key, key)
        if key in fields and key not in skip:
            kwargs[key] = value.value if isinstance(value, enum.Enum) else str(value) if isinstance(value, Path) else value
    return sub, kwargs


def _list_presets(order: str | None, as_json: bool) -> None:
    from rich.table import Column, Table

    from pipeline.datasets import catalog
    from pipeline.tables.presets import ALIASES, GROUPS, all_presets, default_methods, resolve_presets
    from pipeline.tables.table import published_only_lines
    from pipeline.training.config import TrainConfig, setting_defaults

    order = order or "I"
    catalog.get_order(order)  # an unknown order is an error, not an MTIL listing
    cil = catalog.is_cil(order)
    chosen = resolve_presets(default_methods(order)) if cil else list(all_presets().values())
    metrics = "Avg./Last" if cil else "Transfer/Avg./Last"
    rows = []
    for p in chosen:
        pub = p.published_for(order)
        overrides = dict(p.overrides)
        if cil:  # the setting's values this method runs with (the harness's), beyond the common defaults
            common = setting_defaults(order, "gift")
            overrides.update({k: v for k, v in setting_defaults(order, p.method).items() if common.get(k) != v})
        rows.append({"preset": p.name, "method": p.method, "overrides": overrides, "paper_row": p.label_for(order),
                     "published": {k: None if v != v else v  # NaN (not published) is no JSON number
                                   for k, v in zip(metrics.replace(".", "").split("/"), pub[1 if cil else 0:],
                                                   strict=True)} if pub else None,
                     "source": p.source_for(order) or None})
    if as_json:
        return print_json({"order": order, "presets": rows, "aliases": dict(ALIASES), "groups": dict(GROUPS)})
    table = Table(Column("preset", no_wrap=True), "method", "overrides", "paper row",  # preset: what --methods takes
                  f"published {metrics} ({order})")
    for r in rows:
        published = "/".join("nan" if v is None else f"{v:g}" for v in r["published"].values()) if r["published"] else "–"
        table.add_row(r["preset"], r["method"], ", ".join(f"{k}={v}" for k, v in r["overrides"].items()),
                      r["paper_row"], published + (f" ({r['source']})" if r["published"] and r["source"] else ""))
    out.print(table)
    if cil:
        defaults = TrainConfig(order=order, method="gift")
        out.print(f"{order}: {len(catalog.get_order(order))} steps; every run: lr {defaults.lr:g}, warm-up "
                  f"{defaults.warmup}, {defaults.epochs:g} epoch per step, label smoothing {defaults.label_smoothing:g}, "
                  f"weight decay {defaults.weight_decay:g}, batch {defaults.batch_size}; icarl keeps {defaults.memory_size} "
                  f"exemplars, zscl ensembles every {defaults.ensemble_every} iterations")
        out.print("\n".join(published_only_lines(order)), markup=False, highlight=False)
        return
    out.print("aliases: " + ", ".join(f"{a} = {p}" for a, p in ALIASES.items()))
    for name, members in GROUPS.items():
        out.print(f"[bold]{name}[/]: {', '.join(members)}")


def table(
    ctx: typer.Context,
    order: str = typer.Option(None, help="I, II, mini, or a CIL setting such as cifar100-10 (default with --methods: "
                              "II; without: the runs' own order)."),
    methods: str = typer.Option(None, help="Comma-separated presets and groups, e.g. finetune,l2,gift or table3 "
                                "(default when no --runs: comparison = every baseline + gift; on a CIL setting: cil = "
                                "Tab. 7 / 8's CLIP rows)."),
    runs: list[Path] = typer.Option(None, help="With --methods: where run directories go (default runs). Without: "
                                    "run directories, or folders of them, to build the table from (repeatable)."),
    out_dir: Path = typer.Option(None, "--out", help="Where table-<order>.md/.csv/.png go (default: the runs folder)."),
    seed: str = typer.Option("0", help="Training seed of every run, or a comma-separated list (0,1,2): every preset "
                             "is trained (or reused) once per seed, seed N > 0 in <run>-seedN as `gift demo --seed` "
                             "names it, and each cell is mean ± std over the seeds -> table-<order>-seeds0-1-2.md."),
    list_presets: bool = typer.Option(False, "--list", help="List presets, aliases and groups, then exit."),
    as_json: bool = typer.Option(False, "--json", help="With --list: print the presets, aliases and groups as JSON."),
) -> None:
    if list_presets:
        with clean_errors():
            _list_presets(order, as_json)
        return
    seeds = parse_seeds(seed)
    setup_logging()
    from pipeline.training.config import TrainConfig

    kept = "finished runs and tasks are kept; re-run the same command to resume."
    with clean_errors(kept):
        base, device, report_to, extra = train_options(ctx, ctx.args)
        if methods is not None or not (runs or extra):  # runs will be trained: a bad value fails here, once, not in
            TrainConfig(order=order or TrainConfig.order, **base)  # every preset's row (and before torch loads)

    from pipeline.datasets.required import MissingDatasetsError, require_datasets
    from pipeline.tables import presets
    from pipeline.tables import table as tbl
    from pipeline.tracking import parse_report_to
    from pipeline.training.tracking import TrainTracking
    from pipeline.training.train import train

    with clean_errors(kept):
        reporters = parse_report_to(report_to)  # every run the table trains reports to them
        paths = [*(runs or []), *extra]
        if methods is None and paths:  # build only
            run_dirs = []
            for path in paths:
                run_dirs += [path] if (path / "config.json").exists() else tbl.find_runs(path, order)
            if not run_dirs:
                raise ValueError(f"no run directories in {', '.join(map(str, paths))}")
            orders = sorted({tbl.read_run(d)[0].get("order") for d in run_dirs})
            if order is None and len(orders) > 1:
                raise ValueError(f"the runs are of several orders ({', '.join(orders)}); choose one with --order")
            result_table = tbl.build_table(order or orders[0], run_dirs)
            folder = out_dir or (paths[0] if not (paths[0] / "config.json").exists() else paths[0].parent)
            files = tbl.write_table(result_table, folder)
        else:
            if extra:
                raise ValueError(f"unexpected arguments {' '.join(map(str, extra))}: with --methods, --runs is the "
                                 "folder where run directories go")
            if runs:  # the last one wins, so `make table TABLE_ARGS='--runs DIR'` can move them
                base["runs"] = str(runs[-1])
            order = order or TrainConfig.order
            chosen = presets.resolve_presets(methods or presets.default_methods(order))
            try:  # every run reads the same datasets: all the missing ones named once, not once per preset
                require_datasets(order, base.get("data_root"))
            except MissingDatasetsError as e:
                raise ValueError(str(e)) from None
            train_fn = functools.partial(train, tracker=TrainTracking(reporters)) if reporters else train
            result = tbl.run_table(order, chosen, base,
                                   progress=_Progress(), device=parse_device(device),
                                   out_dir=out_dir, train_fn=train_fn, seeds=seeds)
            result_table, files = result.table, result.files
            if result.reused:
                out.print(f"reused finished runs: {', '.join(result.reused)}")
    out.print(files["md"].read_text(), markup=False, highlight=False, soft_wrap=True)
    out.print(f"[green]wrote[/] {files['md']}, {files['csv'].name}, {files['png'].name}")
    if result_table.failed:
        console.print(f"[bold red]{len(result_table.failed)} of {len(result_table.rows)} rows failed:[/] "
                      + ", ".join(r.name for r in result_table.failed) + " (the others are in the table)")
        raise typer.Exit(1)


class _Progress:
    """pipeline.tables.table.TableProgress for the terminal: a line per preset, gift train's bars while training."""

    def __init__(self):
        self.bars = TrainProgress()

    def preset(self, index, total, preset, run_dir, status) -> None:

        out.print(f"[bold][{index + 1}/{total}] {preset.name}[/] ({run_dir}): {status}")

    def failed(self, preset, error) -> None:
        if self.bars.bar is not None:  # a run that failed mid-task leaves its bar running
            self.bars.bar.stop()
        console.print(f"[bold red]{preset.name} failed:[/] {error}")

    def start_task(self, index, task, steps) -> None:
        self.bars.start_task(index, task, steps)

    def step(self, losses) -> None:
        self.bars.step(losses)

    def end_task(self) -> None:
        self.bars.end_task()

    def phase(self, label, total) -> None:
        self.bars.phase(label, total)

    def advance(self, n) -> None:
        self.bars.advance(n)

    def end_phase(self) -> None:
        self.bars.end_phase()

    def evaluated(self, index, task, row, extra=None) -> None:
        self.bars.evaluated(index, task, row, extra)
