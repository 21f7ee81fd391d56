"""`make bench` at toy sizes: every code path runs and writes its rows. No timing is ever asserted."""

import pytest
import torch

from pipeline.bench.common import markers
from pipeline.bench.run import main
from pipeline.bench.step import GiftStep
from pipeline.bench.train import GPU_CONFIGS, bench_gpu, gpu_lines
from pipeline.models import ClipSpec, load_clip

CPU = torch.device("cpu")


@pytest.mark.slow
def test_quick_bench_writes_every_section_in_place(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nHand-written note.\n")
    main(["--quick", "--out", str(out)])
    text = out.read_text()
    for name in ("summary", "generate", "train", "data"):
        start, end = markers(name)
        assert text.count(start) == 1 and text.count(end) == 1
    assert text.index("Hand-written note.") < text.index(markers("summary")[0]) < text.index(markers("generate")[0])
    for row in ("Wall time of this `make bench`", "Libraries: python", "| AWC on top of CD + ITA |",
                "| one MTIL order end to end |", "1 process ×", "2 processes ×", "| **AWC** (copy of the replay gradients",
                "released code's AWC", "FLOPs counted by `FlopCounterMode`", "(**+0**)",
                "decoded + resized + tokenised every step", "### CIL: TinyImageNet's base step", "| workers | uint8 crops (trainer) images/s | float crops images/s |", "`TestSet` cache (default) | 1 |",
                "not measured on a GPU yet", "| SDPA + `--fuse-qkv --channels-last` |", "| step at 3 + 3, AWC on |",
                "classic attention (no SDPA; unoptimised)", "| step before issue 11 (teacher forward every step",
                "### FLOPs before and after issue 11", "| GIFT step, 2 + 2, CE prompts of cifar100 (100 classes) |",
                "CE prompts of sun397 (397 classes)", "the teacher's cache, built once per task",
                "| one evaluation row: heads +", "| ZSCL step, 2 + 2, N = 16 |", "re-encoding all N captions",
                "| FLOPs of a GIFT step (teacher cache, trimmed texts) |", "| text FLOPs of an evaluation row |",
                "| task | classes | TFLOP per step before |",
                "| DDAS per evaluation batch (AlexNet features[:-2] + 12 autoencoders) |"):
        assert row in text, row
    main(["--quick", "--out", str(out), "--only", "data"])  # one section again: replaced, nothing duplicated
    again = out.read_text()
    assert again.count(markers("data")[0]) == 1 and again.count(markers("train")[0]) == 1


def test_released_awc_adds_the_same_gradient_as_ours():
    """The unoptimised path the bench compares against computes what GIFT's fused AWC computes."""
    step = GiftStep(load_clip(ClipSpec("tiny", "none"), CPU), device=CPU, real_batch=2, synth_batch=3,
                    task="eurosat", update=False)
    step()
    with torch.no_grad():  # move away from the anchors, or the penalty gradient is zero
        for p in step.ctx.params:
            p.add_(0.01 * torch.randn_like(p))
    step()
    ours = [p.grad.clone() for p in step.ctx.params]
    step(step.released())
    for a, b in zip(ours, (p.grad for p in step.ctx.params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    step.set_awc(False)
    step()
    assert any(not torch.allclose(a, p.grad) for a, p in zip(ours, step.ctx.params, strict=True))


def test_gpu_step_path_runs_on_cpu():
    """The GPU rows' code (configs, eval forward, table) on CPU with the tiny CLIP."""
    configs = [c for c in GPU_CONFIGS if c[1:4] in (("fp32", False, False), ("tf32", True, False))
               or c[1:] == ("bf16", True, False, False) or c[3]]  # foreach/fused AdamW, TF32, bf16 w/o AWC, compile
    result = bench_gpu("cpu", "tiny", 2, 2, "eurosat", steps=1, warmup=1, configs=configs, eval_batch=2)
    assert [r["config"] for r in result["rows"]] == [c[0] for c in configs]
    assert all("steps_s" in r for r in result["rows"]), result["rows"]
    lines, facts = gpu_lines(result, 10**12, 10**9)
    assert len(lines) == 2 + len(configs) + 7 and "steps/s" in facts["gpu_best"]
    lines, facts = gpu_lines(None, 10**12, 10**9)
    assert "not measured on a GPU yet" in lines[-1] and facts == {}
