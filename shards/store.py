"""Stores: where published shard sets live, shared between machines.

A store has the layout of a local root, so a plain copy of ``shards-out`` is a store and a store is a root:

    STORE/<task>/<hash16>/manifest.json      written last: a set without it is not published (yet)
    STORE/<task>/<hash16>/NNNNNN.tar|.parquet
    STORE/<task>/<hash16>/.NAME.part         an upload in progress (never read)

STORE is a directory (a shared or NFS mount), ``file://``, ``ssh://[user@]host[:port]/path`` (SFTP; ``~/.ssh/config``
host aliases, identity files and known hosts are honoured), ``http(s)://`` (read-only: any static web server
that lists directories), or any other fsspec URL whose driver is installed.

Everything read from a store is untrusted: manifests are parsed as JSON and validated field by field, task and
hash names are checked before they become local paths, shard file names are derived from integer indices (never
taken from the store), and nothing is unpickled or executed.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ShardSetError, SpecMismatchError, StoreError
from .layout import FORMAT, HASH_DIR_LEN, MANIFEST, spec_hash
from .manifest import IMAGES, KINDS, ShardRecord, set_kind

log = logging.getLogger("gift.shards")

CHUNK = 1 << 20  # bytes per read/write while streaming a file
MAX_MANIFEST_BYTES = 64 << 20
MAX_SHARDS = 1_000_000
READ_ONLY_PROTOCOLS = ("http", "https")
PENDING = ".publishing.json"  # the manifest-to-be of a push in progress (says whose files are on the store)
_TASK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_HASH16 = re.compile(rf"^[0-9a-f]{{{HASH_DIR_LEN}}}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def is_url(location: str | os.PathLike) -> bool:
    """True for ``scheme://...`` (a store to fetch from), false for a plain local path."""
    return "://" in str(location)


def is_valid_task(name: str) -> bool:
    return isinstance(name, str) and bool(_TASK.match(name))


def is_valid_hash16(name: str) -> bool:
    return isinstance(name, str) and bool(_HASH16.match(name))


