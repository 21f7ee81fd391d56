"""The ``gift`` command: a thin typer layer that parses, calls a typed function, and prints with rich."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cli.data_cmd import data_app
from cli.table_cmd import TABLE_HELP, table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="GIFT: continual CLIP fine-tuning with Stable Diffusion replay.")
shards_app = typer.Typer(no_args_is_help=True, help="Inspect, verify, preview and share shard sets.")
app.add_typer(shards_app, name="shards")
app.add_typer(data_app, name="data")
console = Console(stderr=True)
out = Console()


class Scheduler(str, Enum):
    pndm = "pndm"
    ddim = "ddim"
    dpm_solver = "dpm-solver"


class OnOff(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


def _setup_logging() -> None:
    rank = os.environ.get("RANK")
    fmt = f"[rank {rank}] %(message)s" if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1" else "%(message)s"
    logging.basicConfig(level=logging.WARNING, format=fmt, handlers=[RichHandler(console=console, show_path=False)], force=True)
    logging.getLogger("gift").setLevel(logging.INFO)  # ours at INFO; libraries (open_clip logs to root) at WARNING
    for noisy in ("httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()


@contextmanager
def _clean_errors():
    """Known failures become one red line and a non-zero exit; Ctrl-C exits 130 with a resume hint."""
    from pipeline.generate import SpecError
    from pipeline.generators import ModelNotFoundError
    from shards.errors import ShardSetError

    try:
        yield
    except (SpecError, ShardSetError, ModelNotFoundError, ValueError) as e:
        console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None
    except OSError as e:
        console.print(f"[bold red]error:[/] {e}\nNothing partial was kept under a final name; fix the cause and re-run to resume.")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] finished shards are kept; re-run the same command to resume.")
        raise typer.Exit(130) from None


@app.command()
def tasks() -> None:
    """List every task with its class count, default images per class, and prompt template."""
    from pipeline import catalog

    table = Table("task", "classes", "per class (default)", "prompt template")
    for name in catalog.task_names():
        task = catalog.get_task(name)
        table.add_row(name, str(task.num_classes), str(catalog.default_per_class(name)), task.prompt_template)
    out.print(table)


class RichProgress:
    """pipeline.generate.Progress shown as a rich bar with images/s and ETA."""

    def __init__(self, label: str, enabled: bool):
        self.enabled = enabled
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
            disable=not enabled,
        )
        self.label = label
        self.task = None
        self.done = 0

    def start(self, total: int, already_done: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=total + already_done, completed=already_done, rate="")

    def advance(self, images: int) -> None:
        self.bar.advance(self.task, images)
        speed = self.bar.tasks[0].speed
        self.bar.update(self.task, rate=f"{speed:.2f} img/s" if speed else "")

    def shard_done(self, record, render_s: float, write_s: float) -> None: ...

    def stop(self) -> None:
        self.bar.stop()


def _relaunch_with_torchrun(gpus: int) -> None:
    """``--gpus N``: run this same command under torchrun with N processes (one per GPU)."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
        elif arg == "--gpus":
            skip = True
        elif not arg.startswith("--gpus="):
            args.append(arg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m", "cli", *args]
    console.print(f"launching {gpus} processes: {' '.join(cmd[2:])}")
    raise typer.Exit(subprocess.call(cmd))


@app.command()
def generate(
    task: str = typer.Argument(..., help="An MTIL dataset or `imagenet` (see `gift tasks`)."),
    model: str = typer.Option("sd15", help="`sd15` (stable-diffusion-v1-5), `tiny` (random, CPU), `reference:DIR` (real images DIR/<class>/*.jpg), a Hub id, or a local diffusers directory."),
    out_dir: Path = typer.Option(Path("shards-out"), "--out", help="Root of shard sets; the set goes to OUT/<task>/<spec-hash>/."),
    per_class: int = typer.Option(None, help="Images per class (default: enough for one MTIL order to draw each image about once; see `gift tasks`)."),
    steps: int = typer.Option(50, help="Denoising steps."),
    guidance: float = typer.Option(7.5, help="Classifier-free guidance scale."),
    scheduler: Scheduler = typer.Option(Scheduler.pndm, help="Sampler (pndm is SD v1.5's own, as in the released code)."),
    size: int = typer.Option(None, help="Image side in pixels (default: 512; 64 for tiny; original size for reference)."),
    negative_prompt: str = typer.Option("", help="Negative prompt (empty: none)."),
    safety_checker: OnOff = typer.Option(OnOff.auto, help="SD safety checker; flagged images are recorded and left out (auto: on for sd15, off for tiny)."),
    dtype: str = typer.Option("auto", help="fp16 | bf16 | fp32 (auto: fp16 on GPU, fp32 on CPU)."),
    batch_size: int = typer.Option(16, help="Images per pipeline call (numerics only: recorded per shard, not in the hash)."),
    seed: int = typer.Option(0, help="Base seed; every image's seed derives from it and the image's key."),
    image_format: str = typer.Option("jpg", "--format", help="jpg | png."),
    jpeg_quality: int = typer.Option(95, help="JPEG quality."),
    shard_size: int = typer.Option(64, help="Samples per shard (the unit of resume and of multi-GPU splitting)."),
    revision: str = typer.Option(None, help="Model revision (Hub models)."),
    download: bool = typer.Option(False, "--download", help="Allow fetching weights from the Hub (default: local files only)."),
    device: str = typer.Option(None, help="cuda | cpu (default: cuda:LOCAL_RANK when a GPU is present, else cpu)."),
    gpus: int = typer.Option(1, help="Processes to launch with torchrun (one per GPU); rank r renders shards r, r+N, ..."),
    fuse_qkv: bool = typer.Option(False, "--fuse-qkv", help="Speed-up: fused query/key/value projections (numerics only: recorded per shard)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Speed-up: NHWC layout for UNet and VAE (numerics only: recorded per shard)."),
    compile_unet: bool = typer.Option(False, "--compile", help="Speed-up: torch.compile the UNet; minutes of compilation first (numerics only: recorded per shard)."),
) -> None:
    """Render TASK's class prompts into a resumable, verifiable shard set."""
    if gpus > 1 and "RANK" not in os.environ:
        _relaunch_with_torchrun(gpus)
    _setup_logging()
    import torch

    from pipeline.generate import default_device, generate, resolve_spec
    from pipeline.generators import Speedups

    with _clean_errors():
        dev = torch.device(device) if device else default_device()
        if dev.type == "cuda" and dev.index is None:
            dev = default_device()
        spec = resolve_spec(
            task, model=model, per_class=per_class, steps=steps, guidance=guidance, scheduler=scheduler.value,
            size=size, negative_prompt=negative_prompt,
            safety_checker=None if safety_checker is OnOff.auto else safety_checker is OnOff.on,
            dtype=dtype, seed=seed, image_format=image_format, jpeg_quality=jpeg_quality, shard_size=shard_size,
            revision=revision, device=dev,
        )
        progress = RichProgress(f"{task} ({spec.generator})", enabled=os.environ.get("RANK", "0") == "0")
        try:
            result = generate(spec, out_dir, batch_size=batch_size, device=dev, progress=progress, allow_download=download,
                              speedups=Speedups(fuse_qkv, channels_last, compile_unet))
        finally:
            progress.stop()
    if result.manifest is not None:
        m = result.manifest
        state = "[green]complete[/]" if m["complete"] else "[yellow]incomplete[/]"
        out.print(f"{result.set_path}: {m['samples']} images in {m['num_shards']} shards, {m['bytes'] / 1e6:.1f} MB, "
                  f"{m['flagged']} flagged, {state} (rendered {len(result.rendered_shards)}, kept {len(result.skipped_shards)})")


def _summary(spec: dict) -> str:
    if spec["generator"] == "reference":
        return f"reference {spec['model']}"
    return f"{spec['generator']} {spec['model']} · {spec['scheduler']} {spec['steps']} steps · cfg {spec['guidance']} · {spec['size']}px · {spec['dtype']}"


@shards_app.command("ls")
def shards_ls(root: str = typer.Argument("shards-out", help="Root of shard sets, or a store URL (ssh://, https://, ...).")) -> None:
    """List the sets under ROOT, or in a store: task, spec summary, samples, bytes, complete or not."""
    from shards.manifest import find_sets, load_manifest
    from shards.store import is_url

    if is_url(root):
        return _store_ls(str(root))
    with _clean_errors():
        table = Table("task", "hash", "generator", "samples", "MB", "complete", "path")
        for path in find_sets(root):
            m = load_manifest(path)
            table.add_row(m["task"], m["spec_hash"][:16], _summary(m["spec"]), f"{m['samples']}/{m['planned_samples']}",
                          f"{m['bytes'] / 1e6:.1f}", "yes" if m["complete"] else "[yellow]no[/]", str(path))
        out.print(table)


def _store_ls(url: str) -> None:
    from shards.store import list_sets, open_store

    with _clean_errors():
        store = open_store(url)
        table = Table("task", "hash", "generator", "samples", "MB", "complete", "pull with")
        for s in list_sets(store):
            address = store.address(f"{s.task}/{s.hash16}")
            if s.manifest is None:
                state = f"[red]invalid[/] ({s.problem})" if s.problem else "[yellow]no manifest[/] (push in progress or interrupted)"
                table.add_row(s.task, s.hash16, "", "", "", state, "")
                continue
            m = s.manifest
            table.add_row(m["task"], s.hash16, _summary(m["spec"]), f"{m['samples']}/{m['planned_samples']}",
                          f"{m['bytes'] / 1e6:.1f}", "yes" if m["complete"] else "[yellow]no[/]", address)
        out.print(table)


class TransferBar:
    """shards.store.Progress as a rich bar with bytes, speed and ETA."""

    def __init__(self):
        self.bar = None

    def start(self, label: str, total_bytes: int) -> None:
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), console=console)
        self.bar.start()
        self.task = self.bar.add_task(label, total=total_bytes)

    def advance(self, nbytes: int) -> None:
        self.bar.advance(self.task, nbytes)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@shards_app.command("push")
