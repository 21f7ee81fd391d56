"""CLTS stage 1a, `gift caption TASK`: choose training images per class, caption them with BLIP, keep only the
captions, as a content-addressed caption set.

Select first, caption second. The selection (k-means medoids of CLIP features, or random) is a pure function of
the split, the CLIP model and the seed; the :class:`CaptionSpec` names it by a fingerprint of the chosen images
and the captioner by name and revision, so the set's address ``OUT/<task>/<spec-hash[:16]>/`` says what was
captioned and how. Records are written in shards through the image sets' machinery (``shards/``): each shard a
tar of ``KEY.txt`` + ``KEY.json`` written under a temporary name, fsynced and renamed, its parquet record after it,
the manifest rewritten after each shard and last. Re-running the same command skips finished shards whose
checksums hold and captions the rest.
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
from pipeline.generation.generate import default_device, device_name, library_versions
from pipeline.models import ClipSpec, load_clip
from shards.captions import caption_bytes, read_caption_rows
from shards.errors import SpecMismatchError
from shards.layout import MANIFEST, parquet_path, set_dir, spec_hash, tar_path
from shards.manifest import (
    CAPTION_ROW_SCHEMA,
    CAPTIONS,
    ShardRecord,
    collect_records,
    load_manifest,
    make_manifest,
    read_record,
    write_manifest,
)
from shards.verify import check_shard
from shards.writer import ShardWriter

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
    ``out``; returns where the set is and what was done."""
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
    set_path = set_dir(out, spec.task, spec.hash)
    shards = [rows[i : i + spec.shard_size] for i in range(0, len(rows), spec.shard_size)]
    versions = library_versions()
    _open_set(set_path, spec, len(shards), len(rows), versions)
    result = CaptionResult(set_path, {}, 0)
    todo = []
    for i in range(len(shards)):
        (result.skipped_shards if _finished(set_path, i) else todo).append(i)
    if todo:
        log.info("captioning %d shard(s) of %s (%d already done)", len(todo), set_path, len(result.skipped_shards))
        try:
            captioner = load_captioner(source, device, decoding)
        except BaseException:
            _remove_if_empty(set_path)
            raise
        render = {"device": device_name(device), "dtype": "fp32", "batch_size": batch_size}
        if device.type == "cpu":  # CPU kernels reduce in a thread-count-dependent order
            render["threads"] = torch.get_num_threads()
        progress.start(f"{spec.task}: captions", len(rows), sum(len(shards[i]) for i in result.skipped_shards))
        try:
            for i in todo:
                with ShardWriter(set_path, i, render, schema=CAPTION_ROW_SCHEMA) as writer:
                    for b in range(0, len(shards[i]), batch_size):
                        batch = shards[i][b : b + batch_size]
                        texts = captioner.caption([dataset[r["source_index"]][0] for r in batch])
                        for row, text in zip(batch, texts, strict=True):
                            record = {**row, "caption": text}
                            writer.add(record, text.encode("utf-8"), "txt", {**record, "spec_hash": spec.hash})
                        progress.advance(len(batch))
                    writer.commit()
                result.captioned_shards.append(i)
                _update_manifest(set_path, spec, len(shards), len(rows), versions)
        finally:
            progress.finish()
    result.manifest = _update_manifest(set_path, spec, len(shards), len(rows), versions)
    if result.manifest["complete"]:
        result.caption_bytes = caption_bytes(r["caption"] for r in read_caption_rows(set_path, result.manifest))
    return result


def _open_set(set_path: Path, spec: CaptionSpec, num_shards: int, planned: int, versions: dict) -> None:
    """Create the set directory, or check that the one there was made by this very spec."""
    set_path.mkdir(parents=True, exist_ok=True)
    if (set_path / MANIFEST).exists():
        existing = load_manifest(set_path)
        if existing["spec"] != spec.to_dict():
            raise SpecMismatchError(f"{set_path} holds a set made by a different spec with the same hash prefix "
                                    f"(existing {existing['spec_hash']}, requested {spec.hash}); move it away or "
                                    "choose another --out")
    for stale in set_path.glob(".*.tmp-*"):  # left by a killed process: never complete, never read
        stale.unlink(missing_ok=True)
    _update_manifest(set_path, spec, num_shards, planned, versions)


def _remove_if_empty(set_path: Path) -> None:
    """Undo ``_open_set`` when nothing was captioned, so a failed start leaves no empty set behind."""
    if any(set_path.glob("*.parquet")):
        return
    (set_path / MANIFEST).unlink(missing_ok=True)
    for d in (set_path, set_path.parent):
        try:
            d.rmdir()  # only succeeds while empty
        except OSError:
            break


def _finished(set_path: Path, index: int) -> bool:
    """True when shard ``index`` has a record and its tar matches it; a broken shard is removed."""
    record_file = parquet_path(set_path, index)
    if not record_file.exists():
        return False
    try:
        problems = check_shard(set_path, index, read_record(record_file), deep=False, spec={"kind": CAPTIONS})
    except Exception as e:  # an unreadable record is a broken shard like any other
        problems = [str(e)]
    if not problems:
        return True
    log.warning("redoing shard %06d: %s", index, "; ".join(problems))
    record_file.unlink(missing_ok=True)
    tar_path(set_path, index).unlink(missing_ok=True)
    return False


def _update_manifest(set_path: Path, spec: CaptionSpec, num_shards: int, planned: int, versions: dict) -> dict:
    records: dict[int, ShardRecord] = collect_records(set_path, num_shards)
    manifest = make_manifest(task=spec.task, spec=spec.to_dict(), num_shards=num_shards, planned_samples=planned,
                             records=records, versions=versions)
    write_manifest(set_path, manifest)
    return manifest