class Progress:
    """Transfer hooks for the CLI's display; the default does nothing."""

    def start(self, label: str, total_bytes: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def finish(self) -> None: ...


@dataclass
class Store:
    """An opened store: an fsspec filesystem and the store's root path inside it."""

    url: str  # as the user wrote it (messages)
    fs: object  # fsspec AbstractFileSystem
    root: str

    @property
    def protocol(self) -> str:
        protocol = self.fs.protocol
        return protocol[0] if isinstance(protocol, tuple) else protocol

    @property
    def read_only(self) -> bool:
        return self.protocol in READ_ONLY_PROTOCOLS

    @property
    def is_local(self) -> bool:
        return self.protocol in ("file", "local")

    def path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def address(self, rel: str = "") -> str:
        """Where ``rel`` is, as the user would write it (``STORE/task/hash/file``)."""
        return f"{self.url.rstrip('/')}/{rel}" if rel else self.url

    def listdir(self, rel: str) -> dict[str, int | None]:
        """Entry name -> size (None for directories) of a store directory; {} when it does not exist."""
        try:
            with transport(self, f"listing {self.address(rel)}"):
                entries = self.fs.ls(self.path(rel), detail=True)
        except FileNotFoundError:
            return {}
        out = {}
        for entry in entries:
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            out[name] = None if entry.get("type") == "directory" else entry.get("size")
        return out

    def read_bytes(self, rel: str, limit: int) -> bytes | None:
        """A small file's bytes (at most ``limit``), or None when it does not exist."""
        try:
            with transport(self, f"reading {self.address(rel)}"), self.fs.open(self.path(rel), "rb", **self._read_kw()) as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            return None
        if len(data) > limit:
            raise StoreError(f"{self.address(rel)}: larger than {limit} bytes; not a manifest of this project")
        return data

    def open_read(self, rel: str):
        f = self.fs.open(self.path(rel), "rb", **self._read_kw())
        if hasattr(f, "prefetch"):  # paramiko's SFTPFile: pipelined reads, not one round trip per read
            f.prefetch()
        return f

    def _read_kw(self) -> dict:
        # HTTP: stream the body in one request (servers like `python -m http.server` ignore Range requests).
        return {"block_size": 0} if self.protocol in READ_ONLY_PROTOCOLS else {}

    def upload(self, source: Path | bytes, rel: str, progress: Progress | None = None) -> None:
        """Write ``rel`` under a hidden temporary name beside it, then rename: readers see all of it or nothing."""
        parent, name = rel.rsplit("/", 1)
        tmp, final = self.path(f"{parent}/.{name}.part"), self.path(rel)
        with transport(self, f"writing {self.address(rel)}"):
            with self.fs.open(tmp, "wb") as dst:
                if hasattr(dst, "set_pipelined"):  # paramiko: don't wait for an ack per write
                    dst.set_pipelined(True)
                for chunk in _chunks(source):
                    dst.write(chunk)
                    if progress:
                        progress.advance(len(chunk))
                if self.is_local:
                    dst.flush()
                    os.fsync(dst.fileno())
            self.fs.mv(tmp, final)

    def remove(self, rel: str) -> None:
        try:
            with transport(self, f"removing {self.address(rel)}"):
                self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass

    def makedirs(self, rel: str) -> None:
        with transport(self, f"creating {self.address(rel)}"):
            self.fs.makedirs(self.path(rel), exist_ok=True)


def _chunks(source: Path | bytes) -> Iterator[bytes]:
    if isinstance(source, bytes):
        for i in range(0, len(source), CHUNK):
            yield source[i : i + CHUNK]
        return
    with open(source, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


@contextmanager
def transport(store: Store, what: str):
    """Turn whatever a driver raises (OSError, aiohttp, paramiko, ...) into one StoreError naming the step.

    FileNotFoundError passes through: what a missing file means is the caller's call.
    """
    try:
        yield
    except ShardSetError:
        raise
    except FileNotFoundError as e:
        # fsspec's HTTP driver reports any failure to stat a URL (connection refused too) as FileNotFoundError
        cause = e.__cause__
        if cause is None or isinstance(cause, FileNotFoundError) or getattr(cause, "status", None) == 404:
            raise
        raise StoreError(_lost(what, cause)) from e
    except PermissionError as e:
        raise StoreError(f"{what}: permission denied ({e}); the store {store.url} is read-only for this user. "
                         "Push to a store you can write (a directory or ssh://host/path), or fix its permissions") from e
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise StoreError(f"{what}: the store {store.url} is full ({e.strerror}); free space there and re-run the "
                             "same command: files already published are kept and not sent again") from e
        raise StoreError(_lost(what, e)) from e
    except Exception as e:  # transport-specific errors (aiohttp.ClientError, paramiko.SSHException, ...)
        raise StoreError(_lost(what, e)) from e


def _lost(what: str, e: Exception) -> str:
    return (f"{what}: {type(e).__name__}: {e or 'connection lost'}. Check that the store is reachable and re-run "
            "the same command: finished files are kept and the transfer resumes")


def open_store(url: str | os.PathLike) -> Store:
    """Open a store by path or URL (connecting, for ssh://); errors name the store and the way out."""
    url = str(url)
    import fsspec

    if not is_url(url):
        return Store(url, fsspec.filesystem("file"), str(Path(url).expanduser().resolve()))
    scheme = url.split("://", 1)[0].lower()
    with transport(Store(url, None, ""), f"connecting to {url}"):
        if scheme in ("ssh", "sftp"):
            return _open_ssh(url)
        if scheme in READ_ONLY_PROTOCOLS:
            import aiohttp

            # Fail a stalled connection instead of hanging forever; no total limit for large shards.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120)
            fs = fsspec.filesystem(scheme, skip_instance_cache=True, client_kwargs={"timeout": timeout})
            return Store(url, fs, url.rstrip("/"))
        try:
            fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True)
        except (ImportError, ValueError) as e:
            raise StoreError(f"{url}: no fsspec driver for {scheme}:// ({e}); install the package that provides it "
                             "(e.g. s3fs for s3://, gcsfs for gs://) or use a directory, ssh:// or https://") from e
        return Store(url, fs, root)


def _open_ssh(url: str) -> Store:
    """SFTP through paramiko, configured like ``ssh`` would be: ``~/.ssh/config`` (or $GIFT_SSH_CONFIG) gives
    the host's real name, port, user, identity files and known-hosts file; the URL's own user/port win."""
    import paramiko

    parts = urlsplit(url)
    if not parts.hostname:
        raise StoreError(f"{url}: no host; write ssh://[user@]host[:port]/path")
    config_file = Path(os.environ.get("GIFT_SSH_CONFIG", "~/.ssh/config")).expanduser()
    config = paramiko.SSHConfig.from_path(str(config_file)).lookup(parts.hostname) if config_file.exists() else {}
    kwargs: dict = {
        "port": parts.port or int(config.get("port", 22)),
        "username": parts.username or config.get("user") or None,
        "timeout": 30,
        "banner_timeout": 30,
        "auth_timeout": 30,
    }
    policy = _known_hosts_policy(
        Path(os.path.expanduser(config.get("userknownhostsfile", "~/.ssh/known_hosts").split()[0])),
        strict=config.get("stricthostkeychecking", "").lower() == "yes",
    )
    if "identityfile" in config:
        kwargs["key_filename"] = [os.path.expanduser(k) for k in config["identityfile"]]
    fs = _verified_sftp()(config.get("hostname", parts.hostname), policy, skip_instance_cache=True, **kwargs)
    fs.ftp.get_channel().settimeout(120)  # a server that stops answering mid-transfer becomes an error, not a hang
    # ssh://host/~/store is relative to the login directory, ssh://host/srv/store absolute.
    root = parts.path[3:] if parts.path.startswith("/~/") else (parts.path or "/")
    return Store(url, fs, root or ".")


def _verified_sftp() -> type:
    """fsspec's SFTP filesystem, connecting with our host-key policy (fsspec's own accepts any host key)."""
    import paramiko
    from fsspec.implementations.sftp import SFTPFileSystem

    class VerifiedSFTPFileSystem(SFTPFileSystem):
        def __init__(self, host: str, policy, **ssh_kwargs):
            self.policy = policy
            super().__init__(host, **ssh_kwargs)

        def _connect(self) -> None:
            self.client = paramiko.SSHClient()
            self.client.set_missing_host_key_policy(self.policy)
            self.client.connect(self.host, **self.ssh_kwargs)
            self.ftp = self.client.open_sftp()

    return VerifiedSFTPFileSystem


def _known_hosts_policy(known_hosts: Path, strict: bool):
    """paramiko's check for hosts it doesn't know yet (it is handed no host keys): a key that differs from the
    known-hosts file is refused (a man in the middle, or a reinstalled host); an unknown host is accepted with a
    warning, as ``ssh -o StrictHostKeyChecking=accept-new`` does, unless ``StrictHostKeyChecking yes``."""
    import paramiko

    class KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname: str, key) -> None:
            known = paramiko.HostKeys(str(known_hosts)) if known_hosts.exists() else paramiko.HostKeys()
            entry = known.lookup(hostname)
            if entry is not None and key.get_name() in entry:
                if entry[key.get_name()] == key:
                    return
                raise paramiko.SSHException(
                    f"the host key of {hostname} differs from the one in {known_hosts}: refusing to connect (a "
                    f"man in the middle, or a reinstalled host: then fix its line with ssh-keygen -R '{hostname}')")
            if strict:
                raise paramiko.SSHException(f"{hostname} is not in {known_hosts} and StrictHostKeyChecking is yes; "
                                            f"connect once with ssh {hostname} to add it")
            log.warning("%s is not in %s; accepting its %s key %s for this session", hostname, known_hosts,
                        key.get_name(), key.fingerprint)

    return KnownHostsPolicy()


