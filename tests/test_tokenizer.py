"""The offline SD tokenizer must produce exactly the real CLIP tokenizer's ids."""

import open_clip

from pipeline.datasets import catalog
from pipeline.generation.tiny_sd import build_clip_tokenizer, clip_bpe_vocab

EOT = 49407


def test_vocabulary_layout():
    vocab, merges = clip_bpe_vocab()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == EOT


def test_every_benchmark_prompt_tokenises_like_open_clip():
    hf = build_clip_tokenizer()
    reference = open_clip.get_tokenizer("ViT-B-16")
    prompts = [catalog.get_task(t).prompt(c) for t in catalog.task_names() for c in range(catalog.get_task(t).num_classes)]
    prompts += ["café crème brûlée!!", "Ram C/V Cargo Van Minivan 2012", "  spaces   and\ttabs  "]
    ours = hf(prompts, padding="max_length", max_length=77, truncation=True).input_ids
    theirs = reference(prompts).tolist()
    for p, a, b in zip(prompts, ours, theirs, strict=True):
        n = b.index(EOT) + 1  # open_clip pads with 0, SD's tokenizer with end-of-text: compare up to EOT
        assert a[:n] == b[:n], p
        assert set(a[n:]) <= {EOT}
