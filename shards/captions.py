"""Reading caption sets (``gift caption``): the records a lab keeps instead of images.

A caption set has the layout of an image set (``ROOT/<task>/<hash16>/``, manifest, ``NNNNNN.tar`` +
``NNNNNN.parquet``); its tar holds ``KEY.txt`` (the caption, UTF-8) + ``KEY.json`` per record and its parquet one
row per record (:data:`shards.manifest.CAPTION_ROW_SCHEMA`). What is kept, and counted as memory, is the captions'
UTF-8 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import CorruptShardError, ShardSetError
from .layout import parquet_path
from .manifest import CAPTIONS, load_manifest, read_rows, set_kind
from .verify import verify_set


@dataclass(frozen=True)
class CaptionRecord:
    """One kept caption: of the ``source_index``-th image of the task's split, an image of class ``class_index``."""

    key: str
    task: str
    class_index: int
    class_name: str
    caption: str
    source_index: int


@dataclass(frozen=True)
class CaptionSet:
    """A complete, verified caption set; ``records`` in set order (class-major, as captioned)."""

    path: Path
    spec: dict
    spec_hash: str
    records: tuple[CaptionRecord, ...]

    @property
    def task(self) -> str:
        return self.spec["task"]

    @property
    def caption_bytes(self) -> int:
        """The memory the set keeps: UTF-8 bytes of its captions (keys, classes and indices not counted)."""
        return caption_bytes(r.caption for r in self.records)

    def __len__(self) -> int:
        return len(self.records)


def caption_bytes(captions) -> int:
    """UTF-8 bytes of an iterable of captions."""
    return sum(len(c.encode("utf-8")) for c in captions)


def read_caption_rows(set_path: Path, manifest: dict) -> list[dict]:
    """Every row of the finished shards of a caption set, in set order."""
    return [row for s in sorted(manifest["shards"], key=lambda s: s["index"])
            for row in read_rows(parquet_path(set_path, s["index"]))]


def load_caption_set(set_path: str | Path, deep: bool = True) -> CaptionSet:
    """Open a caption set for use: it must be a caption set, complete, and verify (every checksum; with ``deep``,
    every caption against its row). Errors name the set and the way out."""
    set_path = Path(set_path)
    manifest = load_manifest(set_path)
    if set_kind(manifest["spec"]) != CAPTIONS:
        raise ShardSetError(f"{set_path} is an image set, not a caption set; make one with `gift caption "
                            f"{manifest['task']}` (caption sets go to captions-out/<task>/<hash>/ by default)")
    if not manifest["complete"]:
        raise ShardSetError(f"{set_path} is incomplete ({len(manifest['shards'])}/{manifest['num_shards']} shards); "
                            "finish it by re-running the same `gift caption` command")
    report = verify_set(set_path, deep=deep)
    if not report.ok:
        raise CorruptShardError(f"{set_path} does not verify: " + "; ".join(report.problems))
    fields = CaptionRecord.__dataclass_fields__
    records = tuple(CaptionRecord(**{k: row[k] for k in fields}) for row in read_caption_rows(set_path, manifest))
    return CaptionSet(set_path, manifest["spec"], manifest["spec_hash"], records)
