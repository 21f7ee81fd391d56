"""Where a run finds images rendered from caption sets (CLTS's router data; GIFT's ``--replay-captions`` pool).

A caption set lives under the caption root (``gift caption TASK --out ROOT`` -> ``ROOT/<task>/<hash>/``); the images
rendered from it are an image set under the shard root whose spec holds the caption set's full hash
(``gift generate TASK --captions SET``). For a task, a run takes the one complete caption set of that task under
``--captions`` (or the set ``--captions`` names), verifies it, then the one complete image set rendered from it under
``--shards`` (``--shard-family`` / ``--replay-generator`` choose when there are several). Every miss is an error
naming the `make caption` / `make generate` command that makes what is missing, before any run directory exists.

Spec families (``synthetic.spec_family``) leave the caption fields out, so renders of different tasks' caption
sets with one generator form one family, and the family of a render equals that of a class-prompt set made with the
same generator settings (GIFT's base set beside caption renders).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shards.captions import CaptionSet, caption_bytes, load_caption_set
from shards.errors import ShardSetError
from shards.layout import atomic_write_bytes
from shards.manifest import CAPTIONS, IMAGES, find_sets, load_manifest, set_kind

from .synthetic import find_pool_sets, spec_family


@dataclass(frozen=True)
class CaptionRenders:
    """A verified caption set and the complete image set rendered from it."""

    captions: CaptionSet
    renders: Path
    family: str  # spec_family of the render set

    def bytes_by_class(self) -> dict[int, int]:
        """UTF-8 caption bytes per class index (the set's classes: original labels of a CIL dataset)."""
        out: dict[int, int] = {}
        for r in self.captions.records:
            out[r.class_index] = out.get(r.class_index, 0) + caption_bytes([r.caption])
        return out

    def count_by_class(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for r in self.captions.records:
            out[r.class_index] = out.get(r.class_index, 0) + 1
        return out


def _caption_hint(task: str, root: Path) -> str:
    return f"make caption TASK={task} DATA=<data root> CAPTIONS_OUT={root} (gift caption {task} --out {root})"


def find_caption_set(root: str | Path, task: str) -> CaptionSet:
    """The caption set of ``task``: ``root`` itself when it is a caption set directory, else the one complete caption
    set of the task under ``root/<task>/``; verified (every checksum and caption). Errors say what to run."""
    root = Path(root)
    if (root / "manifest.json").exists():
        chosen = load_caption_set(root)
        if chosen.task != task:
            raise ShardSetError(f"--captions {root} is a caption set of {chosen.task}; this run needs one of {task} "
                                f"(make it with {_caption_hint(task, root.parent.parent)})")
        return chosen
    found = []
    for path in find_sets(root) if root.is_dir() else []:
        manifest = load_manifest(path)
        if manifest["task"] == task and set_kind(manifest["spec"]) == CAPTIONS and manifest["complete"]:
            found.append(path)
    if not found:
        raise ShardSetError(f"no complete caption set of {task} under --captions {root}; make it first: "
                            f"{_caption_hint(task, root)}")
    if len(found) > 1:
        listing = "; ".join(f"{p} ({_caption_summary(load_manifest(p)['spec'])})" for p in found)
        raise ShardSetError(f"several caption sets of {task} under {root}: {listing}. Pass the one to use as "
                            f"--captions {found[0]} (or keep one per root)")
    return load_caption_set(found[0])


def _caption_summary(spec: Mapping) -> str:
    return f"{spec['per_class']} per class, {spec['selection']}, captioner {spec['captioner']}, seed {spec['seed']}"


def find_renders(shards: str | Path, captions: CaptionSet, family: str | None = None,
                 generator: str | None = None) -> CaptionRenders:
    """The complete image set rendered from ``captions`` under ``shards`` (of spec family ``family`` and generator
    ``generator`` when given); the error for a missing one names the `make generate` command."""
    shards = Path(shards)
    found: dict[str, Path] = {}  # by the render's own spec hash: renders of one family may differ in images per
    # caption or prompt template, which the family leaves out
    for path in find_sets(shards) if shards.is_dir() else []:
        manifest = load_manifest(path)
        spec = manifest["spec"]
        if (set_kind(spec) == IMAGES and spec.get("captions") == captions.spec_hash and manifest["complete"]
                and family in (None, spec_family(spec)) and generator in (None, spec.get("generator"))):
            found[manifest["spec_hash"]] = path
    if not found:
        which = "".join(f" of {k} {v}" for k, v in (("family", family), ("generator", generator)) if v)
        raise ShardSetError(f"no complete image set rendered from the caption set {captions.path}{which} under "
                            f"--shards {shards}; render it first: make generate TASK={captions.task} "
                            f"CAPTIONS={captions.path} OUT={shards} (gift generate {captions.task} --captions "
                            f"{captions.path} --out {shards})")
    if len(found) > 1:
        listing = "; ".join(f"{p} (family {spec_family(s)}: {s['model']}, {s['per_caption']} per caption, template "
                            f"{s['prompt_template']!r})" for p, s in ((p, load_manifest(p)["spec"]) for p in found.values()))
        raise ShardSetError(f"the caption set {captions.path} has several renders under {shards}: {listing}; choose one "
                            "with --shard-family or --replay-generator, or keep one per root")
    path = next(iter(found.values()))
    return CaptionRenders(captions, path, spec_family(load_manifest(path)["spec"]))


def check_rendered(renders: CaptionRenders, real_renders: bool, who: str) -> None:
    """Refuse "renders" of the `reference` generator (real images of the class standing in for rendering) as the
    memory of captions unless ``real_renders`` (``--real-renders``, the ablation, recorded in config.json): a run
    replaying real images must say so."""
    if real_renders or load_manifest(renders.renders)["spec"].get("generator") != "reference":
        return
    task, captions = renders.captions.task, renders.captions.path
    raise ShardSetError(f"{who}: the images of the caption set {captions} ({renders.renders}) come from the `reference` "
                        f"generator, real images, not renders of the captions; render them (gift generate {task} "
                        f"--captions {captions} --model sd15), or pass --real-renders to run the real-image ablation")


def caption_pool_sets(shards: str | Path, captions_root: str | Path, pool: Sequence[str], family: str | None = None,
                      generator: str | None = None,
                      real_renders: bool = False) -> tuple[dict[str, Path], dict[str, CaptionRenders]]:
    """GIFT's ``--replay-captions`` pool: ``pool[0]`` (the base set: ImageNet names, which have no training images to
    caption) from class prompts, every other pool set rendered from its task's caption set, all of one spec family;
    caption "renders" of real images only with ``real_renders`` (``check_rendered``).

    Returns (task -> set path for ``synthetic.class_images``, task -> the caption renders used)."""
    renders = {task: find_renders(shards, find_caption_set(captions_root, task), family, generator) for task in pool[1:]}
    for r in renders.values():
        check_rendered(r, real_renders, "--replay-captions")
    families = {r.family for r in renders.values()}
    if len(families) > 1:
        listing = "; ".join(f"{t}: {r.family} ({r.renders})" for t, r in renders.items())
        raise ShardSetError(f"the caption renders of the pool come from several generator specs ({listing}); render "
                            "them alike, or choose one with --shard-family")
    base = find_pool_sets(Path(shards), pool[:1], family or next(iter(families), None), generator)
    return {**base, **{t: r.renders for t, r in renders.items()}}, renders


def write_captions_record(run_dir: Path, renders: Mapping[str, CaptionRenders]) -> dict:
    """``captions.json`` in the run directory: which caption sets and renders a run used, and their captions and UTF-8
    bytes per class, from which the report and ``gift table`` count the memory kept (``caption_memory``). A resumed
    run (the file exists) must find the very sets it was trained on: another caption set or render is refused."""
    sets = {}
    for task, r in renders.items():
        spec = load_manifest(r.renders)
        sets[task] = {"captions": str(r.captions.path), "caption_hash": r.captions.spec_hash,
                      "captioner": r.captions.spec.get("captioner"), "renders": str(r.renders),
                      "render_hash": spec["spec_hash"], "family": r.family, "generator": spec["spec"].get("generator"),
                      "caption_bytes_by_class": {str(c): b for c, b in sorted(r.bytes_by_class().items())},
                      "captions_by_class": {str(c): n for c, n in sorted(r.count_by_class().items())}}
    record = {"sets": sets}
    path = Path(run_dir) / "captions.json"
    if path.exists():  # a resumed run: the same caption sets and renders, wherever --captions now points
        before = json.loads(path.read_text())["sets"]
        changed = [t for t in sorted(set(before) | set(sets)) if
                   {k: before.get(t, {}).get(k) for k in ("caption_hash", "render_hash")} !=
                   {k: sets.get(t, {}).get(k) for k in ("caption_hash", "render_hash")}]
        if changed:
            t = changed[0]
            raise ShardSetError(f"{run_dir} was trained on the caption set {before.get(t, {}).get('captions')} and its "
                                f"render {before.get(t, {}).get('renders')} for {t}; --captions / --shards now give "
                                f"{sets.get(t, {}).get('captions')} and {sets.get(t, {}).get('renders')}. Point them "
                                "at the run's own sets to resume it, or pass --name to start a new run")
    atomic_write_bytes(Path(run_dir) / "captions.json", (json.dumps(record, indent=1) + "\n").encode())
    return record


def caption_memory(run_dir: Path, classes: Mapping[str, Sequence[int] | None]) -> tuple[int, int] | None:
    """(captions, UTF-8 bytes) kept for ``classes`` (task -> class indices; None: every class of its set), from the
    run's ``captions.json``; None when the run has none (it never started)."""
    path = Path(run_dir) / "captions.json"
    if not path.exists():
        return None
    sets = json.loads(path.read_text())["sets"]
    count = size = 0
    for task, wanted in classes.items():
        if task not in sets:
            continue
        by_bytes, by_count = sets[task]["caption_bytes_by_class"], sets[task]["captions_by_class"]
        keys = by_bytes if wanted is None else [str(c) for c in wanted]
        size += sum(by_bytes.get(k, 0) for k in keys)
        count += sum(by_count.get(k, 0) for k in keys)
    return count, size
