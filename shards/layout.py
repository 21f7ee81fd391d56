"""Names and paths of a shard set: the on-disk contract between the stages and between machines.

    <root>/<task>/<spec-hash[:16]>/
        manifest.json        spec, hash, versions, per-shard records, complete flag (written last)
        000000.tar           webdataset shard: KEY.jpg|KEY.png + KEY.json per sample
        000000.parquet       one row per planned sample (also the shard's completion record)
        .000001.tar.tmp-123  a shard being written (never read; removed when stale)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

FORMAT = "gift-shards/1"
MANIFEST = "manifest.json"
HASH_DIR_LEN = 16  # hex characters of the spec hash used as the set's directory name
_SHARD_STEM = re.compile(r"^\d{6}$")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def canonical_json(obj: object) -> bytes:
    """JSON with sorted keys and no whitespace: equal objects give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def spec_hash(spec: Mapping) -> str:
    """sha256 of the canonical JSON of a spec: the set's content address (64 hex characters)."""
    return hashlib.sha256(canonical_json(dict(spec))).hexdigest()


def set_dir(root: str | os.PathLike, task: str, digest: str) -> Path:
    return Path(root) / task / digest[:HASH_DIR_LEN]


def shard_stem(index: int) -> str:
    return f"{index:06d}"


def tar_path(set_path: Path, index: int) -> Path:
    return set_path / f"{shard_stem(index)}.tar"


def parquet_path(set_path: Path, index: int) -> Path:
    return set_path / f"{shard_stem(index)}.parquet"


def tmp_path(final: Path) -> Path:
    """A hidden, process-unique temporary name beside ``final`` (readers never list it)."""
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


def is_valid_key(key: str) -> bool:
    """Sample keys: letters, digits, ``-`` and ``_``; no dots (webdataset splits on them), no leading ``_``."""
    return bool(_KEY.match(key))


def is_valid_shard_stem(stem: str) -> bool:
    return bool(_SHARD_STEM.match(stem))


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(final: Path, data: bytes) -> None:
    """Write ``data`` under a temporary name, fsync, rename: ``final`` is either old or new, never partial."""
    tmp = tmp_path(final)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)
