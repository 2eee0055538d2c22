"""generator.py — Fig. 1A: a class-conditional GAN pretrained on a static image dataset.

The paper does not fix the GAN (it used a conditional StyleGAN); this one is small enough to train
on a CPU:
  * G(z, y): a DCGAN-style generator (Radford et al. 2016) with class-conditional BatchNorm
    (gan.py); the world (world.py) walks its latent z and decodes every frame with it;
  * D(x, y): a projection discriminator (Miyato & Koyama 2018) with an auxiliary classifier
    (AC-GAN, Odena et al. 2017), trained with the hinge loss;
  * GAN-test (Shmelkov et al. 2018): a classifier trained on real images labels G's samples.

    python generator.py       # embedded digits -> runs/gan_embedded_s0/generator.pt
    python generator.py --data cifar10 --download --steps 20000 --name gan_cifar10
    python generator.py --eval checkpoints/embedded_gan.pt  # GAN-test score only; writes nothing
Writes runs/<name>/generator.pt and a sample grid beside it; an existing file is replaced only with
--overwrite, so the shipped generators in checkpoints/ stay as they are. Data: data.py. At scale
the world is a pretrained BigGAN-deep instead (biggan.py, load_generator("biggan-deep-128");
docs/scale.md).
"""
import dataclasses, math, re, sys, time
from dataclasses import dataclass
from typing import Literal
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import (CHECKPOINTS, ConfigError, RunLock, atomic_path, check_out, parse_config,
                    pick_device, require, run_dir, seed_everything)
from data import NUISANCE, check_classes, load_splits, to_float, to_uint8
from encoder import make_encoder
from gan import Generator, load_generator, save_generator  # noqa: F401  (G: gan.py)


@dataclass
class Config:
    data: str = "embedded"  # "embedded" (generated offline), "cifar10" (torchvision) or an
    #                         ImageFolder path
    name: str = ""  # run folder runs/<name> for generator.pt and its sample grid;
    #                 default "gan_<data>_s<seed>"
    out: str = ""  # write the checkpoint here instead of runs/<name>/generator.pt
    overwrite: bool = False  # replace an existing checkpoint at that path (the shipped ones too,
    #                          if named by --out)
    steps: int = 2200  # generator updates (one discriminator update each)
    batch_size: int = 64  # images per discriminator / generator update
    latent_dim: int = 64  # dimension of z ~ N(0, I); the world's actions have this dimension too
    width: int = 32  # base channel count of G and D (checkpoint size grows as width^2)
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


def train(cfg: Config, out: Path) -> Generator:
    """Fig. 1A: the GAN on the training split; writes `out` (config inside) and its sample grid.
    Ctrl-C or --time-limit stops early and keeps what was trained, with the steps really done
    in its config."""
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
    except KeyboardInterrupt:
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


def output_path(cfg: Config) -> Path:
    """Where training writes: --out, or runs/<name>/generator.pt. An existing file is replaced
    only with --overwrite, and a file under checkpoints/ (the shipped generators) only when --out
    names it too."""
    if cfg.out:
        out = Path(cfg.out)
    else:
        tag = (cfg.data if cfg.data in ("embedded", "cifar10")
               else re.sub(r"[^A-Za-z0-9._-]", "_", Path(cfg.data).name))
        out = run_dir(cfg.name or f"gan_{tag}_s{cfg.seed}") / "generator.pt"
    for path in (out, out.with_suffix(".png")):
        check_out(path, "file", allow_checkpoints=True)
        shipped = CHECKPOINTS in path.resolve().parents
        if shipped and not (cfg.out and cfg.overwrite):
            raise ConfigError(
                f"{path} is in checkpoints/, the shipped generators: write under runs/ (the "
                f"default), or pass --out {cfg.out or path} --overwrite to replace one on purpose")
        if path.exists() and not cfg.overwrite:
            raise ConfigError(f"{path} exists; pass --overwrite to replace it, or choose another "
                              f"--name / --out")
    return out


def main(argv=None) -> None:
    cfg = parse_config(Config, argv)
    try:
        require({"steps >= 1": cfg.steps >= 1, "batch_size >= 2": cfg.batch_size >= 2,
                 "latent_dim >= 1": cfg.latent_dim >= 1, "width >= 1": cfg.width >= 1,
                 "0 < lr <= 1": 0 < cfg.lr <= 1,
                 "0 <= ac_weight < inf": 0 <= cfg.ac_weight < math.inf,
                 "0 <= time_limit < inf": 0 <= cfg.time_limit < math.inf,
                 "gan_test_epochs >= 1": cfg.gan_test_epochs >= 1}, "generator.py")
        device = pick_device(cfg.device)
        if cfg.eval:
            G = load_generator(cfg.eval, device)
        else:
            out = output_path(cfg)
            with RunLock(out.parent):
                G = train(cfg, out)
        scores = gan_test(G, cfg.data, epochs=cfg.gan_test_epochs, device=device, seed=cfg.seed)
    except (FileNotFoundError, ValueError, FloatingPointError, OSError) as e:
        sys.exit("error: " + " ".join(str(e).splitlines()))
    except KeyboardInterrupt:
        sys.exit("interrupted" + ("" if cfg.eval
                                  else f"; {out} holds what was trained, if any step was done"))
    print(f"GAN-test accuracy {scores['gan_test_acc']:.3f} | same classifier on real test images "
          f"{scores['real_test_acc']:.3f} | within-class spread {scores['spread_fake']:.3f} (real "
          f"{scores['spread_real']:.3f})")


if __name__ == "__main__":
    main()
