"""The pipeline's progress hooks shown as rich bars: rendering, captioning, transfers, training."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from cli.common import console, out


class RichProgress:
    """pipeline.generation.generate.Progress shown as a rich bar with images/s and ETA."""

    def __init__(self, label: str, enabled: bool):
        self.enabled = enabled
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(), console=console,
            disable=not enabled,
        )
        self.label = label
        self.task = None
        self.done = 0

    def start(self, total: int, already_done: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=total + already_done, completed=already_done, rate="")

    def advance(self, images: int) -> None:
        self.bar.advance(self.task, images)
        speed = self.bar.tasks[0].speed
        self.bar.update(self.task, rate=f"{speed:.2f} img/s" if speed else "")

    def shard_done(self, record, render_s: float, write_s: float) -> None: ...

    def stop(self) -> None:
        self.bar.stop()


class PhaseBar:
    """pipeline.captioning.caption.Progress: one rich bar per phase (CLIP features, then captions)."""

    def __init__(self):
        self.bar = None

    def start(self, label: str, total: int, already_done: int = 0) -> None:
        self.finish()
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        self.bar.start()
        self.task = self.bar.add_task(label, total=total, completed=already_done)

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class TransferBar:
    """shards.store.Progress as a rich bar with bytes, speed and ETA."""

    def __init__(self):
        self.bar = None

    def start(self, label: str, total_bytes: int) -> None:
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), console=console)
        self.bar.start()
        self.task = self.bar.add_task(label, total=total_bytes)

    def advance(self, nbytes: int) -> None:
        self.bar.advance(self.task, nbytes)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# CLTS's values after each step (pipeline.training.clts_run), as the progress line names them
EXTRA_LABELS = {"router": "router picks the right step", "oracle": "with the true step's head"}


class TrainProgress:
    """pipeline.training.train.Progress as a rich bar per task with the loss terms and steps/s."""

    def __init__(self):
        self.bar = None

    def start_task(self, index: int, task: str, steps: int) -> None:
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[losses]}"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console)
        self.bar.start()
        self.task = self.bar.add_task(f"task {index + 1}: {task}", total=steps, losses="")

    def step(self, losses: dict[str, float] | None) -> None:
        """Advance one step; the loss terms change only at the logged steps (read back every 10 steps)."""
        if losses is None:
            self.bar.update(self.task, advance=1)
            return
        speed = self.bar.tasks[0].speed
        text = " ".join(f"{k} {v:.3f}" for k, v in losses.items()) + (f"  {speed:.1f} it/s" if speed else "")
        self.bar.update(self.task, advance=1, losses=text)

    def end_task(self) -> None:
        self.bar.stop()

    def phase(self, label: str, total: int) -> None:
        """Work outside the training steps (CLTS's feature passes), counted in items."""
        self.phases = PhaseBar()
        self.phases.start(label, total)

    def advance(self, n: int) -> None:
        self.phases.advance(n)

    def end_phase(self) -> None:
        self.phases.finish()

    def evaluated(self, index: int, task: str, row: list[float], extra: dict[str, float] | None = None) -> None:
        """One line per evaluation, every number labelled. MTIL: each dataset, then their mean. CIL (``extra`` holds
        ``seen``): each step's classes, then the accuracy on all classes seen so far, the number Avg. and Last
        average; a mean of the step columns would weigh steps of unequal size alike, so none is shown."""
        row = [a for a in row if a == a]  # a CIL row: the steps seen so far (NaN: not yet)
        values = "  ".join(f"{a:.1f}" for a in row)
        if extra and "seen" in extra:
            text = f"each step's classes {values} · [bold]all seen classes {extra['seen']:.1f}[/]"
            text += "".join(f" · {EXTRA_LABELS.get(k, k)} {v:.1f}" for k, v in extra.items() if k != "seen")
            out.print(f"[bold]after step {index + 1} ({task})[/]: {text}")
        else:
            out.print(f"[bold]after task {index + 1} ({task})[/]: each dataset {values} · "
                      f"[bold]mean {sum(row) / len(row):.1f}[/]")
