"""generator.py — Fig. 1A: a class-conditional GAN pretrained on a static image dataset.

It holds
  * the data: an offline, deterministic 10-class dataset of rendered digits ("embedded"), plus loaders
    for any ImageFolder directory and torchvision's CIFAR-10. Every split is a pair of tensors
    (uint8 images (N, 3, 32, 32), int64 labels (N,)) kept in memory: 50k CIFAR images are 150 MB;
  * the GAN: a DCGAN-style generator G(z, y) and a projection discriminator with an auxiliary
    classifier (hinge loss + AC-GAN term). The paper does not fix the GAN; this one trains on a CPU;
  * its training loop and the GAN-test score (a classifier trained on real images labels G's samples).

    python generator.py                                   # embedded digits, ~10 min on 2 CPU cores
    python generator.py --data cifar10 --download --out checkpoints/cifar10_gan.pt --steps 20000
    python generator.py --eval checkpoints/embedded_gan.pt     # only score a checkpoint (GAN-test)

At scale the world is a pretrained BigGAN-deep instead (BigGANAdapter, load_generator("biggan-deep-128");
optional package, requirements-biggan.txt; docs/scale.md).
"""
import dataclasses, hashlib, math, sys, time
from dataclasses import dataclass
from typing import Literal
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import ROOT, load_checkpoint, make_encoder, parse_config, pick_device, require, save_atomic, seed_everything

CACHE = ROOT / "data"  # generated / decoded datasets are cached here (git-ignored)


@dataclass
class Config:
    data: str = "embedded"  # "embedded" (generated offline), "cifar10" (torchvision) or an ImageFolder path
    out: str = "checkpoints/embedded_gan.pt"  # where the generator checkpoint (config inside) is written
    steps: int = 2200  # generator updates (one discriminator update each)
    batch_size: int = 64  # images per discriminator / generator update
    latent_dim: int = 64  # dimension of z ~ N(0, I); the world's actions have this dimension too
    width: int = 32  # base channel count of G and D (checkpoint size grows as width^2)
    lr: float = 2e-4  # Adam learning rate for G and D (DCGAN, Radford et al. 2016)
    ac_weight: float = 0.5  # auxiliary-classifier loss weight (AC-GAN, Odena et al. 2017); 0 = projection only
    seed: int = 0  # seeds python, numpy and torch
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" = CUDA when present, else CPU
    download: bool = False  # only with --data cifar10: let torchvision download CIFAR-10 (needs internet once)
    time_limit: float = 0.0  # stop training after this many seconds (0 = no limit)
    gan_test_epochs: int = 3  # epochs of the real-image classifier used for the GAN-test score
    eval: str = ""  # score this existing generator checkpoint (GAN-test) instead of training one


# ----------------------------------------------------------------------------------------------------
# Data: the embedded dataset (digits 0-9 in matplotlib's TrueType fonts, with nuisance variation)
# ----------------------------------------------------------------------------------------------------
DIGIT_CLASSES = [str(d) for d in range(10)]
# The nuisance variation of the embedded dataset. Changing a value changes the cache file name (data/).
NUISANCE = dict(
    zoom=(0.85, 1.15),  # glyph scale (1 = 24 px tall)
    rotation=20.0,  # max |rotation| in degrees
    shear=0.15,  # max |shear|
    shift=0.15,  # max |shift| as a fraction of the image
    texture_contrast=0.3,  # background texture amplitude relative to the gap between the two background colours
    max_freq=6.0,  # stripes / checks frequency drawn from 2..max_freq
    min_contrast=0.45,  # min luminance gap between the digit and the mean background
)  # Measured (README): harsher values (rotation 30, texture 0.6, freq 12) kept GAN-test at 12-33 %.
FONTS = ["DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique", "DejaVuSansMono",
         "DejaVuSansMono-Bold", "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
         "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta", "cmr10", "cmss10", "cmtt10",
         "cmb10", "cmti10"]


