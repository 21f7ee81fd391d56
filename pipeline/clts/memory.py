"""CLTS's memory table: what a caption memory costs beside keeping images.

CLTS keeps, of every task's data, only its captions (their UTF-8 bytes). The table sets them beside the raw uint8
bytes of as many images at the dataset's native size (CIFAR 32×32×3 = 3,072 B, TinyImageNet 64×64×3 = 12,288 B) and
of a 200- and a 500-image replay buffer (the usual rehearsal sizes), each with its ratio to the captions. The frozen
generators (BLIP, Stable Diffusion) are shared, not per task, and never grow: they are listed apart, by parameter count
(of their architectures: tested against transformers' ``BlipConfig()`` and ``pipeline.generation.sd15_arch``) and
size in fp32 / fp16.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

BUFFERS = (200, 500)
# Frozen generator weights (parameters; the Hub's BLIP file also stores its tied word embeddings twice: 0.99 GB).
GENERATORS: tuple[tuple[str, int], ...] = (
    ("BLIP base captioner (Salesforce/blip-image-captioning-base)", 223_971_644),
    ("SD v1.5 UNet", 859_520_964),
    ("SD v1.5 VAE", 83_653_863),
    ("SD v1.5 text encoder (CLIP ViT-L/14)", 123_060_480),
)


@dataclass(frozen=True)
class MemoryRow:
    """One line of the table: ``items`` captions or images taking ``bytes``, ``ratio`` = bytes / the captions' bytes."""

    what: str
    items: int
    bytes: int
    ratio: float


def image_bytes(shape: tuple[int, int, int]) -> int:
    """Raw uint8 bytes of one image of (height, width, channels)."""
    h, w, c = shape
    return h * w * c


def memory_rows(captions: int, caption_bytes: int, shape: tuple[int, int, int],
                buffers: tuple[int, ...] = BUFFERS, params: tuple[str, int, int] | None = None) -> list[MemoryRow]:
    """The captions kept, then (``params`` = (what, count, bytes): the learned parameters kept beyond CLIP, CLTS's
    heads and router) those parameters and captions + parameters, then as many raw images, then each replay buffer;
    ratios against the captions' bytes (``inf`` with no caption bytes)."""
    h, w, c = shape
    each = image_bytes(shape)

    def ratio(n: int) -> float:
        return n / caption_bytes if caption_bytes else float("inf")

    rows = [MemoryRow("captions kept (UTF-8)", captions, caption_bytes, 1.0 if caption_bytes else float("nan"))]
    if params is not None:  # the same run keeps these too: a fair comparison with images shows both
        what, count, size = params
        rows += [MemoryRow(f"learned parameters beyond CLIP: {what} (items = parameters)", count, size, ratio(size)),
                 MemoryRow("captions + learned parameters", captions, caption_bytes + size, ratio(caption_bytes + size))]
    rows += [MemoryRow(f"as many raw images ({h}×{w}×{c} uint8, {each:,} B each)", captions, captions * each,
                      ratio(captions * each))]
    rows += [MemoryRow(f"a {n}-image replay buffer ({h}×{w}×{c} uint8)", n, n * each, ratio(n * each)) for n in buffers]
    return rows


def human(n: float) -> str:
    """Bytes for people: 4,913 B, 307.2 kB, 2.13 GB (powers of 1000)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if unit != "GB" else f"{n / scale:.2f} {unit}"
    return f"{int(n):,} B"


def memory_markdown(rows: list[MemoryRow], captioner: str | None = None, generator: str | None = None) -> list[str]:
    """The table, then the frozen generators apart (and which ones this run's captions and renders came from)."""
    lines = ["| kept | items | bytes | × the captions |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.what} | {r.items:,} | {r.bytes:,} ({human(r.bytes)}) | {r.ratio:.1f}× |")
    lines += ["", "Frozen generators (shared by every task, never grown, not counted above): "
              + "; ".join(f"{name} {n / 1e6:.1f} M parameters = {human(4 * n)} fp32 / {human(2 * n)} fp16"
                          for name, n in GENERATORS)
              + f"; SD v1.5 in all {sum(n for name, n in GENERATORS if name.startswith('SD')) / 1e6:.1f} M parameters."]
    if captioner or generator:
        lines.append(f"This run's captions came from the captioner `{captioner}`, its images from the generator "
                     f"`{generator}`.")
    return lines


def memory_csv(rows: list[MemoryRow]) -> str:
    """``what,items,bytes,ratio`` then the generators (``items`` = parameters, bytes at fp32, no ratio)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["what", "items", "bytes", "ratio"])
    for r in rows:
        writer.writerow([r.what, r.items, r.bytes, f"{r.ratio:.2f}"])
    for name, n in GENERATORS:
        writer.writerow([f"frozen: {name} (parameters; fp32 bytes)", n, 4 * n, ""])
    return buf.getvalue()
