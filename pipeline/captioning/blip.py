"""BLIP captioners behind one small interface: ``caption(images) -> [str]``.

- ``blip`` (default): ``Salesforce/blip-image-captioning-base`` through transformers
  (``BlipForConditionalGeneration`` + ``BlipProcessor``), from the Hugging Face cache (local files only unless
  downloads are allowed; ``HF_HUB_OFFLINE`` always respected); any other Hub id the same way;
- a local directory holding a transformers BLIP captioning checkpoint;
- ``tiny``: the same classes with tiny random weights (``pipeline.captioning.tiny_blip``), for CPU tests.

Where a captioner is and which revision it is are settled first (:func:`locate_captioner`, cheap: no weights
loaded), because both go into the caption set's spec and a missing captioner should fail before any work.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from pipeline.generation.generators import ModelNotFoundError
from pipeline.hub import not_found_message, offline

from .tiny_blip import build_tiny_blip, tiny_revision

BLIP_ID = "Salesforce/blip-image-captioning-base"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
_SKIP_DOWNLOAD = ["*.h5", "*.msgpack", "*.ot", "*.onnx"]  # other frameworks' copies of the weights


class CaptionerNotFoundError(ModelNotFoundError):
    """Captioner weights that are not on this machine."""


@dataclass(frozen=True)
class Decoding:
    """How captions are decoded: beam search, greedy within beams, at most ``max_new_tokens`` tokens."""

    num_beams: int = 3
    max_new_tokens: int = 30


@dataclass(frozen=True)
class CaptionerSource:
    """A located captioner: ``name`` and ``revision`` go into the caption set's spec, ``path`` is where it is."""

    name: str  # "tiny", a Hub id, or "local" (a directory: its identity is the revision, a content hash)
    revision: str  # the Hub commit, the tiny config's hash, or the local directory's content hash
    path: Path | None  # None for tiny


def locate_captioner(captioner: str, *, revision: str | None = None, allow_download: bool = False) -> CaptionerSource:
    """Find ``captioner`` (``blip``, ``tiny``, a Hub id or a local directory) without loading it; a clear error
    naming what was searched when it is not here."""
    if captioner == "tiny":
        return CaptionerSource("tiny", tiny_revision(), None)
    local = Path(captioner).expanduser()
    if local.is_dir():
        return CaptionerSource("local", directory_revision(local), local.resolve())
    repo = BLIP_ID if captioner == "blip" else captioner
    if "/" not in repo:
        raise ValueError(f"unknown captioner {captioner!r}: use blip, tiny, a Hugging Face id (owner/name) or a "
                         "local directory holding a BLIP captioning checkpoint")
    return _locate_hub(repo, revision, allow_download)


def _locate_hub(repo: str, revision: str | None, allow_download: bool) -> CaptionerSource:
    from huggingface_hub import constants, snapshot_download

    local_only = offline() or not allow_download
    try:
        path = Path(snapshot_download(repo, revision=revision, local_files_only=local_only,
                                      ignore_patterns=_SKIP_DOWNLOAD))
    except Exception as e:  # not cached (LocalEntryNotFoundError), unknown repo, network errors: all "not here"
        raise not_found(f"the Hugging Face cache {constants.HF_HUB_CACHE} for {repo!r} (revision "
                        f"{revision or 'main'})", local_only, e) from e
    if not any(p.suffix in WEIGHT_SUFFIXES for p in path.iterdir()):
        raise not_found(f"the Hugging Face cache snapshot {path} (it has no weight file)", local_only, None)
    return CaptionerSource(repo, path.name, path)  # a snapshot folder is named by its commit


def not_found(where: str, local_only: bool, cause: Exception | None) -> CaptionerNotFoundError:
    return CaptionerNotFoundError(not_found_message("BLIP captioner", where, BLIP_ID,
                                                    "--captioner /path/to/a/blip/directory", local_only, cause))


def directory_revision(path: Path) -> str:
    """A local checkpoint's identity, independent of where it lies: sha256 over its config, tokenizer and weight
    files (names and bytes), 16 hex characters."""
    h = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".txt", *WEIGHT_SUFFIXES))
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        raise not_found(f"the local directory {path} (it must hold a transformers BLIP checkpoint: config.json, "
                        "model.safetensors, the processor's and tokenizer's files)", True, None)
    for p in files:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    return f"sha256:{h.hexdigest()[:16]}"


class Captioner:
    """Captions a batch of images with a ``BlipForConditionalGeneration`` (unconditional: no text prompt)."""

    def __init__(self, model, processor, device: torch.device, decoding: Decoding):
        self.model = model.to(device).eval()
        self.processor, self.device, self.decoding = processor, device, decoding

    @torch.inference_mode()
    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image (lower-case words, special tokens removed, stripped)."""
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        ids = self.model.generate(pixel_values=pixels.to(self.device, self.model.dtype), do_sample=False,
                                  num_beams=self.decoding.num_beams, max_new_tokens=self.decoding.max_new_tokens)
        return [text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True)]


def load_captioner(source: CaptionerSource, device: torch.device, decoding: Decoding = Decoding()) -> Captioner:
    """Build the captioner ``source`` names, in fp32 on ``device``."""
    if source.path is None:
        model, processor = build_tiny_blip()
        return Captioner(model, processor, device, decoding)
    from transformers import BlipForConditionalGeneration, BlipProcessor

    try:
        model = BlipForConditionalGeneration.from_pretrained(source.path, local_files_only=True)
        processor = BlipProcessor.from_pretrained(source.path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise not_found(f"{source.path} (found, but it does not load as a BLIP captioning checkpoint)", True, e) from e
    return Captioner(model, processor, device, decoding)