def glyph_masks(size: int = 64) -> torch.Tensor:
    """Render each digit in each font once, centred in a size x size canvas. -> (fonts, 10, size, size) in [0, 1]."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    masks = torch.zeros(len(FONTS), 10, size, size)
    for f, name in enumerate(FONTS):
        font = ImageFont.truetype(str(font_dir / f"{name}.ttf"), int(size * 0.75))
        for d in range(10):
            img = Image.new("L", (size, size))
            ImageDraw.Draw(img).text((size / 2, size / 2), str(d), fill=255, font=font, anchor="mm")
            masks[f, d] = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    return masks


def make_embedded(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of digits with random font, size, rotation, position, colours and background texture.

    Deterministic given (n, seed). Exactly balanced labels. -> uint8 (n, 3, 32, 32), int64 (n,)."""
    g = torch.Generator().manual_seed(seed)
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731  uniform [0, 1)
    masks = glyph_masks()  # (fonts, 10, 64, 64)
    y = torch.arange(n) % 10
    y = y[torch.randperm(n, generator=g)]  # (n,) balanced
    font = torch.randint(len(FONTS), (n,), generator=g)  # (n,)
    k = NUISANCE
    # Geometry: random zoom, rotation, shear and shift (ranges in NUISANCE).
    zoom = k["zoom"][0] + (k["zoom"][1] - k["zoom"][0]) * u(n)
    rot, shear = (2 * u(n) - 1) * math.radians(k["rotation"]), (2 * u(n) - 1) * k["shear"]
    shift = (2 * u(n, 2) - 1) * k["shift"]  # (n, 2)
    cos, sin = torch.cos(rot), torch.sin(rot)
    A = torch.stack([torch.stack([cos, -sin + shear], 1), torch.stack([sin, cos], 1)], 1) / zoom[:, None, None]
    theta = torch.cat([A, -(A @ shift[:, :, None])], 2)  # (n, 2, 3): input coords = A (out - shift)
    # Background: two colours blended by a random texture (gradient, stripes, blobs or checks).
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")  # (32, 32)
    ang, freq, phase = u(n, 1, 1) * math.pi, 2 + (k["max_freq"] - 2) * u(n, 1, 1), u(n, 1, 1) * 2 * math.pi
    proj = torch.cos(ang) * xx + torch.sin(ang) * yy  # (n, 32, 32)
    blobs = F.interpolate(u(n, 1, 4, 4), size=32, mode="bicubic", align_corners=False)[:, 0].clamp(0, 1)
    checks = (((xx + 1) * freq / 2).floor() + ((yy + 1) * freq / 2).floor()) % 2  # (n, 32, 32)
    textures = torch.stack([(proj + 1) / 2, 0.5 + 0.5 * torch.sin(freq * proj + phase), blobs, checks], 1)
    kind = torch.randint(4, (n,), generator=g)
    texture = textures[torch.arange(n), kind][:, None]  # (n, 1, 32, 32)
    bg0, bg1, fg = u(n, 3, 1, 1), u(n, 3, 1, 1), u(n, 3, 1, 1)  # colours in [0, 1]
    # Keep the digit visible: its colour differs from the mean background by >= min_contrast in luminance.
    bg1 = bg0 + k["texture_contrast"] * (bg1 - bg0)  # low-contrast textures: the digit dominates
    lum = lambda c: (c * torch.tensor([0.3, 0.59, 0.11]).view(1, 3, 1, 1)).sum(1, keepdim=True)  # noqa: E731
    bg_lum = (lum(bg0) + lum(bg1)) / 2
    push = torch.where(bg_lum < 0.5, 0.3 + k["min_contrast"], -0.3 - k["min_contrast"])
    fg = torch.where((lum(fg) - bg_lum).abs() < k["min_contrast"], (fg + push).clamp(0, 1), fg)
    images = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    for s in range(0, n, 10000):  # chunks bound the memory of grid_sample
        i = slice(s, s + 10000)
        grid = F.affine_grid(theta[i], [theta[i].shape[0], 1, 32, 32], align_corners=False)
        alpha = F.grid_sample(masks[font[i], y[i]][:, None], grid, align_corners=False)  # (b, 1, 32, 32)
        bg = bg0[i] + (bg1[i] - bg0[i]) * texture[i]  # (b, 3, 32, 32)
        img = bg * (1 - alpha) + fg[i] * alpha + 0.03 * torch.randn(bg.shape, generator=g)
        images[i] = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, y


