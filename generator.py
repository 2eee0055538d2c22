"""generator.py — Fig. 1A: a class-conditional GAN pretrained on a static image dataset.

The paper does not fix the GAN (it used a conditional StyleGAN); this one is small enough to train
on a CPU:
  * G(z, y): a DCGAN-style generator (Radford et al. 2016) with class-conditional BatchNorm
    (gan.py); the world (world.py) walks its latent z and decodes every frame with it;
  * D(x, y): a projection discriminator (Miyato & Koyama 2018) with an auxiliary classifier
    (AC-GAN, Odena et al. 2017), trained with the hinge loss;
  * GAN-test (Shmelkov et al. 2018): a classifier trained on real images labels G's samples.

    python generator.py       # embedded digits -> runs/gan_embedded_s0/generator.pt (then -2, ...)
    python generator.py --data cifar10 --download --steps 20000 --name gan_cifar10
    python generator.py --eval checkpoints/embedded_gan.pt  # GAN-test score only; writes nothing
Every training command trains anew in a run folder of its own and writes generator.pt and a sample
grid there: runs/gan_<data>_s<seed>, or the next free -2, -3, ...; --name picks the folder and
refuses one that exists. --out writes elsewhere; it replaces an existing file only with
--overwrite, so the shipped generators in checkpoints/ stay as they are unless both are given.
Data: data.py. At scale the world is a pretrained BigGAN-deep instead (biggan.py,
load_generator("biggan-deep-128"); docs/scale.md).
"""
import contextlib, dataclasses, itertools, math, re, sys, time
from dataclasses import dataclass
from typing import ClassVar, Literal
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import (CHECKPOINTS, ConfigError, RunLock, atomic_path, check_out, cli, parse_config,
                    pick_device, run_dir, seed_everything)
from data import NUISANCE, check_classes, load_splits, to_float, to_uint8
from encoder import make_encoder
from gan import Generator, load_generator, save_generator  # noqa: F401  (G: gan.py)


@dataclass
class Config:
    data: str = "embedded"  # "embedded" (generated offline), "cifar10" (torchvision) or an
    #                         ImageFolder path
    name: str = ""  # new run folder runs/<name> for generator.pt and its sample grid (refused if
    #                 it exists); default the first free runs/gan_<data>_s<seed>, -2, -3, ...
    out: str = ""  # write the checkpoint here (and its grid beside it) instead of a run folder
    overwrite: bool = False  # let --out replace an existing checkpoint (a shipped one in
    #                          checkpoints/ too)
    steps: int = 2200  # generator updates (one discriminator update each)
    batch_size: int = 64  # images per discriminator / generator update (batch_size x width
    #                       <= 32768)
    latent_dim: int = 64  # dimension of z ~ N(0, I), at most 4096; the world's actions have this
    #                       dimension too
    width: int = 32  # base channel count of G and D, 1..256 (checkpoint size grows as width^2)
    lr: float = 2e-4  # Adam learning rate for G and D (DCGAN, Radford et al. 2016)
    ac_weight: float = 0.5  # auxiliary-classifier loss weight (AC-GAN, Odena et al. 2017);
    #                         0 = projection only
    seed: int = 0  # seeds python, numpy and torch
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" = CUDA when present, else CPU
    download: bool = False  # only with --data cifar10: let torchvision download CIFAR-10
    #                         (needs internet once)
    time_limit: float = 0.0  # stop training after this many seconds (0 = no limit)
    gan_test_epochs: int = 3  # epochs of the real-image classifier used for the GAN-test score
    eval: str = ""  # score this existing generator checkpoint (GAN-test) instead of training one

    # Size bounds, checked before anything is loaded or allocated. G and D with their gradients
    # and Adam states take 16 bytes per parameter: 1.8 GiB at width 256 and latent_dim 4096 (the
    # parameters grow as width^2). A training step keeps ~80 KB of activations per image and unit
    # of width (measured on the CPU: 0.66 GB at batch 256, width 32): 2.6 GB at batch_size x width
    # = 32768. No sane run comes near these (the shipped ones: width <= 64, batch <= 128); larger
    # values would end in an out-of-memory error after the data had loaded, or swap the machine.
    MAX_WIDTH: ClassVar[int] = 256
    MAX_LATENT: ClassVar[int] = 4096  # the most gan.load_generator accepts from a file
    MAX_IMAGES_X_WIDTH: ClassVar[int] = 32768

    def rules(self) -> dict:
        """generator.py's flags, checked once by parse_config (NaN fails every comparison)."""
        if self.name:
            run_dir(self.name)  # one folder name of letters, digits, . _ -
        return {
            "steps >= 1": self.steps >= 1,
            f"1 <= width <= {self.MAX_WIDTH}": 1 <= self.width <= self.MAX_WIDTH,
            f"1 <= latent_dim <= {self.MAX_LATENT}": 1 <= self.latent_dim <= self.MAX_LATENT,
            f"2 <= batch_size <= {self.MAX_IMAGES_X_WIDTH}":
                2 <= self.batch_size <= self.MAX_IMAGES_X_WIDTH,
            f"batch_size x width <= {self.MAX_IMAGES_X_WIDTH} (activation memory)":
                self.batch_size * self.width <= self.MAX_IMAGES_X_WIDTH,
            "0 < lr <= 1": 0 < self.lr <= 1,
            "0 <= ac_weight < inf": 0 <= self.ac_weight < math.inf,
            "0 <= time_limit < inf": 0 <= self.time_limit < math.inf,
            "gan_test_epochs >= 1": self.gan_test_epochs >= 1,
            "0 <= seed < 2**32 (numpy's seeds)": 0 <= self.seed < 2 ** 32,
            "--overwrite only with --out (a run folder is always new)":
                not self.overwrite or bool(self.out),
            "--name or --out, not both": not (self.name and self.out),
            "--eval without --name or --out (scoring writes nothing)":
                not (self.eval and (self.name or self.out)),
        }


