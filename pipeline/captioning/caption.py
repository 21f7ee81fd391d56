"""CLTS stage 1a, `gift caption TASK`: choose training images per class, caption them with BLIP, keep only the
captions, as a content-addressed caption set.

Select first, caption second. The selection (k-means medoids of CLIP features, or random) is a pure function of
the split, the CLIP model and the seed; the :class:`CaptionSpec` names it by a fingerprint of the chosen images
and the captioner by name and revision, so the set's address ``OUT/<task>/<spec-hash[:16]>/`` says what was
captioned and how. Records are written in shards by the same writer as image sets (``shards.setio.SetWriter``):
each shard a tar of ``KEY.txt`` + ``KEY.json`` written under a temporary name, fsynced and renamed, its parquet record
after it, the manifest rewritten after each shard and last. Re-running the same command skips finished shards whose
checksums hold and captions the rest. It runs as one process (``torchrun`` is refused): unlike rendering, shards are
not split over ranks, so no shared-directory check (``pipeline.dist``) is needed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from pipeline.datasets import catalog
from pipeline.datasets.splits import task_dataset
from pipeline.dist import Dist
from pipeline.generation.generate import default_device, library_versions, render_record
from pipeline.models import ClipSpec, load_clip
from shards.captions import caption_bytes, read_caption_rows
from shards.layout import set_dir, spec_hash
from shards.manifest import CAPTIONS
from shards.setio import SetWriter

from .blip import CaptionerSource, Decoding, load_captioner, locate_captioner
from .select import SELECTIONS, clip_features, fingerprint, select_sources

log = logging.getLogger("gift.caption")
CAPTION_PLAN_VERSION = 1  # bump when keys or record order change: it is part of every caption set's hash
DEFAULT_OUT = "captions-out"


class CaptionSpecError(ValueError):
    """An invalid captioning request; the message names the bad value and the valid ones."""


@dataclass(frozen=True)
class CaptionSpec:
    """Everything that decides what a caption set contains; its hash names the set's directory.

    Device and batch size change captions at most numerically and are recorded per shard instead.
    """

    task: str
    sources: int  # images chosen (= records)
    source_fingerprint: str  # sha256 over the chosen images' split indices and decoded RGB pixels
    captioner: str  # "tiny", a Hub id (BLIP's by default), or "local"
    captioner_revision: str  # Hub commit, tiny config hash, or a local directory's content hash
    split: str = "train"
    selection: str = "kmeans"  # kmeans | random
    features: str = "none"  # the CLIP the k-means ran on ("ViT-B-16:openai"); none for random
    per_class: int = 10  # asked for; a class with fewer images gives all of them
    num_beams: int = 3
    max_new_tokens: int = 30
    seed: int = 0
    shard_size: int = 64
    plan_version: int = CAPTION_PLAN_VERSION
    kind: str = CAPTIONS

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def hash(self) -> str:
        return spec_hash(self.to_dict())


class Progress:
    """Hooks for progress bars (the CLI's), one phase at a time: features, then captions. Defaults do nothing."""

    def start(self, label: str, total: int, already_done: int = 0) -> None: ...
    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...


@dataclass
class CaptionResult:
    set_path: Path
    manifest: dict
    caption_bytes: int  # UTF-8 bytes of the captions kept (the memory CLTS reports)
    captioned_shards: list[int] = field(default_factory=list)
    skipped_shards: list[int] = field(default_factory=list)


def clip_label(clip: ClipSpec) -> str:
    """The CLIP that features came from, as the spec records it: a pretrained tag, random weights with their seed,
    or a checkpoint file's content hash (so the address does not depend on where the file lies)."""
    if clip.weights in ("none", "random"):
        return f"{clip.arch}:none:seed{clip.seed}"
    path = Path(clip.weights).expanduser()
    if path.is_file():
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return f"{clip.arch}:sha256:{h.hexdigest()[:16]}"
    return f"{clip.arch}:{clip.weights}"


def plan_rows(task: str, selected: list[list[int]]) -> list[dict]:
    """One record per chosen image, class-major: key ``<task>-<class:04d>-<i:04d>``, class, source index."""
    names = catalog.get_task(task).classnames
    return [{"key": f"{task}-{c:04d}-{i:04d}", "task": task, "class_index": c, "class_name": names[c],
             "source_index": source}
            for c, sources in enumerate(selected) for i, source in enumerate(sources)]


def caption_task(
    task: str,
    out: str | os.PathLike = DEFAULT_OUT,
    *,
    data_root: str | None = None,
    split: str = "train",
    per_class: int = 10,
    selection: str = "kmeans",
    clip: ClipSpec = ClipSpec(),
    captioner: str = "blip",
    revision: str | None = None,
    allow_download: bool = False,
    decoding: Decoding = Decoding(),
    seed: int = 0,
    shard_size: int = 64,
    batch_size: int = 16,
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> CaptionResult:
    """Caption (or finish captioning) ``per_class`` chosen images of each class of ``task``'s ``split`` under
    ``out``; returns where the set is and what was done.

    One process: under ``torchrun`` (WORLD_SIZE > 1) it refuses to start, as every rank would caption every shard.
    """
    if (world := Dist.from_env().world) > 1:
        raise CaptionSpecError(f"gift caption runs as one process, here it is one of {world} (torchrun): run it "
                               "without torchrun, on one device (--device)")
    try:
        task_info = catalog.get_task(task)
    except catalog.UnknownTaskError as e:
        raise CaptionSpecError(str(e)) from e
    if selection not in SELECTIONS:
        raise CaptionSpecError(f"unknown selection {selection!r}; choose one of {', '.join(SELECTIONS)}")
    for name, value in (("--per-class", per_class), ("--shard-size", shard_size), ("--batch-size", batch_size),
                        ("--num-beams", decoding.num_beams), ("--max-new-tokens", decoding.max_new_tokens)):
        if value <= 0:
            raise CaptionSpecError(f"{name} must be positive, got {value}")
    device = device or default_device()
    progress = progress or Progress()
    # The captioner is located (not loaded) first: its revision is part of the spec, and a missing one should
    # fail before minutes of feature extraction.
    source = locate_captioner(captioner, revision=revision, allow_download=allow_download)
    dataset = task_dataset(task, split, data_root)

    labels: list[int] = []

    def images() -> Iterator[Image.Image]:  # one pass over the split, collecting labels on the way
        for i in range(len(dataset)):
            image, label = dataset[i]
            labels.append(int(label))
            yield image

    features = None
    if selection == "kmeans":
        model = load_clip(clip, device)
        progress.start(f"{task}: CLIP features", len(dataset))
        try:
            features = clip_features(images(), model, device, advance=progress.advance)
        finally:
            progress.finish()
        del model
    elif hasattr(dataset, "labels"):  # random choice needs only the labels: don't decode every image for them
        labels = [int(label) for label in dataset.labels]
    else:
        for _ in images():
            pass
    selected = select_sources(labels, task_info.num_classes, per_class, selection, seed, features)
    rows = plan_rows(task, selected)
    spec = CaptionSpec(
        task=task, sources=len(rows),
        source_fingerprint=fingerprint((r["source_index"], dataset[r["source_index"]][0]) for r in rows),
        captioner=source.name, captioner_revision=source.revision, split=split, selection=selection,
        features=clip_label(clip) if selection == "kmeans" else "none", per_class=per_class,
        num_beams=decoding.num_beams, max_new_tokens=decoding.max_new_tokens, seed=seed, shard_size=shard_size,
    )
    return write_caption_set(spec, rows, dataset, source, out, decoding=decoding, batch_size=batch_size,
                             device=device, progress=progress)


def write_caption_set(spec: CaptionSpec, rows: list[dict], dataset, source: CaptionerSource, out: str | os.PathLike,
                      *, decoding: Decoding, batch_size: int, device: torch.device, progress: Progress) -> CaptionResult:
    """Caption the planned ``rows`` (images from ``dataset`` by source index) into the set of ``spec``."""
    shards = [rows[i : i + spec.shard_size] for i in range(0, len(rows), spec.shard_size)]
    out_set = SetWriter(set_dir(out, spec.task, spec.hash), spec.to_dict(), len(shards), len(rows), library_versions())
    out_set.open()
    result = CaptionResult(out_set.path, {}, 0)
    todo = []
    for i in range(len(shards)):
        (result.skipped_shards if out_set.finished(i) else todo).append(i)
    if todo:
        log.info("captioning %d shard(s) of %s (%d already done)", len(todo), out_set.path, len(result.skipped_shards))
        try:
            captioner = load_captioner(source, device, decoding)
        except BaseException:
            out_set.remove_if_empty()
            raise
        render = render_record(device, "fp32", batch_size)
        progress.start(f"{spec.task}: captions", len(rows), sum(len(shards[i]) for i in result.skipped_shards))
        try:
            for i in todo:
                with out_set.shard(i, render) as writer:
                    for b in range(0, len(shards[i]), batch_size):
                        batch = shards[i][b : b + batch_size]
                        texts = captioner.caption([dataset[r["source_index"]][0] for r in batch])
                        for row, text in zip(batch, texts, strict=True):
                            record = {**row, "caption": text}
                            writer.add(record, text.encode("utf-8"), "txt", {**record, "spec_hash": spec.hash})
                        progress.advance(len(batch))
                    writer.commit()
                result.captioned_shards.append(i)
                out_set.write_manifest()
        finally:
            progress.finish()
    result.manifest = out_set.write_manifest()
    if result.manifest["complete"]:
        result.caption_bytes = caption_bytes(r["caption"] for r in read_caption_rows(out_set.path, result.manifest))
    return result
