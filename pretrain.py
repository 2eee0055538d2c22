"""pretrain.py — Fig. 1C: learn a representation from the latent world while an APT agent explores it.

One iteration of Palm-up (`Run.update`, read it top to bottom):
  1. act: the SAC policy acts on detached features of the N envs' current frames (the agent, agent.py);
  2. step: the world mixes the actions with fresh noise, applies the EMA and decodes the next frames (world.py);
  3. store: the transitions (o_t, a_t, o_t+1) go to the uint8 replay buffer; o_t+1 is the true successor, also on
     the step that ends an episode, so a pair never crosses a reset;
  4. sample: a batch of consecutive pairs (o_t, o_t+1);
  5. InfoNCE: the Siamese encoder takes one step on the temporal contrastive loss of the pairs, no augmentation;
  6. APT: the reward of each pair is the kNN particle entropy of its next frame's features, detached and
     standardised per batch;
  7. SAC: `sac_updates` steps on the same batch. RL never updates the encoder.
Baselines (--method) change steps 1-4 only, through `Run.pairs`; the encoder, batch and number of updates stay:
  random      uniform-random actions in the same world (exploration ablated)
  genrep      static GAN samples, positives G(z, y) and G(z + sigma * eps, y) (GenRep, Jahanian et al. 2022)
  simclr      SimCLR (Chen et al. 2020) on the real training images with its standard augmentations
  supervised  cross-entropy on the real labels (the upper bound)
  none        random initialisation

    python pretrain.py                       # Palm-up on the embedded dataset, ~4.5 min on a 2-core x86 CPU
    python pretrain.py --method genrep --genrep-sigma 0.6 --seed 1
    python pretrain.py --data cifar10 --download --generator checkpoints/cifar10_gan.pt --name cifar_palmup_s0
    python pretrain.py --generator biggan-deep-128 --classes imagenette --device cuda   # docs/scale.md
    torchrun --nproc_per_node 2 pretrain.py --updates 20     # data-parallel: N processes, DDP (docs/scale.md)
Writes runs/<name>/ only. Re-running the same command resumes an interrupted run from runs/<name>/ckpt.pt
(bit for bit on the CPU: the checkpoint holds every weight, optimiser, RNG, the replay buffer and the world).
"""
import contextlib, csv, dataclasses, json, math, sys, time
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from agent import RMS, SAC, ReplayBuffer, SACConfig, apt_reward, knn_spread
from common import (ConfigError, RunLock, atomic_path, average_grad, broadcast, distributed, gather_ranks,
                    load_checkpoint, make_encoder, mean_over_ranks, own_part, parse_config, pick_device, require,
                    run_dir, save_atomic, seed_everything, timed)
from evaluate import linear_probe
from generator import is_biggan, load_generator, load_split, parse_classes, to_float, to_uint8
from world import LatentWorld, latent_step, save_filmstrip

METHODS = ("palmup", "random", "genrep", "simclr", "supervised", "none")
WORLD_METHODS = ("palmup", "random")
LOCAL = ("rng", "cuda_rng", "world", "buffer", "rms", "bn")  # checkpoint parts each torchrun rank has its own of
BUDGET = ("updates", "checkpoint_every", "probe", "probe_images", "probe_split", "download", "overwrite", "device",
          "name")  # what a resumed run may change; anything else must match its checkpoint


