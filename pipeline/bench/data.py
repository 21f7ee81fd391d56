"""`make bench`, data rows: what the step's inputs cost on the CPU, against the step rate they must feed.

- Synthetic replay: a task's draw decoded once into uint8 tensors (``synthetic.load_draw``, what training
  does) and indexed per step, vs decoding and preprocessing a 64-image batch of SD-sized JPEGs every step (a
  per-step loader, as in the released code). The shard set is written by the real ``generate`` path.
- Real data: the trainer's loader (``ImageStream`` over the real ``LabeledImages``) with 0..N workers over 512²
  JPEG files, uint8 crops (the trainer's path) vs float crops normalised in the workers.
- Evaluation: ``TestSet`` decodes each test image once per run; decoding for every evaluation costs 11×.
- CIL: the same loader over TinyImageNet's real layout (64² JPEGs read by ``datasets.cil``), the base step's 100
  classes (50,000 images in the full dataset), upscaled to 224 by the crop.

Images are photo-like (smooth colour fields + grain) 512² JPEG-95, the size SD v1.5 renders; their mean
encoded size is printed so the decode cost can be judged.
"""

from __future__ import annotations

import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.datasets import catalog
from pipeline.evaluation.evaluate import TestSet
from pipeline.generation.generate import generate, resolve_spec
from pipeline.models import eval_resize, normalize_uint8, train_transform
from pipeline.models import tokenizer as clip_tokenizer

from .common import seconds, times

STEP_GOAL = 15.0  # GIFT steps/s per H100-class GPU (issue 6)
EVALUATIONS = 11  # one after each task of an MTIL order
CROP = 224  # ViT-B/16's input side


