"""`make bench`: every benchmark of the project, written into BENCHMARKS.md section by section.

    python -m pipeline.bench [--out BENCHMARKS.md] [--quick] [--only train,data]

Sections, each between ``<!-- bench-NAME:start -->`` and ``<!-- bench-NAME:end -->`` and replaced in place
(text around them survives): ``summary`` (machine, library versions, wall time, every goal with its row),
``generate`` (generate.py), ``train`` (train.py, with step.py and flops.py), ``data`` (data.py: synthetic cache, real-data
loader, evaluation cache). Each section is written as soon as it is measured.

Every figure is measured in this run on this machine. *Limits* are computed (FLOPs counted with
``torch.utils.flop_counter`` ÷ a datasheet peak) and say so. GPU rows are filled only where CUDA is present;
elsewhere they read "not measured on a GPU yet", never an estimate. ``--quick`` runs every code path at toy
sizes for the smoke test: its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from .common import NOT_ON_GPU, write_section

SECTIONS = ("generate", "train", "data")
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines() -> list[str]:
    from pipeline.generation.generate import library_versions

    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    versions = ", ".join(f"{k} {v}" for k, v in library_versions().items() if k != "gift-cl")
    return [
        f"- Machine: {cpu_name()} ({platform.machine()}), {os.cpu_count()} logical CPUs, torch uses "
        f"{torch.get_num_threads()} threads, {ram:.0f} GiB RAM, CPU capability {torch.backends.cpu.get_cpu_capability()}; "
        f"GPU: {gpu}.",
        f"- Libraries: {versions}.",
        f"- OpenMP wait policy: {os.environ.get('OMP_WAIT_POLICY', 'unset (libgomp spins, then sleeps)')}. `make bench` "
        "sets PASSIVE unless told otherwise: idle OpenMP threads sleep instead of spinning. That changes no "
        "result, but with the default policy, on a machine whose cores other work shares, two-thread kernels "
        "stalled 5-25x (one tiny-SD render: 0.5-10 s instead of 0.1 s) and a `make bench` of the time (without the 64 + 64 step) took 18 min instead of 4.",
    ]


def summary(facts: dict, wall_s: float, took: dict[str, tuple[float, float]], quick: bool) -> str:
    """The goals table: one row per goal of issue 6, measured here or marked as not measured."""
    gpu = torch.cuda.is_available()
    t, d, g = facts.get("train", {}), facts.get("data", {}), facts.get("generate", {})

    def get(section: dict, key: str, fmt: str, missing: str = "not run (see --only)") -> str:
        return fmt.format(**section) if key in section else missing

    rows = [
        ("SD v1.5, 512², 50 steps", "≥ 3.9 images/s per H100 (≥ 40% of bf16 peak)",
         get(g, "sd15_best", "{sd15_best}", NOT_ON_GPU) if gpu else NOT_ON_GPU),
        ("GIFT step, 64 real + 64 synthetic (teacher features cached)", "≥ 15 steps/s",
         get(t, "gpu_best", "{gpu_best}", NOT_ON_GPU) if gpu else
         NOT_ON_GPU + get(t, "cpu_step_s", " (CPU, {cpu_batch}: {cpu_step_s:.2f} s/step)", "")),
        ("AWC on top of CD + ITA", "≤ 3% of step time, 0 extra matmuls",
         get(t, "awc_share", "CPU, {goal_batch}: AWC {goal_share:.1%} of the step; at {cpu_batch}: {awc_share:.1%} "
             "({awc_s:.2f} s, batch-independent); "
             "matmul FLOPs +{awc_extra_flops:.0f} (counted); GPU: " + (get(t, "gpu_awc", "{gpu_awc}") if gpu else NOT_ON_GPU))),
        ("FLOPs of a GIFT step (teacher cache, trimmed texts)", "≥ 1.3x fewer with the CIFAR100 prompts",
         get(t, "step_ratio", "{step_ratio:.2f}x fewer (counted, {step_ratio_task}); the CPU step {cpu_speedup:.2f}x "
             "faster at {cpu_batch}")),
        ("text FLOPs of an evaluation row", "≥ 2x fewer", get(t, "head_ratio", "{head_ratio:.1f}x fewer (counted)")),
        ("evaluation", "each test set decoded once per run",
         get(d, "eval_decodes", "decodes per test image over a run of {evaluations} evaluations: {eval_decodes} "
             "(counted); {eval_ratio:.1f}x less data time than decoding at every evaluation")),
        ("synthetic replay data", "decoded once, not per step",
         get(d, "synth_ratio", "cache {synth_ratio:.0f}x faster per 64-image batch than per-step decode")),
        ("real-data loader", "feeds the step rate",
         get(d, "loader_rate", "best {loader_rate:.0f} images/s (workers: {loader_workers}) on this CPU; "
             "64 × 15 steps/s = 960 images/s needed on a GPU")),
        ("one MTIL order end to end", "≤ 1.5 GPU-hours",
         NOT_ON_GPU + get(t, "order_limit_h", " (limit at 100% of H100 bf16 peak: {order_limit_h:.2f} GPU-hours; "
                          "before issue 11: {order_limit_before_h:.2f})", "")),
    ]
    lines = [
        "## Summary (`make bench`)",
        "",
        *machine_lines(),
        f"- Wall time of this `make bench`: {wall_s / 60:.1f} min ("
        + ", ".join(f"{k} {s / 60:.1f} min at load {load:.1f}" for k, (s, load) in took.items())
        + f"; load average at the end {os.getloadavg()[0]:.1f}, on {os.cpu_count()} CPUs)"
        + ("; --quick: toy sizes, numbers meaningless." if quick else ". A load above the CPU count means other work "
           "shared the cores: every figure is then slower than on an idle machine."),
        "",
        "| goal | target | this run |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--quick", action="store_true", help="every code path at toy sizes (smoke test)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    from . import data, generate, train

    runners = {"generate": generate.run, "train": train.run, "data": data.run}
    t0 = time.perf_counter()
    facts: dict[str, dict] = {}
    took: dict[str, tuple[float, float]] = {}  # section -> (seconds, load average at its start)
    for name in SECTIONS:
        if name in only:
            print(f"[bench] {name} ...", flush=True)
            t1, load = time.perf_counter(), os.getloadavg()[0]
            body, facts[name] = runners[name](quick=args.quick)
            took[name] = (time.perf_counter() - t1, load)
            write_section(args.out, name, body)
            print(body, flush=True)
    body = summary(facts, time.perf_counter() - t0, took, args.quick)
    write_section(args.out, "summary", body, top=True)
    print(body)


if __name__ == "__main__":
    main()