@dataclass
class Config:
    method: Literal[METHODS] = "palmup"  # what to pretrain with (module docstring)
    name: str = ""  # run folder runs/<name> (letters, digits, . _ -); default "<method>_s<seed>"
    data: str = "embedded"  # real images (simclr / supervised training, the final probe): "embedded", "cifar10"
    #                          or an ImageFolder path with train/ and test/
    download: bool = False  # only with --data cifar10: let torchvision download CIFAR-10 (needs internet once)
    generator: str = "checkpoints/embedded_gan.pt"  # the world's generator: a checkpoint of generator.py, or
    #                                                  biggan-deep-128 / -256 / -512 (requirements-biggan.txt)
    classes: str = ""  # BigGAN only: ImageNet classes of the world, comma-separated indices or a preset name
    #                    (imagenet100, imagenette, imagewoof; generator.py); "" = all 1000
    truncation: float = 1.0  # BigGAN only: truncation in (0, 1]; lower = cleaner, less varied images (docs/scale.md)
    image_size: int = 32  # side of the frames the buffer stores and the encoder sees; BigGAN frames are resized to it
    encoder: Literal["cnn", "resnet18"] = "cnn"  # "cnn" (CPU default) or "resnet18" (GPU)
    width: int = 32  # cnn base width (features: 8 * width)
    proj_dim: int = 128  # projection head output (SimCLR, Chen et al. 2020: MLP head)
    temperature: float = 0.1  # InfoNCE temperature (paper leaves it open)
    updates: int = 600  # encoder updates, the same for every method
    batch_size: int = 256  # positive pairs per update (2 x batch_size images)
    lr: float = 1e-3  # Adam learning rate of encoder + head
    num_envs: int = 64  # envs stepped once per update (paper leaves it open)
    horizon: int = 16  # world: steps per episode (paper leaves it open)
    mix: float = 0.5  # world: weight of the action against fresh noise (paper leaves it open)
    ema: float = 0.8  # world: EMA persistence rho (paper leaves it open)
    action_scale: float = 3 ** 0.5  # world: action gain s; sqrt(3) gives uniform actions unit variance (paper: open)
    apt_k: int = 12  # APT: neighbours in the particle estimate (URLB's value)
    # APT agent (SAC) settings: the paper leaves them open; chosen by measurement (docs/exploration.md)
    sac_gamma: float = 0.5  # SAC discount: APT rewards the next frame (CleanRL: 0.99; transfer.py measured 0.5 too)
    sac_alpha: float = 0.1  # SAC temperature, on standardised rewards (fixed as in SAC-v1; 0.1 = DrQ / URLB's init)
    sac_autotune: bool = False  # learn alpha toward entropy -|A| (SAC-v2); on: the policy collapses, leaves the prior
    reward_norm: bool = True  # standardise each batch's APT rewards (SAC-v1: reward scale is its sensitive knob)
    sac_updates: int = 4  # SAC steps per encoder update, same batch: update-to-data ratio (REDQ / DroQ: up to 20)
    buffer_size: int = 100_000  # replay transitions (each ~6 KB: two uint8 frames)
    warmup: int = 16  # world steps of uniform-random play that fill the buffer before the first update
    genrep_sigma: float = 0.6  # genrep: std of the latent perturbation of the positive
    augment: bool = False  # add SimCLR augmentation to the temporal pairs (off: paper Fig. 1C)
    seed: int = 0  # seeds python, numpy, torch and the world
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" = CUDA when present, else CPU
    checkpoint_every: int = 250  # updates between resumable checkpoints
    probe: bool = True  # finish with the linear probe on `data` (evaluate.py)
    probe_images: int = 0  # 0 = the whole split; n = only the first n train / n // 5 test images (quick checks)
    probe_split: Literal["test", "val"] = "test"  # "val": fit on 90 % of train, score the other 10 % (tune on this)
    overwrite: bool = False  # redo a finished run of the same name
    max_weight: float = 1e4  # divergence guard: stop when any encoder weight grows past this in absolute value
    chance_patience: int = 10  # divergence guard: stop when the loss sits at its chance value for this many logged
    #                            steps (one per 10 updates) after the first 100 updates


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temporal InfoNCE (CPC, Oord et al. 2018; symmetric as in CLIP): row i of a and of b are a positive pair,
    the other rows of the batch are negatives. a, b: (B, P) projections."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.T / temperature  # (B, B): positives on the diagonal
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def augment(x: torch.Tensor) -> torch.Tensor:
    """SimCLR's CIFAR augmentations, vectorised per sample: random resized crop (scale 0.2-1) + flip, colour
    jitter (0.4 brightness / contrast / saturation, p = 0.8; hue omitted), grayscale (p = 0.2). x in [-1, 1]."""
    B, dev = len(x), x.device
    u = lambda: torch.rand(B, device=dev)  # noqa: E731
    area, ratio = 0.2 + 0.8 * u(), torch.exp((u() * 2 - 1) * math.log(4 / 3))
    w, h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)  # crop size / image size
    flip = torch.where(u() < 0.5, -1.0, 1.0)
    theta = torch.zeros(B, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 1, 1] = w * flip, h
    theta[:, 0, 2], theta[:, 1, 2] = (1 - w) * (2 * u() - 1), (1 - h) * (2 * u() - 1)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), align_corners=False)
    x = x * 0.5 + 0.5  # (B, 3, 32, 32) in [0, 1]
    gray = lambda v: (v * torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)).sum(1, keepdim=True)  # noqa
    jitter = (u() < 0.8).view(B, 1, 1, 1)
    bright, contrast, sat = [(1 + 0.4 * (2 * u() - 1)).view(B, 1, 1, 1) for _ in range(3)]
    j = x * bright
    j = (j - gray(j).mean((2, 3), keepdim=True)) * contrast + gray(j).mean((2, 3), keepdim=True)
    j = gray(j) + (j - gray(j)) * sat
    x = torch.where(jitter, j.clamp(0, 1), x)
    x = torch.where((u() < 0.2).view(B, 1, 1, 1), gray(x).expand_as(x), x)
    return x * 2 - 1