def photo_like(seed: int, size: int) -> Image.Image:
    """A deterministic photo-like RGB image: low-frequency colour fields plus sensor-like grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        channels.append(128 + 90 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase) * np.cos(3 * xx * yy + phase))
    pixels = np.stack(channels, -1) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


class PhotoGenerator:
    """A ``Generator`` that returns photo-like images from a small pool instead of rendering (decode cost
    depends on size and content statistics, not on which image it is)."""

    def __init__(self, size: int, variety: int = 8):
        self.pool = [photo_like(i, size) for i in range(variety)]

    def render(self, rows) -> list[Image.Image]:
        return [self.pool[row.seed % len(self.pool)] for row in rows]


def write_set(root: Path, task: str, per_class: int, size: int) -> Path:
    """A complete shard set of ``task`` with photo-like images at ``size``, through the real writer."""
    cpu = torch.device("cpu")
    spec = resolve_spec(task, model="tiny", size=size, per_class=per_class, shard_size=250, device=cpu)
    return generate(spec, root, batch_size=64, device=cpu, generator=PhotoGenerator(size)).set_path


def bench_synthetic(per_class: int = 100, size: int = 512, batch: int = 64, repeats: int = 3) -> dict:
    """One task's draw (eurosat's 10 classes × ``per_class``) decoded once vs decoded per step."""
    from pipeline.replay.synthetic import class_images, load_draw
    from shards.layout import tar_path
    from shards.manifest import load_manifest
    from shards.reader import iter_shard

    tokenize = clip_tokenizer()
    transform = eval_resize(CROP)
    with tempfile.TemporaryDirectory() as tmp:
        set_path = write_set(Path(tmp), "eurosat", per_class, size)
        manifest = load_manifest(set_path)
        sets = {"eurosat": set_path}
        refs = [r for rs in class_images(sets).values() for r in rs]
        t0 = time.perf_counter()
        source = load_draw(sets, refs, transform, tokenize)
        load_s = time.perf_counter() - t0
        samples = [s for shard in manifest["shards"] for s in iter_shard(tar_path(set_path, shard["index"]))]
    g = torch.Generator().manual_seed(0)

    def cached():
        pick = torch.randperm(len(source), generator=g)[:batch]
        return normalize_uint8(source.images[pick]), source.tokens[pick]

    def per_step():
        picked = [samples[i] for i in torch.randperm(len(samples), generator=g)[:batch].tolist()]
        images = torch.stack([transform(s.pil()) for s in picked])
        return normalize_uint8(images), tokenize([s.meta["prompt"] for s in picked])

    cache_s = min(times(cached, 10 * repeats))
    decode_s = min(times(per_step, repeats))
    return {"images": len(source), "size": size, "batch": batch, "load_s": load_s, "cache_s": cache_s,
            "decode_s": decode_s, "jpeg_kb": manifest["bytes"] / manifest["samples"] / 1e3,
            "cache_mb": source.images.numel() / 1e6}


def jpeg_files(root: Path, n: int, size: int, variety: int = 8) -> list[Path]:
    """``n`` photo-like JPEG-95 files of ``size``² under ``root`` (a few distinct contents, cycled)."""
    blobs = []
    for i in range(variety):
        buf = io.BytesIO()
        photo_like(100 + i, size).save(buf, format="JPEG", quality=95)
        blobs.append(buf.getvalue())
    paths = []
    for i in range(n):
        paths.append(root / f"{i:06d}.jpg")
        paths[-1].write_bytes(blobs[i % variety])
    return paths


def _labeled(paths: list[Path]):
    from pipeline.datasets.mtil import LabeledImages

    task = catalog.get_task("food")
    return LabeledImages("food", "train", task.classnames, [i % task.num_classes for i in range(len(paths))], paths=paths)


LOADER_PATHS = (  # label, transform(uint8?), what it is
    ("uint8", True, "uint8 crops, normalised on the device (the trainer's path)"),
    ("float", False, "float crops normalised in the workers (ToTensor + Normalize; the earlier path)"),
)


def tinyimagenet_base_step(root: Path, per_class: int):
    """A ``tiny-imagenet-200/`` folder with ``per_class`` photo-like 64² JPEGs per wnid, read by the real reader;
    returns the training split of tinyimagenet-5's base step (its first 100 classes, labels 0..99)."""
    from pipeline.datasets.splits import step_dataset

    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    wnids = catalog._load("cil.json")["tinyimagenet_wnids"]
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "val" / "val_annotations.txt").write_text("")
    blobs = []
    for i in range(8):
        buf = io.BytesIO()
        photo_like(200 + i, 64).save(buf, format="JPEG", quality=90)
        blobs.append(buf.getvalue())
    for label, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(per_class):
            (folder / f"{wnid}_{i}.JPEG").write_bytes(blobs[(label + i) % len(blobs)])
    return step_dataset(catalog.get_setting("tinyimagenet-5"), 0, "train", str(root))


