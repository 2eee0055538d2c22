"""encoder.py — Fig. 1C's left half: the Siamese encoder Palm-up learns, and its contrastive loss.

    make_encoder(name, width)  the trunk: images (B, 3, 32, 32) in [-1, 1] -> features (B, D),
                               what the probes and the downstream agent use, frozen
    Model                      trunk + projection head (+ the supervised baseline's classifier)
    info_nce(a, b, T)          temporal InfoNCE over a batch of positive pairs
    augment(x)                 SimCLR's augmentations (simclr, the --augment ablation)
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def make_encoder(name: str = "cnn", width: int = 32) -> nn.Module:
    """Encoder: images (B, 3, 32, 32) in [-1, 1] -> features (B, encoder.feature_dim). pretrain.py
    trains it, evaluate.py and transfer.py score it frozen, generator.py's GAN-test uses it as a
    classifier body. "cnn": 4 conv layers with BatchNorm, the CPU default (docs/performance.md);
    "resnet18": torchvision's ResNet-18 with the CIFAR stem (3x3 conv, no max-pool), for GPUs."""
    if name == "cnn":
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        layers = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, 1 if i == 0 else 2, 1, bias=False),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU()]
        net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, 8 * width)
        net.feature_dim = 8 * width
    elif name == "resnet18":
        import torchvision
        net = torchvision.models.resnet18(weights=None)  # never downloads weights
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)  # the CIFAR stem
        net.maxpool, net.fc = nn.Identity(), nn.Identity()
        net.feature_dim = 512  # (B, 512)
    else:
        raise ValueError(f"unknown encoder {name!r}; choose 'cnn' or 'resnet18'")
    return net.to(memory_format=torch.channels_last)  # NHWC convs: faster on the CPU


class Model(nn.Module):
    """Siamese encoder (shared weights for both views) + projection head. Probes use the encoder."""

    def __init__(self, encoder: str, width: int, proj_dim: int, num_classes: int,
                 supervised: bool = False):
        super().__init__()
        self.encoder = make_encoder(encoder, width)
        d = self.encoder.feature_dim
        self.head = nn.Sequential(nn.Linear(d, 512), nn.ReLU(), nn.Linear(512, proj_dim))  # (B, P)
        # The supervised baseline's classifier exists only in that run: built for every method,
        # its initialisation would draw from the global random stream, and a flag that only sets
        # how many classes the data has (--no-probe loads no labels) would change every draw.
        self.classifier = nn.Linear(d, num_classes) if supervised else None
        self.supervised = supervised

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, S, S) -> features (B, D) and the projection (B, P), or class logits (B, C)."""
        f = self.encoder(x)  # (B, D)
        return f, (self.classifier(f) if self.supervised else self.head(f))


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temporal InfoNCE (CPC, Oord et al. 2018; symmetric as in CLIP): row i of a and of b are a
    positive pair, the other rows of the batch are negatives. a, b: (B, P) projections."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.T / temperature  # (B, B): positives on the diagonal
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def augment(x: torch.Tensor) -> torch.Tensor:
    """SimCLR's CIFAR augmentations, vectorised per sample: random resized crop (0.2-1) + flip,
    colour jitter (0.4 brightness / contrast / saturation, p = 0.8; no hue), grayscale (p = 0.2).
    x (B, 3, S, S) in [-1, 1]."""
    B, dev = len(x), x.device
    u = lambda: torch.rand(B, device=dev)  # noqa: E731
    area, ratio = 0.2 + 0.8 * u(), torch.exp((u() * 2 - 1) * math.log(4 / 3))
    w, h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)  # crop / image
    flip = torch.where(u() < 0.5, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 1, 1] = w * flip, h
    theta[:, 0, 2], theta[:, 1, 2] = (1 - w) * (2 * u() - 1), (1 - h) * (2 * u() - 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, S, S, 2)
    x = F.grid_sample(x, grid, align_corners=False)  # (B, 3, S, S)
    x = x * 0.5 + 0.5  # (B, 3, 32, 32) in [0, 1]
    luma = torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)
    gray = lambda v: (v * luma).sum(1, keepdim=True)  # noqa: E731  (B, 1, S, S)
    jitter = (u() < 0.8).view(B, 1, 1, 1)
    bright, contrast, sat = [(1 + 0.4 * (2 * u() - 1)).view(B, 1, 1, 1) for _ in range(3)]
    j = x * bright
    j = (j - gray(j).mean((2, 3), keepdim=True)) * contrast + gray(j).mean((2, 3), keepdim=True)
    j = gray(j) + (j - gray(j)) * sat
    x = torch.where(jitter, j.clamp(0, 1), x)
    x = torch.where((u() < 0.2).view(B, 1, 1, 1), gray(x).expand_as(x), x)
    return x * 2 - 1
