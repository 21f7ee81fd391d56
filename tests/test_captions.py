"""CLTS stage 1a: `gift caption` chooses training images, captions them with BLIP (tiny, real classes) and keeps
only the captions, as a caption set the shard machinery verifies, lists, pushes and pulls like an image set."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from pipeline.captioning.blip import Captioner, CaptionerNotFoundError, Decoding, load_captioner, locate_captioner
from pipeline.captioning.select import clip_features, fingerprint, kmeans_medoids, random_pick, select_sources
from pipeline.captioning.tiny_blip import SPECIALS, build_tiny_blip, build_tiny_tokenizer, tiny_vocab
from pipeline.datasets import mini
from pipeline.generation.generate import generate, resolve_spec
from pipeline.models import ClipSpec, load_clip
from pipeline.replay.synthetic import find_pool_sets, spec_filter
from shards.captions import load_caption_set
from shards.errors import CorruptShardError, ShardSetError
from shards.layout import parquet_path, spec_hash, tar_path
from shards.manifest import CAPTION_ROW_SCHEMA, RECORD_KEY, load_manifest, read_rows, write_manifest
from shards.pull import pull_set
from shards.push import push_set
from shards.store import open_store
from shards.verify import verify_set
from tests.conftest import ROOT, run_gift, set_files

CPU = torch.device("cpu")
TINY = ["--captioner", "tiny", "--clip", "tiny", "--clip-weights", "none", "--device", "cpu"]
# mini-c: 2 classes (temple, flower) x 3 captions = 6 records in 3 shards of 2.
ARGS = ["caption", "mini-c", *TINY, "--per-class", "3", "--shard-size", "2", "--batch-size", "2"]


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def caption_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("captions")
    r = run_gift(*ARGS, "--out", out)
    assert r.returncode == 0, r.stderr
    (set_path,) = [p.parent for p in out.glob("*/*/manifest.json")]
    return set_path


# ----------------------------------------------------------------------------------------------- selection


def test_kmeans_medoids_are_the_members_nearest_each_centre():
    points = np.array([
        [0, 0], [1, 0], [0, 1], [-1, 0], [0, -1],  # mean (0, 0): the medoid is (0, 0), index 0
        [10, 0], [11, 0], [10, 2],  # mean (10.33, 0.67): squared distances .56, .89, 1.89 -> (10, 0), index 5
        [0, 10], [0, 12], [0, 13],  # mean (0, 11.67): -> (0, 12), index 9
    ], dtype=np.float32)
    assert kmeans_medoids(points, 3, seed=0) == [0, 5, 9]
    assert kmeans_medoids(points, 3, seed=1) == [0, 5, 9]  # well-separated clusters: any restart finds them
    assert kmeans_medoids(points[:2], 3, seed=0) == [0, 1]  # fewer images than asked: all of them
    duplicates = np.zeros((5, 2), np.float32)  # one distinct point: still k distinct images
    assert len(set(kmeans_medoids(duplicates, 3, seed=0))) == 3


def test_selection_is_per_class_and_seeded():
    labels = [0, 1] * 20 + [1] * 5  # class 0: 20 images, class 1: 25
    picked = select_sources(labels, 2, 10, "random", seed=0)
    assert picked == select_sources(labels, 2, 10, "random", seed=0)
    assert picked != select_sources(labels, 2, 10, "random", seed=1)
    assert [len(p) for p in picked] == [10, 10]
    assert all(labels[i] == c for c, p in enumerate(picked) for i in p)
    assert random_pick(3, 10, 0, 0) == [0, 1, 2]
    features = np.random.default_rng(0).normal(size=(len(labels), 4)).astype(np.float32)
    kmeans = select_sources(labels, 2, 4, "kmeans", seed=0, features=features)
    assert all(labels[i] == c for c, p in enumerate(kmeans) for i in p) and [len(p) for p in kmeans] == [4, 4]
    with pytest.raises(ValueError, match="unknown selection"):
        select_sources(labels, 2, 4, "herding", seed=0)


def test_fingerprint_is_of_decoded_pixels():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8))
    png = io.BytesIO()
    image.save(png, format="PNG")
    reloaded = Image.open(io.BytesIO(png.getvalue()))
    assert fingerprint([(3, image)]) == fingerprint([(3, reloaded)])  # same pixels, however stored
    changed = image.copy()
    changed.putpixel((0, 0), (0, 0, 1) if image.getpixel((0, 0)) != (0, 0, 1) else (0, 0, 2))
    assert fingerprint([(3, changed)]) != fingerprint([(3, image)])
    assert fingerprint([(4, image)]) != fingerprint([(3, image)])  # another source index


# ----------------------------------------------------------------------------------------------- tiny BLIP


def test_tiny_tokenizer_is_bert_wordpiece_built_offline():
    tokenizer = build_tiny_tokenizer()
    vocab = tiny_vocab()
    assert [vocab[t] for t in SPECIALS] == list(range(6)) and vocab == tiny_vocab()
    ids = tokenizer("A photo of two flowers")["input_ids"]
    assert ids[0] == vocab["[CLS]"] and ids[-1] == vocab["[SEP]"]
    assert vocab["flower"] in ids and vocab["##s"] in ids  # WordPiece: flowers = flower ##s
    assert tokenizer.decode([vocab["[DEC]"], *ids], skip_special_tokens=True) == "a photo of two flowers"
    assert tokenizer("zebra")["input_ids"][1] == vocab["[UNK]"]


def test_tiny_blip_captions_real_images_deterministically():
    images, _ = mini.load_split("mini-c", "train")
    images = images[:2] + images[-2:]  # two temples, two flowers
    first = Captioner(*build_tiny_blip(), CPU, Decoding()).caption(images)
    again = load_captioner(locate_captioner("tiny"), CPU).caption(images)  # built anew, same seed
    assert first == again
    assert len(set(first)) > 1  # the image decides the caption
    assert all(len(c.split()) <= 30 for c in first)


def test_a_saved_blip_loads_from_the_hugging_face_cache_and_from_a_directory(tmp_path):
    """The real loading path (`from_pretrained` of a transformers BLIP checkpoint) on tiny weights saved in the
    Hugging Face cache layout: `gift caption` finds the default captioner offline by its repo id and records the
    cached commit as its revision; a directory is found too, named by a hash of its content."""
    model, processor = build_tiny_blip()
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--Salesforce--blip-image-captioning-base"
    snapshot = repo / "snapshots" / commit
    model.save_pretrained(snapshot)
    processor.save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    r = run_gift("caption", "mini-c", "--select", "random", "--per-class", "2", "--device", "cpu",
                 "--out", tmp_path / "out", env={"HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 0, r.stderr
    (set_path,) = [p.parent for p in (tmp_path / "out").glob("*/*/manifest.json")]
    spec = load_manifest(set_path)["spec"]
    assert (spec["captioner"], spec["captioner_revision"]) == ("Salesforce/blip-image-captioning-base", commit)
    assert (spec["selection"], spec["features"]) == ("random", "none")
    records = load_caption_set(set_path).records
    images, _ = mini.load_split("mini-c", "train")
    in_memory = Captioner(model, processor, CPU, Decoding())
    assert [r.caption for r in records] == in_memory.caption([images[r.source_index] for r in records])
    local = locate_captioner(str(snapshot))
    assert local.name == "local" and re.fullmatch(r"sha256:[0-9a-f]{16}", local.revision)
    assert load_captioner(local, CPU).caption(images[:3]) == in_memory.caption(images[:3])


def test_missing_captioner_says_what_was_searched(tmp_path):
    r = run_gift("caption", "mini-c", "--clip", "tiny", "--clip-weights", "none", "--out", tmp_path / "o",
                 env={"HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 2, r.stderr
    err = one_line(r.stderr)
    assert "BLIP captioner not found" in err and str(tmp_path / "hf") in err
    assert "'Salesforce/blip-image-captioning-base'" in err
    assert "hf download Salesforce/blip-image-captioning-base" in err and "--captioner" in err
    assert not (tmp_path / "o").exists()
    # HF_HUB_OFFLINE wins over --download: the cache is searched, nothing is fetched.
    with pytest.raises(CaptionerNotFoundError, match="searched the Hugging Face cache") as e:
        locate_captioner("gift-tests/no-such-captioner", allow_download=True)
    assert "--download" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaptionerNotFoundError, match="must hold a transformers BLIP checkpoint"):
        locate_captioner(str(tmp_path / "empty"))


# ----------------------------------------------------------------------------------------------- the set


def test_caption_set_layout_records_and_bytes(caption_set):
    m = load_manifest(caption_set)
    assert m["kind"] == "captions" and m["complete"] and m["num_shards"] == 3 and m["samples"] == 6
    spec = m["spec"]
    assert (spec["kind"], spec["task"], spec["split"], spec["selection"], spec["per_class"]) == \
        ("captions", "mini-c", "train", "kmeans", 3)
    assert (spec["captioner"], spec["num_beams"], spec["max_new_tokens"], spec["sources"]) == ("tiny", 3, 30, 6)
    assert spec["features"] == "tiny:none:seed0" and caption_set.name == m["spec_hash"][:16]
    # The chosen images are the k-means medoids of each class's tiny-CLIP features, and the fingerprint is theirs.
    images, labels = mini.load_split("mini-c", "train")
    features = clip_features(images, load_clip(ClipSpec("tiny", "none")), CPU)
    chosen = [i for per_class in select_sources(labels, 2, 3, "kmeans", 0, features) for i in per_class]
    captions = load_caption_set(caption_set)
    assert [r.source_index for r in captions.records] == chosen
    assert spec["source_fingerprint"] == fingerprint((i, images[i]) for i in chosen)
    assert [r.key for r in captions.records] == [f"mini-c-{c:04d}-{i:04d}" for c in range(2) for i in range(3)]
    assert [(r.class_index, r.class_name) for r in captions.records] == [(0, "temple")] * 3 + [(1, "flower")] * 3
    assert captions.caption_bytes == sum(len(r.caption.encode()) for r in captions.records) > 0
    # Each shard: a tar of KEY.txt + KEY.json, a parquet of the records; the same captions in both.
    assert pq.read_schema(parquet_path(caption_set, 0)).remove_metadata() == CAPTION_ROW_SCHEMA
    with tarfile.open(tar_path(caption_set, 0)) as tar:
        assert tar.getnames() == ["mini-c-0000-0000.json", "mini-c-0000-0000.txt",
                                  "mini-c-0000-0001.json", "mini-c-0000-0001.txt"]
        text = tar.extractfile("mini-c-0000-0001.txt").read().decode()
        meta = json.loads(tar.extractfile("mini-c-0000-0001.json").read())
    assert text == captions.records[1].caption == meta["caption"] and meta["source_index"] == chosen[1]
    assert verify_set(caption_set).ok and not list(caption_set.glob(".*"))


def test_a_caption_set_beside_image_sets_is_never_a_replay_pool_set(caption_set, tmp_path):
    root = tmp_path / "shards"
    shutil.copytree(caption_set, root / "mini-c" / caption_set.name)
    reference = mini.export_reference(tmp_path / "reference")
    spec = resolve_spec("mini-c", model=f"reference:{reference}", per_class=2, size=32, device=CPU)
    images = generate(spec, root, device=CPU).set_path
    assert find_pool_sets(root, ["mini-c"]) == {"mini-c": images}
    assert not spec_filter()(load_manifest(caption_set))


def test_rerun_keeps_sound_shards_and_redoes_damaged_ones_to_the_same_bytes(caption_set, tmp_path):
    copy = tmp_path / "mini-c" / caption_set.name
    shutil.copytree(caption_set, copy)
    parquet_path(copy, 1).unlink()  # a run killed before shard 1's record
    tar_path(copy, 1).unlink()
    tar_path(copy, 2).write_bytes(b"garbage")  # a shard damaged on disk
    (copy / ".000002.tar.tmp-999999").write_bytes(b"partial")  # a killed process's temporary
    r = run_gift(*ARGS, "--out", tmp_path)
    assert r.returncode == 0 and "captioned 2, kept 1" in one_line(r.stdout), r.stdout + r.stderr
    assert set_files(copy) == set_files(caption_set) and not list(copy.glob(".*"))
    assert load_manifest(copy)["shards"] == load_manifest(caption_set)["shards"]


def test_a_directory_holding_another_caption_spec_is_refused_untouched(caption_set, tmp_path):
    """A set at this address made by another spec (a planted or colliding one) is refused, never reused or mended."""
    planted = tmp_path / "mini-c" / caption_set.name
    shutil.copytree(caption_set, planted)
    manifest = load_manifest(planted)
    other = {**manifest["spec"], "seed": 1}
    write_manifest(planted, {**manifest, "spec": other, "spec_hash": spec_hash(other)})
    tar_path(planted, 2).write_bytes(b"garbage")  # a shard this spec would redo: left as it is
    before = {p.name: p.read_bytes() for p in planted.iterdir()}
    r = run_gift(*ARGS, "--out", tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    err = one_line(r.stderr)
    assert f"{planted} holds a set made by a different spec" in err and "choose another --out" in err, err
    assert {p.name: p.read_bytes() for p in planted.iterdir()} == before


def test_caption_under_torchrun_stops_every_rank_before_anything_is_written(tmp_path):
    """`gift caption` is one process: launched by torchrun, each rank says so in one line; no set is opened."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cli", *ARGS,
           "--out", str(tmp_path / "o")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "COLUMNS": "400"})
    assert r.returncode != 0
    err = one_line(r.stderr)
    assert err.count("error: gift caption runs as one process, here it is one of 2 (torchrun)") == 2, err
    assert "without torchrun, on one device (--device)" in err  # (torchrun then reports the failed ranks itself)
    assert not (tmp_path / "o").exists()


