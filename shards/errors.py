"""Errors of the shard-set format; each message names the file at fault and the way out."""


class ShardSetError(Exception):
    """A shard set is missing, malformed or inconsistent."""


class CorruptShardError(ShardSetError):
    """A shard's bytes disagree with its recorded checksum, or a sample cannot be read."""


class SpecMismatchError(ShardSetError):
    """A directory holds a set whose spec differs from the one asked for."""


class StoreError(ShardSetError):
    """A store (directory, ssh://, http(s)://, ...) cannot be reached, read or written."""
