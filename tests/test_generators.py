"""The generators behind `gift generate`: SD's safety checker, per-image seeds, the reference folder, and loading SD
from a local directory."""

import pytest
import torch
from PIL import Image

from pipeline.generation.generate import generate, make_generator, plan, resolve_spec
from pipeline.generation.generators import DiffusersGenerator, Speedups
from pipeline.generation.tiny_sd import build_tiny_pipeline
from shards.manifest import load_manifest, read_rows
from shards.reader import iter_samples
from shards.verify import verify_set
from tests.conftest import run_gift

CPU = torch.device("cpu")


def _max_concept_scores(pipe, images):
    """The safety checker's per-image max cosine similarity to its concept embeddings."""
    from diffusers.pipelines.stable_diffusion.safety_checker import cosine_distance

    pixels = pipe.feature_extractor(images, return_tensors="pt").pixel_values
    checker = pipe.safety_checker
    embeds = checker.visual_projection(checker.vision_model(pixels)[1])
    return cosine_distance(embeds, checker.concept_embeds).max(dim=1).values


def test_safety_checker_flags_are_recorded_and_left_out(tmp_path):
    spec = resolve_spec("mnist", model="tiny", per_class=1, steps=2, size=32, safety_checker=True, device=CPU)
    rows = plan(spec)
    pipe = build_tiny_pipeline(safety_checker=True)
    unchecked = DiffusersGenerator(build_tiny_pipeline(), steps=2, guidance=7.5, size=32, negative_prompt="", device=CPU)
    with torch.no_grad():
        scores = _max_concept_scores(pipe, unchecked.render(rows))
        # A real checker whose threshold splits this batch: images scoring above the median are flagged.
        pipe.safety_checker.concept_embeds_weights.fill_(float(scores.median()))
        pipe.safety_checker.special_care_embeds_weights.fill_(2.0)
    expected_flagged = {r.key for r, s in zip(rows, scores, strict=True) if s > scores.median()}
    assert 0 < len(expected_flagged) < len(rows)

    checked = DiffusersGenerator(pipe, steps=2, guidance=7.5, size=32, negative_prompt="", device=CPU)
    result = generate(spec, tmp_path, batch_size=10, device=CPU, generator=checked)
    m = result.manifest
    assert m["flagged"] == len(expected_flagged) and m["samples"] == 10 - len(expected_flagged)
    rows_on_disk = read_rows(result.set_path / "000000.parquet")
    assert {r["key"] for r in rows_on_disk if r["status"] == "flagged"} == expected_flagged
    stored = [s.key for s in iter_samples(result.set_path, [0])]
    assert stored == [r.key for r in rows if r.key not in expected_flagged]  # no black images stored
    assert verify_set(result.set_path).ok


def test_image_depends_only_on_its_prompt_and_seed():
    spec = resolve_spec("mnist", model="tiny", per_class=2, steps=3, size=32, device=CPU)
    gen = make_generator(spec, CPU)
    rows = plan(spec)
    alone = gen.render(rows[3:4])[0]
    in_batch = gen.render(rows[2:4])[1]
    assert alone.tobytes() == gen.render(rows[3:4])[0].tobytes()  # same seed -> same pixels
    assert alone.tobytes() != gen.render(rows[2:3])[0].tobytes()  # another seed and prompt -> other pixels
    # In a batch, image 1 keeps its own noise: nearly equal to rendering it alone (kernels may differ by a ULP).
    diff = torch.tensor(list(alone.tobytes()), dtype=torch.int16) - torch.tensor(list(in_batch.tobytes()), dtype=torch.int16)
    assert diff.abs().max() <= 2


def test_speedups_change_pixels_only_numerically_and_are_recorded(tmp_path):
    """`--fuse-qkv --channels-last` really switch the pipeline over, render the same set (same address) to
    within rounding, and every shard records them."""
    gen = make_generator(resolve_spec("mnist", model="tiny", device=CPU), CPU, speedups=Speedups(True, True))
    assert {type(p).__name__ for p in gen.pipe.unet.attn_processors.values()} == {"FusedAttnProcessor2_0"}
    assert gen.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)

    args = ("--per-class", "2", "--steps", "3", "--size", "32", "--format", "png", "--shard-size", "10")
    plain = run_gift("generate", "mnist", "--model", "tiny", *args, "--out", tmp_path / "plain")
    fast = run_gift("generate", "mnist", "--model", "tiny", *args, "--out", tmp_path / "fast",
                    "--fuse-qkv", "--channels-last")
    assert plain.returncode == 0 and fast.returncode == 0, plain.stderr + fast.stderr
    (a,), (b,) = (list((tmp_path / d / "mnist").iterdir()) for d in ("plain", "fast"))
    assert a.name == b.name  # numerics-only options do not change the set's address
    ma, mb = load_manifest(a), load_manifest(b)
    assert all("speedups" not in s["render"] for s in ma["shards"])
    assert [s["render"]["speedups"] for s in mb["shards"]] == [["fuse-qkv", "channels-last"]] * 2
    pixels = {d: [torch.tensor(list(s.pil().tobytes()), dtype=torch.int16) for s in iter_samples(d, [0, 1])]
              for d in (a, b)}
    assert len(pixels[a]) == len(pixels[b]) == 20
    assert max(int((x - y).abs().max()) for x, y in zip(pixels[a], pixels[b], strict=True)) <= 2
    assert verify_set(b).ok


