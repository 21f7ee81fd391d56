"""CLIP through open_clip: ViT-B/16 with OpenAI weights from a local cache or file, or a tiny random preset.

Training follows the reference: every parameter is trained except ``logit_scale``, which is frozen; logits
use a fixed scale of 100 (OpenAI CLIP's exp(logit_scale)).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.transformer import text_global_pool
from torch import nn
from torchvision import transforms as T

from pipeline.hub import download_command

LOGIT_SCALE = 100.0
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# A tiny CLIP for tests and the demo: small towers, the real 49,408-token vocabulary and 77-token context,
# so the real tokenizer applies unchanged.
TINY_CLIP = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


class ClipNotFoundError(RuntimeError):
    """CLIP weights that are not on this machine."""


@dataclass(frozen=True)
class ClipSpec:
    """Which CLIP to build: ``arch`` is an open_clip model name or ``tiny``; ``weights`` is ``openai``,
    a checkpoint path, or ``none`` (random, seeded)."""

    arch: str = "ViT-B-16"
    weights: str = "openai"
    seed: int = 0


def image_size(model: nn.Module) -> int:
    size = model.visual.image_size
    return size[0] if isinstance(size, tuple) else int(size)


def load_clip(spec: ClipSpec, device: torch.device | str = "cpu") -> nn.Module:
    """Build the model in fp32 on ``device``; ``logit_scale`` frozen. Offline: cache or file only."""
    torch.manual_seed(spec.seed)
    if spec.arch == "tiny":
        model = open_clip.CLIP(**TINY_CLIP)
        if spec.weights not in ("none", "random"):
            _load_file(model, spec.weights)
    else:
        model = _load_pretrained(spec)
    model.logit_scale.requires_grad_(False)
    return model.to(device)


def _load_pretrained(spec: ClipSpec) -> nn.Module:
    if spec.weights in ("none", "random"):
        return open_clip.create_model(spec.arch, pretrained=None)
    path = clip_weights_file(spec)
    # OpenAI checkpoints need QuickGELU; open_clip applies it automatically only for the "openai" tag.
    quick_gelu = spec.weights == "openai" or "openai" in str(path).lower()
    return open_clip.create_model(spec.arch, pretrained=str(path), force_quick_gelu=quick_gelu)


def clip_weights_file(spec: ClipSpec) -> Path:
    """The file ``load_clip`` reads for ``spec`` (a checkpoint path, or a pretrained tag's file in the Hugging Face
    cache); ``ClipNotFoundError`` naming the fix when it is not on this machine. Reads nothing but the cache index,
    so `gift doctor` asks it too."""
    if spec.arch == "tiny":
        path = Path(spec.weights).expanduser()
        if not path.is_file():
            raise ClipNotFoundError(f"CLIP checkpoint {path} does not exist\nPass an existing checkpoint with "
                                    "--clip-weights (the demo writes its tiny CLIP to "
                                    "demo-out/tiny-clip-pretrained.safetensors: make demo)")
        return path
    path = Path(spec.weights).expanduser()
    return path if path.is_file() else _cached_weights(spec)


def _cached_weights(spec: ClipSpec) -> Path:
    """The local file of an open_clip pretrained tag, from the Hugging Face cache only (never a download)."""
    from huggingface_hub import constants, hf_hub_download

    cfg = open_clip.get_pretrained_cfg(spec.arch, spec.weights)
    repo = (cfg or {}).get("hf_hub", "").strip("/")
    if not repo:
        raise ClipNotFoundError(f"unknown CLIP weights {spec.arch}/{spec.weights}: pass a checkpoint file instead")
    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        try:
            return Path(hf_hub_download(repo, filename, local_files_only=True))
        except Exception:  # not cached under this name; try the next
            continue
    raise ClipNotFoundError(
        f"CLIP weights {spec.arch}/{spec.weights} not found: searched the Hugging Face cache "
        f"{constants.HF_HUB_CACHE} for {repo!r}.\nProvide them: on a machine with network run "
        f"`{download_command(repo)}` (then copy the cache or set HF_HOME), or pass "
        "--clip-weights /path/to/open_clip_pytorch_model.bin."
    )


def _load_file(model: nn.Module, path: str) -> None:
    from safetensors.torch import load_file

    p = Path(path).expanduser()
    if not p.is_file():
        raise ClipNotFoundError(f"CLIP checkpoint {p} does not exist")
    state = load_file(p) if p.suffix == ".safetensors" else torch.load(p, map_location="cpu", weights_only=True)
    model.load_state_dict(state)


def tokenizer(trim: bool = True):
    """The real CLIP BPE tokenizer, shared by every preset: texts -> token ids [N, L].

    With ``trim`` (the default) the ids are cut after the batch's last end-of-text token (``trim_tokens``), on
    the host where they are made; ``trim=False`` gives open_clip's full 77 columns.
    """
    full = open_clip.get_tokenizer("ViT-B-16")
    return (lambda texts: trim_tokens(full(texts))) if trim else full


def trim_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Token ids [N, 77] cut to [N, L], L = 1 + the largest end-of-text position in the batch.

    open_clip reads a text's feature at ``argmax`` of its ids (the end-of-text id, 49407, is the largest; a row
    that holds it twice, like a random-token sentence, is read at the first), and the text transformer is causal,
    so no position after L−1 can change any row's feature: the columns after it are dropped. Call it where the
    ids are made, on the host: on a GPU tensor the length would be read back (a synchronisation).
    """
    return tokens[:, : int(tokens.argmax(dim=-1).max()) + 1] if tokens.numel() else tokens


