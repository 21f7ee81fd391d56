"""The Hugging Face Hub as the project uses it: the weights are read from the local cache only, and the command
that fills the cache is named in every "not found" message (one place, so the messages agree with the installed
huggingface_hub: since 1.0 its CLI is ``hf``; ``huggingface-cli`` no longer exists)."""

from __future__ import annotations


def download_command(repo: str, *patterns: str) -> str:
    """``hf download REPO [--include P ...]``: what puts ``repo`` (or only the files matching ``patterns``) into the
    Hugging Face cache the project reads."""
    include = "".join(f" --include '{p}'" for p in patterns)
    return f"hf download {repo}{include}"


def cache_dir() -> str:
    """Where the Hub cache is (``HF_HOME`` / ``HF_HUB_CACHE`` move it)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)
