"""What a render reports to TensorBoard / W&B (``gift generate --report-to``): a ``generate.Progress`` wrapper.

Rank 0 logs, with the shard index as the step:

    generate/images_per_s, generate/flagged    each shard rank 0 renders (rendering + encoding + writing)

and once the set is complete, at step = number of shards: a contact sheet of the set (shards/preview.py) and the
summary (samples, flagged, shards, processes, rank 0's images/s over this call). Logs live beside the set, not in
it (a set holds only what ``gift shards push`` publishes): ``OUT/.tracking/<task>/<hash>/``; re-running the same
command continues the same TensorBoard log and W&B run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from pipeline.tracking import Trackers
from shards.layout import set_dir
from shards.manifest import ShardRecord
from shards.preview import contact_sheet

from .generate import GenerateResult, GenerateSpec, Progress

TRACKING_DIR = ".tracking"


def tracking_dir(out: str | os.PathLike, spec: GenerateSpec) -> Path:
    """``OUT/.tracking/<task>/<hash>/``: hidden, so listing and pushing the sets under OUT never meets it."""
    set_path = set_dir(out, spec.task, spec.hash)
    return Path(out) / TRACKING_DIR / spec.task / set_path.name


class GenerateTracking(Progress):
    """Forwards every hook to ``inner`` (the terminal's bar) and logs what rank 0 renders; create it on rank 0 only."""

    def __init__(self, inner: Progress, report_to: Sequence[str], out: str | os.PathLike, spec: GenerateSpec):
        self.inner = inner
        self.report_to = tuple(report_to)
        self.directory = tracking_dir(out, spec)
        self.name = f"generate-{spec.task}-{self.directory.name}"
        self.config = spec.to_dict()
        self.tracker: Trackers | None = None

    def start(self, total: int, already_done: int) -> None:
        # opened here, not earlier: generate() has checked the request and OUT by now
        self.tracker = Trackers(self.directory, self.report_to, name=self.name, config=self.config)
        self.inner.start(total, already_done)

    def advance(self, images: int) -> None:
        self.inner.advance(images)

    def shard_done(self, record: ShardRecord, render_s: float, write_s: float) -> None:
        self.inner.shard_done(record, render_s, write_s)
        rendered = record.samples + record.flagged  # flagged images were rendered too, then left out
        self.tracker.log({"generate/images_per_s": rendered / max(render_s + write_s, 1e-9),
                          "generate/flagged": record.flagged}, record.index)

    def finished(self, result: GenerateResult) -> None:
        """After ``generate`` returned on rank 0: the contact sheet and the summary, once the set is complete."""
        manifest = result.manifest
        if self.tracker is None or manifest is None or not manifest["complete"]:
            return
        sheet = self.directory / "contact-sheet.png"
        contact_sheet(result.set_path, sheet)
        with Image.open(sheet) as image:
            image.load()
            images = {"contact_sheet": image}
            seconds = result.render_seconds + result.write_seconds
            sizes = {s["index"]: s["samples"] + s["flagged"] for s in manifest["shards"]}
            rendered = sum(sizes[i] for i in result.rendered_shards)
            summary = {"samples": manifest["samples"], "flagged": manifest["flagged"],
                       "shards": manifest["num_shards"], "processes": int(os.environ.get("WORLD_SIZE", "1")),
                       "images_per_s": rendered / seconds if seconds else float("nan")}
            self.tracker.log({f"summary/{k}": v for k, v in summary.items()}, manifest["num_shards"], images=images)
        self.tracker.summary(summary)

    def stop(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
        stop = getattr(self.inner, "stop", None)
        if stop is not None:
            stop()
