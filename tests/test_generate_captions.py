"""CLTS stage 1b: `gift generate TASK --captions SET` renders images from a caption set's captions; the image set's
spec holds the caption set's hash, so the images are a function of the captions (what a lab keeps)."""

from __future__ import annotations

import dataclasses

import pyarrow.parquet as pq
import pytest
import torch

from pipeline.captioning.caption import caption_task
from pipeline.datasets import mini
from pipeline.generation.generate import GenerateSpec, SpecError, generate, plan, resolve_spec, sample_seed
from pipeline.generation.generators import center_square
from shards.captions import load_caption_set
from shards.errors import ShardSetError
from shards.layout import parquet_path
from shards.manifest import CAPTIONED_ROW_SCHEMA, load_manifest, make_manifest, read_rows, write_manifest
from shards.reader import iter_samples
from shards.verify import verify_set
from tests.conftest import FAST, run_gift

CPU = torch.device("cpu")
TEMPLATE = "{caption}, a photo of a {class}"


@pytest.fixture(scope="module")
def captions(tmp_path_factory):
    """Two tiny-BLIP caption sets of mini-c (2 classes x 2 captions) of different images (seeded random choices:
    no CLIP needed; k-means selection is tested with `gift caption`)."""
    out = tmp_path_factory.mktemp("captions")
    kw = dict(per_class=2, selection="random", captioner="tiny", device=CPU)
    return tuple(load_caption_set(caption_task("mini-c", out, seed=seed, **kw).set_path) for seed in (0, 1))


def test_render_from_captions_with_tiny(captions, tmp_path):
    caption_set, _ = captions
    r = run_gift("generate", "mini-c", *FAST, "--captions", caption_set.path, "--per-caption", "2",
                 "--prompt-template", TEMPLATE, "--shard-size", "4", "--batch-size", "2", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    (set_path,) = [p.parent for p in tmp_path.glob("*/*/manifest.json")]
    m = load_manifest(set_path)
    assert m["complete"] and m["samples"] == 2 * len(caption_set) == 8 and m["kind"] == "images"
    spec = m["spec"]
    assert (spec["captions"], spec["per_caption"], spec["prompt_template"], spec["per_class"]) == \
        (caption_set.spec_hash, 2, TEMPLATE, 0)
    assert pq.read_schema(parquet_path(set_path, 0)).remove_metadata() == CAPTIONED_ROW_SCHEMA
    rows = [row for i in range(m["num_shards"]) for row in read_rows(parquet_path(set_path, i))]
    for n, row in enumerate(rows):
        record = caption_set.records[row["caption_index"]]
        assert row["caption_index"] == n // 2 and row["key"] == f"{record.key}-{n % 2:04d}"
        assert (row["class_index"], row["class_name"], row["caption"]) == \
            (record.class_index, record.class_name, record.caption)
        assert row["prompt"] == f"{record.caption}, a photo of a {record.class_name}"
        assert row["seed"] == sample_seed(0, row["key"])
    assert len({row["seed"] for row in rows}) == len(rows)  # every image its own noise
    samples = list(iter_samples(set_path, list(range(m["num_shards"]))))
    assert [s.key for s in samples] == [row["key"] for row in rows]
    assert all(s.meta["caption"] == row["caption"] and s.meta["caption_index"] == row["caption_index"]
               for s, row in zip(samples, rows, strict=True))
    assert samples[0].pil().size == (32, 32) and verify_set(set_path).ok


def test_the_images_are_a_function_of_the_captions(captions):
    caption_set, other = captions
    spec = resolve_spec("mini-c", model="tiny", captions=caption_set, device=CPU)
    rows = plan(spec, caption_set)
    assert rows == plan(spec, caption_set) and len(rows) == 10 * len(caption_set)  # --per-caption default 10
    assert spec.prompt_template == "{caption}" and rows[0].prompt == caption_set.records[0].caption
    # Another caption set, number of images or template: another spec, hence another set.
    hashes = {spec.hash, resolve_spec("mini-c", model="tiny", captions=other, device=CPU).hash,
              resolve_spec("mini-c", model="tiny", captions=caption_set, per_caption=3, device=CPU).hash,
              resolve_spec("mini-c", model="tiny", captions=caption_set, prompt_template=TEMPLATE, device=CPU).hash}
    assert len(hashes) == 4
    with pytest.raises(SpecError, match="pass that caption set"):
        plan(spec, other)
    # Sets of class prompts keep their addresses: the caption fields are not in their spec at all (this hash is
    # the one GenerateSpec(task="mnist") had before caption sets existed).
    assert not {"captions", "per_caption", "prompt_template"} & set(GenerateSpec(task="mnist").to_dict())
    assert GenerateSpec(task="mnist").hash == "eea5662f9ccd3947b60792ab57d2711deea430431312544a082a99e7ba33f32a"
    assert dataclasses.replace(spec, per_caption=None).hash != spec.hash


def test_reference_renders_take_a_real_image_of_the_caption_class(captions, tmp_path):
    caption_set, _ = captions
    reference = mini.export_reference(tmp_path / "reference")
    spec = resolve_spec("mini-c", model=f"reference:{reference}", size=32, captions=caption_set, per_caption=3,
                        image_format="png", device=CPU)
    result = generate(spec, tmp_path / "out", device=CPU, captions=caption_set)
    m = result.manifest
    assert m["complete"] and m["samples"] == 12 and m["spec"]["captions"] == caption_set.spec_hash
    real = {name: {center_square(im, 32).tobytes() for im in images}
            for name, images in mini.class_images("reference").items() if name in ("temple", "flower")}
    samples = list(iter_samples(result.set_path, [0]))
    for sample in samples:
        assert sample.pil().tobytes() in real[sample.meta["class_name"]], sample.key
    # Within a class, consecutive images take different real images (instance counts the class's images).
    temples = [s.pil().tobytes() for s in samples if s.meta["class_name"] == "temple"]
    assert len(set(temples)) == len(temples) == 6


def test_bad_caption_requests_are_refused(captions, tmp_path):
    caption_set, _ = captions
    with pytest.raises(SpecError, match="holds captions of mini-c, not mini-a"):
        resolve_spec("mini-a", model="tiny", captions=caption_set, device=CPU)
    with pytest.raises(SpecError, match="--per-class does not apply"):
        resolve_spec("mini-c", model="tiny", captions=caption_set, per_class=4, device=CPU)
    for template in ("{class} only", "{caption} {colour}", "{caption.upper}", "{caption"):
        with pytest.raises(SpecError, match="--prompt-template"):
            resolve_spec("mini-c", model="tiny", captions=caption_set, prompt_template=template, device=CPU)
    r = run_gift("generate", "mini-c", *FAST, "--per-caption", "2", "--out", tmp_path)
    assert r.returncode == 2 and "only with --captions" in " ".join(r.stderr.split())
    assert not list(tmp_path.iterdir())
    image_set = tmp_path / "mini-c" / "0123456789abcdef"  # an image set (its manifest) is no caption set
    image_set.mkdir(parents=True)
    write_manifest(image_set, make_manifest(task="mini-c", spec=GenerateSpec(task="mini-c").to_dict(), num_shards=0,
                                            planned_samples=0, records={}, versions={}))
    with pytest.raises(ShardSetError, match="is an image set, not a caption set"):
        load_caption_set(image_set)