def bench_loader(paths: list[Path], batch: int = 64, workers: tuple[int, ...] = (0, 1, 2), rounds: int = 2,
                 data=None) -> list[dict]:
    """Images/s the trainer's real-data loader supplies (``ImageStream``'s DataLoader: seeded index stream,
    per-sample seeded RandomResizedCrop to 224), worker start-up included, for each worker count and both
    transports of ``LOADER_PATHS``; configurations alternate for ``rounds`` rounds and the best of each is kept.
    Normalising uint8 batches is the GPU's work in training, so it is not timed here."""
    import itertools

    from pipeline.dist import Dist
    from pipeline.replay.streams import ImageStream

    data = data if data is not None else _labeled(paths)
    batches = max(1, len(data) // batch)
    best = {(w, label): 0.0 for w in workers for label, _, _ in LOADER_PATHS}
    for _ in range(rounds):
        for w, (label, uint8, _) in itertools.product(workers, LOADER_PATHS):
            t0 = time.perf_counter()
            stream = ImageStream(data, train_transform(CROP, uint8=uint8), batch, 0, Dist(), torch.device("cpu"),
                                 workers=w, normalized=not uint8)
            n = sum(len(labels) for _, labels in itertools.islice(stream.loader, batches))
            best[w, label] = max(best[w, label], n / (time.perf_counter() - t0))
            del stream
    return [{"workers": w, **{label: best[w, label] for label, _, _ in LOADER_PATHS}} for w in workers]


class _Counting(torch.utils.data.Dataset):
    """Counts how often images are decoded."""

    def __init__(self, base):
        self.base, self.decodes = base, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        self.decodes += 1
        return self.base[i]


def bench_eval(paths: list[Path], evaluations: int = EVALUATIONS) -> dict:
    """The data side of ``evaluations`` evaluations of one test split: TestSet's decode-once cache vs a fresh
    decode each time (the model's forward is the same in both and is left out)."""
    transform = eval_resize(CROP)

    def pass_over(test: TestSet) -> None:
        images, _ = test.tensors()
        for i in range(0, len(images), 256):
            normalize_uint8(images[i : i + 256])

    cached_data = _Counting(_labeled(paths))
    test = TestSet(cached_data, transform)
    t0 = time.perf_counter()
    for _ in range(evaluations):
        pass_over(test)
    cached_s = time.perf_counter() - t0
    fresh_data = _Counting(_labeled(paths))
    t0 = time.perf_counter()
    for _ in range(evaluations):
        pass_over(TestSet(fresh_data, transform))
    fresh_s = time.perf_counter() - t0
    return {"images": len(paths), "evaluations": evaluations, "cached_s": cached_s, "fresh_s": fresh_s,
            "cached_decodes": cached_data.decodes / len(paths), "fresh_decodes": fresh_data.decodes / len(paths),
            "bytes_per_image": test.tensors()[0][0].numel()}


def mtil_test_images() -> int:
    """Images in the 11 MTIL test splits (official sizes; caltech101, eurosat, sun397: the 80/20 split's 20%)."""
    from pipeline.datasets import mtil

    return sum(mtil._source(t).official[1] for t in catalog.mtil_task_names())


def run(quick: bool = False) -> tuple[str, dict]:
    if quick:
        synth = bench_synthetic(per_class=2, size=64, batch=8, repeats=1)
        n_loader, n_eval, size, batch, evaluations = 16, 4, 64, 8, 2
    else:
        synth = bench_synthetic()
        n_loader, n_eval, size, batch, evaluations = 320, 64, 512, 64, EVALUATIONS
    with tempfile.TemporaryDirectory() as tmp:
        paths = jpeg_files(Path(tmp), n_loader, size)
        loader = bench_loader(paths, batch=batch, rounds=1 if quick else 2)
        ev = bench_eval(paths[:n_eval], evaluations)
        tiny_data = tinyimagenet_base_step(Path(tmp) / "cil", 1 if quick else 4)
        tiny = bench_loader([], batch=batch, rounds=1 if quick else 2, data=tiny_data)
    goal_s = 1 / STEP_GOAL
    need = STEP_GOAL * 64
    one = next((r for r in loader if r["workers"] == 1), loader[0])
    best = max(loader, key=lambda r: r["uint8"])
    ratio = synth["decode_s"] / synth["cache_s"]
    test_total = mtil_test_images()
    per_image_decode = (ev["fresh_s"] - ev["cached_s"]) / max(1, ev["images"] * (ev["evaluations"] - 1))
    md = [
        "## Data (`make bench`)",
        "",
        f"Photo-like {synth['size']}² JPEG-95 images (mean {synth['jpeg_kb']:.0f} kB, like SD v1.5 output), "
        f"resized and centre-cropped to {CROP}² as training does; {torch.get_num_threads()} CPU threads.",
        "",
        "### Synthetic replay: decoded once per task vs decoded every step",
        "",
        "| measurement | time | ratio |",
        "|---|---:|---:|",
        f"| batch of {synth['batch']} from the in-memory draw (index uint8 + normalise; tokens cached) | "
        f"{seconds(synth['cache_s'])} | 1 |",
        f"| batch of {synth['batch']} decoded + resized + tokenised every step | {seconds(synth['decode_s'])} | "
        f"**{ratio:.0f}x** |",
        f"| decoding the task's whole draw once (`load_draw`, {synth['images']} images, {synth['cache_mb']:.0f} MB "
        f"uint8 kept) | {seconds(synth['load_s'])} | {synth['load_s'] / synth['decode_s']:.1f} per-step batches |",
        f"| per-step decoding as a share of one step at the GPU goal ({STEP_GOAL:g} steps/s = {goal_s * 1000:.0f} ms) | "
        f"| {synth['decode_s'] / goal_s:.1f} steps' time on {torch.get_num_threads()} threads |",
        "",
        "### Real-data loader (the current task's training split)",
        "",
        f"The trainer's loader (`ImageStream`: seeded index stream, per-sample seeded RandomResizedCrop {CROP}, "
        f"bicubic) over {n_loader} JPEG files, batch {batch}, worker start-up included, best of "
        f"{1 if quick else 2} alternating rounds; normalising uint8 batches is the GPU's work in training and is not "
        f"timed. At the GPU goal the loader must supply 64 × {STEP_GOAL:g} = {need:.0f} images/s.",
        "",
        "| workers | uint8 crops (trainer) images/s | float crops images/s | uint8 vs float | uint8: share of 960 images/s |",
        "|---:|---:|---:|---:|---:|",
        *[f"| {r['workers']} | {r['uint8']:.0f} | {r['float']:.0f} | {r['uint8'] / r['float']:.2f}x | "
          f"{r['uint8'] / need:.1%} |" for r in loader],
        "",
        f"At {one['uint8']:.0f} images/s per worker, {need:.0f} images/s takes about "
        f"{need / one['uint8']:.0f} worker cores of this kind (worker count × per-worker rate, measured here; "
        "the trainer's default is one worker per spare core, at most 8: 8 workers at this rate supply "
        f"{8 * one['uint8'] / need:.1f}x what the GPU goal needs). uint8 crops are the same tensors after "
        "normalisation, bit for bit (tested), with a quarter of the bytes through the workers' shared memory.",
        "",
        f"### Evaluation: test images decoded once per run ({ev['evaluations']} evaluations of {ev['images']} images)",
        "",
        "| path | decodes per image per run (counted) | data time | ratio |",
        "|---|---:|---:|---:|",
        f"| `TestSet` cache (default) | {ev['cached_decodes']:.0f} | {seconds(ev['cached_s'])} | 1 |",
        f"| decoding at every evaluation | {ev['fresh_decodes']:.0f} | {seconds(ev['fresh_s'])} | "
        f"{ev['fresh_s'] / ev['cached_s']:.1f}x |",
        "",
        f"One decode + resize costs {per_image_decode * 1000:.1f} ms per {size}² image here. The cache holds "
        f"{ev['bytes_per_image'] / 1e3:.1f} kB per image (uint8 {CROP}²): for the {test_total:,} test images of the "
        f"11 MTIL datasets that is {test_total * ev['bytes_per_image'] / 2**30:.1f} GiB, which training keeps in "
        "memory-mapped files under `RUNS/.cache/test/` (shared by every run there), not in host RAM; this bench "
        "times the in-memory variant.",
        "",
        "### CIL: TinyImageNet's base step",
        "",
        f"The same loader over a `tiny-imagenet-200/` folder read by the real reader: tinyimagenet-5's base step "
        f"(100 classes, {len(tiny_data)} photo-like 64² JPEG files here; 50,000 in the dataset, one epoch = 782 "
        f"steps of 64), each image upscaled to {CROP}² by the crop. Need: {need:.0f} images/s.",
        "",
        "| workers | uint8 crops images/s | float crops images/s | uint8: share of 960 images/s |",
        "|---:|---:|---:|---:|",
        *[f"| {r['workers']} | {r['uint8']:.0f} | {r['float']:.0f} | {r['uint8'] / need:.1%} |" for r in tiny],
    ]
    facts = {"synth_ratio": ratio, "loader_rate": best["uint8"], "loader_workers": best["workers"],
             "tiny_loader_rate": max(r["uint8"] for r in tiny),
             "eval_decodes": f"{ev['cached_decodes']:.0f}", "evaluations": ev["evaluations"],
             "eval_ratio": ev["fresh_s"] / ev["cached_s"]}
    return "\n".join(md), facts
