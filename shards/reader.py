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
TEXT_EXTS = ("txt",)  # caption sets


@dataclass(frozen=True)
class Sample:
    key: str
    image: bytes  # the payload: encoded JPEG or PNG (image sets), UTF-8 text (caption sets)
    ext: str
    meta: dict  # KEY.json: key, task, class_index, class_name, prompt, seed, spec_hash (a caption set: its row)

    def pil(self) -> Image.Image:
        return Image.open(io.BytesIO(self.image)).convert("RGB")

    def text(self) -> str:
        return self.image.decode("utf-8")


def iter_shard(path: Path, exts: tuple[str, ...] = IMAGE_EXTS) -> Iterator[Sample]:
    """Samples of one tar in stored order, each with one payload of ``exts``; raises on a truncated or malformed
    tar."""
    # exactly this tar, whole, whatever process or loader worker reads it: no node or worker splitting
    dataset = wds.WebDataset(str(path), shardshuffle=False, empty_check=False, handler=wds.reraise_exception,
                             nodesplitter=None, workersplitter=None)
    for raw in dataset:
        ext = next((e for e in exts if e in raw), None)
        if ext is None or "json" not in raw:
            raise ValueError(f"sample {raw.get('__key__')!r} lacks its {' or '.join(exts)} payload or its json")
        yield Sample(raw["__key__"], bytes(raw[ext]), ext, json.loads(raw["json"]))


def iter_samples(set_path: Path, shard_indices: list[int], exts: tuple[str, ...] = IMAGE_EXTS) -> Iterator[Sample]:
    for i in shard_indices:
        yield from iter_shard(tar_path(Path(set_path), i), exts)
