"""Shard records (one per finished shard, stored in its parquet file) and the set's manifest.

The parquet file of a shard is its source of truth: one row per planned sample and, in the schema
metadata, the tar's byte count and sha256. The manifest is a summary rebuilt from those records by a
single writer (rank 0), so ranks never write the same file.

Two kinds of set share this format, told apart by ``spec["kind"]`` (absent: images, as every set made before
caption sets existed) and mirrored as the manifest's ``kind``:

- ``images``: KEY.jpg|png + KEY.json per sample; rows :data:`ROW_SCHEMA`, plus ``caption`` and ``caption_index``
  when the images were rendered from a caption set (``spec["captions"]``);
- ``captions``: KEY.txt (the UTF-8 caption) + KEY.json per record; rows :data:`CAPTION_ROW_SCHEMA`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import ShardSetError, SpecMismatchError
from .layout import FORMAT, MANIFEST, atomic_write_bytes, parquet_path, spec_hash

RECORD_KEY = b"gift.shard"
ROW_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("class_index", pa.int32()),
        ("class_name", pa.string()),
        ("prompt", pa.string()),
        ("seed", pa.int64()),
        ("status", pa.string()),  # "ok" (in the tar) or "flagged" (refused by the safety checker)
    ]
)
# Images rendered from a caption set: which caption each image was rendered from (its position in that set).
CAPTIONED_ROW_SCHEMA = pa.schema([*ROW_SCHEMA, ("caption", pa.string()), ("caption_index", pa.int32())])
# A caption set: one row per kept caption; ``source_index`` is the captioned image's index in the task's split.
CAPTION_ROW_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("task", pa.string()),
        ("class_index", pa.int32()),
        ("class_name", pa.string()),
        ("caption", pa.string()),
        ("source_index", pa.int64()),
        ("status", pa.string()),  # always "ok": a caption is never refused
    ]
)
IMAGES, CAPTIONS = "images", "captions"
KINDS = (IMAGES, CAPTIONS)


def set_kind(spec: Mapping) -> str:
    """``images`` or ``captions``: what a set of this spec holds."""
    return spec.get("kind", IMAGES)


def row_schema(spec: Mapping) -> pa.Schema:
    """The columns of every parquet record of a set of this spec."""
    if set_kind(spec) == CAPTIONS:
        return CAPTION_ROW_SCHEMA
    return CAPTIONED_ROW_SCHEMA if spec.get("captions") else ROW_SCHEMA


@dataclass(frozen=True)
class ShardRecord:
    """What a finished shard holds: kept samples, flagged samples, tar bytes and sha256, how it was rendered."""

    index: int
    samples: int
    flagged: int
    bytes: int
    sha256: str
    render: dict = field(default_factory=dict)  # device, dtype, batch_size: numerics, not meaning

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> ShardRecord:
        return cls(**{k: d[k] for k in ("index", "samples", "flagged", "bytes", "sha256")}, render=dict(d["render"]))


def read_record(path: Path) -> ShardRecord:
    """The record stored in a shard's parquet file (reads the footer only)."""
    try:
        metadata = pq.read_schema(path).metadata or {}
        return ShardRecord.from_dict(json.loads(metadata[RECORD_KEY]))
    except (OSError, KeyError, ValueError, pa.ArrowException) as e:
        raise ShardSetError(f"{path}: unreadable shard record ({e}); delete it and re-run generate") from e


def read_rows(path: Path) -> list[dict]:
    """Every planned sample of a shard, flagged ones included (``status`` says which)."""
    return pq.read_table(path).to_pylist()


def collect_records(set_path: Path, num_shards: int) -> dict[int, ShardRecord]:
    """Records of the shards that are finished on disk (a parquet file present), by shard index."""
    return {i: read_record(p) for i in range(num_shards) if (p := parquet_path(set_path, i)).exists()}


def make_manifest(
    *,
    task: str,
    spec: Mapping,
    num_shards: int,
    planned_samples: int,
    records: Mapping[int, ShardRecord],
    versions: Mapping[str, str],
) -> dict:
    """The manifest of a set; ``complete`` is true once every planned shard has a record."""
    shards = [records[i].to_dict() for i in sorted(records)]
    return {
        "format": FORMAT,
        "kind": set_kind(spec),
        "task": task,
        "spec_hash": spec_hash(spec),
        "spec": dict(spec),
        "num_shards": num_shards,
        "planned_samples": planned_samples,
        "samples": sum(r.samples for r in records.values()),
        "flagged": sum(r.flagged for r in records.values()),
        "bytes": sum(r.bytes for r in records.values()),
        "complete": len(records) == num_shards,
        "versions": dict(versions),
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "shards": shards,
    }


def manifest_bytes(manifest: Mapping) -> bytes:
    """A manifest as written to disk and to stores."""
    return (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode()


def write_manifest(set_path: Path, manifest: Mapping) -> None:
    atomic_write_bytes(set_path / MANIFEST, manifest_bytes(manifest))


def load_manifest(set_path: Path) -> dict:
    """Read and sanity-check a manifest: format known, and its hash is the hash of its own spec."""
    path = Path(set_path) / MANIFEST
    if not path.exists():
        raise ShardSetError(f"{set_path}: no {MANIFEST}; this is not a shard set (or its generation never started)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ShardSetError(f"{path}: unreadable manifest ({e})") from e
    if manifest.get("format") != FORMAT:
        raise ShardSetError(f"{path}: unknown format {manifest.get('format')!r} (expected {FORMAT})")
    if spec_hash(manifest["spec"]) != manifest["spec_hash"]:
        raise SpecMismatchError(f"{path}: the recorded spec_hash is not the hash of the recorded spec (edited?)")
    if set_kind(manifest["spec"]) not in KINDS:
        raise ShardSetError(f"{path}: unknown kind of set {set_kind(manifest['spec'])!r} (expected one of "
                            f"{', '.join(KINDS)}); made by a newer version of this tool?")
    if manifest.get("kind", IMAGES) != set_kind(manifest["spec"]):
        raise ShardSetError(f"{path}: kind {manifest.get('kind')!r} disagrees with its spec's (edited?)")
    return manifest


def find_sets(root: Path) -> list[Path]:
    """Every set directory under ``root`` (``root/<task>/<hash>/manifest.json``), or ``root`` itself."""
    root = Path(root)
    if (root / MANIFEST).exists():
        return [root]
    return sorted(p.parent for p in root.glob(f"*/*/{MANIFEST}"))
