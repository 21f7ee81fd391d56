"""Image generators behind one small interface: ``render(rows) -> [PIL image | None]``.

- ``sd15``: diffusers' ``StableDiffusionPipeline`` from a Hub id (local cache only unless downloads are
  allowed) or a local diffusers directory.
- ``tiny``: the same pipeline class with tiny random modules (``pipeline.generation.tiny_sd``), for CPU tests.
- ``reference``: real images of the class from ``ROOT/<class name>/``, in place of rendering (the paper's
  "real images instead of synthetic" ablation).

``None`` in the output marks a sample the safety checker flagged: it is recorded, never written.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image

from pipeline.hub import not_found_message, offline

SD15_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SCHEDULERS = {"pndm": "PNDMScheduler", "ddim": "DDIMScheduler", "dpm-solver": "DPMSolverMultistepScheduler"}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class ModelNotFoundError(RuntimeError):
    """Generator weights or reference images that are not on this machine."""


@dataclass(frozen=True)
class PlanRow:
    """One planned sample: the ``instance``-th image of class ``class_index``; rendered from caption
    ``caption_index`` of a caption set when ``caption`` is set."""

    key: str
    class_index: int
    class_name: str
    prompt: str
    seed: int
    instance: int
    caption: str | None = None
    caption_index: int | None = None

    def as_row(self) -> dict:
        fields = ("key", "class_index", "class_name", "prompt", "seed")
        if self.caption is not None:
            fields += ("caption", "caption_index")
        return {k: getattr(self, k) for k in fields}


class Generator(Protocol):
    def render(self, rows: Sequence[PlanRow]) -> list[Image.Image | None]: ...


@dataclass(frozen=True)
class Speedups:
    """Faster rendering that changes pixels only numerically, like the batch size: recorded per shard, not
    part of the spec's hash. All are opt-in until ``make bench`` on a GPU shows which help there.

    - ``fuse_qkv``: one projection matmul for query, key and value in every attention layer (diffusers'
      ``fuse_qkv_projections``).
    - ``channels_last``: NHWC memory layout for the UNet and VAE convolutions.
    - ``compile``: ``torch.compile`` of the UNet (minutes of compilation per process before the first image;
      a partial last batch compiles once more).
    """

    fuse_qkv: bool = False
    channels_last: bool = False
    compile: bool = False

    @property
    def names(self) -> list[str]:
        return [name.replace("_", "-") for name in ("fuse_qkv", "channels_last", "compile") if getattr(self, name)]

    def apply(self, pipe) -> None:
        if self.fuse_qkv:
            pipe.fuse_qkv_projections()
        if self.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        if self.compile:
            pipe.unet = torch.compile(pipe.unet)


class DiffusersGenerator:
    """Renders a batch with a ``StableDiffusionPipeline``; each image has its own seeded CPU generator,
    so image i depends only on its prompt and seed (and, numerically, on batch size, dtype, device and
    ``speedups``)."""

    def __init__(self, pipe, *, steps: int, guidance: float, size: int, negative_prompt: str, device: torch.device,
                 speedups: Speedups = Speedups()):
        self.pipe = pipe.to(device)
        speedups.apply(self.pipe)
        self.pipe.set_progress_bar_config(disable=True)
        self.steps, self.guidance, self.size = steps, guidance, size
        self.negative_prompt = negative_prompt or None

    @torch.inference_mode()
    def render(self, rows: Sequence[PlanRow]) -> list[Image.Image | None]:
        out = self.pipe(
            prompt=[r.prompt for r in rows],
            negative_prompt=[self.negative_prompt] * len(rows) if self.negative_prompt else None,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance,
            height=self.size,
            width=self.size,
            # CPU generators: the initial noise is the same on every device.
            generator=[torch.Generator("cpu").manual_seed(r.seed) for r in rows],
            output_type="pil",
        )
        flagged = out.nsfw_content_detected or [False] * len(rows)
        return [None if bad else image for image, bad in zip(out.images, flagged, strict=True)]


def set_scheduler(pipe, name: str) -> None:
    """Swap the pipeline's scheduler, keeping the model's own noise-schedule config."""
    import diffusers

    cls = getattr(diffusers, SCHEDULERS[name])
    pipe.scheduler = cls.from_config(pipe.scheduler.config)


def sd15_not_found(where: str, local_only: bool, cause: Exception | None = None) -> ModelNotFoundError:
    """The error for SD weights missing from ``where``, with the command that provides them."""
    return ModelNotFoundError(not_found_message("Stable Diffusion weights", where, SD15_ID,
                                                "--model /path/to/a/diffusers/directory", local_only, cause))


def _sd15_where(model: str, revision: str | None) -> str:
    if Path(model).expanduser().is_dir():
        return (f"the local directory {Path(model).expanduser()} (it must hold a diffusers layout: model_index.json, "
                "unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    from huggingface_hub import constants

    return f"the Hugging Face cache {constants.HF_HUB_CACHE} for {model!r} (revision {revision or 'main'})"


def locate_sd15(model: str = SD15_ID, revision: str | None = None) -> Path:
    """The local diffusers folder ``load_sd15`` would read (a directory, or the cached snapshot of a Hub id), without
    loading it: ``ModelNotFoundError`` when its ``model_index.json`` or a component's weights are absent."""
    from huggingface_hub import snapshot_download

    folder = Path(model).expanduser()
    if not folder.is_dir():
        try:
            folder = Path(snapshot_download(model, revision=revision, local_files_only=True))
        except Exception as e:  # not cached (LocalEntryNotFoundError), a malformed id: both "not here"
            raise sd15_not_found(_sd15_where(model, revision), True, e) from e
    index = folder / "model_index.json"
    components = ("unet", "vae", "text_encoder")
    weights = (".safetensors", ".bin")
    lacking = [c for c in components if not any(p.suffix in weights for p in (folder / c).glob("*"))]
    if not index.is_file() or lacking:
        what = "model_index.json" if not index.is_file() else f"weights of {', '.join(lacking)}"
        raise sd15_not_found(f"{_sd15_where(model, revision)}: {folder} lacks {what}", True)
    return folder


