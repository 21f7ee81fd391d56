"""The training step reads nothing back to the host; the loss log reads every 10 steps and still catches a
non-finite loss that happened between two reads."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from pipeline.methods import TaskContext
from pipeline.methods.gift import Gift
from pipeline.models import ClipSpec, load_clip, tokenizer
from pipeline.replay.streams import SynthBatch, SyntheticStream
from pipeline.replay.synthetic import SyntheticBatchSource
from pipeline.training.config import TrainConfig
from pipeline.training.step import LossLog, NonFiniteLossError, run_step

CPU = torch.device("cpu")
# Ops that copy a device value to the host (a GPU synchronisation) or make a tensor from host data.
HOST = {"_local_scalar_dense", "lift_fresh", "nonzero", "masked_select", "unique", "_unique2", "item"}


class Reads(TorchDispatchMode):
    """Every aten op dispatched while active, by name."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.__name__.split(".")[0])
        return func(*args, **(kwargs or {}))


def gift_context() -> tuple[TaskContext, Gift]:
    prompts = ["a photo of a cat.", "a photo of a dog.", "a photo of a cat.", "a photo of a ship."]
    g = torch.Generator().manual_seed(0)
    source = SyntheticBatchSource(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g),
                                  tokenizer()(prompts), prompts)
    student = load_clip(ClipSpec("tiny", "none", seed=1))
    params = [p for p in student.parameters() if p.requires_grad]
    ctx = TaskContext(0, "mini-a", student, {}, TrainConfig(synthetic_batch=4), CPU, params,
                      [p.detach().clone() for p in params], synthetic=source)
    method = Gift(ctx.config)
    method.begin_task(ctx)
    return ctx, method


def test_a_training_step_reads_nothing_back_to_the_host():
    """GIFT's whole step (cached teacher rows, CD, ITA, AWC with its Fisher scales, CE) and the loss log's
    per-step bookkeeping dispatch no op that reads a value back (``.item()``, ``bool()``, ``float()`` of a tensor:
    ``_local_scalar_dense``), sizes a result by its data (``nonzero``) or makes a tensor from host data
    (``torch.tensor``: ``lift_fresh``, a blocking copy on a GPU). (``.tolist()`` dispatches nothing: the step's
    code has none on device tensors.)"""
    ctx, method = gift_context()
    batch = SyntheticStream(ctx.synthetic, 4, 1, ctx.dist, CPU).next()
    real = SynthBatch(torch.randn(2, 3, 32, 32), None, [], torch.tensor([0, 3]))
    class_tokens = tokenizer()([f"a photo of the number {k}." for k in range(5)])
    optimizer = torch.optim.SGD(ctx.params, lr=0.0)
    log = LossLog(ctx)
    with torch.no_grad():
        for p in ctx.params:
            p.add_(0.01)  # AWC's penalty is not zero
    for step in range(2):
        with Reads() as mode:
            values = run_step(ctx, method, batch, real, class_tokens, optimizer, torch.autocast("cpu", enabled=False),
                              update=False)
            log.add(step, values)
        assert set(values) == {"ce", "cd", "ita", "awc"} and len(mode.ops) > 100
        assert not HOST & set(mode.ops), sorted(HOST & set(mode.ops))
    losses = log.read(1)
    assert set(losses) == {"ce", "cd", "ita", "awc"} and all(v > 0 for v in losses.values())
    with Reads() as mode:  # the check the step used to make every step is what the detector sees
        assert bool(torch.isfinite(values["ce"]).all())
    assert "_local_scalar_dense" in mode.ops


def test_loss_log_names_the_first_non_finite_step_between_two_reads():
    ctx = TaskContext(2, "mini-c", None, {}, TrainConfig(), CPU)
    log = LossLog(ctx)
    assert [s for s in range(25) if log.due(s, 25)] == [0, 10, 20, 24]
    finite = {"ce": torch.tensor(1.5), "cd": torch.tensor(0.25), "awc": torch.tensor(0.0, dtype=torch.float64)}
    log.add(0, finite)
    assert log.read(0) == {"ce": 1.5, "cd": 0.25, "awc": 0.0}
    for step in range(1, 10):  # cd is inf at step 3, ce NaN at step 6; both finite again by step 9
        values = dict(finite)
        if step == 3:
            values["cd"] = torch.tensor(float("inf"))
        if step in (6, 7):
            values["ce"] = torch.tensor(float("nan"))
        log.add(step, values)
    with pytest.raises(NonFiniteLossError, match=r"^ce, cd became non-finite at task 3 \(mini-c\), step 3 "
                                                 r"\(detected at step 9\)"):
        log.read(9)