class Model(nn.Module):
    """Siamese encoder (shared weights for both views) + projection head. Probes use the encoder alone."""

    def __init__(self, cfg: Config, num_classes: int):
        super().__init__()
        self.encoder = make_encoder(cfg.encoder, cfg.width)
        d = self.encoder.feature_dim
        self.head = nn.Sequential(nn.Linear(d, 512), nn.ReLU(), nn.Linear(512, cfg.proj_dim))  # (B, proj_dim)
        self.classifier = nn.Linear(d, num_classes)  # used by --method supervised only
        self.supervised = cfg.method == "supervised"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, S, S) -> features (B, D) and the projection (B, proj_dim), or class logits (B, C) if supervised."""
        f = self.encoder(x)  # (B, D)
        return f, (self.classifier(f) if self.supervised else self.head(f))

class Run:
    """One pretraining run: its state, its iteration (`update`), its loop (`train`) and its files under runs/<name>/."""

    def __init__(self, cfg: Config, rank: int = 0, world_size: int = 1):
        self.cfg, self.dir = cfg, run_dir(cfg.name)
        self.rank, self.world_size = rank, world_size  # torchrun: this process and how many there are (distributed())
        self.device = pick_device(cfg.device)
        needs_images = cfg.method in ("simclr", "supervised") or cfg.probe
        self.x, self.y, classes = load_split(cfg.data, "train", cfg.download) if needs_images else (None, None, [])
        self.model = Model(cfg, max(len(classes), 1)).to(self.device)
        self.net = self.model  # what the encoder step calls: the model, or its DDP wrapper (distribute())
        self.opt = torch.optim.Adam(self.model.parameters(), cfg.lr)
        self.step, self.metrics, self.wall = 0, [], 0.0
        self.stage_s = {}  # seconds spent per stage (benchmarks/speed.py, result.json)
        if cfg.method in ("palmup", "random", "genrep"):
            biggan = dict(classes=cfg.classes, truncation=cfg.truncation, image_size=cfg.image_size)
            self.G = load_generator(cfg.generator, self.device, **(biggan if is_biggan(cfg.generator) else {}))
        if cfg.method in WORLD_METHODS:
            self.world = LatentWorld(self.G, cfg.num_envs, cfg.horizon, cfg.mix, cfg.ema, cfg.action_scale,
                                     seed=cfg.seed + rank)  # each rank its own envs
            self.buffer = ReplayBuffer(cfg.buffer_size, self.G.latent_dim, (3, cfg.image_size, cfg.image_size),
                                       device=self.device)
            if cfg.method == "palmup":  # --method random acts uniformly: no agent
                sac_cfg = SACConfig(gamma=cfg.sac_gamma, init_alpha=cfg.sac_alpha, autotune=cfg.sac_autotune,
                                    reward_norm=cfg.reward_norm, updates_per_call=cfg.sac_updates)
                self.sac = SAC(self.model.encoder.feature_dim, self.G.latent_dim, sac_cfg, self.device)
                self.probe_rng = torch.Generator(device=self.device).manual_seed(cfg.seed)  # spread_vs_random's actions
                self.rms = RMS(device=self.device)
            self.obs = self.world.reset()  # (N, 3, S, S), S = cfg.image_size

    # ---- one iteration (module docstring, steps 1-7) ------------------------------------------------------------
    def update(self) -> dict:
        cfg = self.cfg
        with timed(self.stage_s, "explore + pairs", self.device):
            v1, v2, batch = self.pairs()  # (B, 3, S, S) each: rows are positive pairs (steps 1-4)
            if cfg.augment and cfg.method in ("palmup", "random", "genrep"):  # an ablation: the paper uses none
                v1, v2 = augment(v1), augment(v2)
        with timed(self.stage_s, "encoder update", self.device):  # step 5
            f, p = self.net(torch.cat([v1, v2]))  # (2B, D), (2B, proj_dim): one pass for both views (shared BN stats)
            if cfg.method == "supervised":
                loss = F.cross_entropy(p, batch["labels"])  # p: (2B, C) class logits
            else:
                loss = info_nce(p[:len(v1)], p[len(v1):], cfg.temperature)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss is {loss.item()} at update {self.step}: lower --lr")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            log = {"loss": loss.item(), **batch.get("log", {})}
        if cfg.method == "palmup":
            with timed(self.stage_s, "SAC update + APT reward", self.device):  # steps 6-7
                # (B, D) each: features of o_t and o_t+1, detached (Fig. 1C). They come from the encoder's training
                # pass (BN batch statistics) while acting uses eval mode: a free reuse, at the price of a small
                # train/eval mismatch early in training.
                feat, next_feat = f.detach().chunk(2)
                reward = apt_reward(next_feat, cfg.apt_k, self.rms)  # (B,) APT (Liu & Abbeel 2021)
                log.update(self.sac.update(feat, batch["action"], reward, next_feat), reward=reward.mean().item())
        return log

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The one seam between methods: -> two views (B, 3, 32, 32) in [-1, 1] whose rows are positive pairs, and the
        batch they came from (actions for SAC, labels for the supervised baseline, metrics to log)."""
        cfg, B = self.cfg, self.cfg.batch_size
        if cfg.method in WORLD_METHODS:
            action = self.act(self.obs)  # step 1
            watch = cfg.method == "palmup" and (self.step + 1) % 10 == 0  # on logged updates: exploration metrics
            log = self.spread_vs_random(action) if watch else {}
            self.explore(action)  # steps 2-3: step, store
            batch = self.buffer.sample(B)  # step 4: consecutive pairs, never across a reset
            return to_float(batch["obs"]), to_float(batch["next_obs"]), {**batch, "log": log}
        if cfg.method == "genrep":
            with torch.no_grad():
                z, y = torch.randn(B, self.G.latent_dim, device=self.device), torch.randint(self.G.num_classes, (B,))
                y = y.to(self.device)
                return self.G(z, y), self.G(z + cfg.genrep_sigma * torch.randn_like(z), y), {}  # GenRep Sec. 3
        i = torch.randint(len(self.x), (B,))
        x = to_float(self.x[i].to(self.device))  # (B, 3, 32, 32)
        if cfg.method == "simclr":
            return augment(x), augment(x), {}
        j = torch.randint(len(self.x), (B,))  # supervised: 2B images, each with its own label
        x2 = to_float(self.x[j].to(self.device))
        return x, x2, {"labels": torch.cat([self.y[i], self.y[j]]).to(self.device)}

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """The SAC policy on detached features (palmup) or uniform-random actions (random): (N, d) in [-1, 1]."""
        if self.cfg.method == "palmup":
            return self.sac.act(self.features(obs))
        return torch.rand(len(obs), self.G.latent_dim, device=self.device) * 2 - 1

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """Detached features of float frames, encoder in eval mode (acting never changes BN statistics)."""
        self.model.eval()
        with torch.no_grad():
            f = self.model.encoder(obs)  # (N, D)
        self.model.train()
        return f

    def explore(self, action: torch.Tensor) -> None:
        """All envs take one step; (o_t, a_t, o_t+1) go to the buffer, o_t+1 the true successor (world.py)."""
        obs, info = self.world.step(action)
        self.buffer.add(to_uint8(self.obs), action, to_uint8(info["next_obs"]), info["y"])
        self.obs = obs

    @torch.no_grad()
    def spread_vs_random(self, action: torch.Tensor) -> dict:
        """Before the envs step with `action` (N, d): how much more spread out (kNN distance in the encoder's features,
        APT's k) are the frames it leads to than those uniform-random actions lead to from the same latents with the
        same noise, and where the agent's latents go (mean ||z_t+1||^2 / d, 1 under the prior). Logged: curves.png."""
        w, cfg = self.world, self.cfg
        state = w.rng.get_state()
        eps = w._noise(w.num_envs)  # (N, d): the noise the step will draw
        w.rng.set_state(state)
        u = torch.rand(action.shape, generator=self.probe_rng, device=self.device) * 2 - 1  # (N, d)
        z = [latent_step(w.z, a, eps, w.mix, w.ema, w.action_scale, w.ema_kind) for a in (action, u)]  # 2 x (N, d)
        f = self.features(w.G(torch.cat(z), torch.cat([w.y, w.y])))  # (2N, D)
        k = min(cfg.apt_k, w.num_envs - 1)
        return {"spread_ratio": knn_spread(f[:w.num_envs], k) / knn_spread(f[w.num_envs:], k),
                "z_sq": z[0].pow(2).mean().item()}

    # ---- the loop -----------------------------------------------------------------------------------------------
    def train(self) -> None:
        from tqdm import tqdm
        cfg = self.cfg
        if self.step == 0 and self.rank == 0:
            with timed(self.stage_s, "filmstrips, checkpoints, plots"):
                self.filmstrip(self.dir / "filmstrip_start.png")
        if self.step == 0:
            if hasattr(self, "buffer"):  # fill the buffer with uniform-random play (a resumed run has its buffer)
                with timed(self.stage_s, "explore + pairs", self.device):
                    for _ in range(cfg.warmup):
                        self.explore(torch.rand(cfg.num_envs, self.G.latent_dim, device=self.device) * 2 - 1)
        total = cfg.updates if cfg.method != "none" else 0
        t0 = t_start = time.time()  # t0: start of the time not yet added to self.wall
        images = 0  # images through the encoder since t_start (a resumed run starts counting anew)
        with tqdm(total=total, initial=self.step, desc=cfg.name, mininterval=1, disable=self.rank > 0) as bar:
            while self.step < total:
                log = self.update()
                self.step += 1
                images += 2 * cfg.batch_size
                bar.update()
                if self.step % 10 == 0:
                    if self.world_size > 1:
                        log = mean_over_ranks(log)  # every rank logs and checks the same numbers
                    log.update(update=self.step, time_s=round(self.wall + time.time() - t0, 2))  # since the start
                    self.metrics.append(log)
                    bar.set_postfix(loss=f"{log['loss']:.3f}", reward=f"{log.get('reward', 0):.3f}",
                                    alpha=f"{log.get('alpha', 0):.3f}", img_s=f"{images / (time.time() - t_start):.0f}")
                    self.check_divergence()
                if self.step % cfg.checkpoint_every == 0 and self.step < total:
                    self.wall, t0 = self.wall + time.time() - t0, time.time()
                    with timed(self.stage_s, "filmstrips, checkpoints, plots"):
                        self.checkpoint()
        self.wall += time.time() - t0  # the training loop only
        if self.world_size > 1:
            broadcast(self.model)  # BN running statistics too: every rank ends with what rank 0 saves
        if self.rank > 0:
            return
        with timed(self.stage_s, "filmstrips, checkpoints, plots"):
            self.filmstrip(self.dir / "filmstrip_end.png")
            self.save_encoder(finished=True)
            self.plot()

    def check_divergence(self) -> None:
        """Stop a run that diverged without a NaN: weights past cfg.max_weight, or the loss pinned at its chance
        value (uniform logits: ln B for InfoNCE, ln C for the supervised loss) for cfg.chance_patience logged steps."""
        cfg = self.cfg
        big = max(p.detach().abs().max().item() for p in self.model.encoder.parameters())
        if not big <= cfg.max_weight:
            raise FloatingPointError(f"diverged at update {self.step}: an encoder weight reached {big:.3g} "
                                     f"(> --max-weight {cfg.max_weight:g}); lower --lr")
        chance = math.log(self.model.classifier.out_features if cfg.method == "supervised" else cfg.batch_size)
        recent = [m["loss"] for m in self.metrics[-cfg.chance_patience:] if m["update"] > 100]
        if len(recent) == cfg.chance_patience and all(abs(v - chance) < 1e-3 * chance for v in recent):
            raise FloatingPointError(f"diverged: the loss has stayed at its chance value {chance:.4f} for "
                                     f"{10 * cfg.chance_patience} updates (at update {self.step}); lower --lr")

    # ---- state on disk: a resumable checkpoint (everything, so that a resumed run is the same run) -----------------
    def state(self) -> dict:
        s = {"config": dataclasses.asdict(self.cfg), "step": self.step, "metrics": self.metrics, "wall": self.wall,
             "stage_s": self.stage_s, "model": self.model.state_dict(), "opt": self.opt.state_dict(),
             "rng": torch.get_rng_state()}
        if torch.cuda.is_available():
            s["cuda_rng"] = torch.cuda.get_rng_state_all()
        if hasattr(self, "world"):
            s["world"], s["buffer"] = {**self.world.state(), "obs": self.obs}, self.buffer.state()
        if hasattr(self, "sac"):
            s["sac"], s["rms"] = {**self.sac.state(), "probe_rng": self.probe_rng.get_state()}, self.rms.state()
        return s

    def load(self, s: dict) -> None:
        if self.world_size > 1 or "ranks" in s:
            s = own_part(s, self.rank, self.world_size)
        self.step, self.metrics, self.wall, self.stage_s = s["step"], s["metrics"], s["wall"], s["stage_s"]
        self.model.load_state_dict(s["model"])
        self.opt.load_state_dict(s["opt"])
        torch.set_rng_state(s["rng"].cpu())  # the CPU generator's state (torch.load moved it to run.device)
        if "cuda_rng" in s and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([r.cpu() for r in s["cuda_rng"]])
        if hasattr(self, "world"):
            self.world.load(s["world"])
            self.obs = s["world"]["obs"]
            self.buffer.load(s["buffer"])
        if hasattr(self, "sac"):
            self.sac.load(s["sac"])
            self.probe_rng.set_state(s["sac"]["probe_rng"].cpu())
            self.rms.load(s["rms"])

    def checkpoint(self) -> None:
        """runs/<name>/ckpt.pt, written by rank 0 only; under torchrun it also holds every rank's own part."""
        s = self.state()
        if self.world_size > 1:  # BN statistics are rank-local between DDP's broadcasts: each rank keeps its own
            s["bn"] = dict(self.model.named_buffers())
            if "sac" in s:  # distribute() wrapped SAC's modules in DDP: save them under their plain names
                s["sac"]["nets"] = {k.replace(".module.", "."): v for k, v in s["sac"]["nets"].items()}
            s = gather_ranks(s, self.rank, self.world_size, LOCAL)
        if self.rank == 0:
            save_atomic(s, self.dir / "ckpt.pt")

    def distribute(self) -> None:
        """torchrun (after a resume): every rank takes rank 0's weights, and DDP averages the gradients of the encoder
        + head and of the SAC networks over the ranks in each backward, so the weights stay the same on every rank."""
        from torch.nn.parallel import DistributedDataParallel as DDP
        unused = self.model.head if self.cfg.method == "supervised" else self.model.classifier
        unused.requires_grad_(False)  # DDP expects a gradient for every trainable parameter of what it wraps
        bn = {k: v.clone() for k, v in self.model.named_buffers()}  # BN statistics: a resumed rank keeps its own
        broadcast(self.model)
        self.net = DDP(self.model)  # DDP broadcasts rank 0's BN statistics at the start and before each forward
        self.model.load_state_dict(bn, strict=False)
        if hasattr(self, "sac"):
            broadcast(self.sac)  # the target critics and log alpha too
            for k in ("actor", "q1", "q2"):  # SAC calls these modules: wrapped, their backward averages the gradients
                setattr(self.sac, k, DDP(getattr(self.sac, k)))
            self.sac.log_alpha.register_hook(average_grad)  # a bare parameter: averaged by a hook

    def save_encoder(self, finished: bool) -> None:
        save_atomic({"kind": "encoder", "encoder": self.cfg.encoder, "width": self.cfg.width, "finished": finished,
                     "state_dict": self.model.encoder.state_dict(), "config": dataclasses.asdict(self.cfg),
                     "wall_time_s": self.wall}, self.dir / "encoder.pt")

    # ---- pictures -----------------------------------------------------------------------------------------------
    def filmstrip(self, path) -> None:
        if not hasattr(self, "world"):
            return
        world = LatentWorld(self.G, 8, self.cfg.horizon, self.cfg.mix, self.cfg.ema, self.cfg.action_scale,
                            seed=12345)
        obs, frames = world.reset(), []
        for _ in range(self.cfg.horizon):
            obs, info = world.step(self.act(obs))
            frames.append(info["next_obs"])
        save_filmstrip(torch.stack(frames), path)  # rows: envs, columns: time

    def plot(self) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        if not self.metrics:
            return
        with atomic_path(self.dir / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, sorted({k for m in self.metrics for k in m}))
            w.writeheader()
            w.writerows(self.metrics)
        keys = [k for k in ("loss", "reward", "alpha", "entropy_gap", "spread_ratio", "z_sq") if k in self.metrics[-1]]
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        for ax, k in zip(axes[0], keys):
            pts = [(m["update"], m[k]) for m in self.metrics if k in m]
            ax.plot(*zip(*pts))
            ax.set(xlabel="encoder update", title=k)
        fig.tight_layout()
        with atomic_path(self.dir / "curves.png") as tmp:
            fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)