def load_sd15(model: str, *, revision: str | None, dtype: str, safety_checker: bool, allow_download: bool):
    """SD v1.5 from a local diffusers directory or the Hugging Face cache; a clear error if absent."""
    from diffusers import StableDiffusionPipeline

    local_only = offline() or not allow_download
    # `dtype`, not `torch_dtype`: diffusers 0.40 renamed it (the old name still works, with a FutureWarning).
    kwargs = {"dtype": DTYPES[dtype], "revision": revision, "local_files_only": local_only}
    if not safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    is_dir = Path(model).expanduser().is_dir()
    try:
        return StableDiffusionPipeline.from_pretrained(str(Path(model).expanduser()) if is_dir else model, **kwargs)
    except (OSError, ValueError) as e:
        raise sd15_not_found(_sd15_where(model, revision), local_only, e) from e


class ReferenceGenerator:
    """"Renders" a sample by taking a real image of its class from ``root/<class name>/``.

    Class names containing ``/`` (some Cars and SUN397 names) are looked up with ``/`` replaced by ``_``.
    Instance i of a class takes the i-th file of a seeded shuffle of the class folder, so samples of a
    class differ while the folder has enough images, and then repeat.
    """

    def __init__(self, root: Path, classnames: Sequence[str], seed: int, size: int):
        self.root, self.seed, self.size = Path(root), seed, size
        if not self.root.is_dir():
            raise ModelNotFoundError(f"reference image folder {self.root} does not exist (expected ROOT/<class name>/*.jpg)")
        missing = [c for c in classnames if not self._files(c)]
        if missing:
            shown = ", ".join(repr(self.folder_name(c)) for c in missing[:5])
            raise ModelNotFoundError(
                f"reference folder {self.root} has no images for {len(missing)} of {len(classnames)} classes "
                f"(e.g. {shown}); expected {self.root}/<class name>/*.jpg with '/' in names written as '_'"
            )

    @staticmethod
    def folder_name(classname: str) -> str:
        return classname.replace("/", "_")

    def _files(self, classname: str) -> list[Path]:
        folder = self.root / self.folder_name(classname)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    def render(self, rows: Sequence[PlanRow]) -> list[Image.Image | None]:
        images: list[Image.Image | None] = []
        for row in rows:
            files = self._files(row.class_name)
            random.Random(f"{self.seed}:{row.class_index}").shuffle(files)
            with Image.open(files[row.instance % len(files)]) as im:
                image = im.convert("RGB")
            images.append(center_square(image, self.size) if self.size else image)
        return images


def center_square(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to ``size`` (bicubic)."""
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box)
