"""A contact sheet of a shard set: N samples in a grid, each captioned with its prompt."""

from __future__ import annotations

import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .layout import parquet_path
from .manifest import CAPTIONS, load_manifest, read_rows, set_kind
from .reader import iter_samples

CAPTION_LINES = 3


def contact_sheet(set_path: Path, out: Path, *, n: int = 16, columns: int = 4, cell: int = 256) -> int:
    """Write a PNG grid of ``n`` samples evenly spaced over the set; returns how many were shown.

    Plans are class-major, so even spacing shows many classes rather than the first one's images.
    """
    manifest = load_manifest(set_path)
    if set_kind(manifest["spec"]) == CAPTIONS:
        raise ValueError(f"{set_path} is a caption set: it holds no images (`gift shards info` lists its captions; "
                         "`gift generate TASK --captions SET` renders them)")
    stored = [(s["index"], r["key"]) for s in manifest["shards"]
              for r in read_rows(parquet_path(set_path, s["index"])) if r["status"] == "ok"]
    if not stored:
        raise ValueError(f"{set_path}: no finished samples to preview yet")
    picks = sorted({stored[round(k * (len(stored) - 1) / max(1, n - 1))] for k in range(min(n, len(stored)))})
    wanted = {key for _, key in picks}
    samples = [s for s in iter_samples(set_path, sorted({i for i, _ in picks})) if s.key in wanted]
    font = ImageFont.load_default()
    line_h = 12
    rows = -(-len(samples) // columns)
    cell_h = cell + line_h * CAPTION_LINES + 6
    sheet = Image.new("RGB", (columns * cell, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for k, sample in enumerate(samples):
        x, y = (k % columns) * cell, (k // columns) * cell_h
        image = sample.pil()
        scale = cell / max(image.size)  # up or down: tiny renders are 32-64 px
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC)
        sheet.paste(image, (x + (cell - image.width) // 2, y))
        lines = textwrap.wrap(sample.meta.get("prompt", sample.key), width=max(10, cell // 6))[:CAPTION_LINES]
        for j, line in enumerate(lines):
            draw.text((x + 3, y + cell + 3 + j * line_h), line, fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return len(samples)
