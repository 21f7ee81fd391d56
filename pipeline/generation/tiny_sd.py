"""A tiny, randomly initialised Stable Diffusion pipeline built offline from configs.

It has the real SD v1.5 structure (CLIP text encoder -> UNet2DConditionModel -> AutoencoderKL) and
the real CLIP BPE tokenizer, rebuilt from the vocabulary file that open_clip ships, so prompts are
tokenised exactly as SD v1.5 tokenises them. Weights are random but fixed by a seed, so the tiny
model renders the same pixels for the same prompt and seed on every CPU: tests and ``make demo`` use it.
"""

from __future__ import annotations

import gzip

import torch

# SD v1.5's scheduler config (scheduler/scheduler_config.json of the released weights).
SD15_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}
TINY_SIZE = 64  # native resolution of the tiny pipeline (latents 16x16: the tiny VAE downsamples 4x)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode map (the BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def clip_bpe_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The CLIP tokenizer's vocabulary and merges, read from open_clip's bundled BPE file.

    Returns ``(vocab, merges)`` in the layout of Hugging Face's ``vocab.json`` / ``merges.txt``:
    49,408 tokens (256 bytes, 256 end-of-word bytes, 48,894 merges, two special tokens).
    """
    from open_clip.tokenizer import default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [t + "</w>" for t in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def build_clip_tokenizer():
    """SD v1.5's ``CLIPTokenizer`` (77 tokens, pad = end-of-text) built without a network."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_vocab()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_tiny_pipeline(scheduler_config: dict | None = None, safety_checker: bool = False, seed: int = 0):
    """A ``StableDiffusionPipeline`` with tiny random modules; every weight is fixed by ``seed``."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=TINY_SIZE // 4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
        in_channels=4,
        out_channels=4,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        block_out_channels=(32, 32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        layers_per_block=1,
        latent_channels=4,
        sample_size=TINY_SIZE,
    )
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=49408,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    checker, feature_extractor = (None, None)
    if safety_checker:
        checker, feature_extractor = build_tiny_safety_checker(seed + 3)
    scheduler = PNDMScheduler.from_config(scheduler_config or SD15_SCHEDULER_CONFIG)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=build_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=checker,
        feature_extractor=feature_extractor,
        requires_safety_checker=False,
    )
    return pipe


def build_tiny_safety_checker(seed: int):
    """SD's ``StableDiffusionSafetyChecker`` with tiny random towers and its image processor."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 1,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(config).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return checker, processor
