"""The ``gift`` command: a thin typer layer that parses, calls a typed function, and prints with rich.

One module per command group: ``generate_cmd`` (stage 1), ``caption_cmd`` (caption sets), ``shards_cmd`` (inspect
and share sets), ``train_cmd`` (stage 2), ``table_cmd``, ``data_cmd``, ``doctor_cmd`` (is a run ready), ``demo_cmd``; ``common`` and ``progress`` hold
what they share.
"""

from __future__ import annotations

import typer
from rich.table import Column, Table

from cli.caption_cmd import caption
from cli.common import out, print_json
from cli.data_cmd import data_app
from cli.demo_cmd import demo
from cli.doctor_cmd import DOCTOR_HELP, doctor
from cli.generate_cmd import generate
from cli.shards_cmd import shards_app
from cli.table_cmd import TABLE_HELP, table
from cli.train_cmd import train


def _no_type_for_flags() -> None:
    """This typer shows every option's type in its help, flags included: `--help <bool>`, `--compile <bool>` read as if
    they took a value. A flag takes none, so it shows no type."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "flags_untyped", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.flags_untyped = True
    TyperOption.display_type_rich = display_type_rich


_no_type_for_flags()
app = typer.Typer(add_completion=False, no_args_is_help=True, help="GIFT: continual CLIP fine-tuning with Stable Diffusion replay.")
app.add_typer(shards_app, name="shards")
app.add_typer(data_app, name="data")
JSON_HELP = "Print the list as JSON instead of a table."


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("gift-cl")
        except PackageNotFoundError:  # run from a checkout that was never installed
            number = "unknown (not installed)"
        out.print(f"gift-cl {number}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _main(_: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit.")) -> None:
    """GIFT: continual CLIP fine-tuning with Stable Diffusion replay."""


@app.command()
def tasks(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List every task with its class count, default images per class, and prompt template."""
    from pipeline.datasets import catalog

    # the CIL replay pool's sets (`gift settings`) after the MTIL and mini tasks, each once
    names = [*catalog.task_names(), *(n for n in catalog.CIL_POOL_TASKS if n not in catalog.MINI_TASKS)]
    rows = [{"task": name, "classes": catalog.get_task(name).num_classes,
             "per_class": catalog.default_per_class(name), "prompt_template": catalog.get_task(name).prompt_template}
            for name in names]
    if as_json:
        return print_json(rows)
    table = Table("classes", "per class (default)", "prompt template")
    table.columns.insert(0, Column("task", no_wrap=True))  # a name `gift generate` takes: never cut
    for row in rows:
        if row["task"] == names[len(catalog.task_names())]:
            table.add_section()
        table.add_row(row["task"], str(row["classes"]), str(row["per_class"]), row["prompt_template"])
    out.print(table)


@app.command()
def settings(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """List every class-incremental setting (`--order`): steps × classes per step, class order, GIFT's replay sets
    (--json: also the dataset and the first step's classes)."""
    from pipeline.datasets import catalog

    rows = [{"setting": name, "dataset": s.dataset, "steps": len(s.sizes), "classes_per_step": list(s.sizes),
             "class_order": "natural" if s.natural else list(s.class_order),
             "first_step_classes": [s.classnames[y] for y in s.steps[0]], "replay_sets": [s.base, s.pool_task]}
            for name, s in catalog.cil_settings().items()]
    if as_json:
        return print_json(rows)
    # the names `--order` and `gift generate` take are never cut (one replay set a line); the class order may be
    table = Table(Column("setting", no_wrap=True), Column("steps × classes", no_wrap=True),
                  Column("class order", no_wrap=True, overflow="ellipsis", min_width=7),
                  Column("GIFT replay sets", no_wrap=True))
    for r in rows:
        sizes = r["classes_per_step"]
        steps = f"{len(sizes)}×{sizes[0]}" if len(set(sizes)) == 1 else f"{sizes[0]} + {len(sizes) - 1}×{sizes[1]}"
        order = "natural" if r["class_order"] == "natural" else ", ".join(map(str, r["class_order"][:3])) + ", …"
        table.add_row(r["setting"], steps, order, " +\n".join(r["replay_sets"]))
    out.print(table)
    out.print('CE and evaluation prompt: "a bad photo of a {}."; evaluation after each step: every seen class, one '
              "head, no task id. Datasets and each first step's classes: gift settings --json. Another class order: gift train "
              "--class-order FILE.")


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
