"""A contact sheet of a shard set: N samples in a grid, each captioned with its prompt."""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .manifest import load_manifest
from .reader import iter_samples

CAPTION_LINES = 3


def contact_sheet(set_path: Path, out: Path, *, n: int = 16, columns: int = 4, cell: int = 256) -> int:
    """Write a PNG grid of the first ``n`` samples spread evenly over the set's shards; returns how many.

    Samples are taken round-robin over the shards so a sheet shows many classes, not the first few.
    """
    manifest = load_manifest(set_path)
    indices = [s["index"] for s in manifest["shards"]]
    per_shard = max(1, -(-n // max(1, len(indices))))
    samples = []
    for i in indices:
        taken = 0
        for sample in iter_samples(set_path, [i]):
            samples.append(sample)
            taken += 1
            if taken == per_shard:
                break
    samples = samples[:n]
    if not samples:
        raise ValueError(f"{set_path}: no finished samples to preview yet")
    font = ImageFont.load_default()
    line_h = 12
    rows = -(-len(samples) // columns)
    cell_h = cell + line_h * CAPTION_LINES + 6
    sheet = Image.new("RGB", (columns * cell, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, sample in enumerate(samples):
        x, y = (k % columns) * cell, (k // columns) * cell_h
        image = sample.pil()
        image.thumbnail((cell, cell))
        sheet.paste(image, (x + (cell - image.width) // 2, y))
        lines = textwrap.wrap(sample.meta.get("prompt", sample.key), width=max(10, cell // 6))[:CAPTION_LINES]
        for j, line in enumerate(lines):
            draw.text((x + 3, y + cell + 3 + j * line_h), line, fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return len(samples)
