"""The plan is a pure function of the spec, and the spec hash names the set: two specs never share a set."""

import dataclasses
import json

import pytest

from pipeline.generation.generate import GenerateSpec, SpecError, plan, resolve_spec, sample_seed
from shards.layout import is_valid_key, set_dir, spec_hash
from tests.conftest import FAST, run_gift


def tiny(**kw) -> GenerateSpec:
    return resolve_spec("mnist", model="tiny", per_class=2, steps=2, size=32, **kw)


def test_plan_is_pure_class_major_and_keyed():
    spec = tiny()
    rows = plan(spec)
    assert rows == plan(spec)
    assert len(rows) == 20
    assert [r.class_index for r in rows[:4]] == [0, 0, 1, 1]
    assert rows[0].key == "mnist-0000-0000" and rows[3].key == "mnist-0001-0001"
    assert rows[2].prompt == 'a photo of the number: "1 - one".'
    assert all(is_valid_key(r.key) and "." not in r.key for r in rows)
    assert len({r.seed for r in rows}) == len(rows)
    assert rows[0].seed == sample_seed(0, "mnist-0000-0000") < 2**63
    assert {r.seed for r in plan(tiny(seed=1))}.isdisjoint({r.seed for r in rows})


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(GenerateSpec)])
def test_every_spec_field_changes_the_hash_and_directory(field):
    spec = GenerateSpec(task="mnist")
    value = getattr(spec, field)
    if value is None or isinstance(value, str):
        new = (value or "") + "x"
    elif isinstance(value, bool):
        new = not value
    else:
        new = value + 1
    other = dataclasses.replace(spec, **{field: new})
    assert other.hash != spec.hash
    assert set_dir("out", "mnist", other.hash) != set_dir("out", "mnist", spec.hash)
    assert spec.hash == spec_hash(json.loads(json.dumps(spec.to_dict())))  # survives a JSON round trip


def test_defaults_follow_the_reference():
    import torch

    spec = resolve_spec("aircraft", device=torch.device("cuda"))
    assert (spec.generator, spec.model) == ("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert (spec.steps, spec.guidance, spec.scheduler, spec.size, spec.dtype) == (50, 7.5, "pndm", 512, "fp16")
    assert spec.safety_checker and spec.per_class == 8 and spec.image_format == "jpg" and spec.jpeg_quality == 95
    assert resolve_spec("aircraft", model="tiny").dtype == "fp32"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task": "aircarft"}, r"unknown task 'aircarft' \(did you mean aircraft\?\); valid tasks: aircraft"),
        ({"scheduler": "euler"}, "unknown scheduler 'euler'; choose one of pndm, ddim, dpm-solver"),
        ({"per_class": 0}, "--per-class must be positive"),
        ({"steps": -1}, "--steps must be positive"),
        ({"size": 30}, "--size must be a positive multiple of 8"),
        ({"dtype": "fp16"}, "fp16 needs a GPU"),
    ],
)
def test_bad_requests_name_the_bad_value(kwargs, message):
    import torch

    args = {"task": "mnist", "model": "tiny", "device": torch.device("cpu"), **kwargs}
    with pytest.raises(SpecError, match=message):
        resolve_spec(args.pop("task"), **args)


def test_cli_bad_input_exits_nonzero_with_message(tmp_path):
    r = run_gift("generate", "aircarft", *FAST, "--out", tmp_path)
    assert r.returncode == 2 and "valid tasks:" in r.stderr and "imagenet" in r.stderr
    r = run_gift("generate", "mnist", *FAST, "--per-class", "0", "--out", tmp_path)
    assert r.returncode == 2 and "--per-class must be positive" in r.stderr
    r = run_gift("generate", "mnist", *FAST, "--scheduler", "euler", "--out", tmp_path)
    assert r.returncode == 2 and "euler" in r.stderr
    r = run_gift("generate", "mnist", *FAST, "--batch-size", "0", "--out", tmp_path)
    assert r.returncode == 2 and "--batch-size must be positive" in r.stderr
    assert not list(tmp_path.rglob("*.tar"))  # nothing was written


def test_a_directory_holding_another_specs_set_is_refused(tmp_path):
    """Different specs get different directories by construction; a planted one is detected, not reused."""
    from pipeline.generation.generate import generate
    from shards.manifest import make_manifest, write_manifest

    spec, other = tiny(), tiny(guidance=3.0)
    target = set_dir(tmp_path, "mnist", spec.hash)
    target.mkdir(parents=True)
    write_manifest(target, make_manifest(task="mnist", spec=other.to_dict(), num_shards=1, planned_samples=20,
                                         records={}, versions={}))
    from shards.errors import SpecMismatchError

    with pytest.raises(SpecMismatchError, match="different spec"):
        generate(spec, tmp_path)
    assert not list(target.glob("*.tar"))
