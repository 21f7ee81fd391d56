"""``gift data ...``: inspect the MTIL and CIL datasets under one data root (register with
``app.add_typer(data_app, name="data")``)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:  # the datasets import torch: every `gift` command would pay for it at start-up
    from pipeline.datasets.mtil import CheckResult

data_app = typer.Typer(
    no_args_is_help=True,
    help="The MTIL and CIL datasets on disk: one data root, their own folder layouts, nothing downloaded.",
)


class Benchmark(str, Enum):
    all = "all"
    mtil = "mtil"
    cil = "cil"

_STATUS_STYLE = {"found": "green", "missing": "yellow", "broken": "bold red"}


@data_app.callback()
def _data() -> None:
    """The MTIL and CIL datasets on disk: one data root, their own folder layouts, nothing downloaded."""
    # A callback keeps `check` a named sub-command even while it is the group's only command.


def _table(root: Path, results: list[CheckResult]) -> Table:
    table = Table(title=f"datasets under {escape(str(root))}")
    for column in ("dataset", "status", "train", "test", "folder"):
        table.add_column(column, justify="right" if column in ("train", "test") else "left")
    for r in results:
        style = _STATUS_STYLE.get(r.status, "")
        table.add_row(
            r.name,
            f"[{style}]{r.status}[/]",
            str(r.counts.get("train", "-")),
            str(r.counts.get("test", "-")),
            escape(r.folder),
        )
    return table


def _print_problem(out: Console, r: CheckResult) -> None:
    out.print(f"\n[bold]{r.name}[/]: [{_STATUS_STYLE[r.status]}]{r.status}[/] - {escape(r.detail)}", soft_wrap=True)
    out.print("expected layout under the data root:", style="bold")
    out.print(r.expected_layout, markup=False, highlight=False, soft_wrap=True)
    out.print("how to get it:", style="bold")
    out.print(r.how_to_get, markup=False, highlight=False, soft_wrap=True)


@data_app.command("check")
def check_cmd(
    data_root: Path = typer.Option(..., "--data-root", help="Root holding the datasets in torchvision's folders.", file_okay=False),
    benchmark: Benchmark = typer.Option(Benchmark.all, help="Which datasets: all, mtil (the 11 MTIL datasets) or "
                                        "cil (CIFAR10, CIFAR100, TinyImageNet)."),
) -> None:
    """Report each dataset as found / missing / broken with its image counts; exit 1 unless all are found."""
    # CIFAR100's folder is MTIL's and CIL's: reported once
    from pipeline.datasets import cil, mtil

    results = mtil.check(data_root, ["cifar100"] if benchmark is Benchmark.cil else mtil.MTIL_DATASETS)
    if benchmark is not Benchmark.mtil:
        results += cil.check(data_root)
    out = Console()
    out.print(_table(data_root, results))
    for r in results:
        if r.status == "found" and r.detail:
            out.print(f"{r.name}: note: {escape(r.detail)}", soft_wrap=True)
    for r in results:
        if r.status != "found":
            _print_problem(out, r)
    raise typer.Exit(0 if all(r.status == "found" for r in results) else 1)
