"""Stage 1 end to end through the real `gift` entry point with the tiny SD pipeline on CPU."""

import json
import os
import resource
import signal
import subprocess
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shards.layout import tar_path
from shards.manifest import load_manifest, read_rows
from shards.reader import iter_shard
from shards.verify import file_sha256, verify_set
from tests.conftest import FAST, ROOT, gift_cmd, only_set, run_gift, set_files

# mnist: 10 classes x 2 images = 20 samples in 5 shards of 4.
ARGS = ["generate", "mnist", *FAST, "--per-class", "2", "--shard-size", "4", "--batch-size", "2"]


@pytest.fixture(scope="module")
def reference_set(tmp_path_factory):
    """One uninterrupted single-process render: the yardstick for resume, repair and multi-process runs."""
    out = tmp_path_factory.mktemp("ref")
    r = run_gift(*ARGS, "--out", out)
    assert r.returncode == 0, r.stderr
    return only_set(out)


def test_set_layout_manifest_and_samples(reference_set):
    m = load_manifest(reference_set)
    assert m["complete"] and m["num_shards"] == 5 and m["samples"] == m["planned_samples"] == 20
    assert m["spec"]["task"] == "mnist" and reference_set.name == m["spec_hash"][:16]
    assert {"torch", "diffusers", "webdataset", "pyarrow"} <= set(m["versions"])
    for s in m["shards"]:
        assert (s["sha256"], s["bytes"]) == file_sha256(tar_path(reference_set, s["index"]))
        assert s["render"] == {"device": "cpu", "dtype": "fp32", "batch_size": 2, "threads": torch.get_num_threads()}
    # A plain tar: KEY.jpg + KEY.json per sample, fixed mtime, in plan order.
    with tarfile.open(tar_path(reference_set, 0)) as tar:
        names = tar.getnames()
        assert names[:2] == ["mnist-0000-0000.jpg", "mnist-0000-0000.json"]
        assert {m.mtime for m in tar.getmembers()} == {0}
    samples = list(iter_shard(tar_path(reference_set, 0)))
    assert [s.key for s in samples] == [r["key"] for r in read_rows(reference_set / "000000.parquet")]
    assert samples[2].meta["prompt"] == 'a photo of the number: "1 - one".'
    assert samples[0].pil().size == (32, 32)
    assert verify_set(reference_set).ok
    assert not list(reference_set.glob(".*"))  # no temporaries left


def test_rerun_skips_finished_shards(reference_set, tmp_path):
    out = reference_set.parents[1]
    before = {p: p.stat().st_mtime_ns for p in reference_set.glob("*.tar")}
    r = run_gift(*ARGS, "--out", out)
    assert r.returncode == 0 and "rendered 0, kept 5" in r.stdout
    assert before == {p: p.stat().st_mtime_ns for p in reference_set.glob("*.tar")}


# The interruption tests stop a real run at a known point, whatever the machine's speed. The `reference` generator
# reads one real image file per sample; class 4's only file is swapped for a named pipe (FIFO), whose open() waits
# until a writer appears, and none ever does. Shards 0 and 1 (classes 0-3) finish; shard 2 (classes 4 and 5)
# opens its temporary tar and then waits on the pipe, so the signal always lands inside shard 2 with three shards
# still to do.
BLOCKED_CLASS = "4 - four"


def reference_args(images: Path) -> list:
    # mnist from real images: 10 classes x 2 = 20 samples in 5 shards of 4
    return ["generate", "mnist", "--model", f"reference:{images}", "--size", "32", "--per-class", "2",
            "--shard-size", "4", "--batch-size", "2"]


@pytest.fixture(scope="module")
def reference_images(tmp_path_factory) -> Path:
    """One random 48x40 image per mnist class, as `reference:DIR` expects (DIR/<class name>/*.png)."""
    from pipeline.datasets import catalog

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name in catalog.get_task("mnist").classnames:
        (root / name).mkdir()
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / name / "0.png")
    return root


@pytest.fixture(scope="module")
def uninterrupted(reference_images, tmp_path_factory) -> Path:
    """The yardstick of the interruption tests: the same command, never interrupted."""
    out = tmp_path_factory.mktemp("uninterrupted")
    r = run_gift(*reference_args(reference_images), "--out", out)
    assert r.returncode == 0, r.stderr
    return only_set(out)


