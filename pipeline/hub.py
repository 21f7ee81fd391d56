"""The Hugging Face Hub as the project uses it: the weights are read from the local cache only, and the command
that fills the cache is named in every "not found" message (one place, so the messages agree with the installed
huggingface_hub: since 1.0 its CLI is ``hf``; ``huggingface-cli`` no longer exists)."""

from __future__ import annotations

import os


def download_command(repo: str, *patterns: str) -> str:
    """``hf download REPO [--include P ...]``: what puts ``repo`` (or only the files matching ``patterns``) into the
    Hugging Face cache the project reads."""
    include = "".join(f" --include '{p}'" for p in patterns)
    return f"hf download {repo}{include}"


def cache_dir() -> str:
    """Where the Hub cache is (``HF_HOME`` / ``HF_HUB_CACHE`` move it)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def offline() -> bool:
    """``HF_HUB_OFFLINE`` is set: nothing may be fetched, whatever the options say."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def not_found_message(what: str, where: str, repo: str, option: str, local_only: bool,
                      cause: Exception | None = None) -> str:
    """The message of missing weights: what was searched, the command that puts ``repo`` into the cache, the
    ``option`` that points elsewhere, and why nothing was downloaded (``local_only``) or that the download failed."""
    hint = (f"Provide the weights: on a machine with network run `{download_command(repo)}` (then copy the cache, "
            f"or set HF_HOME), or pass {option}")
    if not local_only:
        hint += "; the download itself failed"
    elif not offline():
        hint += ", or allow a download with --download"
    detail = f"\n({type(cause).__name__}: {cause})" if cause is not None else ""
    return f"{what} not found: searched {where}.\n{hint}.{detail}"
