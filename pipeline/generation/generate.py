"""Stage 1: render a task's class prompts (or the captions of a caption set) into a resumable, verifiable shard set.

Plan first, render second. The plan (key, class, prompt, seed of every sample) is a pure function of
the :class:`GenerateSpec` (and, with ``--captions``, of the caption set whose hash it holds); the set lives at
``OUT/<task>/<spec-hash>/``. Shard i holds plan rows
[i*shard_size, (i+1)*shard_size). Under ``torchrun`` rank r renders shards r, r+world, ... and writes only
its own files; rank 0 writes the manifest. Re-running the same command skips finished shards whose
checksums hold and redoes the rest.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import string
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image

from pipeline.datasets import catalog
from pipeline.dist import Dist, RankStoppedError
from shards.captions import CaptionSet
from shards.layout import set_dir, spec_hash
from shards.manifest import ShardRecord
from shards.setio import SetWriter

from .generators import (
    DTYPES,
    SCHEDULERS,
    SD15_ID,
    DiffusersGenerator,
    Generator,
    PlanRow,
    ReferenceGenerator,
    Speedups,
    load_sd15,
    set_scheduler,
)
from .tiny_sd import SD15_SCHEDULER_CONFIG, TINY_SIZE, build_tiny_pipeline

log = logging.getLogger("gift.generate")
PLAN_VERSION = 1  # bump when the plan (keys, seeds, order) changes: it is part of every spec hash
FORMATS = ("jpg", "png")
CAPTION_FIELDS = ("captions", "per_caption", "prompt_template")
TEMPLATE_FIELDS = {"caption", "class"}


class SpecError(ValueError):
    """An invalid generation request; the message names the bad value and the valid ones."""


@dataclass(frozen=True)
class GenerateSpec:
    """Everything that decides what a set *contains*; its hash names the set's directory.

    How it was computed (device, batch size) changes pixels only numerically and is recorded per shard
    instead, so sets rendered on different machines from one spec share an address.
    """

    task: str
    generator: str = "sd15"  # sd15 | tiny | reference
    model: str = SD15_ID  # Hub id or local directory (sd15), "tiny", or the image folder (reference)
    revision: str | None = None
    scheduler: str = "pndm"
    steps: int = 50
    guidance: float = 7.5
    size: int = 512  # 0 = the reference images' own size
    negative_prompt: str = ""
    safety_checker: bool = True
    dtype: str = "fp16"
    per_class: int = 8
    seed: int = 0
    image_format: str = "jpg"
    jpeg_quality: int = 95
    shard_size: int = 64  # ~10 MB of 512² JPEGs: fine-grained resume and multi-GPU balance
    plan_version: int = PLAN_VERSION
    # Rendering from a caption set (`--captions`; per_class is then 0). Left out of the dict, hence the hash,
    # when unused: sets of class prompts keep the addresses they had before caption sets existed.
    captions: str | None = None  # the caption set's full spec hash: the images are a function of its captions
    per_caption: int | None = None
    prompt_template: str | None = None  # "{caption}", "{caption}, a photo of a {class}", ...

    def to_dict(self) -> dict:
        d = asdict(self)
        if all(d[k] is None for k in CAPTION_FIELDS):
            for k in CAPTION_FIELDS:
                del d[k]
        return d

    @property
    def hash(self) -> str:
        return spec_hash(self.to_dict())


def resolve_spec(
    task: str,
    *,
    model: str = "sd15",
    per_class: int | None = None,
    steps: int = 50,
    guidance: float = 7.5,
    scheduler: str = "pndm",
    size: int | None = None,
    negative_prompt: str = "",
    safety_checker: bool | None = None,
    dtype: str = "auto",
    seed: int = 0,
    image_format: str = "jpg",
    jpeg_quality: int = 95,
    shard_size: int = 64,
    revision: str | None = None,
    device: torch.device | None = None,
    captions: CaptionSet | None = None,
    per_caption: int = 10,
    prompt_template: str = "{caption}",
) -> GenerateSpec:
    """Validate a request and fill the defaults that depend on the generator and device.

    ``model``: ``sd15`` (the SD v1.5 Hub id), ``tiny``, ``reference:DIR``, a Hub id or a local directory.
    ``captions``: render ``per_caption`` images of each caption of this (loaded, verified) caption set, prompted
    with ``prompt_template``, instead of ``per_class`` images of each class prompt.
    """
    try:
        catalog.get_task(task)
    except catalog.UnknownTaskError as e:
        raise SpecError(str(e)) from e
    if scheduler not in SCHEDULERS:
        raise SpecError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if image_format not in FORMATS:
        raise SpecError(f"unknown image format {image_format!r}; choose jpg or png")
    for name, value in (("--per-class", per_class), ("--steps", steps), ("--shard-size", shard_size)):
        if value is not None and value <= 0:
            raise SpecError(f"{name} must be positive, got {value}")
    if size is not None and (size < 0 or size % 8):
        raise SpecError(f"--size must be a positive multiple of 8, got {size}")
    if guidance < 0:
        raise SpecError(f"--guidance must be >= 0, got {guidance}")
    if not 1 <= jpeg_quality <= 100:
        raise SpecError(f"--jpeg-quality must be in 1..100, got {jpeg_quality}")
    device = device or default_device()

    common = dict(task=task, per_class=per_class or catalog.default_per_class(task), seed=seed,
                  image_format=image_format, jpeg_quality=jpeg_quality, shard_size=shard_size)
    if captions is not None:
        common.update(_caption_fields(task, captions, per_class, per_caption, prompt_template))
    if model.startswith("reference:"):
        folder = Path(model.removeprefix("reference:")).expanduser().resolve()
        # Nothing is rendered: the diffusion settings do not apply and are fixed so they cannot split the hash.
        return GenerateSpec(generator="reference", model=str(folder), scheduler="none", steps=0, guidance=0.0,
                            size=size or 0, safety_checker=False, dtype="none", **common)
    if dtype == "auto":
        dtype = "fp16" if device.type == "cuda" and model != "tiny" else "fp32"
    if dtype not in DTYPES:
        raise SpecError(f"unknown dtype {dtype!r}; choose fp16, bf16 or fp32 (or auto)")
    if dtype == "fp16" and device.type != "cuda":
        raise SpecError("--dtype fp16 needs a GPU; use --dtype fp32 on CPU")
    if model == "tiny":
        return GenerateSpec(generator="tiny", model="tiny", scheduler=scheduler, steps=steps, guidance=guidance,
                            size=size or TINY_SIZE, negative_prompt=negative_prompt,
                            safety_checker=bool(safety_checker), dtype=dtype, **common)
    return GenerateSpec(generator="sd15", model=SD15_ID if model == "sd15" else model, revision=revision,
                        scheduler=scheduler, steps=steps, guidance=guidance, size=size or 512,
                        negative_prompt=negative_prompt,
                        safety_checker=True if safety_checker is None else safety_checker, dtype=dtype, **common)


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def sample_seed(base_seed: int, key: str) -> int:
    """A 63-bit seed per sample from the base seed and the key: independent noise for every image."""
    return int.from_bytes(hashlib.sha256(f"{base_seed}:{key}".encode()).digest()[:8], "big") >> 1


def _caption_fields(task: str, captions: CaptionSet, per_class: int | None, per_caption: int, template: str) -> dict:
    """The spec fields of a render from ``captions``, validated."""
    if captions.task != task:
        raise SpecError(f"the caption set {captions.path} holds captions of {captions.task}, not {task}")
    if per_class is not None:
        raise SpecError("--per-class does not apply with --captions: the images per caption are --per-caption")
    if per_caption <= 0:
        raise SpecError(f"--per-caption must be positive, got {per_caption}")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise SpecError(f"--prompt-template {template!r}: {e}") from e
    if "caption" not in fields or not fields <= TEMPLATE_FIELDS:
        raise SpecError(f"--prompt-template {template!r} must contain {{caption}} and no field but {{caption}} and "
                        "{class}, e.g. '{caption}, a photo of a {class}'")
    return dict(per_class=0, captions=captions.spec_hash, per_caption=per_caption, prompt_template=template)


def plan(spec: GenerateSpec, captions: CaptionSet | None = None) -> list[PlanRow]:
    """Every sample of the set, class-major: ``per_class`` instances of each class in label order; or, for a
    spec of a caption set (given as ``captions``), ``per_caption`` images of each of its captions in set order."""
    if spec.captions is not None:
        return caption_plan(spec, captions)
    task = catalog.get_task(spec.task)
    rows = []
    for c, name in enumerate(task.classnames):
        for i in range(spec.per_class):
            key = f"{spec.task}-{c:04d}-{i:04d}"
            rows.append(PlanRow(key, c, name, task.prompt(c), sample_seed(spec.seed, key), i))
    return rows


def caption_plan(spec: GenerateSpec, captions: CaptionSet | None) -> list[PlanRow]:
    """Image j of the caption keyed K is keyed ``K-jjjj`` with its own seed; ``instance`` counts the class's images
    (which real image the reference generator takes)."""
    if captions is None or captions.spec_hash != spec.captions:
        raise SpecError(f"this set renders the caption set {spec.captions}; pass that caption set (--captions)")
    rows, seen = [], Counter()
    for index, record in enumerate(captions.records):
        prompt = spec.prompt_template.format_map({"caption": record.caption, "class": record.class_name})
        for j in range(spec.per_caption):
            key = f"{record.key}-{j:04d}"
            rows.append(PlanRow(key, record.class_index, record.class_name, prompt, sample_seed(spec.seed, key),
                                seen[record.class_index], record.caption, index))
            seen[record.class_index] += 1
    return rows


def make_generator(spec: GenerateSpec, device: torch.device, *, allow_download: bool = False,
                   speedups: Speedups = Speedups()) -> Generator:
    if spec.generator == "reference":
        return ReferenceGenerator(Path(spec.model), catalog.get_task(spec.task).classnames, spec.seed, spec.size)
    if spec.generator == "tiny":
        pipe = build_tiny_pipeline(SD15_SCHEDULER_CONFIG, safety_checker=spec.safety_checker)
        if spec.dtype != "fp32":
            pipe = pipe.to(dtype=DTYPES[spec.dtype])
    else:
        pipe = load_sd15(spec.model, revision=spec.revision, dtype=spec.dtype,
                         safety_checker=spec.safety_checker, allow_download=allow_download)
    set_scheduler(pipe, spec.scheduler)
    return DiffusersGenerator(pipe, steps=spec.steps, guidance=spec.guidance, size=spec.size,
                              negative_prompt=spec.negative_prompt, device=device, speedups=speedups)


def encode(image: Image.Image, spec: GenerateSpec) -> bytes:
    buf = io.BytesIO()
    if spec.image_format == "png":
        image.save(buf, format="PNG")
    else:
        image.save(buf, format="JPEG", quality=spec.jpeg_quality)
    return buf.getvalue()


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("gift-cl", "torch", "diffusers", "transformers", "open_clip_torch", "webdataset", "pyarrow", "pillow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def render_record(device: torch.device, dtype: str, batch_size: int) -> dict:
    """How a shard was computed, as its record keeps it (numerics, not meaning: never part of a spec)."""
    render = {"device": device_name(device), "dtype": dtype, "batch_size": batch_size}
    if device.type == "cpu":  # CPU kernels reduce in a thread-count-dependent order
        render["threads"] = torch.get_num_threads()
    return render


class Progress:
    """Hooks for a progress display (the CLI's rich bar); the default does nothing."""

    def start(self, total: int, already_done: int) -> None: ...
    def advance(self, images: int) -> None: ...
    def shard_done(self, record: ShardRecord, render_s: float, write_s: float) -> None: ...


@dataclass
class GenerateResult:
    set_path: Path
    manifest: dict | None  # rank 0 only
    rendered_shards: list[int] = field(default_factory=list)
    skipped_shards: list[int] = field(default_factory=list)
    render_seconds: float = 0.0
    write_seconds: float = 0.0  # encoding, hashing, tar and parquet writing


def generate(
    spec: GenerateSpec,
    out: str | os.PathLike,
    *,
    batch_size: int = 16,
    device: torch.device | None = None,
    progress: Progress | None = None,
    allow_download: bool = False,
    generator: Generator | None = None,
    speedups: Speedups = Speedups(),
    captions: CaptionSet | None = None,
) -> GenerateResult:
    """Render (or finish) the set of ``spec`` under ``out``; returns where it is and what was done.

    ``generator`` reuses an already loaded generator (benchmarks); by default it is built from the spec,
    and only when some shard actually needs rendering. ``captions``: the caption set a spec made with
    ``--captions`` renders.
    """
    if batch_size <= 0:
        raise SpecError(f"--batch-size must be positive, got {batch_size}")
    dist = Dist.from_env()
    device = device or default_device()
    progress = progress or Progress()
    # gloo only coordinates (barriers); rendering never communicates. The long timeout lets ranks that
    # finish early wait for the slowest one.
    own_group = dist.init(torch.device("cpu"))

    rows = plan(spec, captions)
    shards = [rows[i : i + spec.shard_size] for i in range(0, len(rows), spec.shard_size)]
    out_set = SetWriter(set_dir(out, spec.task, spec.hash), spec.to_dict(), len(shards), len(rows), library_versions())
    if dist.rank == 0:
        out_set.open()
    try:  # every node must write into this very directory: refused here, before anything is rendered
        dist.check_shared(out_set.path, "OUT", "nothing was rendered")
    except RankStoppedError:
        if dist.rank == 0:
            out_set.remove_if_empty()
        raise

    result = GenerateResult(out_set.path, None)
    todo = []
    for i in range(dist.rank, len(shards), dist.world):
        if out_set.finished(i):
            result.skipped_shards.append(i)
        else:
            todo.append(i)
    progress.start(sum(len(shards[i]) for i in todo), sum(len(shards[i]) for i in result.skipped_shards))
    if todo:
        log.info("rank %d: rendering %d shard(s) of %s (%d already done)", dist.rank, len(todo), out_set.path, len(result.skipped_shards))
        try:
            generator = generator or make_generator(spec, device, allow_download=allow_download, speedups=speedups)
        except BaseException:
            if dist.rank == 0:
                out_set.remove_if_empty()
            raise
        render = render_record(device, spec.dtype, batch_size)
        if speedups.names and spec.generator != "reference":
            render["speedups"] = speedups.names
        for i in todo:
            record = _render_shard(generator, spec, out_set, i, shards[i], batch_size, render, progress, result)
            result.rendered_shards.append(i)
            if record.flagged:
                log.warning("shard %06d: %d of %d images flagged by the safety checker (recorded, not stored)",
                            i, record.flagged, len(shards[i]))
            if dist.rank == 0:
                out_set.write_manifest()
    dist.barrier()
    if dist.rank == 0:
        result.manifest = out_set.write_manifest()
    if own_group:
        torch.distributed.destroy_process_group()
    return result


def _render_shard(generator: Generator, spec: GenerateSpec, out_set: SetWriter, index: int, rows: list[PlanRow],
                  batch_size: int, render: dict, progress: Progress, result: GenerateResult) -> ShardRecord:
    render_s = write_s = 0.0
    ext = spec.image_format
    with out_set.shard(index, render) as writer:
        for b in range(0, len(rows), batch_size):
            batch = rows[b : b + batch_size]
            t0 = time.perf_counter()
            images = generator.render(batch)
            t1 = time.perf_counter()
            for row, image in zip(batch, images, strict=True):
                meta = {**row.as_row(), "task": spec.task, "spec_hash": spec.hash}
                writer.add(row.as_row(), None if image is None else encode(image, spec), ext, meta)
            write_s += time.perf_counter() - t1
            render_s += t1 - t0
            progress.advance(len(batch))
        t0 = time.perf_counter()
        record = writer.commit()
        write_s += time.perf_counter() - t0
    result.render_seconds += render_s
    result.write_seconds += write_s
    progress.shard_done(record, render_s, write_s)
    log.info("shard %06d done: %d images, %.1f MB, render %.1fs, encode+write %.2fs (%.1f%%)", index,
             record.samples, record.bytes / 1e6, render_s, write_s, 100 * write_s / max(render_s, 1e-9))
    return record