# ---------------------------------------------------------------------------------------------------------------
# Manifests read from a store: every field that is used later is checked here, once.


def _check(cond: bool, where: str, what: str) -> None:
    if not cond:
        raise ShardSetError(f"{where}: invalid manifest ({what}); refusing this set")


def _nonneg_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def parse_manifest(data: bytes, where: str) -> dict:
    """A store's manifest, validated: known format, hash of its own spec, safe task name, shard records with
    integer indices in range (file names are derived from them), sizes and sha256s well-formed."""
    try:
        m = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ShardSetError(f"{where}: unreadable manifest ({e}); refusing this set") from e
    _check(isinstance(m, dict), where, "not a JSON object")
    _check(m.get("format") == FORMAT, where, f"format {m.get('format')!r}, expected {FORMAT}")
    _check(isinstance(m.get("spec"), dict) and isinstance(m.get("spec_hash"), str), where, "no spec")
    if spec_hash(m["spec"]) != m["spec_hash"]:
        raise SpecMismatchError(f"{where}: the recorded spec_hash is not the hash of the recorded spec; refusing this set")
    _check(set_kind(m["spec"]) in KINDS and m.get("kind", IMAGES) == set_kind(m["spec"]), where,
           f"kind {m.get('kind')!r} (spec: {set_kind(m['spec'])!r})")
    _check(is_valid_task(m.get("task")) and m["task"] == m["spec"].get("task"), where, f"task name {m.get('task')!r}")
    num = m.get("num_shards")
    _check(_nonneg_int(num) and num <= MAX_SHARDS, where, f"num_shards {num!r}")
    _check(isinstance(m.get("shards"), list) and isinstance(m.get("complete"), bool), where, "no shard list")
    seen = set()
    for s in m["shards"]:
        _check(isinstance(s, dict), where, "a shard entry is not an object")
        i = s.get("index")
        _check(_nonneg_int(i) and i < num and i not in seen, where, f"shard index {i!r}")
        seen.add(i)
        _check(all(_nonneg_int(s.get(k)) for k in ("samples", "flagged", "bytes")), where, f"shard {i} counts")
        _check(isinstance(s.get("sha256"), str) and bool(_SHA256.match(s["sha256"])), where, f"shard {i} sha256")
        _check(isinstance(s.get("render"), dict), where, f"shard {i} render")
    _check(m["complete"] == (len(seen) == num), where, "complete flag disagrees with the shard list")
    for p in m.get("parquet", []):
        _check(isinstance(p, dict) and p.get("index") in seen, where, "a parquet entry names no listed shard")
        _check(_nonneg_int(p.get("bytes")) and isinstance(p.get("sha256"), str) and bool(_SHA256.match(p["sha256"])),
               where, f"parquet {p.get('index')} checksum")
    return m


