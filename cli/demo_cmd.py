"""`gift demo`: the whole pipeline on CPU with tiny models; over several seeds, the spread of its results."""

from __future__ import annotations

import json
import platform
import time
from datetime import date
from pathlib import Path

import typer
from rich.table import Table

from cli.common import clean_errors, out, parse_seeds, setup_logging
from cli.progress import RichProgress, TrainProgress
from cli.shards_cmd import shards_ls

METHODS = ("finetune", "gift")
# mini-cil's runs: (row name, method, extra TrainConfig fields); the row names are `gift table`'s presets, so
# `make table ORDER=mini-cil METHODS=seq` reuses these runs. The caption "renders" here are real held-out digits (the
# tiny SD is untrained): clts and gift-captions take them only as the real-image ablation, --real-renders.
CIL_RUNS = (("finetune", "finetune", {}), ("gift", "gift", {}), ("clts", "clts", {"real_renders": True}),
            ("gift-captions", "gift", {"replay_captions": True, "real_renders": True}))


def run_name(row: str, method: str, order: str, seed: int) -> str | None:
    """The run directory `gift table --seed` looks for (``Preset.run_name``): seed 0 keeps `gift train`'s default name
    (or the preset's), so `make table ORDER=…` reuses the demo's runs; seed N > 0 appends ``-seedN``."""
    from pipeline.tables.presets import all_presets

    preset = all_presets()[row]
    assert preset.method == method, (row, method)  # the demo's rows are the table's presets
    return preset.run_name(order, seed)


def demo(
    out_dir: Path = typer.Option(Path("demo-out"), "--out", help="Where the demo's shard sets, runs and previews go."),
    iterations: int = typer.Option(200, min=1, help="Training steps per mini task."),
    seed: str = typer.Option("0", help="Training seed of the runs, or a comma-separated list (0,1,2): every seed is "
                                       "trained and each number reported as mean ± std, also in OUT/demo-summary.md."),
) -> None:
    """The whole pipeline on CPU with tiny models: render, verify, train finetune and GIFT on `mini` (MTIL) and
    `mini-cil` (class-incremental), then CLTS on `mini-cil` (tiny-BLIP captions, images rendered from them) and GIFT
    replaying those renders; report."""
    seeds = parse_seeds(seed)
    setup_logging()
    import numpy as np
    import torch

    from pipeline.captioning.caption import caption_task
    from pipeline.datasets import catalog, mini
    from pipeline.evaluation.metrics import summarize_cil
    from pipeline.evaluation.spread import cil_spread_table, fmt, mean_std, spread, spread_table
    from pipeline.generation.generate import generate, resolve_spec
    from pipeline.methods import get_method
    from pipeline.methods.facts import extra_text, kept_text, replayed_text
    from pipeline.models import ClipSpec
    from pipeline.training.config import TrainConfig
    from pipeline.training.pretrain import pretrain_tiny_clip
    from pipeline.training.train import train as run_train
    from shards.captions import load_caption_set
    from shards.preview import contact_sheet
    from shards.verify import verify_set

    started = time.time()
    cpu = torch.device("cpu")
    order = catalog.get_order("mini")
    with clean_errors("finished renders and runs are kept; re-run the same command to resume."):
        # Stage 1: the tiny SD pipeline renders a real task; the mini pool sets come from held-out real images.
        reference = mini.export_reference(out_dir / "mini-reference")
        jobs = [("eurosat", "tiny", None)] + [(t, f"reference:{reference}", 32) for t in
                                              ("mini-base", "mini-a", "mini-b", "mini-cil-base", "mini-digits")]
        for task, model, size in jobs:
            spec = resolve_spec(task, model=model, per_class=4 if model == "tiny" else 16, steps=20, size=size,
                                device=cpu)
            progress = RichProgress(f"generate {task}", enabled=True)
            try:
                result = generate(spec, out_dir / "shards", device=cpu, progress=progress)
            finally:
                progress.stop()
            report = verify_set(result.set_path)
            if not report.ok:
                raise ValueError("; ".join(report.problems))
        sheet = out_dir / "preview-eurosat.png"
        contact_sheet(next((out_dir / "shards" / "eurosat").iterdir()), sheet, n=8, columns=4)
        shards_ls(str(out_dir / "shards"), as_json=False)
        # Stage 2: a tiny CLIP "pre-trained" on mini-base (shared by every seed, like the renders), then continual
        # fine-tuning over mini-a, -b, -c once per method and seed; then class-incremental mini-cil (the ten digits in
        # 5 steps of 2, one head over every seen class after each step, its own per-setting schedule).
        weights = pretrain_tiny_clip(out_dir / "tiny-clip-pretrained.safetensors")
        # CLTS's stage 1, shared by every seed: caption the digits (tiny BLIP, 10 k-means medoids per class), render 4
        # images per caption (real held-out digits of the caption's class).
        captions = load_caption_set(caption_task("mini-digits", out_dir / "captions", captioner="tiny",
                                                 clip=ClipSpec("tiny", str(weights)), device=cpu).set_path)
        spec = resolve_spec("mini-digits", model=f"reference:{reference}", captions=captions, per_caption=4, size=32,
                            device=cpu)
        generate(spec, out_dir / "shards", device=cpu, captions=captions)
        runs: dict[str, dict[int, Path]] = {m: {} for m in METHODS}
        cil_runs: dict[str, dict[int, Path]] = {row: {} for row, _, _ in CIL_RUNS}
        for s in seeds:
            for method in METHODS:
                config = TrainConfig(order="mini", method=method, name=run_name(method, method, "mini", s),
                                     runs=str(out_dir / "runs"), shards=str(out_dir / "shards"), clip_arch="tiny",
                                     clip_weights=str(weights), iterations=iterations, batch_size=32,
                                     synthetic_batch=32, synthetic_budget=96, warmup=10, seed=s, workers=0)
                runs[method][s] = run_train(config, TrainProgress(), cpu)
            for row, method, extra in CIL_RUNS:
                config = TrainConfig(order="mini-cil", method=method, name=run_name(row, method, "mini-cil", s),
                                     runs=str(out_dir / "runs"), shards=str(out_dir / "shards"),
                                     captions=str(out_dir / "captions"), clip_arch="tiny", clip_weights=str(weights),
                                     batch_size=32, synthetic_batch=32, synthetic_budget=96, seed=s, workers=0, **extra)
                cil_runs[row][s] = run_train(config, TrainProgress(), cpu)
    matrices = {m: {s: np.load(d / "acc_matrix.npy") for s, d in by_seed.items()} for m, by_seed in runs.items()}
    spreads = {m: spread(list(by_seed.values()), order) for m, by_seed in matrices.items()}
    cil = {m: {s: summarize_cil(json.loads((d / "state.json").read_text())["seen"]) for s, d in by_seed.items()}
           for m, by_seed in cil_runs.items()}
    cil_spreads = {m: (mean_std([c.avg for c in by_seed.values()]), mean_std([c.last for c in by_seed.values()]))
                   for m, by_seed in cil.items()}
    kept, replayed, extra = {}, {}, {}  # what each row replayed and keeps, from its seed-0 run: said in the tables
    for row, method, _ in CIL_RUNS:
        run_dir = cil_runs[row][seeds[0]]
        cfg, state = (json.loads((run_dir / f).read_text()) for f in ("config.json", "state.json"))
        kept[row] = kept_text(get_method(method).kept(run_dir, cfg, state))
        extra[row] = extra_text(get_method(method).extra(run_dir, cfg, state))
        replayed[row] = replayed_text(run_dir, cfg)
    mtil_replayed = {m: replayed_text(by_seed[seeds[0]], json.loads((by_seed[seeds[0]] / "config.json").read_text()))
                     for m, by_seed in runs.items()}
    minutes = (time.time() - started) / 60

    table = Table("method", f"{order[0]} after task {' / '.join(str(i + 1) for i in range(len(order)))}", "Transfer",
                  "Avg.", "Last", "replayed", title=f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
                  + (": mean ± std" if len(seeds) > 1 else ""))
    for method, s in spreads.items():
        table.add_row(method, " / ".join(fmt(v, s.seeds) for v in s.first_dataset), fmt(s.transfer, s.seeds),
                      fmt(s.avg, s.seeds), fmt(s.last, s.seeds), mtil_replayed[method])
    out.print(table)
    table = Table("method", "Avg.", "Last", "replayed", "memory kept", "extra parameters",
                  title="CIL: mini-cil (10 digits, 5 steps of 2)")
    for row, (avg, last) in cil_spreads.items():
        table.add_row(row, fmt(avg, len(seeds)), fmt(last, len(seeds)), replayed[row], kept[row], extra[row])
    out.print(table)
    tables = [*spread_table(spreads, order[0], mtil_replayed), "", "mini-cil (class-incremental):", "",
              *cil_spread_table(cil_spreads, len(seeds), kept, replayed, extra)]
    summary = write_summary(out_dir, seeds, iterations, tables, matrices, runs, order, minutes, cil, cil_runs)
    out.print(f"contact sheet of the tiny SD renders (random weights: noise by design, a test of the pipeline): {sheet}")
    out.print(f"summary (paste-ready table, machine, per-seed runs): {summary}")


