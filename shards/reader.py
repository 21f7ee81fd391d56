"""Reading shard sets: samples in plan order, through webdataset's tar reader."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import webdataset as wds
from PIL import Image

from .layout import tar_path

IMAGE_EXTS = ("jpg", "png")


@dataclass(frozen=True)
class Sample:
    key: str
    image: bytes  # encoded (JPEG or PNG)
    ext: str
    meta: dict  # KEY.json: key, task, class_index, class_name, prompt, seed, spec_hash

    def pil(self) -> Image.Image:
        return Image.open(io.BytesIO(self.image)).convert("RGB")


def iter_shard(path: Path) -> Iterator[Sample]:
    """Samples of one tar in stored order; raises on a truncated or malformed tar."""
    # exactly this tar, whole, whatever process or loader worker reads it: no node or worker splitting
    dataset = wds.WebDataset(str(path), shardshuffle=False, empty_check=False, handler=wds.reraise_exception,
                             nodesplitter=None, workersplitter=None)
    for raw in dataset:
        ext = next((e for e in IMAGE_EXTS if e in raw), None)
        if ext is None or "json" not in raw:
            raise ValueError(f"sample {raw.get('__key__')!r} lacks an image or its json")
        yield Sample(raw["__key__"], bytes(raw[ext]), ext, json.loads(raw["json"]))


def iter_samples(set_path: Path, shard_indices: list[int]) -> Iterator[Sample]:
    for i in shard_indices:
        yield from iter_shard(tar_path(Path(set_path), i))
