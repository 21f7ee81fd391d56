"""Writing a set, shard by shard, resumably: what every stage that makes a set does around its own work.

Both producers of sets use it, ``gift generate`` (image sets) and ``gift caption`` (caption sets); what differs
between them is only how a shard's samples are made. A :class:`SetWriter` is the set of one spec under
construction:

- :meth:`SetWriter.open` (one writer: rank 0) creates ``<root>/<task>/<hash16>/`` or checks that the set there was
  made by this very spec (a planted or colliding one is refused, never reused), removes the temporaries a killed
  process left, and writes the manifest;
- :meth:`SetWriter.finished` tells a shard to keep (record present, tar matching its checksum) from one to redo,
  removing a broken one, so re-running the same command finishes a set to the same bytes;
- :meth:`SetWriter.shard` writes one shard crash-safe with the set's row schema (:class:`shards.writer.ShardWriter`);
- :meth:`SetWriter.write_manifest` rebuilds the manifest from the shards' records (after each shard, and last);
- :meth:`SetWriter.remove_if_empty` undoes :meth:`open` when a start failed before any shard was written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import SpecMismatchError
from .layout import MANIFEST, parquet_path, spec_hash, tar_path
from .manifest import collect_records, load_manifest, make_manifest, read_record, row_schema, write_manifest
from .verify import check_shard
from .writer import ShardWriter

log = logging.getLogger("gift.shards")
STALE = ".*.tmp-*"  # temporaries (layout.tmp_path, and pipeline.dist's shared-directory marker): never complete


@dataclass(frozen=True)
class SetWriter:
    """The set of ``spec`` (its ``to_dict()``: ``task`` and, for caption sets, ``kind``) at ``path``, planned as
    ``num_shards`` shards of ``planned`` samples in all; ``versions`` are the libraries recorded in the manifest."""

    path: Path
    spec: Mapping
    num_shards: int
    planned: int
    versions: Mapping[str, str]

    def open(self) -> dict:
        """Create the set directory, or check that the set there was made by this very spec; returns the manifest.

        Raises :class:`SpecMismatchError` (nothing touched) when the directory holds another spec's set.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if (self.path / MANIFEST).exists():
            existing = load_manifest(self.path)
            if existing["spec"] != dict(self.spec):
                raise SpecMismatchError(
                    f"{self.path} holds a set made by a different spec with the same hash prefix (existing "
                    f"{existing['spec_hash']}, requested {spec_hash(self.spec)}); move it away or choose "
                    "another --out")
        for stale in self.path.glob(STALE):  # left by a killed process: never complete, never read
            stale.unlink(missing_ok=True)
        return self.write_manifest()

    def remove_if_empty(self) -> None:
        """Undo :meth:`open` when no shard was written, so a failed start leaves no empty set behind."""
        if any(self.path.glob("*.parquet")):
            return
        (self.path / MANIFEST).unlink(missing_ok=True)
        for d in (self.path, self.path.parent):
            try:
                d.rmdir()  # only succeeds while empty
            except OSError:
                break

    def finished(self, index: int) -> bool:
        """True when shard ``index`` has a record and its tar matches it; a broken shard is removed (to be redone)."""
        record_file = parquet_path(self.path, index)
        if not record_file.exists():
            return False
        try:
            problems = check_shard(self.path, index, read_record(record_file), deep=False, spec=self.spec)
        except Exception as e:  # an unreadable record is a broken shard like any other
            problems = [str(e)]
        if not problems:
            return True
        log.warning("redoing shard %06d: %s", index, "; ".join(problems))
        record_file.unlink(missing_ok=True)
        tar_path(self.path, index).unlink(missing_ok=True)
        return False

    def shard(self, index: int, render: dict) -> ShardWriter:
        """A writer of shard ``index`` with the set's row schema; ``render`` says how it was computed (device,
        dtype, batch size: numerics, recorded per shard, not hashed)."""
        return ShardWriter(self.path, index, render, schema=row_schema(self.spec))

    def write_manifest(self) -> dict:
        """Rebuild the manifest from the records of the shards finished on disk, write it, and return it."""
        manifest = make_manifest(task=self.spec["task"], spec=self.spec, num_shards=self.num_shards,
                                 planned_samples=self.planned, records=collect_records(self.path, self.num_shards),
                                 versions=self.versions)
        write_manifest(self.path, manifest)
        return manifest
