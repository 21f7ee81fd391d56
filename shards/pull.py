"""Fetching published sets from a store: `gift shards pull`, and the local cache training reads remote sets through.

Every file is downloaded under a hidden temporary name inside the destination set directory, checked (size and
sha256 against the store's manifest, the parquet's own record and columns against the manifest's) and only then
renamed into place; the manifest is written last. A killed pull leaves verified shards and no manifest, so the set
is not visible yet; re-running keeps what is verified and fetches the rest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CorruptShardError, ShardSetError, SpecMismatchError, StoreError
from .layout import HASH_DIR_LEN, MANIFEST, fsync_dir, parquet_path, set_dir, tar_path, tmp_path
from .manifest import ShardRecord, find_sets, load_manifest, read_record, row_schema, write_manifest
from .store import (
    CHUNK,
    Progress,
    Store,
    list_sets,
    open_store,
    parquet_sums,
    read_manifest,
    set_rel,
    shard_records,
    transport,
)
from .verify import file_sha256

log = logging.getLogger("gift.shards")

MAX_PARQUET_BYTES = 256 << 20  # a parquet record of unknown size (set not published by push) is cut off here


@dataclass
class PullResult:
    set_path: Path
    downloaded: list[int] = field(default_factory=list)  # shard indices fetched
    kept: list[int] = field(default_factory=list)  # already here and verified
    bytes_received: int = 0


def parse_address(address: str) -> tuple[str, str, str, str | None]:
    """``STORE/TASK/HASH`` -> (store, task, hash16, full 64-hex hash or None); HASH is 16 or 64 hex characters."""
    parts = str(address).rstrip("/").rsplit("/", 2)
    if len(parts) != 3 or not parts[0]:
        raise ShardSetError(f"{address}: expected STORE/TASK/HASH, as `gift shards ls STORE` lists them")
    store, task, digest = parts
    full = digest if len(digest) == 64 else None
    hash16 = digest[:HASH_DIR_LEN] if full else digest
    set_rel(task, hash16)  # validates both names
    return store, task, hash16, full


def pull_set(store: Store, task: str, hash16: str, dest_root: Path, progress: Progress | None = None,
             full_hash: str | None = None) -> PullResult:
    """Fetch STORE/task/hash16 into ``dest_root/task/hash16``, verifying every byte before it becomes visible."""
    progress = progress or Progress()
    rel = set_rel(task, hash16)
    manifest = read_manifest(store, task, hash16)
    if manifest is None:
        raise StoreError(f"{store.address(rel)}: no {MANIFEST} there, so the set is not published (a push is in "
                         "progress or was interrupted, or the address is wrong: see `gift shards ls "
                         f"{store.url}`); re-run the push on the machine that rendered it")
    if full_hash is not None and manifest["spec_hash"] != full_hash:
        raise SpecMismatchError(f"{store.address(rel)} holds spec {manifest['spec_hash']}, not {full_hash}")
    if not manifest["complete"]:
        raise ShardSetError(f"{store.address(rel)} is incomplete on the store ({len(manifest['shards'])}/"
                            f"{manifest['num_shards']} shards); finish and push it again from the machine that renders it")
    records, sums, schema = shard_records(manifest), parquet_sums(manifest), row_schema(manifest["spec"])
    set_path = set_dir(dest_root, task, manifest["spec_hash"])
    _check_destination(set_path, manifest)
    set_path.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(set_path)

    result = PullResult(set_path)
    todo = []
    for i, record in sorted(records.items()):
        (result.kept if _local_ok(set_path, record, sums.get(i), schema) else todo).append(i)
    if todo:
        total = sum(records[i].bytes + sums.get(i, {}).get("bytes", 0) for i in todo)
        progress.start(f"pull {rel}", total)
        try:
            for i in todo:
                result.bytes_received += _fetch_shard(store, rel, set_path, records[i], sums.get(i), schema, progress)
                result.downloaded.append(i)
        finally:
            progress.finish()
    write_manifest(set_path, manifest)  # last: the set becomes visible, whole and verified
    log.info("%s -> %s: %d shard(s) fetched, %d kept", store.address(rel), set_path, len(todo), len(result.kept))
    return result


def _check_destination(set_path: Path, manifest: dict) -> None:
    """A local set of the same spec must be this very render (then a pull repairs or resumes it), never another."""
    if not (set_path / MANIFEST).exists():
        return
    local = load_manifest(set_path)
    if local["spec_hash"] != manifest["spec_hash"]:
        raise SpecMismatchError(f"{set_path} holds a set of another spec with the same hash prefix; move it away")
    if shard_records(local) != shard_records(manifest):
        raise ShardSetError(f"{set_path} already holds another render of this spec (or an unfinished one): its shard "
                            "records differ from the store's. Use it as it is (finish it with `gift generate`), or move "
                            "it away to pull the store's copy")


def _remove_stale_temporaries(set_path: Path) -> None:
    """Temporaries of killed pulls; those of a live process (another pull into this cache) are left alone."""
    for tmp in set_path.glob(".*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _local_ok(set_path: Path, record: ShardRecord, parquet_sum: dict | None, schema: pa.Schema) -> bool:
    """True when shard ``record.index`` is already here, whole and matching the store's records."""
    tar, record_file = tar_path(set_path, record.index), parquet_path(set_path, record.index)
    if not (tar.exists() and record_file.exists()):
        return False
    if file_sha256(tar) != (record.sha256, record.bytes):
        return False
    if parquet_sum is not None and file_sha256(record_file) != (parquet_sum["sha256"], parquet_sum["bytes"]):
        return False
    try:
        _check_record_file(record_file, record, str(record_file), schema)
    except ShardSetError:
        return False
    return True


