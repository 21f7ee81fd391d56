"""Crash-safe writing of one shard: samples go to a hidden temporary tar, which is fsynced and renamed
into place only when complete; the shard's parquet record is written after it, so a parquet file on disk
means a finished shard whose tar has the checksum recorded inside it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from .layout import canonical_json, fsync_dir, is_valid_key, parquet_path, tar_path, tmp_path
from .manifest import RECORD_KEY, ROW_SCHEMA, ShardRecord

OK, FLAGGED = "ok", "flagged"


class _HashingFile:
    """A write-only file wrapper that hashes and counts every byte on its way to disk (no re-read)."""

    def __init__(self, f: BinaryIO):
        self.f: BinaryIO | None = f
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        if self.f is None:  # detached after an abort: tarfile's finaliser may still flush into us
            return len(data)
        self.sha256.update(data)
        self.bytes += len(data)
        return self.f.write(data)


class ShardWriter:
    """Writes shard ``index`` of a set; use as a context manager so an exception removes the temporary.

    ``add(row, image, ext, meta)`` stores one planned sample: ``row`` is its plan entry (key, class_index,
    class_name, prompt, seed); ``image`` its encoded bytes, or ``None`` when the generator refused it
    (safety checker), in which case it is recorded as flagged and left out of the tar. ``schema`` is the
    set's row schema (``shards.manifest.row_schema(spec)``); a caption set stores each caption as ``KEY.txt``.
    """

    def __init__(self, set_path: Path, index: int, render: dict, schema: pa.Schema = ROW_SCHEMA):
        self.index = index
        self.render = dict(render)
        self.schema = schema
        self.final_tar = tar_path(set_path, index)
        self.final_parquet = parquet_path(set_path, index)
        self.tmp_tar = tmp_path(self.final_tar)
        self._file = open(self.tmp_tar, "wb")
        self._hashing = _HashingFile(self._file)
        # Fixed mtime/owner: the same samples give the same tar bytes on every machine and rank.
        self._tar = wds.TarWriter(self._hashing, user="gift", group="gift", mode=0o444, encoder=False, mtime=0.0)
        self.rows: list[dict] = []
        self._done = False

    def add(self, row: dict, image: bytes | None, ext: str, meta: dict) -> None:
        key = row["key"]
        if not is_valid_key(key):
            raise ValueError(f"invalid sample key {key!r}: use letters, digits, '-' and '_' only")
        if image is not None:
            self._tar.write({"__key__": key, ext: image, "json": canonical_json(meta)})
        self.rows.append({**row, "status": OK if image is not None else FLAGGED})

    def commit(self) -> ShardRecord:
        """Seal the tar (fsync, rename), then write the parquet record the same way."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        record = ShardRecord(
            index=self.index,
            samples=sum(r["status"] == OK for r in self.rows),
            flagged=sum(r["status"] == FLAGGED for r in self.rows),
            bytes=self._hashing.bytes,
            sha256=self._hashing.sha256.hexdigest(),
            render=self.render,
        )
        os.replace(self.tmp_tar, self.final_tar)
        try:
            table = pa.Table.from_pylist(self.rows, schema=self.schema)
            table = table.replace_schema_metadata({RECORD_KEY: canonical_json(record.to_dict())})
            tmp = tmp_path(self.final_parquet)
            try:
                with open(tmp, "wb") as f:
                    pq.write_table(table, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.final_parquet)
            finally:
                tmp.unlink(missing_ok=True)
        except BaseException:
            # Without its record the tar is unverifiable: remove it rather than leave it looking done.
            self.final_tar.unlink(missing_ok=True)
            raise
        fsync_dir(self.final_tar.parent)
        self._done = True
        return record

    def abort(self) -> None:
        self._hashing.f = None
        if not self._file.closed:
            self._file.close()
        self.tmp_tar.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._done:
            self.abort()
