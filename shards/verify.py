"""Verification of shard sets: checksums against records, records against the manifest, and (deep)
every sample decoded and matched to its plan row (an image decoded; a caption set's text compared)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .errors import ShardSetError
from .layout import parquet_path, shard_stem, tar_path
from .manifest import CAPTIONS, ShardRecord, load_manifest, read_record, read_rows, set_kind
from .reader import IMAGE_EXTS, TEXT_EXTS, Sample, iter_shard


def file_sha256(path: Path) -> tuple[str, int]:
    """(sha256 hex digest, size in bytes) of a file, read in 1 MiB blocks."""
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


def _rerun(captions: bool) -> str:
    return "re-run `gift caption`" if captions else "re-run generate"


def _sample_problem(sample: Sample, row: dict, captions: bool) -> str | None:
    """Why a stored sample is not its parquet row (None when it is); raises when its payload cannot be decoded."""
    if sample.key != row["key"]:
        return f"sample {sample.key!r} is not its plan row {row['key']!r}"
    if captions:
        if sample.text() != row["caption"] or sample.meta.get("caption") != row["caption"]:
            return f"the caption of {sample.key!r} differs from its parquet row"
        return None
    if sample.meta.get("prompt") != row["prompt"] or sample.meta.get("seed") != row["seed"]:
        return f"sample {sample.key!r} does not match its plan row {row['key']!r}"
    with Image.open(io.BytesIO(sample.image)) as im:
        im.load()
    return None


def check_shard(set_path: Path, index: int, record: ShardRecord, deep: bool, spec: Mapping | None = None) -> list[str]:
    """Problems with one finished shard (empty when sound). ``deep`` also decodes every sample and matches it to
    its parquet row, as the set's kind (``spec``; default images) says."""
    name = f"{tar_path(set_path, index).name}"
    tar = tar_path(set_path, index)
    captions = set_kind(spec or {}) == CAPTIONS
    if not tar.exists():
        return [f"{name}: missing (its record exists); {_rerun(captions)} to redo it"]
    digest, size = file_sha256(tar)
    if size != record.bytes or digest != record.sha256:
        return [f"{name}: checksum mismatch (size {size} vs {record.bytes} recorded); corrupt, {_rerun(captions)} to redo it"]
    if not deep:
        return []
    expected = [r for r in read_rows(parquet_path(set_path, index)) if r["status"] == "ok"]
    problems, seen = [], 0
    try:
        for sample, row in zip(iter_shard(tar, TEXT_EXTS if captions else IMAGE_EXTS), expected, strict=False):
            seen += 1
            if problem := _sample_problem(sample, row, captions):
                problems.append(f"{name}: {problem}")
                break
    except Exception as e:  # any decode error names the shard
        return [f"{name}: unreadable sample after {seen} good ones ({type(e).__name__}: {e})"]
    if not problems and seen != len(expected):
        problems.append(f"{name}: {seen} samples in the tar, {len(expected)} recorded")
    return problems


@dataclass
class VerifyReport:
    set_path: Path
    shards_checked: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_set(set_path: Path, deep: bool = True) -> VerifyReport:
    """Check a whole set; every problem names the shard at fault. Never modifies the set."""
    set_path = Path(set_path)
    report = VerifyReport(set_path)
    try:
        manifest = load_manifest(set_path)
    except ShardSetError as e:
        report.problems.append(str(e))
        return report
    listed = {s["index"]: s for s in manifest["shards"]}
    rerun = _rerun(set_kind(manifest["spec"]) == CAPTIONS)
    for i in range(manifest["num_shards"]):
        stem = shard_stem(i)
        if not parquet_path(set_path, i).exists():
            what = "listed in the manifest but its record is gone" if i in listed else "not rendered yet"
            report.problems.append(f"{stem}.tar: {what}; {rerun} to finish the set")
            continue
        try:
            record = read_record(parquet_path(set_path, i))
        except ShardSetError as e:
            report.problems.append(str(e))
            continue
        if i in listed and ShardRecord.from_dict(listed[i]) != record:
            report.problems.append(f"{stem}.tar: manifest entry disagrees with the shard's record")
        report.problems += check_shard(set_path, i, record, deep, manifest["spec"])
        report.shards_checked += 1
        report.samples += record.samples
    if not manifest["complete"] and not report.problems:
        report.problems.append(f"manifest says incomplete; {rerun} to finalise it")
    return report