def shards_push(
    set_path: Path = typer.Argument(..., help="A set directory (ROOT/<task>/<hash>), or a root: every set under it."),
    dest: str = typer.Argument(..., help="Store: a directory (shared/NFS mount), ssh://[user@]host[:port]/path, or any fsspec URL."),
) -> None:
    """Publish complete, verified sets to a store: content-addressed, resumable, the manifest written last."""
    from shards.manifest import find_sets, load_manifest
    from shards.push import push_set
    from shards.store import open_store

    with _clean_errors():
        sets = find_sets(set_path)
        if not sets:
            raise ValueError(f"no shard set under {set_path} (expected ROOT/<task>/<hash>/manifest.json)")
        if sets != [Path(set_path)]:  # a root: publish what is finished, say what is not
            unfinished = [p for p in sets if not load_manifest(p)["complete"]]
            for path in unfinished:
                out.print(f"[yellow]skipped[/] {path}: incomplete (finish it with the same `gift generate` command)")
            sets = [p for p in sets if p not in unfinished]
            if not sets:
                raise ValueError(f"no complete shard set under {set_path}; finish rendering first")
        store = open_store(dest)
        for path in sets:
            r = push_set(path, store, TransferBar())
            if r.state == "other-render":
                out.print(f"[yellow]kept[/] {r.address}: the store already holds another render of this spec "
                          f"(same spec hash, other bytes); nothing sent. Pull it, or delete it on the store to replace it")
            elif r.state == "already":
                out.print(f"[green]already published[/] {r.address}: nothing transferred")
            else:
                out.print(f"[green]{r.state}[/] {r.address}: {len(r.uploaded)} files sent ({r.bytes_sent / 1e6:.1f} MB), "
                          f"{len(r.kept)} already there")


