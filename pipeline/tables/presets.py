"""Presets: named run settings (a method plus TrainConfig overrides) and the paper's tables as groups of them.

Every method in ``METHODS`` is a preset with no overrides; the others are GIFT ablations and static-Fisher EWC with
the published numbers of their row (the paper's ablations are on MTIL Order I). A group names the presets of one
table: ``table3`` = Tab. 3 (components), ``table4`` = Tab. 4a-c (distillation loss, teacher, ITA scale),
``table5`` = Tab. 5 (real vs synthetic images, 1K / 3K), ``table6`` = Tab. 6 (static Fisher vs AWC),
``table11`` = Tab. 11 (50 vs 25 denoising steps), ``table1`` / ``table2`` / ``comparison`` = Tab. 1 / 2; on a CIL
setting ``table7`` / ``table8`` / ``cil`` = the CLIP rows of Tab. 7 (CIFAR100) / 8 (TinyImageNet), whose CIL
baseline values (distillation weight 5, ZSCL's ensemble every 10 iterations, 5,000 exemplars) are the setting's
defaults (``training.config``), so the plain method presets are those rows.

A preset that names a method or TrainConfig field this version lacks fails when it is run (``config_for``),
with an error that says so, never at import. Which preset a finished run directory holds is read back from its
name and ``config.json`` (``identify``); its published numbers apply only when its whole setting is the paper's
(``published_for``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.datasets import catalog
from pipeline.evaluation import report
from pipeline.evaluation.cil_report import CLIP_ROWS, published_cil, published_for_method
from pipeline.methods import METHODS
from pipeline.names import unknown_name
from pipeline.training.config import TrainConfig
from pipeline.training.paper_setting import comparable, config_defaults

Triple = tuple[float, float, float]  # Transfer, Avg., Last (percent)


# --------------------------------------------------------------------------- values resolved at run time


@dataclass(frozen=True)
class ShardFamily:
    """``shard_family`` = the one generator spec under ``--shards`` whose manifest spec has these values.

    Lets a preset say "the 25-step DPM-Solver renders" without knowing their hash.
    """

    match: tuple[tuple[str, object], ...]

    def resolve(self, base: Mapping[str, object]) -> str:
        from pipeline.replay.synthetic import spec_family
        from shards.manifest import find_sets, load_manifest

        root = Path(str(base.get("shards") or TrainConfig.shards))
        families = sorted({spec_family(m["spec"]) for m in map(load_manifest, find_sets(root))
                           if all(m["spec"].get(k) == v for k, v in self.match)})
        wanted = ", ".join(f"{k}={v}" for k, v in self.match)
        if len(families) != 1:
            found = "none" if not families else f"several ({', '.join(families)})"
            flags = " ".join(f"--{k} {v}" if k != "generator" else f"--model {v}" for k, v in self.match)
            raise ValueError(f"needs the pool sets rendered with {wanted} under {root}; found {found}. "
                             f"Render them with `gift generate TASK {flags}` (imagenet and every task of the order)")
        return families[0]

    def __str__(self) -> str:
        return "<sets with " + ", ".join(f"{k}={v}" for k, v in self.match) + ">"




# --------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """A named run setting: ``method`` with TrainConfig ``overrides``; ``published`` by order (``None``: take
    ``report.PUBLISHED[(method, order)]`` when there are no overrides)."""

    name: str
    method: str
    overrides: Mapping[str, object] = field(default_factory=dict)
    label: str = ""
    published: Mapping[str, Triple] | None = None
    source: str = ""
    cil_source: str = ""  # where ``published`` on CIL settings comes from, when not the paper's Tab. 7 / 8

    @property
    def plain(self) -> bool:
        return not self.overrides

    def run_name(self, order: str, seed: int = 0) -> str | None:
        """``name=`` for TrainConfig: ``None`` (= ``<method>-order<order>``) for a plain method, else
        ``<preset>-order<order>``; seed N > 0 appends ``-seedN`` (as `gift demo --seed` names its runs), so every
        seed has its own run directory and seed 0 keeps the name `gift train` gives."""
        if seed:
            return f"{self.name}-order{order}-seed{seed}"
        return None if self.plain else f"{self.name}-order{order}"

    def dir_name(self, order: str, seed: int = 0) -> str:
        return self.run_name(order, seed) or f"{self.method}-order{order}"

    def label_for(self, order: str) -> str:
        """The paper's row name on ``order`` (Tab. 7 / 8 name the CLIP rows their own way)."""
        return CLIP_ROWS.get(self.method, self.label) if self.plain and catalog.is_cil(order) else self.label

    def source_for(self, order: str) -> str:
        """Which table of the paper the row's published numbers on ``order`` come from."""
        if catalog.is_cil(order):
            if self.cil_source:
                return self.cil_source if order in (self.published or {}) else ""
            found = published_cil(order)
            return found[0] if found and self.plain else ""
        return self.source

    def published_for(self, order: str) -> Triple | None:
        if self.published is not None:
            return self.published.get(order)
        if not self.plain:
            return None
        if catalog.is_cil(order):  # (Transfer: none in CIL, Avg, Last)
            pair = published_for_method(self.method, order)
            return None if pair is None else (math.nan, pair[0], pair[1])
        return report.PUBLISHED.get((self.method, order))