def test_corrupt_caption_set_is_caught_by_verify_and_refused_by_pull(caption_set, tmp_path):
    # A flipped bit in a tar: verify names the shard; the set is refused for rendering.
    broken = tmp_path / "local" / "mini-c" / caption_set.name
    shutil.copytree(caption_set, broken)
    good = tar_path(broken, 1).read_bytes()
    tar_path(broken, 1).write_bytes(good[:600] + bytes([good[600] ^ 1]) + good[601:])
    r = run_gift("shards", "verify", broken)
    assert r.returncode == 1 and "000001.tar: checksum mismatch" in one_line(r.stderr), r.stderr
    assert "gift caption" in one_line(r.stderr)
    with pytest.raises(CorruptShardError, match="000001.tar"):
        load_caption_set(broken)
    # A caption edited in the parquet whose record still matches the tar: checksums pass, deep verify does not.
    tar_path(broken, 1).write_bytes(good)
    table = pq.read_table(parquet_path(broken, 2))
    rows = table.to_pylist()
    rows[0]["caption"] = "a photo of something else"
    import pyarrow as pa

    edited = pa.Table.from_pylist(rows, schema=CAPTION_ROW_SCHEMA).replace_schema_metadata(
        {RECORD_KEY: table.schema.metadata[RECORD_KEY]})
    pq.write_table(edited, parquet_path(broken, 2))
    assert verify_set(broken, deep=False).ok
    problems = verify_set(broken).problems
    assert len(problems) == 1 and problems[0].startswith("000002.tar:") and "differs from its parquet row" in problems[0]
    # Pushed, then corrupted on the store: pull refuses it and nothing becomes visible.
    store = tmp_path / "store"
    push_set(caption_set, open_store(store))
    remote_tar = tar_path(store / "mini-c" / caption_set.name, 0)
    data = remote_tar.read_bytes()
    remote_tar.write_bytes(data[:600] + bytes([data[600] ^ 1]) + data[601:])  # one flipped bit, same size
    r = run_gift("shards", "pull", f"{store}/mini-c/{caption_set.name}", tmp_path / "b")
    assert r.returncode == 2 and "000000.tar" in one_line(r.stderr) and "disagrees with its manifest" in one_line(r.stderr)
    assert not (tmp_path / "b" / "mini-c" / caption_set.name / "manifest.json").exists()
    # Repaired on the store: the pull completes, byte for byte, and the set is usable.
    remote_tar.write_bytes(tar_path(caption_set, 0).read_bytes())
    pulled = pull_set(open_store(store), "mini-c", caption_set.name, tmp_path / "b").set_path
    assert set_files(pulled) == set_files(caption_set)
    assert load_caption_set(pulled).records == load_caption_set(caption_set).records