def check(cfg: Config) -> None:
    """Every flag, before anything is loaded or written."""
    run_dir(cfg.name)
    require({"updates >= 1": cfg.updates >= 1, "batch_size >= 2": cfg.batch_size >= 2,
             "0 < temperature < inf": 0 < cfg.temperature < math.inf, "0 < lr < inf": 0 < cfg.lr < math.inf,
             "width >= 1": cfg.width >= 1, "proj_dim >= 1": cfg.proj_dim >= 1, "num_envs >= 1": cfg.num_envs >= 1,
             "horizon >= 1": cfg.horizon >= 1, "0 <= mix <= 1": 0 <= cfg.mix <= 1, "0 <= ema < 1": 0 <= cfg.ema < 1,
             "0 < action_scale < inf": 0 < cfg.action_scale < math.inf, "1 <= apt_k < batch_size":
             1 <= cfg.apt_k < cfg.batch_size, "buffer_size >= num_envs": cfg.buffer_size >= cfg.num_envs,
             "warmup >= 0": cfg.warmup >= 0, "genrep_sigma >= 0": cfg.genrep_sigma >= 0,
             "checkpoint_every >= 1": cfg.checkpoint_every >= 1, "probe_images >= 0": cfg.probe_images >= 0,
             "max_weight > 0": cfg.max_weight > 0, "chance_patience >= 1": cfg.chance_patience >= 1,
             "0 < truncation <= 1": 0 < cfg.truncation <= 1, "8 <= image_size <= 512": 8 <= cfg.image_size <= 512},
            "pretrain")
    if is_biggan(cfg.generator):
        parse_classes(cfg.classes)  # a bad index or preset name stops here
    elif cfg.classes or cfg.truncation != 1 or cfg.image_size != 32:
        raise ConfigError(f"--classes, --truncation and --image-size are for --generator biggan-deep-128 / -256 / "
                          f"-512; {cfg.generator} draws 32x32 frames of its own classes")