# The paper's "w/o AWC" rows (Tab. 3, 4, 5, 11, 12) are CD/ITA added to the l2 baseline: the released code runs
# them with `--l2 1` and no `--awc`, i.e. Σ(θ−θ(t−1))² in place of AWC.
NO_AWC: dict[str, object] = {"awc": False, "l2_without_awc": True}
_I = "I"  # the paper's ablations are on Order I only


def _p(name: str, method: str, overrides: Mapping[str, object] | None = None, label: str = "",
       published: Triple | None = None, source: str = "") -> Preset:
    return Preset(name, method, dict(overrides or {}), label or name,
                  None if published is None else {_I: published}, source)


MOE_ADAPTER_PUBLISHED: dict[str, Triple] = {
    "I": (68.9, 76.7, 85.0), "II": (64.3, 74.7, 84.1),
    # cil/experiments/class/*/metrics.json of MoE-Adapters4CL (last line): Avg., Last; CIL has no Transfer
    "cifar100-10": (math.nan, 85.21, 77.52), "cifar100-20": (math.nan, 83.72, 76.20),
    "cifar100-50": (math.nan, 83.77, 75.24), "tinyimagenet-5": (math.nan, 81.12, 76.87),
    "tinyimagenet-10": (math.nan, 80.23, 76.35), "tinyimagenet-20": (math.nan, 79.96, 75.77)}

