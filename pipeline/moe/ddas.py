"""DDAS, the Distribution Discriminative Auto-Selector of MoE-Adapter (MTIL only; ``mtil/src/models/AutoEncoder.py``
and ``mtil/src/models/evaluation.py`` in the released code).

Features: a frozen AlexNet's ``features[:-2]`` (conv1..conv5 without the last ReLU and max-pool) on the CLIP-normalised
image, flattened, through a sigmoid: 43,264 values at 224² (256×13×13). One autoencoder per domain,
Linear(n→100)+ReLU, Linear(100→n)+Sigmoid, trained with mean-squared reconstruction error: autoencoder 0 on a
zero-shot stand-in domain (TinyImageNet's train split), autoencoder k on task k. At test time, per evaluation batch,
the autoencoder of least mean error picks the task whose router the batch uses; autoencoder 0, or a least error above
the threshold, sends the batch to plain zero-shot CLIP.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

HIDDEN = 100
THRESHOLD = 0.0655  # the released full-shot script's constant (hand-set: no code chooses it)
# torchvision's ImageNet-1k weights of AlexNet (what ``alexnet(pretrained=True)`` loads), by file name in torch's cache
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


class AlexNetNotFoundError(RuntimeError):
    """AlexNet weights that are not on this machine."""


def alexnet_weights_path(weights: str) -> Path:
    """The file of ``weights``: a path, or ``imagenet`` = torchvision's file in torch's hub cache (never downloaded)."""
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise AlexNetNotFoundError(f"--alexnet-weights {weights}: no such file (torchvision's {ALEXNET_FILE}, "
                                       "or `imagenet` for the copy in torch's cache)")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
    if not path.is_file():
        raise AlexNetNotFoundError(
            f"AlexNet weights for DDAS not found: {path} does not exist.\nProvide them: on a machine with network run "
            "`python -c \"import torchvision; torchvision.models.alexnet(weights='IMAGENET1K_V1')\"` (then copy "
            f"{path.parent} or set TORCH_HOME), or pass --alexnet-weights /path/to/{ALEXNET_FILE}; "
            "--alexnet-weights none uses a random AlexNet (tests, demos).")
    return path


def feature_extractor(weights: str, seed: int = 0) -> nn.Module:
    """Frozen AlexNet ``features[:-2]`` in eval mode: ImageNet weights (``imagenet`` or a file) or, with ``none``, the
    real architecture seeded at random. Only the convolutions are built (the classifier's 58 M parameters are not)."""
    from torchvision.models import alexnet

    path = None if weights in ("none", "random") else alexnet_weights_path(weights)
    with torch.device("meta"):
        features = alexnet(weights=None).features[:-2]
    features = features.to_empty(device="cpu")
    if path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for layer in features:
                if isinstance(layer, nn.Conv2d):
                    layer.reset_parameters()  # torchvision's AlexNet keeps PyTorch's default init
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        features.load_state_dict({k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")})
    return features.eval().requires_grad_(False)


def feature_dim(extractor: nn.Module, image_size: int) -> int:
    """Length of the flattened features at ``image_size``² (43,264 = 256·13·13 at 224), from the conv and max-pool
    arithmetic, without running the network."""
    size, channels = image_size, 0
    for layer in extractor:
        if isinstance(layer, nn.Conv2d):
            channels = layer.out_channels
            size = (size + 2 * layer.padding[0] - layer.kernel_size[0]) // layer.stride[0] + 1
        elif isinstance(layer, nn.MaxPool2d):
            size = (size - layer.kernel_size) // layer.stride + 1
    return channels * size * size


@torch.no_grad()
def ddas_input(extractor: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """[B, n] = sigmoid(flatten(AlexNet features[:-2](CLIP-normalised images)))."""
    return torch.sigmoid(extractor(images).flatten(1))


class AutoEncoder(nn.Module):
    def __init__(self, dim: int, hidden: int = HIDDEN):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(hidden, dim), nn.Sigmoid())

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(s))

    def loss(self, s: torch.Tensor) -> torch.Tensor:
        """Mean squared reconstruction error over the batch and the features (nn.MSELoss())."""
        return F.mse_loss(self(s), s)


class Ddas(nn.Module):
    """The autoencoders (0: the zero-shot domain; k: task k) and which of them are trained."""

    def __init__(self, dim: int, count: int):
        super().__init__()
        self.autoencoders = nn.ModuleList(AutoEncoder(dim) for _ in range(count))
        self.register_buffer("trained", torch.zeros(count, dtype=torch.bool))

    @torch.no_grad()
    def losses(self, s: torch.Tensor) -> list[float]:
        """Every autoencoder's mean error on the batch ``s`` (trained or not)."""
        return [float(ae.loss(s)) for ae in self.autoencoders]


def choose_task(losses: list[float], candidates: list[int], threshold: float) -> int:
    """The task whose router a batch uses (-1: zero-shot CLIP), from the autoencoders' batch errors ``losses``:
    k* = the first least error among ``candidates`` (autoencoder indices); zero-shot if k* = 0 or its error exceeds
    ``threshold``; else task k* − 1."""
    best = candidates[0]
    for k in candidates[1:]:
        if losses[k] < losses[best]:  # strict: the first minimum wins
            best = k
    if losses[best] > threshold:
        best = 0
    return best - 1


def ae_lr(step: int, steps_per_epoch: int, base: float = 0.01) -> float:
    """The autoencoders' lr, set every step: 0.01 · 0.1^⌊epoch / 10⌋, epoch = ⌊step / len(loader)⌋."""
    return base * 0.1 ** ((step // max(1, steps_per_epoch)) // 10)


def train_autoencoder(ae: AutoEncoder, extractor: nn.Module, stream, steps: int, steps_per_epoch: int) -> float:
    """``steps`` Adam steps (wd 1e-4, lr by ``ae_lr``) of ``ae`` on batches ``stream.next().images`` (CLIP-normalised);
    returns the last loss."""
    optimizer = torch.optim.Adam(ae.parameters(), lr=0.003, weight_decay=1e-4)  # lr overwritten every step
    ae.train()
    loss = torch.zeros(())
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = ae_lr(step, steps_per_epoch)
        s = ddas_input(extractor, stream.next().images)
        optimizer.zero_grad(set_to_none=True)
        loss = ae.loss(s)
        loss.backward()
        optimizer.step()
    ae.eval()
    return float(loss.detach())
