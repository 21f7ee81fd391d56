"""Experiment trackers behind one small interface (``--report-to tensorboard,wandb``), shared by both stages.

Two backends, each the library's own writer: TensorBoard through ``torch.utils.tensorboard.SummaryWriter`` (needs
the ``tensorboard`` package) and Weights & Biases through ``wandb``; both are the optional extra
``pip install -e '.[tracking]'``. :class:`Trackers` drives the chosen ones in one directory, which also keeps
``tracking.json``:

    <directory>/tracking.json      {"tensorboard": {"logged": step}, "wandb": {"id": run id, "logged": step}}
               tensorboard/        TensorBoard event files (``tensorboard --logdir <directory>``)
               wandb/              W&B's local run files (offline runs: ``wandb sync <directory>/wandb/offline-run-*``)

``logged`` is the last step each backend is known to hold. TensorBoard's events are flushed to the file at every
call, so its mark follows every call; W&B keeps what it is given in its own process until the run ends (a killed
offline run loses it), so its mark moves when the run is closed, and on reopening W&B's own resume point (the
step its server already has, online) counts too. Reopening the directory (a resumed run) continues the same
TensorBoard log and the same W&B run (same id), skips every step up to a backend's mark (an interrupted run redoes
work it had already logged: the same values, since runs resume exactly) and tells TensorBoard to purge anything
written after its mark, so every step has one point. What a backend lost can be logged again by the caller
(training replays its run directory: ``pipeline/training/tracking.py``); :meth:`Trackers.wants` says which steps.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.names import unknown_name

REPORTERS = ("tensorboard", "wandb")
STATE = "tracking.json"
WANDB_PROJECT = "gift-cl"  # unless WANDB_PROJECT says otherwise


class TrackingError(ValueError):
    """An unknown or unavailable tracker, or one that could not start; the message says what to do."""


def parse_report_to(text: str | None) -> tuple[str, ...]:
    """``"tensorboard,wandb"`` -> ``("tensorboard", "wandb")``; empty or ``none`` -> ``()`` (off).

    Checked before any work starts: an unknown name, or a backend whose package is not installed, is a
    :class:`TrackingError` naming it and the way to install it.
    """
    names = tuple(dict.fromkeys(n.strip().lower() for n in (text or "").split(",") if n.strip()))
    if names in ((), ("none",)):
        return ()
    for name in names:
        if name not in REPORTERS:
            raise TrackingError(unknown_name("--report-to tracker", name, REPORTERS,
                                             more=", or both comma-separated (tensorboard,wandb)"))
    for name in names:
        try:
            __import__(name)  # `torch.utils.tensorboard` needs the `tensorboard` package itself
        except ImportError:
            raise TrackingError(f"--report-to {name} needs the {name} package, which is not installed: "
                                f"pip install -e '.[tracking]' (or pip install {name})") from None
    return names


class Backend:
    """What one tracker library is asked to do; :class:`Trackers` decides which steps reach it."""

    name = ""
    durable = True  # what it was given is on disk after flush() (else: only once closed)

    def resumed_through(self) -> int:
        """The last step the library itself says it already holds (-1: it does not say)."""
        return -1

    def scalars(self, values: Mapping[str, float], step: int) -> None: ...
    def images(self, images: Mapping[str, Image.Image], step: int) -> None: ...
    def summary(self, values: Mapping[str, float]) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class TensorBoard(Backend):
    """Event files under ``log_dir``; ``purge_step`` hides events of an earlier run from that step on."""

    name = "tensorboard"

    def __init__(self, log_dir: Path, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def images(self, images: Mapping[str, Image.Image], step: int) -> None:
        for tag, image in images.items():
            self.writer.add_image(tag, np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def summary(self, values: Mapping[str, float]) -> None:
        pass  # TensorBoard has no run summary; the same numbers are logged as scalars

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Wandb(Backend):
    """One W&B run (``run_id`` kept by the caller, so a resumed run continues it); files under ``directory/wandb``."""

    name = "wandb"
    durable = False  # buffered in W&B's service process until the run finishes

    def __init__(self, directory: Path, run_id: str, name: str, config: Mapping):
        import wandb

        try:
            # console="off": the run directory keeps its own train.log, and rich's bars stay the terminal's
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT), name=name, id=run_id,
                                  resume="allow", dir=str(directory), config=dict(config),
                                  settings=wandb.Settings(console="off"))
        except Exception as e:  # noqa: BLE001 -- wandb raises many types (login, network, settings)
            raise TrackingError(f"W&B could not start run {run_id}: {e}; run `wandb login`, or set WANDB_MODE=offline "
                                "and upload later with `wandb sync`") from e
        self.image_type = wandb.Image

    def resumed_through(self) -> int:
        return self.run.step - 1  # online, a resumed run starts after the last step the server has; offline at 0

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def images(self, images: Mapping[str, Image.Image], step: int) -> None:
        self.run.log({tag: self.image_type(image) for tag, image in images.items()}, step=step)

    def summary(self, values: Mapping[str, float]) -> None:
        self.run.summary.update(dict(values))

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """The backends named in ``report_to``, writing under ``directory``, as one; resumable (see the module doc).

    ``name`` and ``config`` label the run (W&B's run name and config). Steps must not decrease across calls
    (W&B refuses earlier steps); several calls may share a step.
    """

    def __init__(self, directory: Path, report_to: Sequence[str], *, name: str, config: Mapping):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        state_file = self.directory / STATE
        self.state: dict = json.loads(state_file.read_text()) if state_file.exists() else {}
        self.backends: list[Backend] = []
        self.skip_through: dict[str, int] = {}  # steps up to here are already held: never sent again
        self.sent: dict[str, int] = {}  # the last step handed over, by this call or before
        try:
            for name_ in report_to:
                entry = self.state.setdefault(name_, {"logged": -1})
                if name_ == "tensorboard":
                    # resuming: events after the last recorded step were written by the interrupted run: purge them
                    purge = entry["logged"] + 1 if entry["logged"] >= 0 else None
                    self.backends.append(TensorBoard(self.directory / "tensorboard", purge))
                elif name_ == "wandb":
                    entry.setdefault("id", secrets.token_hex(6))  # W&B ids: up to 128 of [a-z0-9]
                    self.backends.append(Wandb(self.directory, entry["id"], name, config))
                else:
                    raise TrackingError(f"unknown tracker {name_!r}; choose {' or '.join(REPORTERS)}")
                self.skip_through[name_] = self.sent[name_] = max(entry["logged"], self.backends[-1].resumed_through())
        except BaseException:
            self.close()
            raise
        self._save()

    def wants(self, step: int) -> bool:
        """Whether some backend does not hold ``step`` yet (so the caller may skip preparing it)."""
        return any(step > self.skip_through[b.name] for b in self.backends)

    def log(self, values: Mapping[str, float], step: int, images: Mapping[str, Image.Image] | None = None) -> None:
        """Scalars (non-finite ones left out) and images at ``step``, to every backend that does not hold it yet."""
        values = {k: float(v) for k, v in values.items() if math.isfinite(v)}
        for backend in self.backends:
            if step <= self.skip_through[backend.name]:
                continue  # an earlier, interrupted run logged this step already
            if values:
                backend.scalars(values, step)
            if images:
                backend.images(images, step)
            self.sent[backend.name] = max(step, self.sent[backend.name])
            if backend.durable:
                backend.flush()  # before the step is recorded as held
                self.state[backend.name]["logged"] = self.sent[backend.name]
        self._save()

    def summary(self, values: Mapping[str, float]) -> None:
        """The run's summary numbers (W&B's run summary; TensorBoard has none: log them as scalars too)."""
        for backend in self.backends:
            backend.summary({k: float(v) for k, v in values.items() if math.isfinite(v)})

    def close(self) -> None:
        """Finish every backend; what they were given is now held (W&B has written or sent it)."""
        for backend in self.backends:
            backend.close()
            self.state[backend.name]["logged"] = self.sent.get(backend.name, self.state[backend.name]["logged"])
        if self.backends:
            self._save()
        self.backends = []

    def _save(self) -> None:
        # by rename (a killed run leaves the old or the new file), without fsync: it is rewritten every few steps,
        # and a lost update after a machine crash costs at most one duplicated point
        tmp = self.directory / f".{STATE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(self.state, indent=1) + "\n")
        os.replace(tmp, self.directory / STATE)
