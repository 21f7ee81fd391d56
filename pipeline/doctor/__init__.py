"""`gift doctor`: everything a real run of an order needs, checked at once, every problem listed with its fix.

    weights   SD v1.5, CLIP, BLIP (weights.py: a list of entries, each the loader's own look-up)
    datasets  every dataset of the order (datasets.required, `gift data check`'s checks)
    pool      the order's replay sets: found / missing / incomplete (pool.py)
    disk      free space for the pool, the test-set cache and a run's checkpoints (cost.py)
    gpu       the GPUs torch sees, their memory (cost.py)
    cost      images to render, training steps, GPU-hours at least (cost.py, from the benchmark's FLOP counts)

Nothing is loaded or downloaded: weights are looked up in the cache, datasets listed, sets' checksums read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.datasets import catalog
from pipeline.datasets.required import check_order, order_datasets
from pipeline.datasets.splits import task_dataset
from pipeline.training.config import TrainConfig

from .cost import Cost, Gpu, check_disk, check_gpus, estimate, visible_gpus
from .findings import NOTE, OK, Finding
from .pool import check_pool
from .weights import check_weights, weight_entries

__all__ = ["Diagnosis", "Finding", "diagnose"]


@dataclass(frozen=True)
class Diagnosis:
    order: str
    findings: list[Finding]
    cost: Cost
    steps: dict[str, int]  # training steps per task
    gpus: list[Gpu]

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.problem]


def _dataset_findings(config: TrainConfig) -> tuple[list[Finding], dict[str, int], dict[str, int]]:
    """Findings for the order's datasets and the (train, test) image counts per dataset the cost uses: as found, or
    the full release's where a dataset is missing."""
    from pipeline.datasets import cil, mtil

    names = order_datasets(config.order)
    if not names:  # the mini benchmarks: scikit-learn's digits, in memory
        tasks = ([catalog.get_setting(config.order).dataset] if catalog.is_cil(config.order)
                 else catalog.get_order(config.order))
        train = {t: len(task_dataset(t, "train", None)) for t in tasks}
        test = {t: len(task_dataset(t, "test", None)) for t in tasks}
        return [Finding("datasets", ", ".join(tasks), OK, "built in (scikit-learn's digits)")], train, test
    official = {n: (mtil.official_counts(n) if n in mtil.MTIL_DATASETS else None) or cil.official_counts(n)
                for n in names}
    train = {n: official[n][0] for n in names}
    test = {n: official[n][1] for n in names}
    if config.data_root is None:
        return [Finding("datasets", ", ".join(names), "no data root", f"order {config.order} reads {', '.join(names)}",
                        "pass --data-root DIR (the folder holding them; `gift data check --data-root DIR` lists "
                        "what it holds)")], train, test
    results = check_order(config.order, config.data_root)
    if config.method == "moe-adapter" and config.ddas:  # its autoencoder 0 learns TinyImageNet's train split
        results += cil.check(config.data_root, ["tinyimagenet"])
        train.setdefault("tinyimagenet", 0)
        test.setdefault("tinyimagenet", 0)
    findings = []
    for r in results:
        if r.status == "found":
            train[r.name], test[r.name] = r.counts.get("train", train[r.name]), r.counts.get("test", test[r.name])
            findings.append(Finding("datasets", r.name, OK, f"{train[r.name]:,} train / {test[r.name]:,} test images"
                                    + (f" ({r.detail})" if r.detail else "")))
        else:
            fix = " ".join(r.how_to_get.split()) + f" Expected layout: {' '.join(r.expected_layout.split())}"
            findings.append(Finding("datasets", r.name, r.status, r.detail, fix))
    return findings, train, test


def _evaluated_images(config: TrainConfig, test: dict[str, int]) -> int:
    """Test images evaluated over the run: every test split after every task (MTIL); the seen classes' share of the
    test split after every step (CIL)."""
    if not catalog.is_cil(config.order):
        return len(catalog.get_order(config.order)) * sum(test.values())
    setting = catalog.get_setting(config.order, config.class_order)
    n = test.get(setting.dataset, 0)
    return sum(n * len(setting.seen(k)) // len(setting.classnames) for k in range(len(setting.steps)))


def _test_cache_bytes(config: TrainConfig, test: dict[str, int]) -> float:
    """The decoded test splits `gift train` caches under RUNS/.cache/test (uint8, 3 x S x S; none for mini)."""
    if not order_datasets(config.order):
        return 0.0
    import open_clip

    size = 32 if config.clip_arch == "tiny" else (open_clip.get_model_config(config.clip_arch) or {}).get(
        "vision_cfg", {}).get("image_size", 224)
    cached = Path(config.runs) / ".cache" / "test"
    return float(sum(n * 3 * size * size for name, n in test.items() if not any(cached.glob(f"{name}-{size}-*.npy"))))


def diagnose(config: TrainConfig, *, model: str = "sd15", captioner: str = "blip", make_hint: str = "") -> Diagnosis:
    """Check everything ``config``'s run needs (its order, data root, shards root, CLIP, method), plus the SD weights
    (``model``) that render its pool and the captioner of `gift caption`; ``make_hint``: the make command the pool's
    fix also names."""
    from shards.store import is_url

    findings, train, test = _dataset_findings(config)
    if is_url(config.shards):
        pool = None
        findings.append(Finding("pool", "store", NOTE, f"the sets are fetched from {config.shards} when training "
                                "starts; `gift shards ls URL` lists what it holds"))
        images, generator, render_steps, pool_bytes = 0, "sd15", 50, 0.0
    else:
        pool = check_pool(config.order, Path(config.shards), family=config.shard_family,
                          generator=config.replay_generator, model=model, make_hint=make_hint)
        findings += pool.findings
        images, generator, render_steps, pool_bytes = (pool.images_to_render, pool.generator, pool.steps,
                                                       pool.bytes_to_write)
    captions = config.method == "clts" or config.replay_captions or config.order.startswith("seq-")
    # the generator of the sets already there decides what rendering the rest needs (reference images: no weights)
    ddas = config.method == "moe-adapter" and bool(config.ddas)
    weights = check_weights(weight_entries(pool.model if pool is not None else model, config.clip_arch,
                                           config.clip_weights, captioner, captions_needed=captions,
                                           alexnet=config.alexnet_weights or "imagenet" if ddas else None))
    if pool is not None and images == 0:  # every set is rendered: SD is not needed by this run
        weights = [w if w.status == OK or not w.name.startswith("Stable Diffusion") else
                   Finding(w.section, w.name, NOTE, "not needed: every pool set is rendered", w.fix) for w in weights]
    gpus = visible_gpus()
    cost, steps = estimate(config, images, generator, render_steps, train, _evaluated_images(config, test), gpus)
    needs = {Path(config.runs): _test_cache_bytes(config, test) + cost.checkpoint_bytes}
    if pool is not None:
        needs[Path(config.shards)] = needs.get(Path(config.shards), 0.0) + pool_bytes
    findings = [*weights, *findings, *check_disk(needs), *check_gpus(gpus, mini=not order_datasets(config.order))]
    return Diagnosis(config.order, findings, cost, steps, gpus)