def resume_or_start(run: Run, out) -> None:
    """Load runs/<name>/ckpt.pt into `run` when there is one, refusing a checkpoint of a different experiment."""
    ckpt = out / "ckpt.pt"
    if not ckpt.exists() or run.cfg.overwrite:
        return
    s = load_checkpoint(ckpt, "checkpoint", run.device)
    saved, now = s.get("config", {}), dataclasses.asdict(run.cfg)
    diff = [k for k in now if k not in BUDGET and saved.get(k) != now[k]]
    if diff:
        what = ", ".join(f"{k} {saved.get(k)!r} there, {now[k]!r} here" for k in diff)
        raise ConfigError(f"{ckpt} belongs to another experiment ({what}); pass --overwrite to start over or choose "
                          f"another --name")
    try:
        run.load(s)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        first = str(e).replace("\n", " ")[:200]
        raise ValueError(f"checkpoint {ckpt} cannot be resumed ({first}); pass --overwrite to start over") from None
    print(f"resuming {out} from update {run.step}")


def probe(run: Run) -> dict:
    """The linear probe (evaluate.py) on the test split, or on a fixed 10 % of train with --probe-split val."""
    cfg = run.cfg
    if cfg.probe_split == "val":  # a fixed 10 % of train: settings are chosen here, never on the test split
        perm = torch.randperm(len(run.x), generator=torch.Generator().manual_seed(0))
        (xtr, ytr), (xte, yte) = [(run.x[i], run.y[i]) for i in (perm[len(perm) // 10:], perm[:len(perm) // 10])]
    else:
        (xtr, ytr), (xte, yte, _) = (run.x, run.y), run.test_split  # loaded by main() before training
    n = cfg.probe_images or len(xtr)
    train, test = (xtr[:n], ytr[:n]), (xte[:max(n // 5, 1)], yte[:max(n // 5, 1)])
    if len(test[0]) == 0 or len(train[0]) < 2:
        raise ValueError(f"the probe needs images: {len(train[0])} to fit on, {len(test[0])} to score ({cfg.data})")
    with timed(run.stage_s, "linear probe", run.device):
        key = "linear_probe" if cfg.probe_split == "test" else "linear_probe_val"
        return {key: round(linear_probe(run.model.encoder, train, test, device=run.device), 4)}


def main(argv=None) -> dict:
    cfg = parse_config(Config, argv)
    cfg.name = cfg.name or f"{cfg.method}_s{cfg.seed}"
    try:
        check(cfg)
        out = run_dir(cfg.name)
        if (out / "result.json").exists() and not cfg.overwrite:
            result = json.loads((out / "result.json").read_text())
            print(f"run {cfg.name} already finished: {result}; pass --overwrite (or another --name) to redo it")
            return result
        rank, world_size = distributed(cfg.device)
        seed_everything(cfg.seed + rank)  # rank 0 draws what a single process draws
        print(f"seed {cfg.seed} | method {cfg.method} | device {pick_device(cfg.device)} | run {out}")
        if world_size > 1:
            print(f"torchrun: {world_size} processes | per update {world_size} x {cfg.batch_size} = "
                  f"{world_size * cfg.batch_size} pairs | {world_size} x {cfg.num_envs} = {world_size * cfg.num_envs} "
                  f"envs, each rank with its own world seed and replay buffer")
        t_load = time.perf_counter()
        run = Run(cfg, rank, world_size)
        if cfg.probe and cfg.probe_split == "test":
            run.test_split = load_split(cfg.data, "test", cfg.download)  # no test/: stops here, before any file
        t_load = time.perf_counter() - t_load
    except (FileNotFoundError, ValueError) as e:
        sys.exit("error: " + " ".join(str(e).splitlines()))
    try:
        with RunLock(out) if rank == 0 else contextlib.nullcontext():  # rank 0 owns the run folder
            resume_or_start(run, out)
            if world_size > 1:
                run.distribute()
            run.stage_s["load data + generator"] = run.stage_s.get("load data + generator", 0.0) + t_load
            try:
                run.train()
            except KeyboardInterrupt:
                sys.exit(f"interrupted at update {run.step}; run the same command again to resume from the "
                         f"last checkpoint in {out}")
            if rank > 0:
                return {}
            result = {"method": cfg.method, "seed": cfg.seed, "updates": cfg.updates, "wall_time_s": round(run.wall, 1)}
            if world_size > 1:
                result |= {"processes": world_size, "pairs_per_update": world_size * cfg.batch_size,
                           "envs": world_size * cfg.num_envs}
            if cfg.probe:
                try:
                    result |= probe(run)
                except KeyboardInterrupt:
                    sys.exit(f"interrupted during the linear probe: {out}/encoder.pt is complete; score it with "
                             f"`python evaluate.py {out}`")
            result["stage_s"] = {k: round(v, 1) for k, v in run.stage_s.items()}  # where the time went
            save_atomic(json.dumps(result, indent=1), out / "result.json")
            (out / "ckpt.pt").unlink(missing_ok=True)
    except (FileNotFoundError, ValueError, FloatingPointError, OSError) as e:
        sys.exit("error: " + " ".join(str(e).splitlines()))
    print(f"{cfg.name}: {result}")
    return result


if __name__ == "__main__":
    main()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