class Discriminator(nn.Module):
    """Projection discriminator (Miyato & Koyama 2018) with spectral norm and an auxiliary
    classifier head."""

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
        # (B,), (B, classes)
        return self.out(h)[:, 0] + (self.embed(y) * h).sum(1), self.classify(h)


def d_loss(D, real, fake, y, ac_weight: float) -> torch.Tensor:
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018) + AC-GAN cross-entropy on the real images."""
    d_real, c_real = D(real, y)  # (B,), (B, classes)
    d_fake, _ = D(fake, y)
    return (F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
            + ac_weight * F.cross_entropy(c_real, y))


def g_loss(D, fake, y, ac_weight: float) -> torch.Tensor:
    """Generator hinge loss + AC-GAN term: fakes of class y should be classified as y."""
    g_fake, c_fake = D(fake, y)
    return -g_fake.mean() + ac_weight * F.cross_entropy(c_fake, y)


# ---- the GAN-test score: a classifier trained on real images labels G's samples -----------------
def train_classifier(x, y, num_classes, epochs=3, device="cpu", seed=0) -> nn.Module:
    """Supervised small CNN on real images (uint8 x), every other batch shifted sideways by up to
    2 px; returns it in eval mode."""
    torch.manual_seed(seed)
    net = nn.Sequential(make_encoder("cnn", 32), nn.Linear(256, num_classes)).to(device)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    steps = max(1, epochs * (len(x) // 128))  # a tiny dataset still gets one step
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
    return sum((net(to_float(x[i:i + batch].to(device))).argmax(1).cpu() == y[i:i + batch])
               .sum().item() for i in range(0, len(x), batch)) / len(x)


@torch.inference_mode()
def gan_test(G, data: str, n: int = 10000, epochs: int = 3, device="cpu", seed=0) -> dict:
    """GAN-test (Shmelkov et al. 2018): a classifier trained on real images,
    scored on G(z, y) against y."""
    (xtr, ytr, classes), (xte, yte, _) = load_splits(data)
    # GAN-test compares G's label y with the classifier's
    check_classes(G.classes, classes, "the generator", data)
    with torch.inference_mode(False):
        clf = train_classifier(xtr, ytr, G.num_classes, epochs, device, seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    y = torch.arange(n, device=device) % G.num_classes
    fakes = torch.cat([G(torch.randn(500, G.latent_dim, generator=gen, device=device),
                         y[i:i + 500]) for i in range(0, n, 500)])  # (n, 3, 32, 32) in [-1, 1]
    fakes_u8 = to_uint8(fakes).cpu()

    def spread(x, labels):  # mean per-pixel std within a class: ~0 when G ignores z (mode collapse)
        return torch.stack([to_float(x[labels == c]).std(0).mean()
                            for c in range(G.num_classes)]).mean().item()
    return {"real_test_acc": accuracy(clf, xte, yte, device),
            "gan_test_acc": accuracy(clf, fakes_u8, y.cpu(), device),
            "spread_fake": spread(fakes_u8, y.cpu()), "spread_real": spread(xte, yte)}


@torch.inference_mode()
def save_grid(G, path, per_class: int = 10, seed: int = 0) -> None:
    """Sample grid PNG: one row per class."""
    import torchvision
    gen = torch.Generator(device=next(G.parameters()).device).manual_seed(seed)
    dev = gen.device
    # (classes * per_class,)
    y = torch.arange(G.num_classes, device=dev).repeat_interleave(per_class)
    img = G(torch.randn(len(y), G.latent_dim, generator=gen, device=dev), y)  # (B, 3, 32, 32)
    with atomic_path(path) as tmp:
        torchvision.utils.save_image(img.cpu() * 0.5 + 0.5, str(tmp), nrow=per_class, padding=1,
                                     format="png")


def train(cfg: Config, out: Path, fresh: bool = False) -> Generator:
    """Fig. 1A: the GAN on the training split; writes `out` (config inside) and its sample grid.
    Ctrl-C or --time-limit stops early and keeps what was trained, with the steps really done
    in its config. fresh: out's folder is a new run folder, created only once the data loaded."""
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    print(f"seed {cfg.seed} | device {device} | data {cfg.data} | out {out}")
    # test/ is checked too: GAN-test needs it
    (x, y, classes), _ = load_splits(cfg.data, cfg.download)
    G = Generator(cfg.latent_dim, len(classes), cfg.width).to(
        device, memory_format=torch.channels_last)  # NHWC
    G.classes = classes
    D = Discriminator(len(classes), cfg.width).to(device, memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(G.parameters(), cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), cfg.lr, betas=(0.5, 0.999))
    x_dev, y_dev = x.to(device), y.to(device)  # whole dataset on the device: no data loader needed
    from tqdm import tqdm
    with output_folder(out.parent, fresh), RunLock(out.parent):  # one process per folder
        bar, start, done = tqdm(range(cfg.steps), desc="GAN", mininterval=5), time.time(), 0
        try:
            for step in bar:
                i = torch.randint(len(x_dev), (cfg.batch_size,), device=device)
                real, y_b = to_float(x_dev[i]), y_dev[i]
                # fakes of the batch's classes
                fake = G(torch.randn(len(i), G.latent_dim, device=device), y_b)  # (B, 3, 32, 32)
                loss_d = d_loss(D, real, fake.detach(), y_b, cfg.ac_weight)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                loss_g = g_loss(D, fake, y_b, cfg.ac_weight)
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward(inputs=list(G.parameters()))
                opt_g.step()
                if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
                    raise FloatingPointError(
                        f"the GAN loss is not finite at step {step} (D {loss_d.item():.3g}, "
                        f"G {loss_g.item():.3g}); lower --lr")
                done = step + 1
                if step % 50 == 0:
                    bar.set_postfix(loss_d=f"{loss_d.item():.3f}", loss_g=f"{loss_g.item():.3f}")
                if cfg.time_limit and time.time() - start > cfg.time_limit:
                    print(f"time limit reached after {done} steps")
                    break
        except KeyboardInterrupt:  # keep what was trained: the GAN-test follows
            bar.close()
            if done == 0:
                raise
            print(f"interrupted after {done} steps: keeping what was trained")
        G.eval().requires_grad_(False)
        cfg = dataclasses.replace(cfg, steps=done)  # the checkpoint records the steps really done
        config = dataclasses.asdict(cfg) | ({"nuisance": dict(NUISANCE)}
                                            if cfg.data == "embedded" else {})
        save_generator(G, out, config, classes)
        save_grid(G, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')} ({time.time() - start:.0f} s)")
    return G


@contextlib.contextmanager
def output_folder(folder: Path, fresh: bool):
    """Create `folder` when missing (fresh: it must be missing, as chosen by output_path); if the
    block fails before anything was written into a folder it created, the folder goes again."""
    created = fresh or not folder.is_dir()
    if created:
        try:
            folder.mkdir(parents=True)
        except FileExistsError:  # another command took the folder since it was chosen
            raise ConfigError(f"{folder} was created meanwhile by another command; "
                              f"run again") from None
    try:
        yield folder
    except BaseException:
        with contextlib.suppress(OSError):
            if created and not any(folder.iterdir()):  # RunLock removed its lock file already
                folder.rmdir()
        raise


def output_path(cfg: Config) -> Path:
    """Where training writes, chosen before any work and nothing created yet: --out (an existing
    file only with --overwrite; one under checkpoints/, the shipped generators, only when --out
    names it and --overwrite is given), else generator.pt in a new run folder: --name's (refused
    if it exists) or the first free one of runs/gan_<data>_s<seed>, -2, -3, ..."""
    if cfg.out:
        out = Path(cfg.out)
        for path in (out, out.with_suffix(".png")):
            check_out(path, "file", allow_checkpoints=True)
            if CHECKPOINTS in path.resolve().parents and not cfg.overwrite:
                raise ConfigError(
                    f"{path} is in checkpoints/, the shipped generators: write under runs/ (the "
                    f"default), or pass --out {cfg.out} --overwrite to replace one on purpose")
            if path.exists() and not cfg.overwrite:
                raise ConfigError(f"{path} exists; pass --overwrite to replace it, or choose "
                                  f"another --out")
        return out
    tag = (cfg.data if cfg.data in ("embedded", "cifar10")
           else re.sub(r"[^A-Za-z0-9._-]", "_", Path(cfg.data).name)[:60])  # a valid run name
    base = run_dir(f"gan_{tag}_s{cfg.seed}")
    if cfg.name:
        folder = run_dir(cfg.name)
        if folder.exists():
            raise ConfigError(f"{folder} exists: every training run gets a folder of its own; "
                              f"choose another --name, or none for the first free one of "
                              f"{base}, {base.name}-2, ...")
    else:
        more = (base.with_name(f"{base.name}-{n}") for n in itertools.count(2))
        folder = next(f for f in itertools.chain([base], more) if not f.exists())
    check_out(folder, "dir")
    return folder / "generator.pt"


@cli
def main(argv=None) -> dict:
    cfg = parse_config(Config, argv)  # every flag checked here (Config.rules), before any work
    device = pick_device(cfg.device)
    if cfg.eval:
        G = load_generator(cfg.eval, device)
    else:
        out = output_path(cfg)
        G = train(cfg, out, fresh=not cfg.out)
    try:
        scores = gan_test(G, cfg.data, epochs=cfg.gan_test_epochs, device=device, seed=cfg.seed)
    except KeyboardInterrupt:
        if cfg.eval:
            raise
        data = "" if cfg.data == "embedded" else f" --data {cfg.data}"
        sys.exit(f"interrupted during the GAN-test: {out} is complete (python generator.py "
                 f"--eval {out}{data} scores it)")
    print(f"GAN-test accuracy {scores['gan_test_acc']:.3f} | same classifier on real test images "
          f"{scores['real_test_acc']:.3f} | within-class spread {scores['spread_fake']:.3f} (real "
          f"{scores['spread_real']:.3f})")
    return scores


if __name__ == "__main__":
    main()