_PRESETS: list[Preset] = [
    # Tables 1 and 2 (Order I / II): published numbers in report.PUBLISHED.
    Preset("zeroshot", "zeroshot", label="Zero-shot", source="Tab. 1/2"),
    Preset("finetune", "finetune", label="Continual Finetune", source="Tab. 1/2"),
    Preset("l2", "l2", label="l2 baseline", source="Tab. 1/2"),
    Preset("lwf", "lwf", label="LwF", source="Tab. 1/2"),
    Preset("icarl", "icarl", label="iCaRL", source="Tab. 1/2"),
    Preset("lwf-vr", "lwf-vr", label="LwF-VR", source="Tab. 1/2"),
    Preset("wise-ft", "wise-ft", label="WiSE-FT", source="Tab. 1/2"),
    Preset("zscl", "zscl", label="ZSCL", source="Tab. 1/2"),
    Preset("gift", "gift", label="GIFT", source="Tab. 1/2"),
    # Table 3: components added to the l2 baseline (the extracted text lost the check marks; rows follow §4.3:
    # ITA alone at scale 1, CD alone, CD + ITA(0.25), CD + AWC, all three).
    _p("gift-ita-only", "gift", {"cd": False, "beta": 1.0, **NO_AWC}, "+ITA (scale 1)", (63.5, 70.5, 78.6), "Tab. 3"),
    _p("gift-cd", "gift", {"ita": False, **NO_AWC}, "+CD", (68.3, 76.3, 84.7), "Tab. 3, 4c"),
    _p("gift-noawc", "gift", NO_AWC, "+CD +ITA (GIFT w/o AWC)", (68.9, 76.6, 85.0), "Tab. 3-5, 11"),
    _p("gift-cd-awc", "gift", {"ita": False}, "+CD +AWC", (68.7, 77.0, 85.8), "Tab. 3"),
    # Table 4 (a) distillation loss, (b) teacher, (c) ITA scale: all on GIFT w/o AWC.
    _p("gift-feature", "gift", {"distill": "feature", **NO_AWC}, "Feat. Dist.", (64.0, 71.6, 80.5), "Tab. 4a"),
    _p("gift-image-only", "gift", {"distill": "image-only", **NO_AWC}, "Image-only", (66.8, 75.1, 84.1), "Tab. 4a"),
    _p("gift-text-only", "gift", {"distill": "text-only", **NO_AWC}, "Text-only", (64.7, 71.9, 81.8), "Tab. 4a"),
    _p("gift-teacher-initial", "gift", {"teacher": "initial", **NO_AWC}, "Teacher: initial CLIP",
       (69.1, 74.0, 80.1), "Tab. 4b"),
    _p("gift-wise0.2", "gift", {"teacher": "wise:0.2", **NO_AWC}, "Teacher: WiSE(0.2)", (69.1, 76.1, 83.4), "Tab. 4b"),
    _p("gift-wise0.5", "gift", {"teacher": "wise:0.5", **NO_AWC}, "Teacher: WiSE(0.5)", (69.6, 75.3, 81.6), "Tab. 4b"),
    _p("gift-ita0.5", "gift", {"beta": 0.5, **NO_AWC}, "ITA scale 0.5", (68.7, 76.2, 84.2), "Tab. 4c"),
    _p("gift-ita1", "gift", {"beta": 1.0, **NO_AWC}, "ITA scale 1.0", (68.5, 75.4, 82.4), "Tab. 4c"),
    # Table 5: 1K / 3K images per task, synthetic vs real ImageNet images (w/o AWC).
    # The real images are pool sets made by the `reference` generator (`gift generate imagenet --model reference:DIR`).
    _p("gift-real", "gift", {"replay_generator": "reference", **NO_AWC}, "Real ImageNet 1K", (69.0, 76.0, 84.0),
       "Tab. 5"),
    _p("gift-real-3k", "gift", {"replay_generator": "reference", "synthetic_budget": 3000, **NO_AWC},
       "Real ImageNet 3K", (69.3, 76.6, 84.7), "Tab. 5"),
    _p("gift-noawc-3k", "gift", {"synthetic_budget": 3000, **NO_AWC}, "Synthetic 3K (w/o AWC)", (69.1, 76.7, 84.9),
       "Tab. 5, 12"),
    _p("gift-3k", "gift", {"synthetic_budget": 3000}, "GIFT, 3K images"),
    # Beyond the papers (issue 13): GIFT replaying images rendered from the earlier tasks' caption sets.
    _p("gift-captions", "gift", {"replay_captions": True}, "GIFT, caption replay (ours)"),
    # MoE-Adapter (Yu et al., CVPR 2024) as its released code runs it: MTIL numbers from GIFT's Tab. 1 / 2; GIFT's
    # CIL tables have no MoE row, so the CIL numbers are those of its own released logs (Avg. / Last)
    Preset("moe-adapter", "moe-adapter", label="MoE-Adapter", source="Tab. 1/2",
           cil_source="MoE-Adapters4CL logs (not in GIFT)", published=MOE_ADAPTER_PUBLISHED),
    # CLTS (issue 13): task heads + a task router on frozen features (no published numbers here: abstract only).
    Preset("clts", "clts", label="CLTS (task heads + router)"),
    # Table 6: EWC-style static Fisher from N synthetic samples before each task vs AWC (= gift).
    _p("ewc64", "ewc", {"ewc_samples": 64}, "EWC-V, 64 samples", (65.8, 75.6, 85.6), "Tab. 6"),
    _p("ewc128", "ewc", {"ewc_samples": 128}, "EWC-V, 128 samples", (66.8, 76.1, 85.9), "Tab. 6"),
    _p("ewc256", "ewc", {"ewc_samples": 256}, "EWC-V, 256 samples", (68.0, 76.8, 86.2), "Tab. 6"),
    # Table 11: 50 PNDM vs 25 DPM-Solver denoising steps, with and without AWC.
    _p("gift-steps50", "gift", {"shard_family": ShardFamily((("generator", "sd15"), ("steps", 50), ("scheduler", "pndm")))},
       "w/ AWC, 50 steps", (69.3, 77.3, 86.0), "Tab. 11"),
    _p("gift-noawc-steps50", "gift", {"shard_family": ShardFamily((("generator", "sd15"), ("steps", 50), ("scheduler", "pndm"))), **NO_AWC},
       "w/o AWC, 50 steps", (68.9, 76.6, 85.0), "Tab. 11"),
    _p("gift-steps25", "gift", {"shard_family": ShardFamily((("generator", "sd15"), ("steps", 25), ("scheduler", "dpm-solver")))},
       "w/ AWC, 25 steps", (69.2, 77.2, 85.8), "Tab. 11"),
    _p("gift-noawc-steps25", "gift", {"shard_family": ShardFamily((("generator", "sd15"), ("steps", 25), ("scheduler", "dpm-solver"))),
                                      **NO_AWC}, "w/o AWC, 25 steps", (69.2, 76.6, 84.8), "Tab. 11"),
]
PRESETS: dict[str, Preset] = {p.name: p for p in _PRESETS}
# Other names of the same settings (one run directory each).
ALIASES: dict[str, str] = {"gift-cd-ita": "gift-noawc", "gift-ita0": "gift-cd", "gift-ita0.25": "gift-noawc",
                           "gift-contrastive": "gift-noawc", "gift-teacher-last": "gift-noawc", "ewc-v64": "ewc64",
                           "ewc-v128": "ewc128", "ewc-v256": "ewc256"}
