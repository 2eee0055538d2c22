"""gan.py — Fig. 1A's generator G, the world's decoder, and its checkpoint (generator.py trains it).

The paper does not fix the GAN (it used a conditional StyleGAN); this G is small enough to train on
a CPU: a DCGAN-style generator (Radford et al. 2016) with class-conditional BatchNorm. The world
(world.py) walks its latent z and decodes every frame with it. load_generator also serves a
pretrained BigGAN-deep behind the same interface (biggan.py, imported only when asked for).
"""
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import load_checkpoint, load_weights, save_atomic, shipped


class ConditionalBatchNorm(nn.BatchNorm2d):
    """BatchNorm with a gain and bias per class (de Vries et al. 2017; Miyato & Koyama 2018)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__(channels, affine=False)
        self.class_gain = nn.Embedding(num_classes, channels)
        self.class_bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.class_gain.weight)
        nn.init.zeros_(self.class_bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gain, bias = (self.class_gain(y)[:, :, None, None],
                      self.class_bias(y)[:, :, None, None])  # (B, C, 1, 1) each
        # bias + BN(x) * gain, fused: one pass, one buffer
        return torch.addcmul(bias, super().forward(x), gain)


class Generator(nn.Module):
    """G(z, y): z (B, latent_dim) ~ N(0, I), y (B,) long -> images (B, 3, 32, 32) in [-1, 1].

    DCGAN (Radford et al. 2016) with class-conditional BatchNorm: z sets content, y the BN gains."""

    def __init__(self, latent_dim: int = 64, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.image_size, self.width = 32, width
        self.classes = [str(c) for c in range(num_classes)]  # names: set by train / load_generator
        self.fc = nn.Linear(latent_dim, 4 * 4 * 4 * width)
        chans = [4 * width, 2 * width, width, width]
        self.norms = nn.ModuleList(ConditionalBatchNorm(c, num_classes) for c in chans)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(chans[i], chans[i + 1], 4, 2, 1)
                                 for i in range(3))
        self.out = nn.Conv2d(width, 3, 3, 1, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # In-place ReLU (and the fused cBN): fewer buffers, faster on the CPU (docs/performance.md)
        h = self.fc(z).view(-1, 4 * self.width, 4, 4)  # (B, 4 * width, 4, 4)
        for norm, up in zip(self.norms, self.ups):
            h = up(F.relu(norm(h, y), inplace=True))  # 4 -> 8 -> 16 -> 32: (B, C, 2H, 2W)
        return torch.tanh(self.out(F.relu(self.norms[-1](h, y), inplace=True)))  # (B, 3, 32, 32)


def save_generator(G: Generator, path, config: dict, classes: list[str]) -> None:
    save_atomic({"kind": "generator", "config": config, "classes": classes,
                 "latent_dim": G.latent_dim, "num_classes": G.num_classes, "width": G.width,
                 "state_dict": {k: v.cpu() for k, v in G.state_dict().items()}}, path)


def load_generator(path, device="cpu", classes: str = "", truncation: float = 1.0,
                   image_size: int = 32) -> nn.Module:
    """Load a checkpoint written by save_generator -> G in eval mode. Clear errors for bad files.
    path "biggan-deep-128" / "-256" / "-512": a pretrained BigGAN-deep behind the same interface
    (BigGANAdapter); classes, truncation and image_size apply to it only."""
    if str(path).startswith("biggan"):  # the optional BigGAN path: imported only when asked for
        from biggan import is_biggan, load_biggan
        if is_biggan(path):
            return load_biggan(str(path), device, classes, truncation, image_size)
    path = shipped(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"generator checkpoint {path} not found "
                                f"(train one with `python generator.py`)")
    sizes = {"latent_dim": 4096, "num_classes": 100_000, "width": 1024}  # the most a file may claim
    ckpt = load_checkpoint(path, "generator", (*sizes, "classes", "config", "state_dict"))
    bad = [k for k, most in sizes.items() if type(ckpt[k]) is not int or not 1 <= ckpt[k] <= most]
    if bad or not isinstance(ckpt["classes"], list) or len(ckpt["classes"]) != ckpt["num_classes"]:
        what = ", ".join(f"{k} {ckpt[k]!r}" for k in bad) or f"{len(ckpt['classes'])} class names"
        raise ValueError(f"generator checkpoint {path} is malformed: {what} (sizes in "
                         f"1..{'/'.join(map(str, sizes.values()))}, one class name per class)")
    G = Generator(ckpt["latent_dim"], ckpt["num_classes"], ckpt["width"])
    load_weights(G, ckpt["state_dict"], f"generator checkpoint {path}")
    G.classes, G.config = ckpt["classes"], ckpt["config"]
    # NHWC: faster convs on CPUs
    return G.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
