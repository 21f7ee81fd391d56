"""`gift caption TASK`: caption chosen training images with BLIP into a caption set (CLTS stage 1a)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from cli.common import clean_errors, out, parse_device, setup_logging
from cli.progress import PhaseBar


class Selection(str, Enum):
    kmeans = "kmeans"
    random = "random"


def caption(
    task: str = typer.Argument(..., help="Any task `gift tasks` lists (its training split is captioned)."),
    out_dir: Path = typer.Option(Path("captions-out"), "--out", help="Root of caption sets; the set goes to OUT/<task>/<spec-hash>/."),
    per_class: int = typer.Option(10, help="Images captioned per class (all of a class's images when it has fewer)."),
    select: Selection = typer.Option(Selection.kmeans, help="kmeans: the k-means medoids of the class's CLIP image features; random: a seeded draw."),
    captioner: str = typer.Option("blip", help="`blip` (Salesforce/blip-image-captioning-base), `tiny` (random, CPU), another Hub id, or a local BLIP directory."),
    revision: str = typer.Option(None, help="Hub revision of the captioner (default: main)."),
    download: bool = typer.Option(False, "--download", help="Allow fetching the captioner from the Hub (default: local files only)."),
    clip: str = typer.Option("ViT-B-16", help="open_clip architecture whose image features k-means clusters, or `tiny`."),
    clip_weights: str = typer.Option("openai", help="`openai` (from the HF cache), a checkpoint file, or `none`."),
    data_root: Path = typer.Option(None, help="Folder holding the task's dataset (not needed for the mini tasks)."),
    split: str = typer.Option("train", help="Which split's images are chosen and captioned."),
    num_beams: int = typer.Option(3, help="Beam search width."),
    max_new_tokens: int = typer.Option(30, help="Longest caption, in tokens."),
    seed: int = typer.Option(0, help="Seed of the k-means restarts (or of the random draw)."),
    shard_size: int = typer.Option(64, help="Captions per shard (the unit of resume)."),
    batch_size: int = typer.Option(16, help="Images per captioner call (numerics only: recorded per shard, not in the hash)."),
    device: str = typer.Option(None, help="cuda | cpu (default: cuda when present)."),
) -> None:
    """Caption per-class chosen training images of TASK with BLIP into a resumable, verifiable caption set.

    One process on one device: not for torchrun (refused there).
    """
    setup_logging()
    from pipeline.datasets import catalog

    with clean_errors():
        catalog.get_task(task)  # an unknown name fails at once, before torch and the captioner load
    import transformers

    transformers.utils.logging.disable_progress_bar()  # its weight-loading bar; ours show the work

    from pipeline.captioning.blip import Decoding
    from pipeline.captioning.caption import caption_task
    from pipeline.datasets.mtil import DatasetMissingError
    from pipeline.models import ClipNotFoundError, ClipSpec

    progress = PhaseBar()
    with clean_errors():
        try:
            result = caption_task(
                task, out_dir, data_root=str(data_root) if data_root else None, split=split, per_class=per_class,
                selection=select.value, clip=ClipSpec(clip, clip_weights), captioner=captioner, revision=revision,
                allow_download=download, decoding=Decoding(num_beams, max_new_tokens), seed=seed,
                shard_size=shard_size, batch_size=batch_size, device=parse_device(device),
                progress=progress,
            )
        except (ClipNotFoundError, DatasetMissingError) as e:
            raise ValueError(str(e)) from e
        finally:
            progress.finish()
    m = result.manifest
    state = "[green]complete[/]" if m["complete"] else "[yellow]incomplete[/]"
    out.print(f"{result.set_path}: {m['samples']} captions, {result.caption_bytes} caption bytes (UTF-8) in "
              f"{m['num_shards']} shards, {state} (captioned {len(result.captioned_shards)}, kept "
              f"{len(result.skipped_shards)})")