COMPARISON = ["zeroshot", "finetune", "l2", "lwf", "icarl", "lwf-vr", "wise-ft", "zscl", "moe-adapter", "gift"]
CIL_COMPARISON = ["zeroshot", "finetune", "lwf", "icarl", "lwf-vr", "zscl", "moe-adapter", "gift"]
# CLTS's settings (seq-cifar10 / seq-cifar100 / seq-tinyimg): clts beside the methods whose memory differs in kind
# (none, exemplars, class-name renders, caption renders); `gift table` shows the memory each keeps.
SEQ_COMPARISON = ["finetune", "icarl", "gift", "gift-captions", "clts"]
GROUPS: dict[str, list[str]] = {
    "comparison": COMPARISON,
    "table1": COMPARISON,  # Order I
    "table2": COMPARISON,  # Order II
    "table3": ["zeroshot", "finetune", "l2", "gift-ita-only", "gift-cd", "gift-noawc", "gift-cd-awc", "gift"],
    "table4": ["l2", "gift-feature", "gift-image-only", "gift-text-only", "gift-noawc", "gift-teacher-initial",
               "gift-wise0.2", "gift-wise0.5", "gift-cd", "gift-ita0.5", "gift-ita1"],
    "table5": ["l2", "gift-real", "gift-noawc", "gift-real-3k", "gift-noawc-3k", "zscl"],
    "table6": ["l2", "ewc64", "ewc128", "ewc256", "gift"],
    "table11": ["l2", "gift-steps50", "gift-noawc-steps50", "gift-steps25", "gift-noawc-steps25"],
    # CIL (Tab. 7 CIFAR100, Tab. 8 TinyImageNet): the CLIP rows, in the paper's order
    "cil": CIL_COMPARISON,
    "table7": CIL_COMPARISON,
    "table8": CIL_COMPARISON,
    "seq": SEQ_COMPARISON,
}
DEFAULT_METHODS = "comparison"
NOT_IMPLEMENTED: dict[str, str] = {}  # paper rows this version cannot run (preset name -> why)


def default_methods(order: str) -> str:
    """The group ``gift table`` runs when --methods is not given: ``comparison`` (MTIL), ``seq`` (CLTS's seq-*
    settings) or ``cil`` (the other CIL settings: Tab. 7 / 8)."""
    if order.startswith("seq-"):
        return "seq"
    return "cil" if catalog.is_cil(order) else DEFAULT_METHODS


def all_presets() -> dict[str, Preset]:
    """The registry: every method of ``METHODS`` as a plain preset, plus the named presets above."""
    return {**PRESETS, **{m: Preset(m, m, {}, m) for m in METHODS if m not in PRESETS}}