@shards_app.command("pull")
def shards_pull(
    address: str = typer.Argument(..., help="STORE/TASK/HASH, as `gift shards ls STORE` lists it."),
    dest: Path = typer.Argument(Path("shards-out"), help="Local root; the set goes to DEST/<task>/<hash>/."),
) -> None:
    """Fetch a published set, checking every file's sha256 before it becomes visible; resumable."""
    from shards.pull import parse_address, pull_set
    from shards.store import open_store

    with _clean_errors():
        url, task, hash16, full = parse_address(address)
        r = pull_set(open_store(url), task, hash16, dest, TransferBar(), full_hash=full)
    out.print(f"[green]pulled[/] {r.set_path}: {len(r.downloaded)} shards fetched ({r.bytes_received / 1e6:.1f} MB), "
              f"{len(r.kept)} already here and verified")


@shards_app.command("info")
def shards_info(set_path: Path = typer.Argument(..., help="A set directory (ROOT/<task>/<hash>).")) -> None:
    """Show a set's spec, versions and per-shard records."""
    from shards.manifest import load_manifest

    with _clean_errors():
        m = load_manifest(set_path)
        out.print(f"[bold]{m['task']}[/] {m['spec_hash']}  ({'complete' if m['complete'] else 'incomplete'})")
        out.print(f"{m['samples']} images ({m['flagged']} flagged), {m['bytes'] / 1e6:.1f} MB, "
                  f"{len(m['shards'])}/{m['num_shards']} shards")
        out.print_json(data={"spec": m["spec"], "versions": m["versions"]})
        table = Table("shard", "samples", "flagged", "MB", "sha256", "device", "dtype", "batch", "speed-ups")
        for s in m["shards"]:
            r = s["render"]
            table.add_row(f"{s['index']:06d}", str(s["samples"]), str(s["flagged"]), f"{s['bytes'] / 1e6:.1f}",
                          s["sha256"][:16], str(r.get("device")), str(r.get("dtype")), str(r.get("batch_size")),
                          ", ".join(r.get("speedups", [])) or "none")
        out.print(table)


