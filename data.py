"""data.py — the static datasets that Fig. 1A's generator learns from and the probes score on.

Every split is a pair of tensors kept in memory: uint8 images (N, 3, 32, 32) and int64 labels
(N,), plus the list of class names (50k CIFAR-10 images are 150 MB).
    "embedded"   an offline, deterministic 10-class dataset of rendered digits
                 (generated once, cached in data/)
    "cifar10"    torchvision's CIFAR-10 under data/cifar10 (downloaded only with --download)
    a folder     an ImageFolder: <folder>/train/<class>/<image> and <folder>/test/<class>/<image>
Class lists are compared by `check_classes` wherever two of them must agree (train and test
splits, a generator and the data whose labels score it).
"""
import hashlib, math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common import ROOT, release_freed_memory, save_atomic

CACHE = ROOT / "data"  # generated / decoded datasets are cached here (git-ignored)


def check_classes(a: list, b: list, what_a: str, what_b: str) -> None:
    """The one class-list check: label i must mean the same class in both lists."""
    if list(a) != list(b):
        raise ValueError(f"class lists differ: {what_a} has {list(a)}, {what_b} has {list(b)}; "
                         f"label i must mean the same class in both")


def load_splits(data: str, download: bool = False):
    """-> (train, test), each (x, y, classes) as load_split returns it, class lists checked."""
    train, test = load_split(data, "train", download), load_split(data, "test", download)
    check_classes(train[2], test[2], f"{data} train/", f"{data} test/")
    return train, test


# ---- the embedded dataset (digits 0-9 in matplotlib's TrueType fonts, with nuisance variation) ---
DIGIT_CLASSES = [str(d) for d in range(10)]
# The nuisance variation of the embedded dataset.
# Changing a value changes the cache file name (data/).
NUISANCE = dict(
    zoom=(0.85, 1.15),  # glyph scale (1 = 24 px tall)
    rotation=20.0,  # max |rotation| in degrees
    shear=0.15,  # max |shear|
    shift=0.15,  # max |shift| as a fraction of the image
    texture_contrast=0.3,  # texture amplitude relative to the gap between the background colours
    max_freq=6.0,  # stripes / checks frequency drawn from 2..max_freq
    min_contrast=0.45,  # min luminance gap between the digit and the mean background
)  # Harsher values make the digits too hard for the small GAN (docs/generators.md).
FONTS = ["DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
         "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSerif", "DejaVuSerif-Bold",
         "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic", "STIXGeneral", "STIXGeneralBol",
         "STIXGeneralItalic", "STIXGeneralBolIta", "cmr10", "cmss10", "cmtt10", "cmb10", "cmti10"]


