"""The pretrained weights a run reads, as a list of entries: another model (e.g. MoE-Adapter's AlexNet) is one more.

Each entry's ``locate`` is the loader's own look-up (the Hugging Face cache, a directory or a file, never a download),
so the doctor finds exactly what `gift generate` / `gift train` / `gift caption` would, and its "not found" message,
which names the ``hf download`` command, is the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .findings import NOTE, OK, Finding, split_message


@dataclass(frozen=True)
class WeightEntry:
    name: str  # "Stable Diffusion v1.5"
    used_by: str  # which command reads it
    locate: Callable[[], object]  # the loader's look-up: returns where the weights are, raises when absent
    required: bool = True  # False: only some runs need it (listed as a note when absent)


def weight_entries(model: str, clip_arch: str, clip_weights: str, captioner: str, *,
                   captions_needed: bool, alexnet: str | None = None) -> list[WeightEntry]:
    """The weights of a run of one order: SD for its pool (``model``: `gift generate --model`), CLIP for training,
    BLIP for `gift caption` (required when the run replays captions, CLTS or ``--replay-captions``), AlexNet for
    MoE-Adapter's DDAS (``alexnet``: its ``--alexnet-weights``; None when the run has no DDAS). Built-in tiny models,
    real reference images and random weights need none."""
    from pipeline.captioning.blip import locate_captioner
    from pipeline.generation.generators import SD15_ID, locate_sd15
    from pipeline.models import ClipSpec, clip_weights_file

    entries = []
    if model != "tiny" and not model.startswith("reference:"):
        name = "Stable Diffusion v1.5" if model == "sd15" else f"Stable Diffusion ({model})"
        entries.append(WeightEntry(name, "gift generate (the replay pool)",
                                   lambda: locate_sd15(SD15_ID if model == "sd15" else model)))
    if clip_weights not in ("none", "random"):
        name = f"CLIP {clip_arch} ({'OpenAI' if clip_weights == 'openai' else clip_weights})"
        entries.append(WeightEntry(name, "gift train, gift table, gift caption",
                                   lambda: clip_weights_file(ClipSpec(clip_arch, clip_weights))))
    if captioner != "tiny":
        name = "BLIP captioner" if captioner == "blip" else f"captioner {captioner}"
        entries.append(WeightEntry(name, "gift caption (CLTS, --replay-captions)",
                                   lambda: locate_captioner(captioner).path, required=captions_needed))
    if alexnet is not None and alexnet not in ("none", "random"):
        from pipeline.moe.ddas import alexnet_weights_path

        entries.append(WeightEntry("AlexNet (ImageNet)", "gift train --method moe-adapter (DDAS)",
                                   lambda: alexnet_weights_path(alexnet)))
    return entries


def check_weights(entries: list[WeightEntry]) -> list[Finding]:
    findings = []
    for entry in entries:
        try:
            where = entry.locate()
        except Exception as e:  # noqa: BLE001 -- every loader's "not found" (its own error type) is a finding
            searched, fix = split_message(str(e))
            status = "missing" if entry.required else NOTE
            detail = searched if entry.required else f"not here; needed only by {entry.used_by}: {searched}"
            findings.append(Finding("weights", entry.name, status, detail, fix))
            continue
        findings.append(Finding("weights", entry.name, OK, f"{Path(str(where))} (for {entry.used_by})"))
    return findings