def _reference_folder(root, classnames, colours):
    for name, colour in zip(classnames, colours, strict=True):
        folder = root / name.replace("/", "_")
        folder.mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (40 + 8 * k, 30), colour).save(folder / f"img{k}.jpg", quality=100)


def test_reference_generator_takes_images_of_the_right_class(tmp_path):
    from pipeline.datasets import catalog

    names = catalog.get_task("eurosat").classnames
    colours = [(25 * i, 255 - 25 * i, 128) for i in range(10)]
    _reference_folder(tmp_path / "real", names, colours)
    r = run_gift("generate", "eurosat", "--model", f"reference:{tmp_path / 'real'}", "--size", "32",
                 "--per-class", "4", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    (set_path,) = [p.parent for p in (tmp_path / "out").glob("*/*/manifest.json")]
    m = load_manifest(set_path)
    assert m["spec"]["generator"] == "reference" and m["samples"] == 40 and m["spec"]["steps"] == 0
    for sample in iter_samples(set_path, [0]):
        c = sample.meta["class_index"]
        image = sample.pil()
        assert image.size == (32, 32)
        pixel = image.getpixel((16, 16))
        assert max(abs(a - b) for a, b in zip(pixel, colours[c], strict=True)) <= 6, (sample.key, pixel)
    assert verify_set(set_path).ok


def test_reference_folder_missing_classes_is_a_clear_error(tmp_path):
    (tmp_path / "real" / "forest").mkdir(parents=True)  # present but empty
    r = run_gift("generate", "eurosat", "--model", f"reference:{tmp_path / 'real'}", "--out", tmp_path / "out")
    assert r.returncode == 2
    err = " ".join(r.stderr.split())
    assert "no images for 10 of 10 classes" in err and "'annual crop land'" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*"))  # no empty set left behind


def test_sd15_architecture_matches_the_released_model():
    """The benchmark's random SD v1.5 has the released parameter counts (built on the meta device)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from pipeline.generation.sd15_arch import TEXT, UNET, VAE

    with torch.device("meta"):
        counts = [sum(p.numel() for p in m.parameters()) for m in
                  (UNet2DConditionModel(**UNET), AutoencoderKL(**VAE), CLIPTextModel(CLIPTextConfig(**TEXT)))]
    assert counts == [859_520_964, 83_653_863, 123_060_480]


def test_sd15_benchmark_path_runs_on_cpu():
    """The GPU benchmark's code path on the SD v1.5 architecture (build, batch sizes, classic attention, then
    each `gift generate` speed-up added in turn), tiny work on CPU; torch.compile left out."""
    from pipeline.bench.generate import VARIANTS, bench_sd15

    results = bench_sd15(device="cpu", dtypes=("fp32",), batch_sizes=(1, 2), variant_batch=1, steps=1, size=64,
                         try_compile=False)
    assert [(r["config"], r["batch"]) for r in results] == (
        [("fp32 SDPA (default)", 1), ("fp32 SDPA (default)", 2), ("fp32 VAE decode alone (part of every row)", 1)]
        + [(f"fp32 {label}", 1) for label, s in VARIANTS if s is None or not s.compile])
    assert all(r["images_s"] > 0 for r in results)


def test_a_local_sd15_directory_loads_in_the_requested_dtype_without_deprecation_warnings(tmp_path):
    """A diffusers directory (the tiny pipeline saved with save_pretrained) goes through the sd15 loading path:
    the dtype is honoured and diffusers has nothing to warn about (no deprecated `torch_dtype`)."""
    import warnings

    build_tiny_pipeline(safety_checker=True).save_pretrained(tmp_path / "sd")
    spec = resolve_spec("mnist", model=str(tmp_path / "sd"), dtype="bf16", steps=2, size=32, device=CPU)
    assert spec.generator == "sd15" and spec.safety_checker
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gen = make_generator(spec, CPU)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    assert gen.pipe.unet.dtype == gen.pipe.text_encoder.dtype == torch.bfloat16
    assert gen.pipe.safety_checker is not None


def test_a_model_path_that_does_not_exist_says_so(tmp_path):
    """`--model` written as a path is a local directory, never tried as a Hub id (whose naming rules would be the
    message instead)."""
    from pipeline.generation.generate import SpecError

    r = run_gift("generate", "dtd", "--model", tmp_path / "nonexistent", "--out", tmp_path / "out")
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and f"the directory {tmp_path / 'nonexistent'} does not exist" in err, err
    assert "Repo id" not in err and not (tmp_path / "out").exists()
    for written in ("./no-such-model", "../no-such-model", "~/no-such-model"):
        with pytest.raises(SpecError, match="does not exist"):
            resolve_spec("dtd", model=written, device=CPU)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(SpecError, match="is a file, not a diffusers directory"):
        resolve_spec("dtd", model=str(tmp_path / "weights.bin"), device=CPU)
    assert resolve_spec("dtd", model="org/name", device=CPU).model == "org/name"  # a Hub id stays one