# ----------------------------------------------------------------------------------------------------
# Data: real images (ImageFolder or torchvision CIFAR-10), cached as uint8 tensors
# ----------------------------------------------------------------------------------------------------
def load_split(data: str, split: str, download: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """-> (uint8 images (N, 3, 32, 32), int64 labels (N,), class names) for split "train" or "test".

    data = "embedded": 50,000 train / 10,000 test images generated by make_embedded (cached in data/).
    data = "cifar10":  torchvision's CIFAR-10 under data/cifar10 (download=True only if asked).
    data = a folder:   <folder>/<split>/<class>/<image>, any format PIL reads, resized to 32x32 (ImageFolder);
                       a folder without train/ and test/ is an error (a class folder must never pass for a split)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    CACHE.mkdir(exist_ok=True)
    if data == "embedded":
        tag = hashlib.sha1(repr(sorted(NUISANCE.items())).encode()).hexdigest()[:8]
        cache = CACHE / f"embedded_{tag}_{split}.pt"
        if not cache.exists():
            x, y = make_embedded(50000 if split == "train" else 10000, seed=1 if split == "train" else 2)
            save_atomic({"x": x, "y": y}, cache)
        d = torch.load(cache, weights_only=True)
        return d["x"], d["y"], DIGIT_CLASSES
    if data == "cifar10":
        import torchvision
        try:
            ds = torchvision.datasets.CIFAR10(str(CACHE / "cifar10"), train=split == "train", download=download)
        except (RuntimeError, OSError) as e:  # not there, or no network for the download
            raise FileNotFoundError(f"CIFAR-10 not found under {CACHE / 'cifar10'}; pass --download "
                                    f"(needs internet once) or give an ImageFolder path ({e})") from None
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets), ds.classes
    return load_folder(Path(data), split)


def folder_listing(folder: Path) -> list[tuple[str, int, int]]:
    """Every file under folder's class sub-folders: (relative path, size, mtime_ns), sorted: the cache's key."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for c in folder.iterdir() if c.is_dir() for p in c.rglob("*") if p.is_file())


def load_folder(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """An ImageFolder split, decoded once and cached in data/ under a key made of the resolved path and the listing
    (names, sizes, mtimes) of every file: two folders never share a cache, and an edited folder is read anew."""
    folder = root / split
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder {root} has no {split}/ sub-folder (it needs train/ and test/, each "
                                f"with one folder of images per class)")
    listing = folder_listing(folder)
    key = hashlib.sha1(repr((str(folder.resolve()), listing)).encode()).hexdigest()[:16]
    cache = CACHE / f"folder_{key}.pt"
    if cache.exists():
        d = torch.load(cache, weights_only=True)
        return d["x"], d["y"], d["classes"]
    import torchvision
    from PIL import Image
    try:  # every format PIL reads, nothing skipped silently: a file PIL cannot open is an error naming it
        ds = torchvision.datasets.ImageFolder(str(folder), is_valid_file=lambda p: True, allow_empty=False)
    except (FileNotFoundError, RuntimeError) as e:
        raise FileNotFoundError(f"{folder} is not an ImageFolder (class sub-folders of images): {e}") from None
    x = torch.empty(len(ds), 3, 32, 32, dtype=torch.uint8)
    for i, (path, _) in enumerate(ds.samples):
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
                img = img if img.size == (32, 32) else img.resize((32, 32), Image.BILINEAR)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from None
        x[i] = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)  # (3, 32, 32)
    y = torch.tensor(ds.targets)
    save_atomic({"x": x, "y": y, "classes": ds.classes}, cache)
    return x, y, ds.classes


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the generator's output range."""
    return x_uint8.float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (4x smaller to store: replay buffers, sample sets)."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------------------------------
# The GAN
# ----------------------------------------------------------------------------------------------------
class ConditionalBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose gain and bias are picked by the class (de Vries et al. 2017; Miyato & Koyama 2018)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__(channels, affine=False)
        self.class_gain = nn.Embedding(num_classes, channels)
        self.class_bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.class_gain.weight)
        nn.init.zeros_(self.class_bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gain, bias = self.class_gain(y)[:, :, None, None], self.class_bias(y)[:, :, None, None]  # (B, C, 1, 1) each
        return torch.addcmul(bias, super().forward(x), gain)  # bias + BN(x) * gain, fused: one pass, one buffer


class Generator(nn.Module):
    """G(z, y): z (B, latent_dim) ~ N(0, I), y (B,) long -> images (B, 3, 32, 32) in [-1, 1].

    DCGAN (Radford et al. 2016) with class-conditional BatchNorm: z sets the content, y the BN gains."""

    def __init__(self, latent_dim: int = 64, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.latent_dim, self.num_classes, self.image_size, self.width = latent_dim, num_classes, 32, width
        self.fc = nn.Linear(latent_dim, 4 * 4 * 4 * width)
        chans = [4 * width, 2 * width, width, width]
        self.norms = nn.ModuleList(ConditionalBatchNorm(c, num_classes) for c in chans)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(chans[i], chans[i + 1], 4, 2, 1) for i in range(3))
        self.out = nn.Conv2d(width, 3, 3, 1, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # In-place ReLU (and the fused cBN above): fewer buffers, 1.3x faster decoding at batch 64-256 on the CPU
        h = self.fc(z).view(-1, 4 * self.width, 4, 4)  # (B, 4 * width, 4, 4)
        for norm, up in zip(self.norms, self.ups):
            h = up(F.relu(norm(h, y), inplace=True))  # 4 -> 8 -> 16 -> 32: (B, C, 2H, 2W)
        return torch.tanh(self.out(F.relu(self.norms[-1](h, y), inplace=True)))  # (B, 3, 32, 32)


class Discriminator(nn.Module):
    """Projection discriminator (Miyato & Koyama 2018) with spectral norm and an auxiliary classifier head."""

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        layers = []
        for i in range(4):
            k, s = (3, 1) if i == 0 else (4, 2)
            layers += [sn(nn.Conv2d(chans[i], chans[i + 1], k, s, 1)), nn.LeakyReLU(0.1)]
        self.net = nn.Sequential(*layers)  # (B, 8 * width, 4, 4)
        self.out = sn(nn.Linear(8 * width, 1))
        self.embed = sn(nn.Embedding(num_classes, 8 * width))
        self.classify = nn.Linear(8 * width, num_classes)  # AC-GAN head

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x).sum((2, 3))  # (B, 8 * width)
        return self.out(h)[:, 0] + (self.embed(y) * h).sum(1), self.classify(h)  # (B,), (B, classes)


def d_loss(D, real, fake, y, ac_weight: float) -> torch.Tensor:
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018) + AC-GAN cross-entropy on the real images."""
    d_real, c_real = D(real, y)  # (B,), (B, classes)
    d_fake, _ = D(fake, y)
    return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean() + ac_weight * F.cross_entropy(c_real, y)


def g_loss(D, fake, y, ac_weight: float) -> torch.Tensor:
    """Generator hinge loss + AC-GAN term: fakes of class y should be classified as y."""
    g_fake, c_fake = D(fake, y)
    return -g_fake.mean() + ac_weight * F.cross_entropy(c_fake, y)


def save_generator(G: Generator, path, config: dict, classes: list[str]) -> None:
    save_atomic({"kind": "generator", "config": config, "classes": classes, "latent_dim": G.latent_dim,
                  "num_classes": G.num_classes, "width": G.width,
                  "state_dict": {k: v.cpu() for k, v in G.state_dict().items()}}, path)


def load_generator(path, device="cpu", classes: str = "", truncation: float = 1.0, image_size: int = 32) -> nn.Module:
    """Load a checkpoint written by save_generator -> G in eval mode. Clear errors for bad files.
    path "biggan-deep-128" / "-256" / "-512": a pretrained BigGAN-deep behind the same interface (BigGANAdapter);
    classes, truncation and image_size apply to it only."""
    if is_biggan(path):
        return load_biggan(str(path), device, classes, truncation, image_size)
    if not Path(path).is_file():
        raise FileNotFoundError(f"generator checkpoint {path} not found (train one with `python generator.py`)")
    ckpt = load_checkpoint(path, "generator checkpoint")
    if ckpt.get("kind") != "generator":
        raise ValueError(f"{path} is not a generator checkpoint (no kind='generator' entry)")
    missing = [k for k in ("latent_dim", "num_classes", "width", "classes", "config", "state_dict") if k not in ckpt]
    if missing:
        raise ValueError(f"generator checkpoint {path} lacks {', '.join(missing)}")
    G = Generator(ckpt["latent_dim"], ckpt["num_classes"], ckpt["width"])
    try:
        G.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).replace("\n", " ")[:300]
        raise ValueError(f"generator checkpoint {path} does not match the Generator architecture: {first}") from None
    G.classes, G.config = ckpt["classes"], ckpt["config"]
    return G.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)  # NHWC: 1.5x on CPU


# ----------------------------------------------------------------------------------------------------
# A large pretrained world: BigGAN-deep on ImageNet (Brock et al. 2019), the scale the paper works at.
# The optional package pytorch-pretrained-biggan (requirements-biggan.txt) holds the network; this is the adapter.
# ----------------------------------------------------------------------------------------------------
BIGGAN = ("biggan-deep-128", "biggan-deep-256", "biggan-deep-512")
BIGGAN_PRESETS = {  # ImageNet class indices (0-999, the sorted-synset order that torchvision and BigGAN use)
    "imagenette": [0, 217, 482, 491, 497, 566, 569, 571, 574, 701],  # fast.ai Imagenette: 10 easy classes
    "imagewoof": [155, 159, 162, 167, 182, 193, 207, 229, 258, 273],  # fast.ai Imagewoof: 10 dog breeds
    "imagenet100": [  # CMC's ImageNet-100 (Tian et al. 2020, its imagenet100.txt synsets), as in GenRep
        15, 45, 54, 57, 64, 74, 90, 99, 119, 120, 122, 131, 137, 151, 155, 157, 158, 166, 167, 169, 176, 180, 209,
        211, 222, 228, 234, 236, 242, 246, 267, 268, 272, 275, 277, 281, 299, 305, 313, 317, 331, 342, 368, 374, 407,
        421, 431, 449, 452, 455, 479, 494, 498, 503, 508, 544, 560, 570, 592, 593, 599, 606, 608, 619, 620, 653, 659,
        662, 665, 667, 674, 682, 703, 708, 717, 724, 748, 758, 765, 766, 772, 775, 796, 798, 830, 854, 857, 858, 872,
        876, 882, 904, 908, 936, 938, 953, 959, 960, 993, 994],
}
INSTALL = "pip install -r requirements-biggan.txt"


def is_biggan(name) -> bool:
    return str(name) in BIGGAN


def parse_classes(spec: str, num_classes: int = 1000) -> list[int]:
    """--classes: "" (all), a preset name (BIGGAN_PRESETS) or comma-separated ImageNet indices -> ImageNet indices."""
    spec = spec.strip()
    if not spec:
        return list(range(num_classes))
    if spec in BIGGAN_PRESETS:
        return list(BIGGAN_PRESETS[spec])
    try:
        idx = [int(s) for s in spec.split(",")]
    except ValueError:
        raise ValueError(f"--classes must be comma-separated class indices or one of {sorted(BIGGAN_PRESETS)}, "
                         f"got {spec!r}") from None
    bad = [i for i in idx if not 0 <= i < num_classes]
    if bad or len(set(idx)) != len(idx):
        raise ValueError(f"--classes needs distinct indices in 0..{num_classes - 1}, got {spec!r}")
    return idx


class BigGANAdapter(nn.Module):
    """pytorch-pretrained-biggan's BigGAN behind this repository's generator interface:
    G(z (B, d) ~ N(0, I), y (B,) in 0..K-1) -> frames (B, 3, S, S) in [-1, 1], with G.latent_dim = d (128),
    G.num_classes = K = len(classes) (y indexes `classes`, a list of ImageNet indices) and G.image_size = S.

    BigGAN was trained on z ~ truncnorm(-2, 2) and samples with z = t * truncnorm(-2, 2) at truncation t, using
    batch-norm statistics stored for that t. The world keeps z ~ N(0, I) (world.py: the VP-EMA's stationary law),
    so the adapter maps each coordinate through the normal CDF onto the truncated normal (monotone and smooth:
    nearby world latents stay nearby) and scales by t: every world state is a sample from BigGAN's own prior."""

    def __init__(self, biggan: nn.Module, classes: list[int] | None = None, truncation: float = 1.0,
                 image_size: int | None = None):
        super().__init__()
        if not 0 < truncation <= 1:
            raise ValueError(f"BigGAN truncation must lie in (0, 1], got {truncation}")
        self.biggan, self.truncation = biggan, float(truncation)
        self.total_classes = biggan.config.num_classes  # 1000 for ImageNet
        classes = list(range(self.total_classes)) if classes is None else list(classes)
        self.register_buffer("class_index", torch.tensor(classes, dtype=torch.long))  # (K,) y -> ImageNet index
        self.latent_dim, self.num_classes = biggan.config.z_dim, len(classes)
        self.native_size = biggan.config.output_dim  # 128 / 256 / 512
        self.image_size = image_size or self.native_size

    def prior(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, d) ~ N(0, I) -> (B, d) ~ t * truncnorm(-2, 2), coordinate by coordinate (inverse-CDF transport)."""
        lo = torch.special.ndtr(torch.tensor(-2.0, dtype=z.dtype, device=z.device))  # () P(N(0,1) < -2) = 0.0228
        u = lo + (1 - 2 * lo) * torch.special.ndtr(z)  # (B, d) uniform on [Phi(-2), Phi(2)]
        return self.truncation * torch.special.ndtri(u).clamp(-2, 2)  # (B, d)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(self.class_index[y], self.total_classes).to(z.dtype)  # (B, 1000)
        x = self.biggan(self.prior(z), one_hot, self.truncation)  # (B, 3, R, R) in [-1, 1], R = native_size
        if self.image_size != x.shape[-1]:  # antialiased bilinear: a convex filter, so the range stays [-1, 1]
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)  # (B, 3, S, S)
        return x.clamp(-1, 1)


def load_biggan(name: str, device="cpu", classes: str = "", truncation: float = 1.0, image_size: int = 32):
    """A pretrained BigGAN-deep (downloaded once by pytorch-pretrained-biggan into its cache) -> BigGANAdapter
    in eval mode. A missing package or unreachable weights raise one clear error before any file is written."""
    import logging
    try:
        from pytorch_pretrained_biggan import BigGAN
    except ImportError as e:
        raise ValueError(f"--generator {name} needs the optional package pytorch-pretrained-biggan ({e}): "
                         f"{INSTALL}") from None
    idx = parse_classes(classes)
    quiet = logging.getLogger("pytorch_pretrained_biggan")
    level, quiet.level = quiet.level, logging.CRITICAL  # its own error log would repeat ours in another wording
    try:
        biggan = BigGAN.from_pretrained(name)
    except Exception as e:  # no network (requests' errors are OSErrors), a truncated download, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FileNotFoundError(f"could not load the {name} weights ({first}): they are downloaded once (a few hundred "
                                f"MB per model) into $PYTORCH_PRETRAINED_BIGGAN_CACHE (default "
                                f"~/.pytorch_pretrained_biggan); run on a machine with internet or copy that folder "
                                f"here") from None
    finally:
        quiet.level = level
    G = BigGANAdapter(biggan, idx, truncation, image_size)
    return G.to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------------
# The GAN-test score: a classifier trained on real images labels G's samples
# ----------------------------------------------------------------------------------------------------
def train_classifier(x, y, num_classes, epochs=3, device="cpu", seed=0) -> nn.Module:
    """Supervised small CNN on real images (uint8 x), with random crops + flips; returns it in eval mode."""
    torch.manual_seed(seed)
    net = nn.Sequential(make_encoder("cnn", 32), nn.Linear(256, num_classes)).to(device)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    steps = epochs * (len(x) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    for step in range(steps):
        i = torch.randint(len(x), (128,))
        xb = to_float(x[i].to(device))
        if step % 2:  # cheap augmentation: horizontal shift by up to 2 px
            xb = torch.roll(xb, int(torch.randint(-2, 3, ())), dims=3)
        loss = F.cross_entropy(net(xb), y[i].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@torch.inference_mode()
def accuracy(net, x, y, device="cpu", batch=1000) -> float:
    return sum((net(to_float(x[i:i + batch].to(device))).argmax(1).cpu() == y[i:i + batch]).sum().item()
               for i in range(0, len(x), batch)) / len(x)


@torch.inference_mode()
def gan_test(G, data: str, n: int = 10000, epochs: int = 3, device="cpu", seed=0) -> dict:
    """GAN-test (Shmelkov et al. 2018): a classifier trained on real images, scored on G(z, y) against y."""
    xtr, ytr, classes = load_split(data, "train")
    xte, yte, _ = load_split(data, "test")
    if len(classes) != G.num_classes:  # GAN-test compares G's class y with the classifier's: the lists must match
        raise ValueError(f"the generator has {G.num_classes} classes but {data} has {len(classes)}; score it on the "
                         f"data it was trained on")
    with torch.inference_mode(False):
        clf = train_classifier(xtr, ytr, G.num_classes, epochs, device, seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    y = torch.arange(n, device=device) % G.num_classes
    fakes = torch.cat([G(torch.randn(500, G.latent_dim, generator=gen, device=device), y[i:i + 500])
                       for i in range(0, n, 500)])  # (n, 3, 32, 32) in [-1, 1]
    fakes_u8 = to_uint8(fakes).cpu()

    def spread(x, labels):  # mean per-pixel std within a class: ~0 when G ignores z (mode collapse)
        return torch.stack([to_float(x[labels == c]).std(0).mean() for c in range(G.num_classes)]).mean().item()
    return {"real_test_acc": accuracy(clf, xte, yte, device), "gan_test_acc": accuracy(clf, fakes_u8, y.cpu(), device),
            "spread_fake": spread(fakes_u8, y.cpu()), "spread_real": spread(xte, yte)}


@torch.inference_mode()
def save_grid(G, path, per_class: int = 10, seed: int = 0) -> None:
    """Sample grid PNG: one row per class."""
    import torchvision
    gen = torch.Generator(device=next(G.parameters()).device).manual_seed(seed)
    dev = gen.device
    y = torch.arange(G.num_classes, device=dev).repeat_interleave(per_class)  # (classes * per_class,)
    img = G(torch.randn(len(y), G.latent_dim, generator=gen, device=dev), y)  # (B, 3, 32, 32)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(img.cpu() * 0.5 + 0.5, str(path), nrow=per_class, padding=1)


def train(cfg: Config) -> Generator:
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    print(f"seed {cfg.seed} | device {device} | data {cfg.data}")
    x, y, classes = load_split(cfg.data, "train", cfg.download)
    G = Generator(cfg.latent_dim, len(classes), cfg.width).to(device, memory_format=torch.channels_last)  # NHWC
    D = Discriminator(len(classes), cfg.width).to(device, memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(G.parameters(), cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), cfg.lr, betas=(0.5, 0.999))
    x_dev, y_dev = x.to(device), y.to(device)  # whole dataset on the device: no data loader needed
    from tqdm import tqdm
    bar, start = tqdm(range(cfg.steps), desc="GAN", mininterval=5), time.time()
    for step in bar:
        i = torch.randint(len(x_dev), (cfg.batch_size,), device=device)
        real, y_b = to_float(x_dev[i]), y_dev[i]
        fake = G(torch.randn(len(i), G.latent_dim, device=device), y_b)  # (B, 3, 32, 32), fakes of the batch's classes
        loss_d = d_loss(D, real, fake.detach(), y_b, cfg.ac_weight)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = g_loss(D, fake, y_b, cfg.ac_weight)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward(inputs=list(G.parameters()))
        opt_g.step()
        if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
            raise FloatingPointError(f"GAN loss became non-finite at step {step} (D {loss_d:.3g}, G {loss_g:.3g})")
        if step % 50 == 0:
            bar.set_postfix(loss_d=f"{loss_d.item():.3f}", loss_g=f"{loss_g.item():.3f}")
        if cfg.time_limit and time.time() - start > cfg.time_limit:
            print(f"time limit reached after {step + 1} steps")
            cfg = dataclasses.replace(cfg, steps=step + 1)  # the checkpoint records the steps really done
            break
    G.eval().requires_grad_(False)
    config = dataclasses.asdict(cfg) | ({"nuisance": dict(NUISANCE)} if cfg.data == "embedded" else {})
    save_generator(G, cfg.out, config, classes)
    save_grid(G, Path(cfg.out).with_suffix(".png"))
    print(f"wrote {cfg.out} and {Path(cfg.out).with_suffix('.png')} ({time.time() - start:.0f} s)")
    return G


def main(argv=None) -> None:
    cfg = parse_config(Config, argv)
    try:
        require({"steps >= 1": cfg.steps >= 1, "batch_size >= 2": cfg.batch_size >= 2, "latent_dim >= 1":
                 cfg.latent_dim >= 1, "width >= 1": cfg.width >= 1, "lr > 0": 0 < cfg.lr < math.inf,
                 "ac_weight >= 0": cfg.ac_weight >= 0, "time_limit >= 0": cfg.time_limit >= 0,
                 "gan_test_epochs >= 1": cfg.gan_test_epochs >= 1}, "generator.py")
        device = pick_device(cfg.device)
        G = load_generator(cfg.eval, device) if cfg.eval else train(cfg)
        scores = gan_test(G, cfg.data, epochs=cfg.gan_test_epochs, device=device, seed=cfg.seed)
    except (FileNotFoundError, ValueError, FloatingPointError) as e:
        sys.exit("error: " + " ".join(str(e).splitlines()))
    print(f"GAN-test accuracy {scores['gan_test_acc']:.3f} | same classifier on real test images "
          f"{scores['real_test_acc']:.3f} | within-class spread {scores['spread_fake']:.3f} (real "
          f"{scores['spread_real']:.3f})")


if __name__ == "__main__":
    main()
