"""The shard sets of an order's replay pool: found, missing or incomplete, and the command that renders the rest.

Training takes the pool as one spec family (``replay.synthetic.find_pool_sets``); when it would find every set,
each is checked as training checks it (``verify_set``, checksums). Otherwise the sets are looked up where `gift
generate --order` puts them, with the options of the sets already there (or the doctor's ``--model``), so the fix
renders exactly the missing ones and finishes the partial ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.datasets import catalog
from pipeline.generation.order import generate_flags, model_option, pool_sets, spec_options
from pipeline.replay.synthetic import find_pool_sets, spec_family, spec_filter
from shards.errors import ShardSetError
from shards.manifest import find_sets, load_manifest
from shards.verify import verify_set

from .findings import OK, Finding

JPEG_BYTES_PER_PIXEL = 0.6  # 512² JPEGs at quality 95 are about 160 kB (PNG: about 3x)


@dataclass(frozen=True)
class PoolState:
    findings: list[Finding]
    images_to_render: int
    bytes_to_write: float  # disk the missing images take (estimated)
    generator: str  # sd15 | tiny | reference: what rendering costs
    steps: int  # denoising steps of the renders
    model: str  # `gift generate --model` of the pool's sets (whose weights rendering needs)


def _families(root: Path, tasks: list[str], family: str | None, generator: str | None) -> dict[str, dict[str, dict]]:
    """family -> task -> manifest, for the class-prompt sets under ``root`` training would accept."""
    accept = spec_filter(family, generator)
    found: dict[str, dict[str, dict]] = {}
    for path in find_sets(root):
        try:
            manifest = load_manifest(path)
        except ShardSetError:
            continue  # an unreadable manifest is `gift shards verify`'s to report; generate redoes the set
        if manifest["task"] in tasks and accept(manifest):
            found.setdefault(spec_family(manifest["spec"]), {})[manifest["task"]] = manifest
    return found


def check_pool(order: str, root: Path, *, family: str | None, generator: str | None, model: str,
               make_hint: str = "") -> PoolState:
    """Findings for every pool set of ``order`` under ``root``; ``model``: `gift generate --model` for sets of which
    none exist yet; ``make_hint``: the make command that does the same, appended to the fix."""
    tasks = catalog.pool_tasks(order)
    families = _families(root, tasks, family, generator) if root.is_dir() else {}
    try:
        sets = find_pool_sets(root, tasks, family, generator) if families else None
    except ShardSetError as e:
        if "several generator specs" in str(e):  # training would refuse: a choice only the user can make
            return PoolState([Finding("pool", "pool sets", "ambiguous", str(e),
                                      f"pass --shard-family with one of {', '.join(families)}")], 0, 0.0, "sd15", 0, model)
        sets = None
    if sets is not None:
        findings = []
        for task, path in sets.items():
            report = verify_set(path, deep=False)
            manifest = load_manifest(path)
            if report.ok:
                findings.append(Finding("pool", task, OK, f"{manifest['samples']:,} images, {path}"))
            else:
                findings.append(Finding("pool", task, "incomplete", "; ".join(report.problems)[:300],
                                        _fix(order, root, spec_options(manifest["spec"]), make_hint)))
        if all(f.status == OK for f in findings):
            spec = load_manifest(next(iter(sets.values())))["spec"]
            return PoolState(findings, 0, 0.0, spec["generator"], spec["steps"], model_option(spec))

    # the family with the most sets (none: the doctor's --model) decides the options of the missing ones
    best = max(families.values(), key=len, default={})
    options = spec_options(next(iter(best.values()))["spec"]) if best else {"model": model}
    try:
        expected = pool_sets(order, root, **options)
    except ValueError as e:  # e.g. --model names a directory that does not exist
        return PoolState([Finding("pool", "pool sets", "unknown", str(e), "fix --model")], 0, 0.0, "sd15", 0, model)
    findings, to_render, stored_bytes, stored_images = [], 0, 0.0, 0
    fix = _fix(order, root, options, make_hint)
    for s in expected:
        manifest = best.get(s.task)
        if s.complete:
            findings.append(Finding("pool", s.task, OK, f"{s.stored:,} images, {s.path}"))
        elif s.status == "partial":  # partial, or a shard lost or damaged since: generate redoes those shards
            shown = "; ".join(s.problems)
            findings.append(Finding("pool", s.task, "incomplete", f"{s.stored:,} of {s.planned:,} images, {s.path}"
                                    + (f" ({shown[:200]})" if shown else ""), fix))
            to_render += max(s.planned - s.stored, s.spec.shard_size if s.problems else 0)
        elif manifest is not None:  # the family's set for this task has another per-class count
            findings.append(Finding("pool", s.task, OK if manifest["complete"] else "incomplete",
                                    f"{manifest['samples']:,} of {manifest['planned_samples']:,} images",
                                    "" if manifest["complete"] else fix))
        else:
            findings.append(Finding("pool", s.task, "missing", f"{s.planned:,} images to render", fix))
            to_render += s.planned
        if manifest is not None:
            stored_bytes += manifest["bytes"]
            stored_images += manifest["samples"]
    spec = expected[0].spec
    per_image = (stored_bytes / stored_images if stored_images else
                 JPEG_BYTES_PER_PIXEL * (spec.size or 256) ** 2 * (1 if spec.image_format == "jpg" else 3))
    return PoolState(findings, to_render, to_render * per_image, spec.generator, spec.steps, options["model"])


def _fix(order: str, root: Path, options: dict, make_hint: str) -> str:
    flags = generate_flags(options)
    command = f"gift generate --order {order} --out {root}" + (f" {flags}" if flags else "")
    return command + (f" (or {make_hint})" if make_hint else "") + "; re-running it resumes"
