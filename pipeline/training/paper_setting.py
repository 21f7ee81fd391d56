"""Whether a run's setting is the paper's: only then do its reports (and ``gift table``) show the published numbers
beside it. A pure function of the run's ``config.json``, so the fine-tuning loop's protocol and the tables share it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from pipeline.datasets import catalog

from .config import TrainConfig


def config_defaults(cfg: Mapping[str, object]) -> dict[str, object]:
    """What a run of ``cfg``'s order and method gets when no option is given (the setting's defaults filled in)."""
    try:
        return dataclasses.asdict(TrainConfig(order=str(cfg.get("order")), method=str(cfg.get("method"))))
    except ValueError:  # an order this version does not know: the class defaults
        return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _value(cfg: Mapping[str, object], key: str) -> object:
    # A run made before a field existed ran with what is now its default.
    return cfg.get(key, config_defaults(cfg).get(key))


def comparable(cfg: Mapping[str, object]) -> bool:
    """The paper's setting: ViT-B/16 OpenAI weights and Order I/II with 1,000 iterations, or one of the six CIL settings
    of Tables 7 / 8 with its own class order and steps (reports show the published numbers beside a run only then)."""
    if (_value(cfg, "clip_arch"), _value(cfg, "clip_weights")) != ("ViT-B-16", "openai"):
        return False
    order = str(cfg.get("order"))
    if order in ("I", "II"):
        return _value(cfg, "iterations") == 1000
    defaults = config_defaults(cfg)
    return (order in catalog._load("cil.json")["settings"]
            and all(_value(cfg, k) == defaults[k] for k in ("iterations", "epochs", "class_order")))
