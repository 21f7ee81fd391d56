"""MoE-Adapter (Yu et al., CVPR 2024) as MoE-Adapters4CL runs it; the pieces are in ``pipeline/moe``.

CLIP is frozen; every block of both towers gets a mixture of adapters (``moe_experts``, top-2 noisy gating from token 0)
and the run trains only the experts and one router slot with CE on the current task. MTIL: a router slot per task,
the per-dataset lrs of the released script, activate-freeze of each task's two most used experts per block and tower,
and DDAS autoencoders that pick, per test batch, a task's router or zero-shot CLIP. CIL: 2 experts, one router for
every step, no freezing, no DDAS, the gating noise left on at evaluation. docs/moe-adapter.md has the details.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from pipeline.datasets import catalog
from pipeline.moe import block as moe
from pipeline.moe.counts import MOE_KEYS
from pipeline.moe.ddas import AlexNetNotFoundError, Ddas, alexnet_weights_path, feature_dim, feature_extractor

from .base import Extra, Method, TaskContext

# the released full-shot script's lr of each MTIL dataset (paired by name, so Order II takes the same per dataset)
LR_BY_DATASET = {"aircraft": 5e-3, "caltech101": 1e-3, "cifar100": 5e-3, "dtd": 1e-3, "eurosat": 1e-4,
                 "flowers": 1e-3, "food": 1e-3, "mnist": 1e-4, "oxford_pet": 1e-3, "cars": 1e-3, "sun397": 1e-3}
MINI_LR = 1e-3


def zero_shot_domain(order: str, data_root: str | None):
    """The training images of DDAS autoencoder 0, the zero-shot domain: TinyImageNet's train split (the mini order:
    its base set, mini-base, which the mini tasks' classes are not all of)."""
    from pipeline.datasets.splits import dataset_split, task_dataset

    if order == "mini":
        return task_dataset("mini-base", "train", None)
    return dataset_split(catalog.get_setting("tinyimagenet-5"), "train", data_root)


