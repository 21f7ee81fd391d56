"""The synthetic stream of stage 2: which rendered images task t replays, decoded once into memory.

For task t of an order, the pool is the order's base set (ImageNet, or ``mini-base``) + tasks 1..t−1 (in CIL: the
base names + the classes of steps 1..t−1, from the dataset's set; see ``Protocol.pools``). The
per-task budget draws pool classes uniformly with replacement and, per class, takes images not yet used in
this run first. The draw is a pure function of the seed and the pool's shard records, so a resumed run
replays exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shards.errors import ShardSetError
from shards.layout import parquet_path, spec_hash, tar_path
from shards.manifest import IMAGES, find_sets, load_manifest, read_rows, set_kind
from shards.reader import iter_shard
from shards.verify import verify_set

log = logging.getLogger("gift.synthetic")


@dataclass(frozen=True)
class SampleRef:
    task: str
    shard: int
    key: str


@dataclass
class SyntheticBatchSource:
    """One task's synthetic draw in memory: uint8 images [N,3,S,S], token ids [N,L] (trimmed after the draw's
    longest prompt, L ≤ 77), prompts."""

    images: torch.Tensor
    tokens: torch.Tensor
    prompts: list[str]

    def __len__(self) -> int:
        return len(self.prompts)


# What a set renders rather than how: left out of the family with the task. Renders of caption sets (the caption set's
# hash, images per caption, prompt template) then share a family across tasks, and with class-prompt sets of the same
# generator settings.
NOT_FAMILY = ("task", "per_class", "captions", "per_caption", "prompt_template")


def spec_family(spec: dict) -> str:
    """What must agree across the pool's sets: the generator spec without task, per-class count and caption fields
    (a class-prompt set's family is unchanged by them: its spec has none)."""
    return spec_hash({k: v for k, v in spec.items() if k not in NOT_FAMILY})[:16]


def spec_filter(family: str | None = None, generator: str | None = None) -> Callable[[dict], bool]:
    """Which sets a run's pool may use (a manifest -> bool): of spec family ``family`` and of generator
    ``generator`` (``sd15``, ``tiny``, or ``reference``: real images); None accepts any. The same test picks
    local sets and the sets fetched from a store. Caption sets (``gift caption``) hold no images, and images rendered
    from captions are no class-prompt set (``--replay-captions`` and CLTS find those, ``replay.captioned``): neither
    is ever a class-prompt pool set."""
    return lambda m: (set_kind(m["spec"]) == IMAGES and "captions" not in m["spec"]
                      and family in (None, spec_family(m["spec"])) and generator in (None, m["spec"].get("generator")))


def find_pool_sets(root: Path, tasks: Sequence[str], family: str | None = None,
                   generator: str | None = None) -> dict[str, Path]:
    """The set of each pool task, all made with one generator spec; clear errors otherwise.

    ``family`` picks one spec family by hash; ``generator`` keeps the sets of one generator (``sd15``, ``tiny``,
    or ``reference``: real images, the paper's "real instead of synthetic" ablation).
    """
    accept = spec_filter(family, generator)
    by_family: dict[str, dict[str, Path]] = {}
    for path in find_sets(Path(root)):
        manifest = load_manifest(path)
        if manifest["task"] in tasks and accept(manifest):
            by_family.setdefault(spec_family(manifest["spec"]), {})[manifest["task"]] = path
    complete = {f: s for f, s in by_family.items() if all(t in s for t in tasks)}
    if len(complete) == 1:
        return next(iter(complete.values()))
    if len(complete) > 1:
        listing = "; ".join(f"{f}: {load_manifest(next(iter(s.values())))['spec']['model']}" for f, s in complete.items())
        raise ShardSetError(f"shard sets under {root} come from several generator specs ({listing}); "
                            "choose one with --shard-family")
    best = max(by_family.values(), key=len, default={})
    missing = [t for t in tasks if t not in best]
    hint = " ; ".join(f"make generate TASK={t}" for t in missing)
    raise ShardSetError(f"no shard set under {root} for {', '.join(missing)} (made with the same generator spec as "
                        f"the other pool sets); render them first: {hint}")


# What a pool set's images are, by its generator: the words every report and table row uses for what was replayed.
REPLAYED = {"sd15": "SD renders", "tiny": "tiny-SD renders", "reference": "real images"}
REPLAY_RECORD = "replay.json"


def write_replay_record(run_dir: Path, sets: Mapping[str, Path]) -> None:
    """``replay.json`` in the run directory: the set each pool task's images come from and its generator, from which
    the report and ``gift table`` say what the run replayed (``replayed``)."""
    from shards.layout import atomic_write_bytes

    record = {"sets": {task: {"path": str(path), "generator": load_manifest(path)["spec"].get("generator")}
                       for task, path in sets.items()}}
    atomic_write_bytes(Path(run_dir) / REPLAY_RECORD, (json.dumps(record, indent=1) + "\n").encode())


def replayed(run_dir: Path) -> str | None:
    """What the run's pool sets hold, from its ``replay.json``: "SD renders", "tiny-SD renders", "real images" (the
    `reference` generator), several joined by " + "; None when the run recorded none."""
    path = Path(run_dir) / REPLAY_RECORD
    if not path.exists():
        return None
    generators = [s["generator"] for s in json.loads(path.read_text())["sets"].values()]
    return " + ".join(dict.fromkeys(REPLAYED.get(g, f"{g} images") for g in generators)) or None


def verify_pool(sets: dict[str, Path]) -> None:
    """Checksums of every pool set (once per run): a corrupt or incomplete set stops training before it starts."""
    for task, path in sets.items():
        report = verify_set(path, deep=False)
        if not report.ok:
            raise ShardSetError(f"shard set of {task} at {path} is not usable: {'; '.join(report.problems)}")


def class_images(sets: dict[str, Path]) -> dict[tuple[str, int], list[SampleRef]]:
    """(task, class index) -> its stored samples, in plan order (flagged ones excluded)."""
    out: dict[tuple[str, int], list[SampleRef]] = {}
    for task, path in sets.items():
        manifest = load_manifest(path)
        for shard in manifest["shards"]:
            for row in read_rows(parquet_path(path, shard["index"])):
                if row["status"] == "ok":
                    out.setdefault((task, row["class_index"]), []).append(SampleRef(task, shard["index"], row["key"]))
    return out


def class_label(task: str, index: int) -> str:
    """'cil-cifar100 3 (apple)': a pool class by set, index and name (the index alone for a set the catalog lacks)."""
    from pipeline.datasets import catalog

    try:
        return f"{task} {index} ({catalog.get_task(task).classnames[index]})"
    except (KeyError, ValueError, IndexError):
        return f"{task} {index}"


def draw_schedule(pools: Sequence[Sequence[tuple[str, int]]], images: dict[tuple[str, int], list[SampleRef]],
                  budget: int, seed: int) -> list[list[SampleRef]]:
    """The synthetic draw of every step, from its pool of (set, class) pairs (``Protocol.pools``: MTIL task t's is
    the base set + tasks 1..t-1; CIL step t's the base names + the classes of steps 1..t-1).

    Classes uniformly with replacement over the pool; per class, a seeded shuffle of its images consumed in
    turn across the whole run (unused images first), reshuffled when exhausted. A pool class with no image (every
    render of it flagged, or a set rendered for fewer classes) cannot be drawn: it leaves the pool, and one warning
    names every such class of the run.
    """
    empty = list(dict.fromkeys(cls for pool in pools for cls in pool if not images.get(cls)))
    if empty:
        log.warning("the pool sets have no image of %d class%s, which the replay therefore leaves out: %s", len(empty),
                    "" if len(empty) == 1 else "es", ", ".join(class_label(*cls) for cls in empty))
    rng = np.random.default_rng(seed)
    queues: dict[tuple[str, int], list[SampleRef]] = {}
    schedule = []
    for pool in pools:
        classes = [cls for cls in pool if images.get(cls)]
        picks = rng.integers(len(classes), size=budget)
        drawn = []
        for k in picks:
            cls = classes[k]
            if not queues.get(cls):
                queues[cls] = [images[cls][i] for i in rng.permutation(len(images[cls]))]
            drawn.append(queues[cls].pop(0))
        schedule.append(drawn)
    return schedule


def load_draw(sets: dict[str, Path], refs: Sequence[SampleRef], transform, tokenizer) -> SyntheticBatchSource:
    """Decode and preprocess the drawn samples once (each shard read once), in draw order."""
    wanted: dict[tuple[str, int], set[str]] = {}
    for ref in refs:
        wanted.setdefault((ref.task, ref.shard), set()).add(ref.key)
    decoded: dict[str, tuple[torch.Tensor, str]] = {}
    for (task, shard), keys in sorted(wanted.items()):
        for sample in iter_shard(tar_path(sets[task], shard)):
            if sample.key in keys:
                decoded[sample.key] = (transform(sample.pil()), sample.meta["prompt"])
    prompts = [decoded[r.key][1] for r in refs]
    return SyntheticBatchSource(torch.stack([decoded[r.key][0] for r in refs]), tokenizer(prompts), prompts)
