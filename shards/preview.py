"""A contact sheet of a shard set: N samples in a grid, each captioned with its prompt."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .layout import parquet_path
from .manifest import CAPTIONS, load_manifest, read_rows, set_kind
from .reader import iter_samples

CAPTION_LINES = 3
MARGIN = 3  # pixels between a caption and its cell's edges
# Pillow's bundled font (Aileron) at its default 10 px draws a space 2 px wide and words run together
# ("photoof"); from 12 px a space is 3 px and captions read as words.
MIN_FONT_PX = 12

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
# Printed above the renders of the tiny generator: its random weights draw noise, whatever the prompt says
TINY_NOTE = ("Tiny Stable Diffusion with random, untrained weights: these images are noise by design. They test the "
             "pipeline (shards, seeds, resume), not image quality; sd15 renders real images.")


def caption_font(cell: int) -> Font:
    """Pillow's bundled font at a size legible on a sheet of ``cell``-pixel images: cell / 18, at least 12 px."""
    return ImageFont.load_default(size=max(MIN_FONT_PX, cell // 18))


def caption_lines(text: str, font: Font, width: int, max_lines: int = CAPTION_LINES) -> list[str]:
    """``text`` wrapped at spaces into at most ``max_lines`` lines, each at most ``width`` pixels wide in ``font``.

    A word wider than a line is split across lines; text beyond the last line is cut and marked with an ellipsis.
    """

    def fits(line: str) -> bool:
        return font.getlength(line) <= width

    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if fits(candidate):
            current = candidate
            continue
        if current:
            lines.append(current)
        while not fits(word):  # longer than a whole line: cut it where the line is full
            cut = 1
            while fits(word[: cut + 1]):
                cut += 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and not fits(last + "…"):
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last.rstrip() + "…"]
    return lines


def contact_sheet(set_path: Path, out: Path, *, n: int = 16, columns: int = 4, cell: int = 256) -> int:
    """Write a PNG grid of ``n`` samples evenly spaced over the set; returns how many were shown.

    Plans are class-major, so even spacing shows many classes rather than the first one's images. A set of the
    ``tiny`` generator gets :data:`TINY_NOTE` above its grid, so nobody takes its noise for a broken render.
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
    font = caption_font(cell)
    ascent, descent = font.getmetrics()
    line_h = ascent + descent + 2
    rows = -(-len(samples) // columns)
    cell_h = cell + line_h * CAPTION_LINES + 2 * MARGIN
    tiny = manifest["spec"].get("generator") == "tiny"
    note = caption_lines(TINY_NOTE, font, columns * cell - 2 * MARGIN, max_lines=8) if tiny else []
    top = line_h * len(note) + (2 * MARGIN if note else 0)
    sheet = Image.new("RGB", (columns * cell, top + rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for j, line in enumerate(note):
        draw.text((MARGIN, MARGIN + j * line_h), line, fill="firebrick", font=font)
    for k, sample in enumerate(samples):
        x, y = (k % columns) * cell, top + (k // columns) * cell_h
        image = sample.pil()
        scale = cell / max(image.size)  # up or down: tiny renders are 32-64 px
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BICUBIC)
        sheet.paste(image, (x + (cell - image.width) // 2, y))
        caption = sample.meta.get("prompt", sample.key)
        for j, line in enumerate(caption_lines(caption, font, cell - 2 * MARGIN)):
            draw.text((x + MARGIN, y + cell + MARGIN + j * line_h), line, fill="black", font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return len(samples)