def _fetch_shard(store: Store, rel: str, set_path: Path, record: ShardRecord, parquet_sum: dict | None,
                 schema: pa.Schema, progress: Progress) -> int:
    """Download one shard's tar and parquet, check both, then rename both into place (tar first: the parquet is
    the shard's completion mark, as when it is rendered). Returns the bytes received."""
    tar, record_file = tar_path(set_path, record.index), parquet_path(set_path, record.index)
    record_file.unlink(missing_ok=True)  # a broken local copy stops counting as finished before it is replaced
    tar_tmp, record_tmp = tmp_path(tar), tmp_path(record_file)
    try:
        where = store.address(f"{rel}/{tar.name}")
        digest, size = _download(store, f"{rel}/{tar.name}", tar_tmp, record.bytes, progress)
        if (digest, size) != (record.sha256, record.bytes):
            raise CorruptShardError(f"{where}: the store's copy disagrees with its manifest (sha256 {digest[:16]}…, "
                                    f"{size} bytes; recorded {record.sha256[:16]}…, {record.bytes} bytes). Nothing of "
                                    "it was kept; re-push the set from the machine that rendered it, then pull again")
        where = store.address(f"{rel}/{record_file.name}")
        limit = parquet_sum["bytes"] if parquet_sum else MAX_PARQUET_BYTES
        digest, size = _download(store, f"{rel}/{record_file.name}", record_tmp, limit, progress)
        if parquet_sum is not None and (digest, size) != (parquet_sum["sha256"], parquet_sum["bytes"]):
            raise CorruptShardError(f"{where}: the store's copy disagrees with its manifest (sha256 or size); "
                                    "nothing of it was kept; re-push the set, then pull again")
        _check_record_file(record_tmp, record, where, schema)
        os.replace(tar_tmp, tar)
        os.replace(record_tmp, record_file)
    finally:
        tar_tmp.unlink(missing_ok=True)
        record_tmp.unlink(missing_ok=True)
    fsync_dir(set_path)
    return record.bytes + size