class MoeAdapter(Method):
    name = "moe-adapter"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.cil = catalog.is_cil(config.order)
        self.extractor: nn.Module | None = None

    @classmethod
    def check(cls, config) -> None:
        if not 0 < config.moe_top_k <= config.moe_experts:
            raise ValueError(f"--moe-top-k {config.moe_top_k} must be between 1 and --moe-experts {config.moe_experts}")
        # (the DDAS batch and step counts are checked with every other option: TrainConfig's RANGES)
        if config.ddas and catalog.is_cil(config.order):
            raise ValueError("DDAS is MoE-Adapter's MTIL selector; its CIL variant has one router (pass --no-ddas)")
        if config.ddas and config.alexnet_weights not in ("none", "random"):
            try:
                alexnet_weights_path(config.alexnet_weights)
            except AlexNetNotFoundError as e:
                raise ValueError(str(e)) from e
        if config.ddas and config.order != "mini" and config.data_root is None:
            raise ValueError("moe-adapter's DDAS trains autoencoder 0 on TinyImageNet's train split: pass --data-root "
                             "(the folder holding tinyimagenet; `gift data check`)")

    @classmethod
    def extra(cls, run_dir: Path, cfg: dict, state: dict) -> Extra:
        """Experts, router slots and autoencoders as the last checkpoint holds them, plus DDAS's AlexNet."""
        from safetensors import safe_open

        from pipeline.moe.counts import alexnet_params

        if not state.get("checkpoint") or not (Path(run_dir) / state["checkpoint"]).exists():
            return Extra(0, 0, "nothing yet")
        moe_n = ae_n = 0
        autoencoders: set[str] = set()
        with safe_open(Path(run_dir) / state["checkpoint"], "pt") as f:
            for key in f.keys():
                parts = key.split(".")
                n = math.prod(f.get_slice(key).get_shape())
                if parts[0] == "ddas" and parts[1] == "autoencoders":
                    ae_n += n
                    autoencoders.add(parts[2])
                elif set(parts) & set(MOE_KEYS):
                    moe_n += n
        what = f"MoE {moe_n / 1e6:.1f} M"
        total = moe_n + ae_n
        if autoencoders:
            alex = alexnet_params()  # DDAS's frozen feature extractor: rebuilt from its weights, not stored
            total += alex
            what += f" + {len(autoencoders)} autoencoders {ae_n / 1e6:.1f} M + AlexNet {alex / 1e6:.1f} M"
        return Extra(total, 4 * total, what)  # fp32

    def prepare_model(self, model: nn.Module, protocol) -> None:
        config = self.config
        device = next(model.parameters()).device
        slots = 1 if self.cil else len(protocol.steps)
        moe.install(model, moe.MoeSpec(config.moe_experts, config.moe_top_k, slots))
        moe.set_noise_at_eval(model, bool(config.router_noise_at_eval))
        # only the mixture is ever trained: DistributedDataParallel (built next) registers just its parameters
        model.requires_grad_(False)
        for name, p in model.named_parameters():
            p.requires_grad_(any(k in name.split(".") for k in MOE_KEYS))
        if config.ddas:
            from pipeline.models import image_size

            self.extractor = feature_extractor(config.alexnet_weights, config.seed).to(device)
            # autoencoder 0: the zero-shot domain; k: task k (all allocated now, as the released code does)
            model.ddas = Ddas(feature_dim(self.extractor, image_size(model)), slots + 1).to(device).requires_grad_(False)

    def trained_parameters(self, model: nn.Module, index: int) -> list[torch.Tensor]:
        slot = 0 if self.cil else index
        moe.set_route(model, slot)
        moe.reset_counts(model)
        return moe.trainable(model, slot, freeze=bool(self.config.moe_freeze))

    def lr_for(self, task: str) -> float:
        if self.config.lr is not None:
            return self.config.lr
        return MINI_LR if task in catalog.MINI_TASKS else LR_BY_DATASET[task]

    def schedule(self, steps: int) -> tuple[int, int]:
        return (steps + 1, steps) if self.config.moe_parity_step else (steps, steps)

    def begin_task(self, ctx: TaskContext) -> None:
        if self.config.ddas:
            ddas = ctx.student.ddas
            if ctx.index == 0 and not ddas.trained[0]:
                self._train_autoencoder(ctx, 0, zero_shot_domain(self.config.order, self.config.data_root),
                                        self.config.ddas_zero_shot_steps)
            if not ddas.trained[ctx.index + 1]:
                self._train_autoencoder(ctx, ctx.index + 1, ctx.datasets[ctx.task], self.config.ddas_steps)

    def _train_autoencoder(self, ctx: TaskContext, k: int, dataset, steps: int) -> None:
        """Autoencoder ``k`` on ``dataset``'s images (CLIP's train transform; batch ``ddas_batch``, shuffled), the same
        on every rank (whole batches, seeded by the run's seed and k)."""
        import math

        from pipeline.dist import Dist
        from pipeline.models import train_transform
        from pipeline.moe.ddas import train_autoencoder
        from pipeline.replay.streams import ImageStream

        batch = self.config.ddas_batch
        stream = ImageStream(dataset, train_transform(ctx.image_size, uint8=True), batch,
                             self.config.seed * 1000 + 500 + k, Dist(), ctx.device, workers=ctx.workers)
        ae = ctx.student.ddas.autoencoders[k]
        ae.requires_grad_(True)
        with torch.random.fork_rng(devices=[]):
            train_autoencoder(ae, self.extractor, stream, steps, math.ceil(len(dataset) / batch))
        ae.requires_grad_(False)
        ctx.student.ddas.trained[k] = True

    def end_task(self, ctx: TaskContext) -> None:
        if self.config.moe_freeze:
            moe.freeze_most_used(ctx.student, ctx.index, self.config.moe_top_k, ctx.dist.all_reduce)

    def evaluator(self, protocol, tests, tokenizer, device, amp, dist):
        if not self.config.ddas:
            return None  # CIL: router 0 throughout; MTIL --no-ddas: the last trained router for every batch
        from pipeline.moe.evaluation import DdasEvaluation

        return DdasEvaluation([protocol.task(t) for t in protocol.steps], tests, tokenizer, device, amp, dist,
                              self.extractor, self.config.ddas_threshold, self.config.ddas_eval_batch)
