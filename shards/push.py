"""Publishing a verified local set to a store, so that every lab machine can use one render.

Order of writes on the store, so that a reader never sees a half-published set and a killed push resumes:

1. ``.publishing.json``: the manifest-to-be. It says whose files are in the set directory, so a resumed push
   can trust files of the right size (without reading them back over the network).
2. every ``NNNNNN.tar`` and ``NNNNNN.parquet``, each under ``.NAME.part`` and then renamed.
3. ``manifest.json`` (also by rename): from here on the set is published. Then ``.publishing.json`` goes.

The set is content-addressed by its spec hash: a store that already has the set receives nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ShardSetError, StoreError
from .layout import HASH_DIR_LEN, MANIFEST, parquet_path, tar_path
from .manifest import load_manifest, manifest_bytes
from .store import (
    MAX_MANIFEST_BYTES,
    PENDING,
    Progress,
    Store,
    parse_manifest,
    read_manifest,
    set_rel,
    shard_records,
    transport,
)
from .verify import file_sha256, verify_set

log = logging.getLogger("gift.shards")


@dataclass
class PushResult:
    set_path: Path
    address: str  # STORE/task/hash: what `gift shards pull` takes
    # "published"; "already" (the store had it: nothing sent); "repaired" (it had it, with files missing);
    # "other-render" (the store has another render of the same spec: kept, nothing sent)
    state: str
    uploaded: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    bytes_sent: int = 0


@dataclass(frozen=True)
class _File:
    name: str
    local: Path
    bytes: int
    sha256: str


def publishable(set_path: Path) -> tuple[dict, list[_File]]:
    """The manifest to publish and the files it covers, after checking the set is complete and intact.

    The published manifest is the local one plus the size and sha256 of every parquet file, so that a puller
    checks every byte it receives, not only the tars.
    """
    report = verify_set(set_path, deep=False)
    if not report.ok:
        raise ShardSetError(f"refusing to push {set_path}: " + "; ".join(report.problems))
    manifest = load_manifest(set_path)
    files, parquet = [], []
    for s in manifest["shards"]:
        i = s["index"]
        files.append(_File(tar_path(set_path, i).name, tar_path(set_path, i), s["bytes"], s["sha256"]))
        digest, size = file_sha256(parquet_path(set_path, i))
        files.append(_File(parquet_path(set_path, i).name, parquet_path(set_path, i), size, digest))
        parquet.append({"index": i, "bytes": size, "sha256": digest})
    return {**manifest, "parquet": parquet}, files


def push_set(set_path: Path, store: Store, progress: Progress | None = None) -> PushResult:
    """Publish one complete local set to ``store`` (resuming an interrupted push); see the module docstring."""
    progress = progress or Progress()
    if store.read_only:
        raise StoreError(f"{store.url}: {store.protocol}:// stores are read-only (a static web server); push to the "
                         "directory it serves (a path, or ssh://host/path) instead")
    published, files = publishable(Path(set_path))
    rel = set_rel(published["task"], published["spec_hash"][:HASH_DIR_LEN])
    result = PushResult(Path(set_path), store.address(rel), "published")

    remote = read_manifest(store, published["task"], published["spec_hash"][:HASH_DIR_LEN])
    if remote is not None and shard_records(remote) != shard_records(published):
        # Same spec, other bytes (rendered on another device): one render per set on a store, never a mix.
        result.state = "other-render"
        return result
    pending = store.read_bytes(f"{rel}/{PENDING}", MAX_MANIFEST_BYTES)
    # Files already there are ours when the store's (pending) manifest lists our very shard records.
    trusted = remote is not None or (pending is not None and _same_records(pending, published))
    if not trusted:  # a first push (or a stale pending one): announce what is coming
        store.makedirs(rel)
        store.upload(manifest_bytes(published), f"{rel}/{PENDING}")

    on_store = store.listdir(rel)
    todo = []
    for f in files:
        if on_store.get(f.name) == f.bytes and (trusted or _same_local_bytes(store, f"{rel}/{f.name}", f)):
            result.kept.append(f.name)
        else:
            todo.append(f)
    if todo:
        progress.start(f"push {rel}", sum(f.bytes for f in todo))
        try:
            for f in todo:
                store.upload(f.local, f"{rel}/{f.name}", progress)
                result.uploaded.append(f.name)
                result.bytes_sent += f.bytes
        finally:
            progress.finish()
        sizes = store.listdir(rel)
        wrong = [f.name for f in todo if sizes.get(f.name) != f.bytes]
        if wrong:
            raise StoreError(f"{store.address(rel)}: {', '.join(wrong)} did not arrive whole (sizes differ after "
                             "upload); re-run the push")
    if remote is None:
        store.upload(manifest_bytes(published), f"{rel}/{MANIFEST}")  # last: the set becomes visible whole
        store.remove(f"{rel}/{PENDING}")
    else:
        result.state = "repaired" if todo else "already"
    log.info("%s: %s (%d files sent, %d kept)", result.address, result.state, len(result.uploaded), len(result.kept))
    return result


def _same_records(pending: bytes, published: dict) -> bool:
    try:
        return shard_records(parse_manifest(pending, PENDING)) == shard_records(published)
    except (ShardSetError, KeyError, TypeError):
        return False


def _same_local_bytes(store: Store, rel: str, f: _File) -> bool:
    """On a directory store, reading a file back is cheap: compare checksums of files of unknown origin."""
    if not store.is_local:
        return False
    with transport(store, f"reading {store.address(rel)}"):
        return file_sha256(Path(store.path(rel))) == (f.sha256, f.bytes)