def write_summary(out_dir: Path, seeds: list[int], iterations: int, table: list[str], matrices: dict, runs: dict,
                  order: list[str], minutes: float, cil: dict, cil_runs: dict) -> Path:
    """OUT/demo-summary.md: the table, what it was measured on, and every run's own numbers."""
    import torch

    from pipeline.bench.run import cpu_name
    from pipeline.evaluation.metrics import summarize
    from shards.layout import atomic_write_bytes

    per_seed = ["| method | seed | Transfer | Avg. | Last | run |", "|---|---:|---:|---:|---:|---|"]
    for method, by_seed in matrices.items():
        for s, acc in by_seed.items():
            m = summarize(acc, order)
            per_seed.append(f"| {method} | {s} | {m.transfer:.1f} | {m.avg:.1f} | {m.last:.1f} | {runs[method][s]} |")
    for method, by_seed in cil.items():
        for s, c in by_seed.items():
            per_seed.append(f"| {method} (mini-cil) | {s} | | {c.avg:.1f} | {c.last:.1f} | {cil_runs[method][s]} |")
    seed_arg = ",".join(map(str, seeds))
    text = "\n".join([
        f"# `gift demo` over seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}",
        "",
        f"`gift demo --out {out_dir} --seed {seed_arg} --iterations {iterations}` on {date.today().isoformat()}: "
        f"{cpu_name()} ({platform.machine()}), torch {torch.__version__} with {torch.get_num_threads()} threads; "
        f"{minutes:.1f} min (finished runs found in {out_dir}/runs are reused, not retrained).",
        "",
        "Each number is the mean ± sample standard deviation over the seeds (one seed: its value). A run is exact on "
        "one machine, but its numbers depend on the CPU (kernels sum in other orders): compare spreads, not single runs.",
        "",
        *table,
        "",
        f"`{out_dir}/preview-eurosat.png` shows the tiny Stable Diffusion's eurosat renders: its weights are random, so "
        "they are noise by design (a test of rendering, shards and resume, not of image quality).",
        "",
        "Every run:",
        "",
        *per_seed,
        "",
    ])
    path = out_dir / "demo-summary.md"
    atomic_write_bytes(path, text.encode())
    return path
