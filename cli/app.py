"""The ``gift`` command: a thin typer layer that parses, calls a typed function, and prints with rich.

One module per command group: ``generate_cmd`` (stage 1), ``caption_cmd`` (caption sets), ``shards_cmd`` (inspect
and share sets), ``train_cmd`` (stage 2), ``table_cmd``, ``data_cmd``, ``doctor_cmd`` (is a run ready), ``demo_cmd``; ``common`` and ``progress`` hold
what they share.
"""

from __future__ import annotations

import typer
from rich.table import Table

from cli.caption_cmd import caption
from cli.common import out
from cli.data_cmd import data_app
from cli.demo_cmd import demo
from cli.doctor_cmd import DOCTOR_HELP, doctor
from cli.generate_cmd import generate
from cli.shards_cmd import shards_app
from cli.table_cmd import TABLE_HELP, table
from cli.train_cmd import train

app = typer.Typer(add_completion=False, no_args_is_help=True, help="GIFT: continual CLIP fine-tuning with Stable Diffusion replay.")
app.add_typer(shards_app, name="shards")
app.add_typer(data_app, name="data")


@app.command()
def tasks() -> None:
    """List every task with its class count, default images per class, and prompt template."""
    from pipeline.datasets import catalog

    table = Table("task", "classes", "per class (default)", "prompt template")
    for name in catalog.task_names():
        task = catalog.get_task(name)
        table.add_row(name, str(task.num_classes), str(catalog.default_per_class(name)), task.prompt_template)
    table.add_section()
    for name in catalog.CIL_POOL_TASKS:  # the CIL replay pool's sets (`gift settings`)
        if name not in catalog.MINI_TASKS:
            task = catalog.get_task(name)
            table.add_row(name, str(task.num_classes), str(catalog.default_per_class(name)), task.prompt_template)
    out.print(table)


@app.command()
def settings() -> None:
    """List every class-incremental setting (`--order`): dataset, steps, classes per step, class order, pool sets."""
    from pipeline.datasets import catalog

    table = Table("setting", "dataset", "steps", "classes per step", "class order", "first step's classes",
                  "GIFT replay sets")
    for name, s in catalog.cil_settings().items():
        sizes = f"{s.sizes[0]}" if len(set(s.sizes)) == 1 else f"{s.sizes[0]} then {s.sizes[1]}"
        first = ", ".join(s.classnames[y] for y in s.steps[0][:4]) + (", ..." if len(s.steps[0]) > 4 else "")
        order = "natural" if s.natural else ", ".join(map(str, s.class_order[:4])) + ", ..."
        table.add_row(name, s.dataset, str(len(s.sizes)), sizes, order, first, f"{s.base} + {s.pool_task}")
    out.print(table)
    out.print('CE and evaluation prompt: "a bad photo of a {}."; evaluation after each step: every seen class, one '
              "head, no task id. Another class order: gift train --class-order FILE.")


app.command()(generate)
app.command()(caption)
app.command()(train)
# `gift table` (cli/table_cmd.py): the options it does not declare are `gift train`'s, parsed by that command.
app.command(help=TABLE_HELP, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(table)
app.command()(demo)
# `gift doctor` (cli/doctor_cmd.py): like `gift table`, the run's options are `gift train`'s, parsed by that command.
app.command(help=DOCTOR_HELP, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(doctor)


def main() -> None:
    app()