def resolve_presets(spec: str | Sequence[str]) -> list[Preset]:
    """``"finetune,l2,table3"`` -> presets, groups expanded, aliases mapped, duplicates dropped (first kept)."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise ValueError("no methods given; e.g. --methods finetune,l2,gift or --methods table3")
    registry, out = all_presets(), []
    for item in items:
        for name in GROUPS.get(item, [item]):
            name = ALIASES.get(name, name)
            if name in NOT_IMPLEMENTED:
                raise ValueError(NOT_IMPLEMENTED[name])
            if name not in registry:
                raise ValueError(unknown_name("preset", name, [*registry, *ALIASES, *GROUPS]))  # groups last
            if registry[name] not in out:
                out.append(registry[name])
    return out


def config_for(preset: Preset, order: str, base: Mapping[str, object]) -> TrainConfig:
    """The TrainConfig of ``preset`` on ``order``: ``base`` (common knobs: runs, data, model, iterations, ...)
    overridden by the preset. Raises ``ValueError`` naming what this version lacks (method or TrainConfig field)."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if preset.method not in METHODS:
        raise ValueError(f"preset {preset.name} needs method {preset.method!r}, not available in this version "
                         f"(methods: {', '.join(METHODS)})")
    for key in preset.overrides:
        if key not in fields:
            raise ValueError(f"preset {preset.name} needs TrainConfig field {key!r}, not available in this version")
    unknown = sorted(set(base) - fields)
    if unknown:
        raise ValueError(f"not TrainConfig fields: {', '.join(unknown)}")
    overrides = {k: v.resolve(base) if isinstance(v, ShardFamily) else v for k, v in preset.overrides.items()}
    fields = {**base, **overrides}
    if not (preset.method == "clts" or fields.get("replay_captions")):  # `gift table --real-renders` is for the rows
        fields.pop("real_renders", None)  # that replay caption renders; the others have none to accept
    return TrainConfig(**{**fields, "order": order, "method": preset.method,
                          "name": preset.run_name(order, int(base.get("seed") or 0))})


# --------------------------------------------------------------------------- which preset a run directory holds

_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
# Knobs that make a run cheaper or placed elsewhere but are not what a preset names (the batch sizes and budget still
# decide whether the published numbers apply, see _PAPER_SCALE).
_NOT_IDENTITY = {"order", "method", "name", "runs", "data_root", "shards", "shard_cache", "shard_family",
                 "reference_images", "reference_texts", "workers", "seed",
                 "precision", "compile", "clip_arch", "clip_weights", "iterations", "epochs", "batch_size",
                 "synthetic_batch", "synthetic_budget", "lr", "warmup", "weight_decay", "label_smoothing", "class_order",
                 "captions",
                 "real_renders"}  # where the caption renders came from, as captions and shards; every row says it
_PAPER_SCALE = {"batch_size", "synthetic_batch", "synthetic_budget", "lr", "warmup", "weight_decay", "label_smoothing"}


def _agrees(preset: Preset, cfg: Mapping[str, object], keys: set[str]) -> bool:
    defaults = config_defaults(cfg)
    return all(cfg.get(key, defaults.get(key)) == preset.overrides.get(key, defaults.get(key)) for key in keys)


def _identity_keys(preset: Preset) -> set[str]:
    # shard_family is left out: which family a finished run used cannot be checked without its shard sets
    return (_FIELDS - _NOT_IDENTITY) | {k for k in preset.overrides if k != "shard_family"}


def preset_matches(preset: Preset, cfg: Mapping[str, object]) -> bool:
    """Whether run config ``cfg`` (config.json) is ``preset``'s setting (method + every option it names)."""
    return cfg.get("method") == preset.method and _agrees(preset, cfg, _identity_keys(preset))


def run_stem(name: str) -> str:
    """A run directory's preset part: ``gift-cd`` of ``gift-cd-orderII-seed1`` (no preset name holds ``-order``;
    order names may hold ``-``: ``mini-cil``)."""
    return re.sub(r"-order.*$", "", name)


def identify(run_dir: Path, cfg: Mapping[str, object]) -> Preset | None:
    """The preset a run directory holds: by its name ``<preset>-order<order>`` when the config agrees, else the
    most specific preset whose options the config has."""
    registry = all_presets()
    stem = run_stem(run_dir.name)
    stem = ALIASES.get(stem, stem)
    if stem in registry and preset_matches(registry[stem], cfg):
        return registry[stem]
    candidates = [p for p in registry.values() if preset_matches(p, cfg)
                  and not any(isinstance(v, ShardFamily) for v in p.overrides.values())]
    return max(candidates, key=lambda p: len(p.overrides), default=None)


def published_for(preset: Preset | None, cfg: Mapping[str, object]) -> Triple | None:
    """The published numbers of this run, only when its whole setting is the paper's: those of ``preset``, else
    of another preset with the very same setting (a plain ``ewc`` run is ``ewc256``'s row)."""
    if not comparable(cfg):
        return None
    others = [p for p in all_presets().values() if p is not preset and preset_matches(p, cfg)
              and not any(isinstance(v, ShardFamily) for v in p.overrides.values())]
    for candidate in ([preset] if preset else []) + others:
        published = candidate.published_for(str(cfg["order"]))
        if published is not None and _agrees(candidate, cfg, _PAPER_SCALE):
            return published
    return None
