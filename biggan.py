"""biggan.py — an optional, paper-scale world: a pretrained BigGAN-deep on ImageNet
(Brock et al. 2019).

The optional package pytorch-pretrained-biggan (requirements-biggan.txt) holds the network; this
file adapts it to the generator interface that world.py uses: G(z, y) -> frames in [-1, 1], with
G.latent_dim and G.num_classes. `generator.load_generator("biggan-deep-128")` comes here; nothing
in the default run or the core tests needs it.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

BIGGAN = ("biggan-deep-128", "biggan-deep-256", "biggan-deep-512")
# ImageNet class indices (0-999, the sorted-synset order that torchvision and BigGAN use)
BIGGAN_PRESETS = {
    # fast.ai Imagenette: 10 easy classes
    "imagenette": [0, 217, 482, 491, 497, 566, 569, 571, 574, 701],
    # fast.ai Imagewoof: 10 dog breeds
    "imagewoof": [155, 159, 162, 167, 182, 193, 207, 229, 258, 273],
    # CMC's ImageNet-100 (Tian et al. 2020, its imagenet100.txt synsets), as in GenRep
    "imagenet100": [
        15, 45, 54, 57, 64, 74, 90, 99, 119, 120, 122, 131, 137, 151, 155, 157,
        158, 166, 167, 169, 176, 180, 209, 211, 222, 228, 234, 236, 242, 246, 267, 268,
        272, 275, 277, 281, 299, 305, 313, 317, 331, 342, 368, 374, 407, 421, 431, 449,
        452, 455, 479, 494, 498, 503, 508, 544, 560, 570, 592, 593, 599, 606, 608, 619,
        620, 653, 659, 662, 665, 667, 674, 682, 703, 708, 717, 724, 748, 758, 765, 766,
        772, 775, 796, 798, 830, 854, 857, 858, 872, 876, 882, 904, 908, 936, 938, 953,
        959, 960, 993, 994],
}
INSTALL = "pip install -r requirements-biggan.txt"


def is_biggan(name) -> bool:
    return str(name) in BIGGAN


def check_biggan_flags(generator, classes: str, truncation: float, image_size: int) -> None:
    """--classes, --truncation and --image-size: valid for a BigGAN world,
    left at their defaults for any other."""
    if is_biggan(generator):
        parse_classes(classes)  # a bad index or preset name stops here
    elif classes or truncation != 1 or image_size != 32:
        raise ValueError(f"--classes, --truncation and --image-size are for --generator "
                         f"biggan-deep-128 / -256 / -512; {generator} draws 32x32 frames of its "
                         f"own classes")


def parse_classes(spec: str, num_classes: int = 1000) -> list[int]:
    """--classes: "" (all), a preset name (BIGGAN_PRESETS) or comma-separated ImageNet indices
    -> ImageNet indices."""
    spec = spec.strip()
    if not spec:
        return list(range(num_classes))
    if spec in BIGGAN_PRESETS:
        return list(BIGGAN_PRESETS[spec])
    try:
        idx = [int(s) for s in spec.split(",")]
    except ValueError:
        raise ValueError(f"--classes must be comma-separated class indices or one of "
                         f"{sorted(BIGGAN_PRESETS)}, got {spec!r}") from None
    bad = [i for i in idx if not 0 <= i < num_classes]
    if bad or len(set(idx)) != len(idx):
        raise ValueError(f"--classes needs distinct indices in 0..{num_classes - 1}, got {spec!r}")
    return idx


class BigGANAdapter(nn.Module):
    """pytorch-pretrained-biggan's BigGAN behind this repository's generator interface:
    G(z (B, d) ~ N(0, I), y (B,) in 0..K-1) -> frames (B, 3, S, S) in [-1, 1], with
    G.latent_dim = d (128), G.num_classes = K = len(classes) (y indexes `classes`, a list of
    ImageNet indices) and G.image_size = S.

    BigGAN was trained on z ~ truncnorm(-2, 2) and samples with z = t * truncnorm(-2, 2) at
    truncation t, using batch-norm statistics stored for that t. The world keeps z ~ N(0, I)
    (world.py: the VP-EMA's stationary law), so the adapter maps each coordinate through the normal
    CDF onto the truncated normal (monotone and smooth: nearby world latents stay nearby) and scales
    by t: every world state is a sample from BigGAN's own prior."""

    def __init__(self, biggan: nn.Module, classes: list[int] | None = None, truncation: float = 1.0,
                 image_size: int | None = None):
        super().__init__()
        if not 0 < truncation <= 1:
            raise ValueError(f"BigGAN truncation must lie in (0, 1], got {truncation}")
        self.biggan, self.truncation = biggan, float(truncation)
        self.total_classes = biggan.config.num_classes  # 1000 for ImageNet
        classes = list(range(self.total_classes)) if classes is None else list(classes)
        # (K,) y -> ImageNet index
        self.register_buffer("class_index", torch.tensor(classes, dtype=torch.long))
        self.latent_dim, self.num_classes = biggan.config.z_dim, len(classes)
        self.native_size = biggan.config.output_dim  # 128 / 256 / 512
        self.image_size = image_size or self.native_size

    def prior(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, d) ~ N(0, I) -> (B, d) ~ t * truncnorm(-2, 2),
        coordinate by coordinate (inverse-CDF transport)."""
        # () P(N(0,1) < -2) = 0.0228
        lo = torch.special.ndtr(torch.tensor(-2.0, dtype=z.dtype, device=z.device))
        u = lo + (1 - 2 * lo) * torch.special.ndtr(z)  # (B, d) uniform on [Phi(-2), Phi(2)]
        return self.truncation * torch.special.ndtri(u).clamp(-2, 2)  # (B, d)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(self.class_index[y], self.total_classes).to(z.dtype)  # (B, 1000)
        # (B, 3, R, R) in [-1, 1], R = native_size
        x = self.biggan(self.prior(z), one_hot, self.truncation)
        if self.image_size != x.shape[-1]:
            # antialiased bilinear: a convex filter, so the range stays [-1, 1]
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              antialias=True, align_corners=False)  # (B, 3, S, S)
        return x.clamp(-1, 1)


def load_biggan(name: str, device="cpu", classes: str = "", truncation: float = 1.0,
                image_size: int = 32):
    """A pretrained BigGAN-deep (downloaded once by pytorch-pretrained-biggan into its cache)
    -> BigGANAdapter in eval mode. A missing package or unreachable weights raise one clear error
    before any file is written."""
    import logging
    try:
        from pytorch_pretrained_biggan import BigGAN
    except ImportError as e:
        raise ValueError(f"--generator {name} needs the optional package "
                         f"pytorch-pretrained-biggan ({e}): {INSTALL}") from None
    idx = parse_classes(classes)
    quiet = logging.getLogger("pytorch_pretrained_biggan")
    # its own error log would repeat ours in another wording
    level, quiet.level = quiet.level, logging.CRITICAL
    try:
        biggan = BigGAN.from_pretrained(name)
    except Exception as e:  # no network (requests' errors are OSErrors), a truncated download, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FileNotFoundError(
            f"could not load the {name} weights ({first}): they are downloaded once (a few "
            f"hundred MB per model) into $PYTORCH_PRETRAINED_BIGGAN_CACHE (default "
            f"~/.pytorch_pretrained_biggan); run on a machine with internet or copy that folder "
            f"here") from None
    finally:
        quiet.level = level
    G = BigGANAdapter(biggan, idx, truncation, image_size)
    return G.to(device).eval().requires_grad_(False)