def glyph_masks(size: int = 64) -> torch.Tensor:
    """Each digit in each font, centred in a size x size canvas -> (fonts, 10, size, size)."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont
    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    masks = torch.zeros(len(FONTS), 10, size, size)
    for f, name in enumerate(FONTS):
        font = ImageFont.truetype(str(font_dir / f"{name}.ttf"), int(size * 0.75))
        for d in range(10):
            img = Image.new("L", (size, size))
            ImageDraw.Draw(img).text((size / 2, size / 2), str(d), fill=255, font=font,
                                     anchor="mm")
            masks[f, d] = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    return masks


def make_embedded(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of digits with random font, size, rotation, position, colours and
    background texture.

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
    A = torch.stack([torch.stack([cos, -sin + shear], 1),
                     torch.stack([sin, cos], 1)], 1) / zoom[:, None, None]  # (n, 2, 2)
    theta = torch.cat([A, -(A @ shift[:, :, None])], 2)  # (n, 2, 3): input coords = A (out - shift)
    # Background: two colours blended by a random texture (gradient, stripes, blobs or checks).
    ang = u(n, 1, 1) * math.pi
    freq = 2 + (k["max_freq"] - 2) * u(n, 1, 1)
    phase = u(n, 1, 1) * 2 * math.pi
    blob_seeds = u(n, 1, 4, 4)  # (n, 1, 4, 4): coarse noise, upsampled per chunk below
    kind = torch.randint(4, (n,), generator=g)
    bg0, bg1, fg = u(n, 3, 1, 1), u(n, 3, 1, 1), u(n, 3, 1, 1)  # colours in [0, 1]
    # Keep the digit visible: its luminance differs from the mean background's by >= min_contrast.
    bg1 = bg0 + k["texture_contrast"] * (bg1 - bg0)  # low-contrast textures: the digit dominates
    lum_w = torch.tensor([0.3, 0.59, 0.11]).view(1, 3, 1, 1)  # luminance weights of R, G, B
    lum = lambda c: (c * lum_w).sum(1, keepdim=True)  # noqa: E731
    bg_lum = (lum(bg0) + lum(bg1)) / 2
    push = torch.where(bg_lum < 0.5, 0.3 + k["min_contrast"], -0.3 - k["min_contrast"])
    fg = torch.where((lum(fg) - bg_lum).abs() < k["min_contrast"], (fg + push).clamp(0, 1), fg)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32),
                            indexing="ij")  # (32, 32)
    images = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    for s in range(0, n, 2000):  # in chunks: float buffers for 2,000 images at a time, not all n
        i = slice(s, s + 2000)
        proj = torch.cos(ang[i]) * xx + torch.sin(ang[i]) * yy  # (b, 32, 32)
        blobs = F.interpolate(blob_seeds[i], size=32, mode="bicubic",
                              align_corners=False)[:, 0].clamp(0, 1)  # (b, 32, 32)
        checks = (((xx + 1) * freq[i] / 2).floor()
                  + ((yy + 1) * freq[i] / 2).floor()) % 2  # (b, 32, 32)
        stripes = 0.5 + 0.5 * torch.sin(freq[i] * proj + phase[i])  # (b, 32, 32)
        textures = torch.stack([(proj + 1) / 2, stripes, blobs, checks], 1)  # (b, 4, 32, 32)
        texture = textures[torch.arange(len(proj)), kind[i]][:, None]  # (b, 1, 32, 32)
        grid = F.affine_grid(theta[i], [theta[i].shape[0], 1, 32, 32], align_corners=False)
        alpha = F.grid_sample(masks[font[i], y[i]][:, None], grid,
                              align_corners=False)  # (b, 1, 32, 32)
        bg = bg0[i] + (bg1[i] - bg0[i]) * texture  # (b, 3, 32, 32)
        img = bg * (1 - alpha) + fg[i] * alpha + 0.03 * torch.randn(bg.shape, generator=g)
        images[i] = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, y


# ---- real images (ImageFolder or torchvision CIFAR-10), cached as uint8 tensors -----------------
def load_split(data: str, split: str,
               download: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """-> (uint8 images (N, 3, 32, 32), int64 labels (N,), class names) for split "train" or "test".

    data = "embedded": 50,000 train / 10,000 test images made by make_embedded (cached in data/).
    data = "cifar10":  torchvision's CIFAR-10 under data/cifar10 (download=True only if asked).
    data = a folder:   <folder>/<split>/<class>/<image>, any format PIL reads, resized to 32x32
                       (ImageFolder); a folder without train/ and test/ is an error (a class folder
                       must never pass for a split)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    CACHE.mkdir(exist_ok=True)
    if data == "embedded":
        tag = hashlib.sha1(repr(sorted(NUISANCE.items())).encode()).hexdigest()[:8]
        cache = CACHE / f"embedded_{tag}_{split}.pt"
        if not cache.exists():
            train = split == "train"
            x, y = make_embedded(50000 if train else 10000, seed=1 if train else 2)
            save_atomic({"x": x, "y": y}, cache)
            del x, y
            release_freed_memory()  # the render's buffers: a first run peaks no higher than others
        d = torch.load(cache, weights_only=True)
        return d["x"], d["y"], DIGIT_CLASSES
    if data == "cifar10":
        import torchvision
        try:
            ds = torchvision.datasets.CIFAR10(str(CACHE / "cifar10"), train=split == "train",
                                              download=download)
        except (RuntimeError, OSError) as e:  # not there, or no network for the download
            raise FileNotFoundError(
                f"CIFAR-10 not found under {CACHE / 'cifar10'}; pass --download (needs internet "
                f"once) or give an ImageFolder path ({e})") from None
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
        return x, torch.tensor(ds.targets), ds.classes
    return load_folder(Path(data), split)


def folder_listing(folder: Path) -> list[tuple[str, int, int]]:
    """Every file in the class sub-folders: (path, size, mtime_ns), sorted: the cache key."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for c in folder.iterdir() if c.is_dir() for p in c.rglob("*") if p.is_file())


def load_folder(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """An ImageFolder split, decoded once and cached in data/ under a key made of the resolved path
    and the listing (names, sizes, mtimes) of every file: two folders never share a cache, and an
    edited folder is read anew."""
    folder = root / split
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    if not folder.is_dir():
        raise FileNotFoundError(f"data folder {root} has no {split}/ sub-folder (it needs train/ "
                                f"and test/, each with one folder of images per class)")
    listing = folder_listing(folder)
    key = hashlib.sha1(repr((str(folder.resolve()), listing)).encode()).hexdigest()[:16]
    cache = CACHE / f"folder_{key}.pt"
    if cache.exists():
        d = torch.load(cache, weights_only=True)
        return d["x"], d["y"], d["classes"]
    import torchvision
    from PIL import Image
    # Every format PIL reads, none skipped silently: a file PIL cannot open is an error naming it.
    try:
        ds = torchvision.datasets.ImageFolder(str(folder), is_valid_file=lambda p: True,
                                              allow_empty=False)
    except (FileNotFoundError, RuntimeError) as e:
        raise FileNotFoundError(f"{folder} is not an ImageFolder (class sub-folders of images): "
                                f"{e}") from None
    x = torch.empty(len(ds), 3, 32, 32, dtype=torch.uint8)
    for i, (path, _) in enumerate(ds.samples):
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
                img = img if img.size == (32, 32) else img.resize((32, 32), Image.BILINEAR)
        # a DecompressionBombError: the image is larger than PIL's pixel limit
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            reason = " ".join(str(e).split())[:200]
            raise ValueError(f"cannot read image {path}: {reason}") from None
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
