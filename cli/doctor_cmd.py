"""`gift doctor`: is this machine ready for a real run of an order? Every problem at once, each with its fix."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from cli.common import clean_errors, out, setup_logging
from cli.table_cmd import parse_train_options

DOCTOR_HELP = (
    "Check at once everything a run of --order needs, and list every problem with its fix (exit 1 if any, 0 if "
    "none): the SD v1.5, CLIP and BLIP weights (Hugging Face cache, a directory or a file), every dataset of the "
    "order under --data-root, the pool's shard sets under --shards (found / missing / incomplete), free disk, the "
    "GPUs torch sees, and the cost: images to render, training steps, GPU-hours at least.\n\n"
    "Every `gift train` option is accepted (--order, --data-root, --shards, --runs, --clip, --clip-weights, --method, "
    "--iterations, ...), so the doctor checks the run those options describe: pass it the options you will train with."
)

_STYLE = {"ok": "green", "note": "cyan"}


def doctor(
    ctx: typer.Context,
    model: str = typer.Option("sd15", help="`gift generate --model` the pool is (or will be) rendered with: sd15, a Hub "
                              "id or diffusers directory, tiny, reference:DIR (tiny and reference need no weights)."),
    captioner: str = typer.Option("blip", help="`gift caption --captioner`: blip, a Hub id or directory, tiny (required "
                                  "for CLTS, --replay-captions and the seq-* settings; otherwise a note)."),
    make_hint: str = typer.Option("", "--make-hint", hidden=True, help="The make command the pool's fix names too."),
) -> None:
    setup_logging()
    from pipeline.doctor import diagnose
    from pipeline.training.config import TrainConfig

    with clean_errors():
        sub, kwargs = parse_train_options(ctx, ctx.args)
        if sub.args:
            raise ValueError(f"unexpected arguments: {' '.join(sub.args)}")
        kwargs["runs"] = kwargs.get("runs") or TrainConfig.runs
        config = TrainConfig(**kwargs)
        out.print(f"[bold]gift doctor[/]: order {config.order}, method {config.method}, data root "
                  f"{config.data_root or '(none)'}, shards {config.shards}, runs {config.runs}")
        result = diagnose(config, model=model, captioner=captioner, make_hint=make_hint)
    table = Table("check", "item", "status", "what was found")
    for f in result.findings:
        style = _STYLE.get(f.status, "bold red")
        table.add_row(f.section, escape(f.name), f"[{style}]{escape(f.status)}[/]", escape(f.detail))
    out.print(table)
    out.print("[bold]cost[/] (a lower bound):")
    from pipeline.doctor.cost import cost_lines

    for line in cost_lines(result.cost, result.gpus):
        out.print(f"  {escape(line)}", soft_wrap=True)
    problems = result.problems
    if not problems:
        out.print("[green]ready[/]: nothing is missing for this run.")
        return
    # problems one command fixes (the pool's sets) are listed together, the command once
    groups: dict[tuple[str, str], list] = {}
    for f in problems:
        groups.setdefault((f.section, f.fix) if f.fix else (f.section, f.name), []).append(f)
    fixes = f" ({len(groups)} fixes)" if len(groups) < len(problems) else ""
    out.print(f"\n[bold red]{len(problems)} problem{'s' if len(problems) > 1 else ''}[/]{fixes}, each with its fix:")
    for i, group in enumerate(groups.values(), 1):
        first = group[0]
        if len(group) == 1:
            out.print(f"{i}. [bold]{escape(first.section)}: {escape(first.name)}[/] ({escape(first.status)}): "
                      f"{escape(first.detail)}", soft_wrap=True)
        else:
            items = "; ".join(f"{f.name} ({f.status}: {f.detail})" for f in group)
            out.print(f"{i}. [bold]{escape(first.section)}[/]: {escape(items)}", soft_wrap=True)
        if first.fix:
            out.print(f"   fix: {escape(first.fix)}", soft_wrap=True, highlight=False)
    raise typer.Exit(1)