@contextmanager
def waiting_in_shard_2(images: Path, out: Path):
    """Start `gift generate` with class 4's image replaced by a FIFO and yield the process once shard 1 is recorded
    and shard 2's temporary tar exists: from then on it can only wait on the pipe. The image is put back on exit."""
    image = images / BLOCKED_CLASS / "0.png"
    aside = images.parent / f"{images.name}-blocked-class.png"
    image.rename(aside)
    os.mkfifo(image)
    proc = subprocess.Popen(gift_cmd(*reference_args(images), "--out", out), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (list(out.glob("*/*/000001.parquet")) and list(out.glob("*/*/.000002.tar.tmp-*"))):
            assert proc.poll() is None, f"gift generate stopped before shard 2: {proc.communicate()[1]}"
            assert time.time() < deadline, "shard 2 never started"
            time.sleep(0.02)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        image.unlink()
        aside.rename(image)


def test_killed_run_resumes_to_the_same_bytes(reference_images, uninterrupted, tmp_path):
    with waiting_in_shard_2(reference_images, tmp_path) as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    set_path = only_set(tmp_path)
    m = load_manifest(set_path)
    assert not m["complete"] and [s["index"] for s in m["shards"]] == [0, 1]
    assert len(list(set_path.glob(".000002.tar.tmp-*"))) == 1  # kill -9 leaves shard 2 half-written, hidden
    assert sorted(p.name for p in set_path.glob("*.tar")) == ["000000.tar", "000001.tar"]
    r = run_gift(*reference_args(reference_images), "--out", tmp_path)
    assert r.returncode == 0 and "rendered 3, kept 2" in r.stdout, r.stdout + r.stderr
    assert set_files(set_path) == set_files(uninterrupted)
    assert load_manifest(set_path)["shards"] == load_manifest(uninterrupted)["shards"]
    assert not list(set_path.glob(".*"))


def test_ctrl_c_stops_cleanly_and_resumes(reference_images, uninterrupted, tmp_path):
    with waiting_in_shard_2(reference_images, tmp_path) as proc:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "re-run the same command to resume" in err, err
    set_path = only_set(tmp_path)
    assert not list(set_path.glob(".*.tmp-*"))  # shard 2's temporary is removed on the way out
    assert sorted(p.name for p in set_path.glob("*.tar")) == ["000000.tar", "000001.tar"]
    assert sorted(p.stem for p in set_path.glob("*.parquet")) == ["000000", "000001"]
    assert load_manifest(set_path)["shards"] == load_manifest(uninterrupted)["shards"][:2]
    r = run_gift(*reference_args(reference_images), "--out", tmp_path)
    assert r.returncode == 0 and "rendered 3, kept 2" in r.stdout, r.stdout + r.stderr
    assert set_files(set_path) == set_files(uninterrupted)


def _copy_set(src, dst_root):
    import shutil

    dst = dst_root / src.relative_to(src.parents[1])
    shutil.copytree(src, dst)
    return dst


def test_verify_names_corrupt_shards_and_generate_repairs_them(reference_set, tmp_path):
    set_path = _copy_set(reference_set, tmp_path)
    flipped = tar_path(set_path, 1)
    data = bytearray(flipped.read_bytes())
    data[700] ^= 0x01  # one bit inside the first image
    flipped.write_bytes(bytes(data))
    truncated = tar_path(set_path, 3)
    truncated.write_bytes(truncated.read_bytes()[:1000])

    r = run_gift("shards", "verify", set_path)
    assert r.returncode == 1
    assert "000001.tar: checksum mismatch" in r.stderr and "000003.tar: checksum mismatch" in r.stderr
    assert "000002.tar" not in r.stderr

    r = run_gift(*ARGS, "--out", tmp_path)
    assert r.returncode == 0 and "rendered 2, kept 3" in r.stdout
    assert set_files(set_path) == set_files(reference_set)
    assert run_gift("shards", "verify", set_path).returncode == 0


def test_deep_verify_catches_a_bad_image_with_a_matching_checksum(reference_set, tmp_path):
    """A shard rewritten with a broken JPEG *and* a recomputed record still fails deep verification."""
    import pyarrow.parquet as pq

    from shards.layout import canonical_json
    from shards.manifest import RECORD_KEY, ShardRecord

    set_path = _copy_set(reference_set, tmp_path)
    tar = tar_path(set_path, 2)
    data = bytearray(tar.read_bytes())
    start = data.index(b"\xff\xd8")  # first JPEG's start-of-image marker
    data[start + 2 : start + 400] = bytes(398)
    tar.write_bytes(bytes(data))
    table = pq.read_table(set_path / "000002.parquet")
    record = ShardRecord.from_dict(json.loads(table.schema.metadata[RECORD_KEY]))
    sha, size = file_sha256(tar)
    record = ShardRecord(record.index, record.samples, record.flagged, size, sha, record.render)
    pq.write_table(table.replace_schema_metadata({RECORD_KEY: canonical_json(record.to_dict())}), set_path / "000002.parquet")

    report = verify_set(set_path)
    assert not report.ok and any(p.startswith("000002.tar") for p in report.problems), report.problems
    assert verify_set(set_path, deep=False).problems == ["000002.tar: manifest entry disagrees with the shard's record"]


def test_disk_full_mid_shard_leaves_no_partial_shard(reference_set, tmp_path):
    """A real write failure (RLIMIT_FSIZE -> EFBIG, as a full disk gives ENOSPC) in the middle of a shard."""

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (12_000, 12_000))

    r = subprocess.run(gift_cmd(*ARGS, "--out", tmp_path), cwd=ROOT, capture_output=True, text=True,
                       preexec_fn=small_files)
    assert r.returncode == 1 and "File too large" in r.stderr and "re-run to resume" in r.stderr
    set_path = only_set(tmp_path)
    assert not list(set_path.glob(".*.tmp-*"))
    for tar in set_path.glob("*.tar"):  # anything under a final name is complete and recorded
        assert tar.with_suffix(".parquet").exists()
    r = run_gift(*ARGS, "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert set_files(set_path) == set_files(reference_set)


def test_two_processes_write_the_same_set_as_one(tmp_path):
    """`--gpus 2` launches torchrun with two gloo processes; rank r renders shards r, r+2, ...

    torchrun gives each CPU process one thread; CPU kernels sum in a thread-count-dependent order, so
    the one-process yardstick runs with one thread too (the thread count is recorded per shard).
    """
    r = run_gift(*ARGS, "--out", tmp_path / "one", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    r = run_gift(*ARGS, "--gpus", "2", "--out", tmp_path / "two")
    assert r.returncode == 0, r.stderr
    assert "[rank 1]" in r.stderr
    one, two = only_set(tmp_path / "one"), only_set(tmp_path / "two")
    assert set_files(two) == set_files(one)
    assert load_manifest(two)["shards"] == load_manifest(one)["shards"]
    assert load_manifest(two)["complete"]


def test_ls_info_and_preview(reference_set, tmp_path):
    root = reference_set.parents[1]
    r = run_gift("shards", "ls", root)
    assert r.returncode == 0 and "mnist" in r.stdout and "20/20" in r.stdout and "yes" in r.stdout
    r = run_gift("shards", "info", reference_set)
    assert r.returncode == 0 and "000004" in r.stdout and '"guidance": 7.5' in r.stdout
    sheet = tmp_path / "grid.png"
    r = run_gift("shards", "preview", reference_set, "--out", sheet, "--n", "6", "--columns", "3")
    assert r.returncode == 0, r.stderr
    from shards.preview import TINY_NOTE, caption_font, caption_lines

    note = 20 * len(caption_lines(TINY_NOTE, caption_font(256), 3 * 256 - 6, max_lines=8)) + 6  # tiny SD: noise
    with Image.open(sheet) as im:  # 256-px cells, three caption lines of 14-px text, under the tiny generator's note
        assert im.size == (3 * 256, note + 2 * (256 + 3 * 20 + 6))
    r = run_gift("shards", "preview", reference_set, "--out", sheet)
    assert r.returncode == 2 and "--force" in r.stderr


def test_contact_sheet_captions_are_legible_and_stay_in_their_cell(reference_set, tmp_path):
    from shards.preview import CAPTION_LINES, caption_font, caption_lines, contact_sheet

    font = caption_font(96)
    assert font.size >= 12 and font.getlength(" ") >= 3  # a visible space between words, even on small cells
    prompt = "a centered satellite photo of industrial buildings or commercial buildings."
    lines = caption_lines(prompt, caption_font(256), 250)  # the default 256-px cell
    assert len(lines) in range(2, CAPTION_LINES + 1) and " ".join(lines) == prompt  # wrapped at spaces, nothing lost
    assert all(caption_font(256).getlength(line) <= 250 for line in lines)
    cut = caption_lines(prompt, font, 40)  # more than three lines' worth: cut, and marked as cut
    assert len(cut) == CAPTION_LINES and cut[-1].endswith("…") and all(font.getlength(s) <= 40 for s in cut)
    pieces = caption_lines("Supercalifragilistic", font, 30, max_lines=10)  # a word wider than the cell is split
    assert len(pieces) > 1 and "".join(pieces) == "Supercalifragilistic" and all(font.getlength(s) <= 30 for s in pieces)

    # On a sheet of small cells the prompts ('a photo of the number: "0 - zero".') wrap, and no caption pixel
    # crosses into the next column.
    sheet = tmp_path / "small.png"
    assert contact_sheet(reference_set, sheet, n=4, columns=2, cell=96) == 4
    ink = np.asarray(Image.open(sheet).convert("L")) < 128
    ascent, descent = font.getmetrics()
    cell_h = 96 + (ascent + descent + 2) * CAPTION_LINES + 6
    top = ink.shape[0] - 2 * cell_h  # the tiny generator's note above the grid
    assert top > 0
    for row in range(2):
        caption = ink[top + row * cell_h + 96 : top + (row + 1) * cell_h]
        assert caption.any(axis=1).sum() > 14  # more than one line of text
        for col in range(2):
            columns_with_ink = np.flatnonzero(caption[:, col * 96 : (col + 1) * 96].any(axis=0))
            assert columns_with_ink.min() >= 2 and columns_with_ink.max() <= 96 - 3, (row, col)


def test_missing_sd15_weights_say_what_was_searched(tmp_path):
    r = run_gift("generate", "aircraft", "--device", "cpu", "--dtype", "fp32", "--out", tmp_path / "o",
                 env={"HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 2
    err = " ".join(r.stderr.split())
    assert "Stable Diffusion weights not found" in err and str(tmp_path / "hf") in err
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in err
    assert not list((tmp_path / "o").rglob("*.tar"))