@shards_app.command("verify")
def shards_verify(
    set_path: Path = typer.Argument(..., help="A set directory (ROOT/<task>/<hash>)."),
    quick: bool = typer.Option(False, "--quick", help="Checksums only; skip decoding every sample."),
) -> None:
    """Recompute every checksum and read every sample; exit 1 naming each broken shard."""
    from shards.verify import verify_set

    report = verify_set(set_path, deep=not quick)
    if report.ok:
        out.print(f"[green]ok[/] {set_path}: {report.shards_checked} shards, {report.samples} samples verified")
        return
    for problem in report.problems:
        console.print(f"[bold red]broken:[/] {problem}")
    raise typer.Exit(1)


@shards_app.command("preview")
def shards_preview(
    set_path: Path = typer.Argument(..., help="A set directory (ROOT/<task>/<hash>)."),
    out_file: Path = typer.Option(..., "--out", help="PNG file to write."),
    n: int = typer.Option(16, help="Samples to show."),
    columns: int = typer.Option(4, help="Grid columns."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
) -> None:
    """Write a contact sheet of N samples captioned with their prompts."""
    from shards.preview import contact_sheet

    with _clean_errors():
        if out_file.exists() and not force:
            raise ValueError(f"{out_file} exists; pass --force to overwrite it or choose another --out")
        shown = contact_sheet(set_path, out_file, n=n, columns=columns)
    out.print(f"wrote {out_file} ({shown} samples)")


class TrainProgress:
    """pipeline.train.Progress as a rich bar per task with the loss terms and steps/s."""

    def __init__(self):
        self.bar = None

    def start_task(self, index: int, task: str, steps: int) -> None:
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[losses]}"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        self.bar.start()
        self.task = self.bar.add_task(f"task {index + 1}: {task}", total=steps, losses="")

    def step(self, losses: dict[str, float]) -> None:
        speed = self.bar.tasks[0].speed
        text = " ".join(f"{k} {v:.3f}" for k, v in losses.items()) + (f"  {speed:.1f} it/s" if speed else "")
        self.bar.update(self.task, advance=1, losses=text)

    def end_task(self) -> None:
        self.bar.stop()

    def evaluated(self, index: int, task: str, row: list[float]) -> None:
        out.print(f"[bold]after task {index + 1} ({task})[/]: " + "  ".join(f"{a:.1f}" for a in row)
                  + f"   mean {sum(row) / len(row):.1f}")


