"""CLIP's text tower on ids trimmed after the batch's longest end-of-text token equals open_clip's own
``encode_text`` on all 77 columns: for every prompt and template the project encodes, random-token sentences
and captions at the context limit; on the tiny preset and the ViT-B/16 architecture, eager, compiled and under
autocast."""

import open_clip
import pytest
import torch
import torch.nn.functional as F

from pipeline.datasets import catalog
from pipeline.methods.lwf import EOT, SOT, random_sentences
from pipeline.models import ClipFeatures, ClipSpec, encode_text_batches, encode_texts, load_clip, tokenizer, trim_tokens

FULL = open_clip.get_tokenizer("ViT-B-16")
# A caption at the 77-token limit (cut by the tokenizer, end id at 76) and one just inside it (end id at 75).
LONG = " ".join(["a photo of a very small red bird sitting on a long thin branch"] * 6)
NEAR = "a photo of " + " ".join(["bird"] * 71)


def reference(model, texts_or_ids) -> torch.Tensor:
    ids = texts_or_ids if isinstance(texts_or_ids, torch.Tensor) else FULL(texts_or_ids)
    with torch.no_grad():
        return F.normalize(model.encode_text(ids), dim=-1)


def all_prompts() -> list[str]:
    """Every MTIL task's prompts with every template, and ImageNet's names."""
    out = []
    for name in catalog.task_names():
        task = catalog.get_task(name)
        out += [t.format(c) for c in task.classnames for t in task.templates]
    return out


def test_trim_keeps_every_column_up_to_the_last_end_token():
    ids = FULL(["a photo of a cat.", "a photo of a very big dog."])
    trimmed = trim_tokens(ids)
    assert trimmed.shape[1] == int((ids == EOT).nonzero()[:, 1].max()) + 1 == 10
    assert torch.equal(trimmed, ids[:, :10]) and (ids[:, 10:] == 0).all()
    assert FULL([NEAR]).argmax().item() == 75 and FULL([LONG])[0, 76].item() == EOT
    assert tokenizer()([LONG, "a cat."]).shape == (2, 77)
    # random ids may hold the end id itself: the feature is read at the first largest id (open_clip's argmax)
    odd = torch.zeros(2, 77, dtype=torch.long)
    odd[0, :4] = torch.tensor([SOT, EOT, 5, EOT])
    odd[1, :3] = torch.tensor([SOT, 7, EOT])
    assert trim_tokens(odd).shape[1] == 3  # row 0 is read at 1, row 1 at 2


def test_every_prompt_and_template_imagenet_and_long_captions_match_open_clip_tiny():
    model = load_clip(ClipSpec("tiny", "none", seed=5)).eval()
    prompts = all_prompts() + [LONG, NEAR, LONG + " and more", "x"]
    ids = FULL(prompts)  # open_clip's 77 columns; encode_text_batches trims each batch of 512 on the host
    ours = encode_text_batches(model, ids, "cpu", batch=512)
    theirs = torch.cat([reference(model, ids[i : i + 512]) for i in range(0, len(ids), 512)])
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    widths = {trim_tokens(chunk).shape[1] for chunk in ids.split(512)}
    assert max(widths) == 77 and min(widths) <= 14  # the long captions' batch is full width; most are short


def test_random_sentences_with_end_ids_inside_match_open_clip():
    model = load_clip(ClipSpec("tiny", "none", seed=6)).eval()
    ids = random_sentences(1000, 10, seed=0)
    early = random_sentences(20000, 10, seed=3)
    early = early[early[:, 1:11].eq(EOT).any(dim=1) | early[:, 1:11].eq(SOT).any(dim=1)]
    assert len(early) > 10 and (early.argmax(dim=1) < 11).any()
    for batch in (ids, early, torch.cat([early[:3], FULL([LONG])])):
        with torch.no_grad():
            ours = encode_texts(model, trim_tokens(batch))
        torch.testing.assert_close(ours, reference(model, batch), rtol=1e-5, atol=1e-5)


def test_vit_b16_architecture_matches_open_clip():
    """The real text tower (width 512, 12 layers, 8 heads; random weights), on the widest and narrowest prompt of
    every task, random sentences with early end ids, and the long captions."""
    model = load_clip(ClipSpec("ViT-B-16", "none", seed=0)).eval()
    texts = []
    for name in catalog.task_names():
        task = catalog.get_task(name)
        prompts = [t.format(c) for c in task.classnames for t in task.templates]
        lengths = FULL(prompts).argmax(dim=1)
        texts += [prompts[int(lengths.argmax())], prompts[int(lengths.argmin())]]
    short = texts + [NEAR]
    with torch.no_grad():
        ours = encode_texts(model, tokenizer()(short))
    assert tokenizer()(short).shape[1] == 76
    torch.testing.assert_close(ours, reference(model, short), rtol=1e-5, atol=1e-5)
    early = random_sentences(20000, 10, seed=3)
    early = torch.cat([early[early[:, 1:11].eq(EOT).any(dim=1)][:4], random_sentences(4, 10, seed=1)])
    with torch.no_grad():
        ours = encode_texts(model, trim_tokens(early))
    torch.testing.assert_close(ours, reference(model, early), rtol=1e-5, atol=1e-5)


def test_compiled_and_autocast_text_forward_match():
    """The student's training forward (``ClipFeatures``) on trimmed ids: compiled equals open_clip's full-width
    forward in fp32, and under bf16 autocast the trimmed and full-width forwards agree to bf16 precision."""
    model = load_clip(ClipSpec("tiny", "none", seed=7)).eval()
    prompts = [catalog.get_task("cars").prompt(c) for c in range(64)]
    ids = tokenizer()(prompts)
    compiled = torch.compile(ClipFeatures(model))
    with torch.no_grad():
        img, txt = compiled(None, ids)
    assert img is None
    torch.testing.assert_close(txt, reference(model, prompts), rtol=1e-5, atol=1e-5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours = encode_texts(model, ids)
        theirs = F.normalize(model.encode_text(FULL(prompts)), dim=-1)
    assert ours.dtype == theirs.dtype
    torch.testing.assert_close(ours.float(), theirs.float(), rtol=0, atol=2e-2)


def test_ids_wider_than_the_context_are_refused():
    model = load_clip(ClipSpec("tiny", "none"))
    with pytest.raises(ValueError, match="width 78 exceed"):
        encode_texts(model, torch.zeros(1, 78, dtype=torch.long))