def _download(store: Store, rel: str, dest: Path, limit: int, progress: Progress) -> tuple[str, int]:
    """Stream a store file to ``dest``, hashing on the way; (sha256, bytes). More than ``limit`` bytes is refused."""
    h, n = hashlib.sha256(), 0
    what = f"reading {store.address(rel)}"
    try:
        with transport(store, what):
            src = store.open_read(rel)
    except FileNotFoundError as e:
        raise CorruptShardError(f"{store.address(rel)}: missing on the store although its manifest lists it; "
                                "re-push the set from the machine that rendered it") from e
    try:
        with open(dest, "wb") as out:
            while True:
                with transport(store, what):
                    chunk = src.read(CHUNK)
                if not chunk:
                    break
                n += len(chunk)
                if n > limit:
                    raise CorruptShardError(f"{store.address(rel)}: larger than the {limit} bytes its manifest "
                                            "records; the store's copy is corrupt and was not kept")
                h.update(chunk)
                out.write(chunk)
                progress.advance(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    finally:
        try:
            src.close()
        except Exception:  # closing a dead connection can fail too; the transfer's own error says what happened
            pass
    return h.hexdigest(), n


def _check_record_file(path: Path, record: ShardRecord, where: str, schema: pa.Schema) -> None:
    """A parquet record from a store: the columns of its set's kind (``schema``), its own record equal to the
    manifest's, one row per planned sample. Read with pyarrow (plain columns; never unpickled)."""
    try:
        found = pq.read_schema(path)
        rows = pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as e:
        raise CorruptShardError(f"{where}: not a readable parquet record ({e}); refusing this shard") from e
    if found.remove_metadata() != schema:
        raise CorruptShardError(f"{where}: unexpected columns {found.names}; refusing this shard")
    try:
        own = read_record(path)
    except ShardSetError as e:
        raise CorruptShardError(f"{where}: no readable shard record; refusing this shard") from e
    if own != record:
        raise CorruptShardError(f"{where}: the shard's own record disagrees with the manifest's (sha256 "
                                f"{own.sha256[:16]}… vs {record.sha256[:16]}…); the store's set is inconsistent")
    if rows != record.samples + record.flagged:
        raise CorruptShardError(f"{where}: {rows} rows, the manifest records {record.samples + record.flagged} samples")


# ---------------------------------------------------------------------------------------------------------------
# Training from a store: the pool's sets are pulled once into a local cache, which later runs read offline.


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "gift" / "shards"


def store_cache_dir(cache_root: Path, url: str) -> Path:
    """The cache root of one store: ``CACHE/<host_path>-<hash8>`` (credentials in the URL never reach a name)."""
    parts = urlsplit(url)
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{parts.hostname or ''}_{parts.port or ''}{parts.path}").strip("_.")
    return Path(cache_root) / f"{readable[:60]}-{hashlib.sha256(url.rstrip('/').encode()).hexdigest()[:8]}"


def pool_from_store(url: str, tasks: Sequence[str], cache_root: Path | None = None,
                    keep: Callable[[dict], bool] = lambda manifest: True, progress: Progress | None = None) -> Path:
    """A local root holding a complete, verified set of every task in ``tasks`` from the store at ``url``.

    Sets already in the cache are used without contacting the store (a second run works offline); missing tasks
    are pulled: every complete set of the task on the store that ``keep(manifest)`` accepts.
    """
    root = store_cache_dir(cache_root or default_cache(), url)
    cached = set()
    for path in find_sets(root) if root.exists() else []:
        manifest = load_manifest(path)
        if manifest["complete"] and keep(manifest):
            cached.add(manifest["task"])
    missing = [t for t in tasks if t not in cached]
    if not missing:
        log.info("shard sets of %s from the cache %s", ", ".join(tasks), root)
        return root
    store = open_store(url)
    usable = [s for s in list_sets(store, missing) if s.manifest and s.manifest["complete"] and keep(s.manifest)]
    for task in missing:
        sets = [s for s in usable if s.task == task]
        if not sets:
            raise StoreError(f"{store.url} holds no complete shard set of {task} (made with the generator spec asked "
                             f"for); render it and publish it: gift generate {task} … ; gift shards push "
                             f"shards-out/{task} {store.url}")
        for s in sets:
            log.info("fetching %s into the cache %s", store.address(f"{task}/{s.hash16}"), root)
            pull_set(store, task, s.hash16, root, progress)
    return root