@app.command()
def train(
    order: str = typer.Option("II", help="Task order: I, II (MTIL) or mini (scikit-learn images, for demos/tests)."),
    method: str = typer.Option("gift", help="gift | finetune | l2 | wise-ft | lwf | lwf-vr | zscl | icarl | ewc | zeroshot."),
    name: str = typer.Option(None, help="Run directory name under --runs (default: <method>-order<order>)."),
    runs: Path = typer.Option(Path("runs"), help="Where run directories go."),
    data_root: Path = typer.Option(None, help="Folder holding the MTIL datasets (see `gift data check`)."),
    shards: str = typer.Option("shards-out", help="Root of the rendered shard sets (stage 1's --out), or a store URL (https://, ssh://, ...) to fetch the pool from."),
    shard_cache: Path = typer.Option(None, help="Where sets from a store URL are cached and verified (default: ~/.cache/gift/shards)."),
    shard_family: str = typer.Option(None, help="Which generator spec's sets to use when several are present."),
    clip: str = typer.Option("ViT-B-16", help="open_clip architecture, or `tiny`."),
    clip_weights: str = typer.Option("openai", help="`openai` (from the HF cache), a checkpoint file, or `none`."),
    iterations: int = typer.Option(1000, help="Steps per task."),
    batch_size: int = typer.Option(64, help="Real images per step."),
    synthetic_batch: int = typer.Option(64, help="Synthetic image-text pairs per step."),
    synthetic_budget: int = typer.Option(1000, help="Synthetic images drawn per task from the pool."),
    lr: float = typer.Option(None, help="Base learning rate (default: 5e-5 aircraft/mnist, 1e-5 other MTIL tasks, 1e-3 mini)."),
    warmup: int = typer.Option(100, help="Linear warm-up steps before the cosine schedule."),
    seed: int = typer.Option(0, help="Seed of every task's RNGs and of the synthetic draw."),
    precision: str = typer.Option("fp32", help="fp32 | bf16 (autocast)."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the student's training forward (numerics only; a minute or more of compilation first)."),
    workers: int = typer.Option(None, help="Data-loader workers per process for the real data and the one-time test-set decode (default: one per spare core, at most 8; results do not depend on it, and it may change when a run resumes)."),
    cd: bool = typer.Option(True, "--cd/--no-cd", help="GIFT: contrastive distillation."),
    ita: bool = typer.Option(True, "--ita/--no-ita", help="GIFT: image-text alignment."),
    awc: bool = typer.Option(True, "--awc/--no-awc", help="GIFT: adaptive weight consolidation."),
    beta: float = typer.Option(0.25, help="GIFT: ITA scale (on each direction)."),
    lam: float = typer.Option(1.0, help="GIFT: AWC weight λ."),
    teacher: str = typer.Option("last", help="GIFT: last | initial | wise:x."),
    distill: str = typer.Option("contrastive", help="GIFT: contrastive | feature | image-only | text-only."),
    ita_target: str = typer.Option("code", help="GIFT: code (smoothing 0.2, shared duplicate positives) | paper (identity)."),
    fisher_norm: bool = typer.Option(True, "--fisher-norm/--no-fisher-norm", help="GIFT: per-tensor normalised Fisher."),
    replay_generator: str = typer.Option(None, help="GIFT: replay the pool sets of this generator only (sd15 | tiny | reference = real images)."),
    wise_alpha: float = typer.Option(0.8, help="wise-ft: θ ← α·θ + (1−α)·θ(t−1) after each task."),
    random_texts: int = typer.Option(1000, help="lwf-vr: number of random 10-token sentences."),
    reference_images: Path = typer.Option(None, help="zscl: ImageFolder of real reference images (ImageNet train in the paper)."),
    reference_texts: Path = typer.Option(None, help="zscl: captions file, one per line."),
    ensemble_every: int = typer.Option(100, help="zscl: weight-ensemble snapshot every N steps."),
    memory_size: int = typer.Option(10000, help="icarl: exemplars kept over all seen classes (herding)."),
    ewc_samples: int = typer.Option(256, help="ewc: synthetic samples for the static Fisher before each task."),
    device: str = typer.Option(None, help="cuda | cpu (default: cuda when present)."),
    gpus: int = typer.Option(1, help="Processes to launch with torchrun (one per GPU; DistributedDataParallel)."),
) -> None:
    """Continual fine-tuning over an order, evaluating every dataset after each task; resumable."""
    if gpus > 1 and "RANK" not in os.environ:
        _relaunch_with_torchrun(gpus)
    _setup_logging()
    import torch

    from pipeline.models import ClipNotFoundError
    from pipeline.mtil_data import DatasetMissingError
    from pipeline.train import NonFiniteLossError, TrainConfig
    from pipeline.train import train as run_train

    config = TrainConfig(
        order=order, method=method, name=name, runs=str(runs), data_root=str(data_root) if data_root else None,
        shards=str(shards), shard_cache=str(shard_cache) if shard_cache else None, shard_family=shard_family, clip_arch=clip, clip_weights=clip_weights,
        iterations=iterations, batch_size=batch_size, synthetic_batch=synthetic_batch,
        synthetic_budget=synthetic_budget, lr=lr, warmup=warmup, seed=seed, precision=precision, compile=compile_model, workers=workers,
        cd=cd, ita=ita, awc=awc, beta=beta, lam=lam, teacher=teacher, distill=distill, ita_target=ita_target,
        fisher_norm=fisher_norm, replay_generator=replay_generator, wise_alpha=wise_alpha, random_texts=random_texts,
        reference_images=str(reference_images) if reference_images else None,
        reference_texts=str(reference_texts) if reference_texts else None, ensemble_every=ensemble_every,
        memory_size=memory_size, ewc_samples=ewc_samples,
    )
    with _clean_errors():
        try:
            run_dir = run_train(config, TrainProgress(), torch.device(device) if device else None)
        except (ClipNotFoundError, DatasetMissingError, NonFiniteLossError) as e:
            raise ValueError(str(e)) from e
    if os.environ.get("RANK", "0") == "0":
        out.print(f"[green]done[/]: {run_dir}/results.md")
        out.print((run_dir / "results.md").read_text())


# `gift table` (cli/table_cmd.py): the options it does not declare are `gift train`'s, parsed by that command.
app.command(help=TABLE_HELP, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(table)


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("demo-out"), "--out", help="Where the demo's shard sets, runs and previews go."),
    iterations: int = typer.Option(200, help="Training steps per mini task."),
) -> None:
    """The whole pipeline on CPU with tiny models: render, verify, train finetune and GIFT on `mini`, report."""
    _setup_logging()
    import torch

    from pipeline import mini
    from pipeline.generate import generate, resolve_spec
    from pipeline.metrics import summarize
    from pipeline.train import TrainConfig
    from pipeline.train import train as run_train
    from shards.preview import contact_sheet
    from shards.verify import verify_set

    cpu = torch.device("cpu")
    with _clean_errors():
        # Stage 1: the tiny SD pipeline renders a real task; the mini pool sets come from held-out real images.
        reference = mini.export_reference(out_dir / "mini-reference")
        jobs = [("eurosat", "tiny", None)] + [(t, f"reference:{reference}", 32) for t in ("mini-base", "mini-a", "mini-b")]
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
        shards_ls(out_dir / "shards")
        # Stage 2: a tiny CLIP "pre-trained" on mini-base, then continual fine-tuning over mini-a, -b, -c.
        weights = mini.pretrain_tiny_clip(out_dir / "tiny-clip-pretrained.safetensors")
        summaries = {}
        for method in ("finetune", "gift"):
            config = TrainConfig(order="mini", method=method, runs=str(out_dir / "runs"), shards=str(out_dir / "shards"),
                                 clip_arch="tiny", clip_weights=str(weights), iterations=iterations, batch_size=32,
                                 synthetic_batch=32, synthetic_budget=96, warmup=10, workers=0)
            run_dir = run_train(config, TrainProgress(), cpu)
            import numpy as np

            summaries[method] = (summarize(np.load(run_dir / "acc_matrix.npy"), ["mini-a", "mini-b", "mini-c"]), run_dir)
    table = Table("method", "Transfer", "Avg.", "Last", "run")
    for method, (s, run_dir) in summaries.items():
        table.add_row(method, f"{s.transfer:.1f}", f"{s.avg:.1f}", f"{s.last:.1f}", f"{run_dir}/results.md")
    out.print(table)
    out.print(f"contact sheet of the tiny SD renders: {sheet}")


def main() -> None:
    app()