def test_a_store_manifest_with_a_false_kind_is_refused(caption_set, tmp_path):
    store = tmp_path / "store"
    push_set(caption_set, open_store(store))
    manifest = store / "mini-c" / caption_set.name / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "kind": "images"}))
    with pytest.raises(ShardSetError, match="invalid manifest \\(kind 'images'"):
        pull_set(open_store(store), "mini-c", caption_set.name, tmp_path / "b")


def test_ls_info_and_preview_of_a_caption_set(caption_set, tmp_path):
    r = run_gift("shards", "ls", caption_set.parents[1])
    assert r.returncode == 0 and "captions tiny" in r.stdout and "6/6" in r.stdout, r.stdout
    r = run_gift("shards", "info", caption_set)
    caption_bytes = load_caption_set(caption_set).caption_bytes
    assert r.returncode == 0 and f"6 captions, {caption_bytes} caption bytes" in one_line(r.stdout), r.stdout
    assert "mini-c-0000-0000" in r.stdout and '"selection": "kmeans"' in r.stdout
    r = run_gift("shards", "preview", caption_set, "--out", tmp_path / "grid.png")
    assert r.returncode == 2 and "caption set" in one_line(r.stderr) and not (tmp_path / "grid.png").exists()
    assert read_rows(parquet_path(caption_set, 0))[0]["status"] == "ok"