def train_transform(size: int, uint8: bool = False) -> T.Compose:
    """Real training images: RandomResizedCrop(scale 0.9-1.0, bicubic), no flip, CLIP-normalised float; with
    ``uint8`` the crop stays uint8 CHW and ``normalize_uint8`` normalises it later, on the device, with the same
    arithmetic (bit for bit; tested): a quarter of the bytes through the loader and no float work in its workers."""
    return T.Compose([
        T.Lambda(lambda im: im.convert("RGB")),
        T.RandomResizedCrop(size, scale=(0.9, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        *([T.PILToTensor()] if uint8 else [T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)]),
    ])


def eval_resize(size: int) -> T.Compose:
    """Synthetic and test images: resize (bicubic) + centre crop, as uint8 CHW (normalised later, on device)."""
    return T.Compose([
        T.Lambda(lambda im: im.convert("RGB")),
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(size),
        T.PILToTensor(),
    ])


def normalize_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,3,H,W] -> float, CLIP-normalised, on the images' device."""
    mean, std = _clip_stats(images.device)
    return (images.float() / 255.0 - mean) / std


@functools.cache
def _clip_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's mean and std [1,3,1,1] on ``device``, made once: a tensor made from Python numbers on a GPU is a
    blocking copy from the host (a synchronisation), which every training step would otherwise pay."""
    with torch.inference_mode(False):  # ordinary tensors even if first asked for under inference mode
        return (torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1),
                torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1))


def encode_images(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised image features [B, D]."""
    return nn.functional.normalize(model.encode_image(images), dim=-1)


def encode_texts(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """L2-normalised text features [N, D] from token ids [N, L], L ≤ the context length (77).

    open_clip's ``encode_text`` with the positional embedding and the causal mask sliced to the tokens' width,
    so ids cut by ``trim_tokens`` (what ``tokenizer()`` returns) run a transformer of L positions instead of 77
    and give the same features (tested against open_clip's own ``encode_text``); 77 columns give exactly its
    computation. Towers where a cut could change a feature (no causal mask, or a feature read at the last
    position) get their ids padded back to the full context.
    """
    width, context = tokens.shape[1], model.context_length
    if width > context:
        raise ValueError(f"token ids of width {width} exceed the text context of {context}")
    if width < context and (model.attn_mask is None or model.text_pool_type not in ("argmax", "eos", "first")):
        tokens = nn.functional.pad(tokens, (0, context - width))
        width = context
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:width].to(cast)
    mask = model.attn_mask[:width, :width] if model.attn_mask is not None else None
    x = model.ln_final(model.transformer(x, attn_mask=mask))
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
    return nn.functional.normalize(x, dim=-1)


@torch.no_grad()
def encode_text_batches(model: nn.Module, tokens: torch.Tensor, device: torch.device | str,
                        batch: int = 256) -> torch.Tensor:
    """Text features [N, D] of host token ids [N, L] in batches of ``batch``, each trimmed on the host to its
    own longest text before it moves to ``device`` (no gradient: teachers, zero-shot heads)."""
    return torch.cat([encode_texts(model, trim_tokens(chunk).to(device)) for chunk in tokens.split(batch)])


class ClipFeatures(nn.Module):
    """The student's training forward: ``(images | None, tokens | None) -> (image features | None, text features
    | None)``, both L2-normalised, text through ``encode_texts`` (trimmed ids welcome). It holds the CLIP as
    ``clip`` and owns no parameter of its own; DistributedDataParallel and ``torch.compile`` wrap this module, so
    the trimmed text forward is the one they run."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, images: torch.Tensor | None = None, tokens: torch.Tensor | None = None):
        return (None if images is None else encode_images(self.clip, images),
                None if tokens is None else encode_texts(self.clip, tokens))
