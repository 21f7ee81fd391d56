"""A whole order's replay pool in one command (``gift generate --order II``): every stage-1 set its training reads.

The sets are ``catalog.pool_tasks(order)`` (the list training's ``Protocol.pool_sets`` is), each resolved with the
same options into its own spec; training later finds them as one spec family (``replay.synthetic``). Finished
sets are skipped, a partial one is finished shard by shard (``generate`` resumes), so the command is resumable by
re-running it, under torchrun as single-task generation is.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.datasets import catalog
from pipeline.dist import Dist
from shards.layout import MANIFEST, set_dir
from shards.manifest import load_manifest
from shards.verify import verify_set

from .generate import GenerateResult, GenerateSpec, Progress, generate, make_generator, plan, resolve_spec
from .generators import SD15_ID, Speedups


@dataclass(frozen=True)
class PoolSet:
    """One set of the pool: where it goes and how far it is (from its manifest; none yet: nothing rendered)."""

    task: str
    spec: GenerateSpec
    path: Path
    planned: int  # images the set's plan holds
    stored: int  # images in its finished shards (flagged ones are recorded, not stored)
    complete: bool  # every shard finished and its checksum as recorded
    problems: tuple[str, ...] = ()  # what `gift shards verify` finds wrong (a lost or damaged shard)

    @property
    def status(self) -> str:
        """``done``, ``partial`` (some shards finished, or one lost since) or ``to do``."""
        if self.complete:
            return "done"
        return "partial" if self.path.joinpath(MANIFEST).exists() else "to do"


def pool_sets(order: str, out: str | os.PathLike, **spec_options) -> list[PoolSet]:
    """The pool sets of ``order`` under ``out``, each as ``resolve_spec(task, **spec_options)`` makes it, and how far
    each is (its manifest, and the checksums of a complete one); nothing is rendered. ``spec_options`` are single-task generation's (model, per_class, steps, size, ...); a ``per_class``
    applies to every set (default: each set's own, ``gift tasks``)."""
    catalog.get_order(order)  # an unknown order fails with the list of valid ones
    found = []
    for task in catalog.pool_tasks(order):
        spec = resolve_spec(task, **spec_options)
        path = set_dir(out, task, spec.hash)
        manifest = load_manifest(path) if (path / MANIFEST).exists() else None
        # checksums of a set its manifest calls complete (training checks the same): a shard lost since is redone
        problems = tuple(verify_set(path, deep=False).problems) if manifest else ()
        found.append(PoolSet(task, spec, path, len(plan(spec)), manifest["samples"] if manifest else 0,
                             bool(manifest and manifest["complete"]) and not problems, problems))
    return found


def render_pool(sets: list[PoolSet], out: str | os.PathLike, *, batch_size: int = 16, device: torch.device,
                progress_for: Callable[[PoolSet], Progress] = lambda s: Progress(), allow_download: bool = False,
                speedups: Speedups = Speedups(),
                on_done: Callable[[PoolSet, GenerateResult, Progress], None] = lambda s, r, p: None,
                ) -> list[GenerateResult]:
    """Render every set of ``sets`` that is not done, in order; the diffusion pipeline is loaded once for all of them
    (only the reference generator depends on the task: it is built per set). ``progress_for`` makes each set's
    progress (closed by its ``stop`` if it has one), ``on_done`` sees each rendered set with it."""
    dist = Dist.from_env()
    # one process group for every set (generate() joins it rather than making and ending one per set)
    own_group = dist.init(torch.device("cpu"))
    try:
        return _render_each(sets, out, batch_size=batch_size, device=device, progress_for=progress_for,
                            allow_download=allow_download, speedups=speedups, on_done=on_done)
    finally:
        if own_group:
            torch.distributed.destroy_process_group()


def _render_each(sets, out, *, batch_size, device, progress_for, allow_download, speedups, on_done):
    shared = None
    results = []
    for pool_set in sets:
        if pool_set.complete:
            continue
        spec = pool_set.spec
        if shared is None and spec.generator != "reference":
            shared = make_generator(spec, device, allow_download=allow_download, speedups=speedups)
        progress = progress_for(pool_set)
        try:
            result = generate(spec, out, batch_size=batch_size, device=device, progress=progress,
                              allow_download=allow_download, speedups=speedups,
                              generator=shared if spec.generator != "reference" else None)
            on_done(pool_set, result, progress)
        finally:
            stop = getattr(progress, "stop", None)  # a terminal bar or tracker closes even when rendering fails
            if stop is not None:
                stop()
        results.append(result)
    return results


# Spec field -> `gift generate` option, for the fields a user may set (task, generator and model are the model option).
OPTIONS = {"per_class": "--per-class", "steps": "--steps", "guidance": "--guidance", "scheduler": "--scheduler",
           "size": "--size", "negative_prompt": "--negative-prompt", "safety_checker": "--safety-checker",
           "dtype": "--dtype", "seed": "--seed", "image_format": "--format", "jpeg_quality": "--jpeg-quality",
           "shard_size": "--shard-size", "revision": "--revision"}


def model_option(spec: dict) -> str:
    """``--model`` of a set's spec: sd15, tiny, reference:DIR, or the Hub id / directory it was rendered from."""
    if spec["generator"] == "tiny":
        return "tiny"
    if spec["generator"] == "reference":
        return f"reference:{spec['model']}"
    return "sd15" if spec["model"] == SD15_ID else spec["model"]


def spec_options(spec: dict) -> dict:
    """``resolve_spec`` keyword arguments that render another task's set of the same family as ``spec`` (a set's
    manifest spec): the model, and every option whose value is not the default (``per_class`` only when it is not
    the task's default)."""
    model = model_option(spec)
    # fp16 is the default on a GPU: the defaults are taken where the set was most likely made
    device = torch.device("cuda" if spec.get("dtype") in ("fp16", "bf16") else "cpu")
    default = resolve_spec(spec["task"], model=model, device=device).to_dict()
    options = {"model": model, "device": device}
    for key in OPTIONS:
        if spec.get(key) != default.get(key):
            options[key] = spec.get(key)
    return options


def generate_flags(options: dict) -> str:
    """The `gift generate` options of ``spec_options`` (or of any resolve_spec keywords), e.g. ``--model tiny
    --steps 20``: empty for the defaults."""
    flags = [] if options.get("model", "sd15") == "sd15" else [f"--model {options['model']}"]
    for key, flag in OPTIONS.items():
        if key in options and options[key] is not None:
            value = options[key]
            value = ("on" if value else "off") if key == "safety_checker" else value
            flags.append(f"{flag} {value!r}" if key == "negative_prompt" else f"{flag} {value}")
    return " ".join(flags)