def shard_records(manifest: dict) -> dict[int, ShardRecord]:
    return {s["index"]: ShardRecord.from_dict(s) for s in manifest["shards"]}


def parquet_sums(manifest: dict) -> dict[int, dict]:
    """index -> {bytes, sha256} of each shard's parquet file, when the set was published by `gift shards push`."""
    return {p["index"]: p for p in manifest.get("parquet", [])}


def set_rel(task: str, hash16: str) -> str:
    if not is_valid_task(task):
        raise ShardSetError(f"invalid task name {task!r}: letters, digits, '-' and '_' only")
    if not is_valid_hash16(hash16):
        raise ShardSetError(f"invalid set hash {hash16!r}: the {HASH_DIR_LEN} hex characters `gift shards ls` shows")
    return f"{task}/{hash16}"


def read_manifest(store: Store, task: str, hash16: str) -> dict | None:
    """The validated manifest of STORE/task/hash16, or None when the set is not published there."""
    rel = set_rel(task, hash16)
    data = store.read_bytes(f"{rel}/{MANIFEST}", MAX_MANIFEST_BYTES)
    if data is None:
        return None
    where = store.address(f"{rel}/{MANIFEST}")
    manifest = parse_manifest(data, where)
    _check(manifest["task"] == task and manifest["spec_hash"][:HASH_DIR_LEN] == hash16, where,
           "its task or hash is not the directory it is in")
    return manifest


@dataclass
class RemoteSet:
    task: str
    hash16: str
    manifest: dict | None  # None: no manifest (a push in progress or interrupted), or an invalid one
    problem: str | None = None


def list_sets(store: Store, tasks: list[str] | None = None) -> list[RemoteSet]:
    """Every set directory of a store (of ``tasks`` only, if given), with its validated manifest."""
    entries = store.listdir("")
    if not entries:
        with transport(store, f"reading {store.url}"):
            if not store.fs.exists(store.path("")):
                raise StoreError(f"{store.url}: no such store (nothing there); check the path or URL")
    names = tasks if tasks is not None else sorted(n for n in entries if is_valid_task(n))
    out = []
    for task in names:
        for hash16 in sorted(h for h in store.listdir(task) if is_valid_hash16(h)):
            try:
                out.append(RemoteSet(task, hash16, read_manifest(store, task, hash16)))
            except ShardSetError as e:
                out.append(RemoteSet(task, hash16, None, str(e)))
    return out
