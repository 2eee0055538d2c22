"""pretrain.py — Fig. 1C: learn a representation from the latent world while an APT agent explores it.

Every iteration (one "encoder update"):
  1. the N envs step once with the SAC policy acting on detached features of the current frames;
     the transitions (o_t, a_t, o_t+1) go to the replay buffer (uint8);
  2. a batch of consecutive pairs (o_t, o_t+1) is sampled — never across an episode reset (world.py's
     info["next_obs"] is the true successor even on the reset step);
  3. the Siamese encoder takes one step on the temporal InfoNCE loss of the pairs, without augmentation;
  4. SAC takes `sac_updates` steps on the same batch, its reward the APT particle entropy of the next frames'
     features (standardised per batch), which are detached: RL never updates the encoder.
Baselines use the same encoder, batch size and number of encoder updates (--method):
  random      uniform-random actions in the same world (exploration ablated)
  genrep      static GAN samples, positives G(z, y) and G(z + sigma * eps, y) (GenRep, Jahanian et al. 2022)
  simclr      SimCLR (Chen et al. 2020) on the real training images with its standard augmentations
  supervised  cross-entropy on the real labels (the upper bound)
  none        random initialisation
    python pretrain.py                       # Palm-up on the embedded dataset, ~4.5 min on 2 CPU cores
    python pretrain.py --method genrep --genrep-sigma 0.6 --seed 1
"""
import contextlib, csv, dataclasses, json, math, sys, time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from agent import RMS, SAC, ReplayBuffer, SACConfig, apt_reward, knn_spread
from generator import (_atomic_save, load_generator, load_split, make_encoder, parse_config, pick_device,
                       seed_everything, to_float, to_uint8)
from world import LatentWorld, latent_step, save_filmstrip

METHODS = ("palmup", "random", "genrep", "simclr", "supervised", "none")


@dataclass
class Config:
    method: str = "palmup"  # palmup | random | genrep | simclr | supervised | none
    name: str = ""  # run folder runs/<name>; default "<method>_s<seed>"
    data: str = "embedded"  # real images: simclr / supervised training and the final probe
    generator: str = "checkpoints/embedded_gan.pt"  # the world's generator (generator.py)
    encoder: str = "cnn"  # "cnn" (CPU default) or "resnet18" (GPU)
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
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    checkpoint_every: int = 250  # updates between resumable checkpoints
    probe: bool = True  # finish with the linear probe on `data` (evaluate.py)
    probe_images: int = 0  # 0 = the whole split; n = only the first n train / n // 5 test images (quick checks)
    probe_split: str = "test"  # "test", or "val": fit on 90 % of train, score the other 10 % (tune on this)
    overwrite: bool = False  # redo a finished run of the same name


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


class Run:
    """One pretraining run: its state, its iteration, its files under runs/<name>/."""

    def __init__(self, cfg: Config):
        self.cfg, self.dir = cfg, Path("runs") / cfg.name
        self.device = pick_device(cfg.device)
        self.x, self.y, classes = load_split(cfg.data, "train") if cfg.method in ("simclr", "supervised") or \
            cfg.probe else (None, None, [])
        self.model = Model(cfg, max(len(classes), 1)).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), cfg.lr)
        self.step, self.metrics, self.wall = 0, [], 0.0
        self.stage_s = {}  # seconds spent per stage (benchmarks/speed.py, result.json)
        if cfg.method in ("palmup", "random", "genrep"):
            self.G = load_generator(cfg.generator, self.device)
        if cfg.method in ("palmup", "random"):
            self.world = LatentWorld(self.G, cfg.num_envs, cfg.horizon, cfg.mix, cfg.ema, cfg.action_scale,
                                     seed=cfg.seed)
            self.buffer = ReplayBuffer(cfg.buffer_size, self.G.latent_dim, device=self.device)
            if cfg.method == "palmup":  # --method random acts uniformly: no agent
                sac_cfg = SACConfig(gamma=cfg.sac_gamma, init_alpha=cfg.sac_alpha, autotune=cfg.sac_autotune,
                                    reward_norm=cfg.reward_norm, updates_per_call=cfg.sac_updates)
                self.sac = SAC(self.model.encoder.feature_dim, self.G.latent_dim, sac_cfg, self.device)
                self.probe_rng = torch.Generator(device=self.device).manual_seed(cfg.seed)  # spread_vs_random's actions
                self.rms = RMS(device=self.device)
            self.obs = self.world.reset()  # (N, 3, 32, 32)

    # ---- state on disk: resumable checkpoint + the final encoder for evaluate.py -------------------------
    def state(self) -> dict:
        s = {"config": dataclasses.asdict(self.cfg), "step": self.step, "metrics": self.metrics, "wall": self.wall,
             "model": self.model.state_dict(), "opt": self.opt.state_dict(), "rng": torch.get_rng_state(),
             "stage_s": self.stage_s}
        if hasattr(self, "sac"):
            s["sac"] = self.sac.state_dict()
        return s

    def load(self, s: dict) -> None:
        self.step, self.metrics, self.wall, self.stage_s = s["step"], s["metrics"], s["wall"], s.get("stage_s", {})
        self.model.load_state_dict(s["model"])
        self.opt.load_state_dict(s["opt"])
        torch.set_rng_state(s["rng"].cpu())  # the CPU generator's state (torch.load moved it to run.device)
        if hasattr(self, "sac"):
            self.sac.load_state_dict(s["sac"])

    def save_encoder(self, finished: bool) -> None:
        _atomic_save({"kind": "encoder", "encoder": self.cfg.encoder, "width": self.cfg.width, "finished": finished,
                      "state_dict": self.model.encoder.state_dict(), "config": dataclasses.asdict(self.cfg),
                      "wall_time_s": self.wall}, self.dir / "encoder.pt")

    # ---- one update ---------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def timed(self, stage: str):
        """Add the wall time of the block to self.stage_s[stage] (on CUDA, after the queued kernels finish)."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t = time.perf_counter()
        yield
        sync()
        self.stage_s[stage] = self.stage_s.get(stage, 0.0) + time.perf_counter() - t

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

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """-> two views (B, 3, 32, 32) in [-1, 1] whose rows are positive pairs, and logging info."""
        cfg, B = self.cfg, self.cfg.batch_size
        if cfg.method in ("palmup", "random"):
            if cfg.method == "random":
                action = torch.rand(cfg.num_envs, self.G.latent_dim, device=self.device) * 2 - 1  # (N, d)
            else:
                action = self.sac.act(self.features(self.obs))  # (N, d) in [-1, 1]
            log = self.spread_vs_random(action) if cfg.method == "palmup" and (self.step + 1) % 10 == 0 else {}
            self.explore(action)
            self.batch = self.buffer.sample(B)
            return to_float(self.batch["obs"]), to_float(self.batch["next_obs"]), log
        if cfg.method == "genrep":
            with torch.no_grad():
                z, y = torch.randn(B, self.G.latent_dim, device=self.device), torch.randint(self.G.num_classes, (B,))
                y = y.to(self.device)
                return self.G(z, y), self.G(z + cfg.genrep_sigma * torch.randn_like(z), y), {}  # GenRep Sec. 3
        i = torch.randint(len(self.x), (B,))
        x = to_float(self.x[i].to(self.device))  # (B, 3, 32, 32)
        if cfg.method == "simclr":
            return augment(x), augment(x), {}
        x2 = to_float(self.x[torch.randint(len(self.x), (B,))].to(self.device))
        return x, x2, {"labels": torch.cat([self.y[i], self.y[i]]).to(self.device)}  # supervised: 2B images

    def update(self) -> dict:
        cfg = self.cfg
        with self.timed("explore + pairs"):
            v1, v2, extra = self.pairs()
            log = {k: extra.pop(k) for k in ("spread_ratio", "z_sq") if k in extra}  # palmup's exploration metrics
            if cfg.augment and cfg.method in ("palmup", "random", "genrep"):
                v1, v2 = augment(v1), augment(v2)
        with self.timed("encoder update"):
            f = self.model.encoder(torch.cat([v1, v2]))  # (2B, D): one pass for both views (shared BN statistics)
            if cfg.method == "supervised":
                loss = F.cross_entropy(self.model.classifier(f), extra["labels"])
            else:
                p = self.model.head(f)  # (2B, proj_dim)
                loss = info_nce(p[:len(v1)], p[len(v1):], cfg.temperature)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at update {self.step}")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            log["loss"] = loss.item()
        if cfg.method == "palmup":
            with self.timed("SAC update + APT reward"):
                # (B, D) each: features of o_t and o_t+1, detached (Fig. 1C). They come from the encoder's training
                # pass (BN batch statistics) while acting uses eval mode: a free reuse, at the price of a small
                # train/eval mismatch early in training.
                feat, next_feat = f.detach().chunk(2)
                reward = apt_reward(next_feat, cfg.apt_k, self.rms)  # (B,) APT (Liu & Abbeel 2021)
                log.update(self.sac.update(feat, self.batch["action"], reward, next_feat), reward=reward.mean().item())
        return log

    # ---- the loop --------------------------------------------------------------------------------------------
    def filmstrip(self, path) -> None:
        if not hasattr(self, "world"):
            return
        world = LatentWorld(self.G, 8, self.cfg.horizon, self.cfg.mix, self.cfg.ema, self.cfg.action_scale,
                            seed=12345)
        obs, frames = world.reset(), []
        for _ in range(self.cfg.horizon):
            a = self.sac.act(self.features(obs)) if self.cfg.method == "palmup" else \
                torch.rand(8, self.G.latent_dim, device=self.device) * 2 - 1  # (8, d)
            obs, info = world.step(a)
            frames.append(info["next_obs"])
        save_filmstrip(torch.stack(frames), path)  # rows: envs, columns: time

    def train(self) -> None:
        from tqdm import tqdm
        cfg = self.cfg
        if self.step == 0:
            with self.timed("filmstrips, checkpoints, plots"):
                self.filmstrip(self.dir / "filmstrip_start.png")
        if hasattr(self, "buffer"):  # fill the buffer with uniform-random play (also after a resume: not saved)
            with self.timed("explore + pairs"):
                for _ in range(cfg.warmup):
                    self.explore(torch.rand(cfg.num_envs, self.G.latent_dim, device=self.device) * 2 - 1)  # (N, d)
        total = cfg.updates if cfg.method != "none" else 0
        bar = tqdm(total=total, initial=self.step, desc=cfg.name, mininterval=1)
        t0 = t_session = time.time()  # t0: start of the time not yet added to self.wall
        images = 0  # images through the encoder since t_session (a resumed run starts a new session)
        while self.step < total:
            log = self.update()
            self.step += 1
            images += 2 * cfg.batch_size
            bar.update()
            if self.step % 10 == 0:
                log.update(update=self.step, time_s=round(self.wall + time.time() - t0, 2))  # since the start
                self.metrics.append(log)
                bar.set_postfix(loss=f"{log['loss']:.3f}", reward=f"{log.get('reward', 0):.3f}",
                                alpha=f"{log.get('alpha', 0):.3f}", img_s=f"{images / (time.time() - t_session):.0f}")
            if self.step % cfg.checkpoint_every == 0 and self.step < total:
                self.wall, t0 = self.wall + time.time() - t0, time.time()
                with self.timed("filmstrips, checkpoints, plots"):
                    _atomic_save(self.state(), self.dir / "ckpt.pt")
        bar.close()
        self.wall += time.time() - t0  # the training loop only, as before the stage timers
        with self.timed("filmstrips, checkpoints, plots"):
            self.filmstrip(self.dir / "filmstrip_end.png")
            self.save_encoder(finished=True)
            self.plot()

    def plot(self) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        if not self.metrics:
            return
        with open(self.dir / "metrics.csv", "w", newline="") as fh:
            keys = sorted({k for m in self.metrics for k in m})
            w = csv.DictWriter(fh, keys)
            w.writeheader()
            w.writerows(self.metrics)
        keys = [k for k in ("loss", "reward", "alpha", "entropy_gap", "spread_ratio", "z_sq") if k in self.metrics[-1]]
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
        for ax, k in zip(axes[0], keys):
            pts = [(m["update"], m[k]) for m in self.metrics if k in m]
            ax.plot(*zip(*pts))
            ax.set(xlabel="encoder update", title=k)
        fig.tight_layout()
        fig.savefig(self.dir / "curves.png", dpi=80)
        plt.close(fig)


def main(argv=None) -> dict:
    cfg = parse_config(Config, argv)
    if cfg.method not in METHODS:
        sys.exit(f"error: --method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    for rule, ok in {"updates >= 1": cfg.updates >= 1, "batch_size >= 2": cfg.batch_size >= 2,
                     "temperature > 0": cfg.temperature > 0, "lr > 0": cfg.lr > 0,
                     "apt_k < batch_size": cfg.apt_k < cfg.batch_size,
                     "probe_split in (test, val)": cfg.probe_split in ("test", "val")}.items():
        if not ok:
            sys.exit(f"error: pretrain needs {rule}")
    cfg.name = cfg.name or f"{cfg.method}_s{cfg.seed}"
    out = Path("runs") / cfg.name
    if (out / "result.json").exists() and not cfg.overwrite:
        result = json.loads((out / "result.json").read_text())
        print(f"run {cfg.name} already finished: {result}; pass --overwrite (or another --name) to redo it")
        return result
    seed_everything(cfg.seed)
    print(f"seed {cfg.seed} | method {cfg.method} | device {pick_device(cfg.device)} | run {out}")
    try:
        t_load = time.perf_counter()
        run = Run(cfg)
        t_load = time.perf_counter() - t_load
        if (out / "ckpt.pt").exists() and not cfg.overwrite:
            run.load(torch.load(out / "ckpt.pt", map_location=run.device, weights_only=True))
            print(f"resuming {out} from update {run.step}")
        out.mkdir(parents=True, exist_ok=True)
        run.stage_s["load data + generator"] = run.stage_s.get("load data + generator", 0.0) + t_load
        run.train()
    except (FileNotFoundError, ValueError, FloatingPointError) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit(f"interrupted at update {run.step}; run the same command again to resume from {out}/ckpt.pt")
    result = {"method": cfg.method, "seed": cfg.seed, "updates": cfg.updates, "wall_time_s": round(run.wall, 1)}
    if cfg.probe:
        from evaluate import linear_probe
        if cfg.probe_split == "val":  # a fixed 10 % of train: settings are chosen here, never on the test split
            perm = torch.randperm(len(run.x), generator=torch.Generator().manual_seed(0))
            (xtr, ytr), (xte, yte) = [(run.x[i], run.y[i]) for i in (perm[len(perm) // 10:], perm[:len(perm) // 10])]
        else:
            (xtr, ytr), (xte, yte, _) = (run.x, run.y), load_split(cfg.data, "test")
        n = cfg.probe_images or len(xtr)
        train, test = (xtr[:n], ytr[:n]), (xte[:max(n // 5, 1)], yte[:max(n // 5, 1)])
        with run.timed("linear probe"):
            key = "linear_probe" if cfg.probe_split == "test" else "linear_probe_val"
            result[key] = round(linear_probe(run.model.encoder, train, test, device=run.device), 4)
    result["stage_s"] = {k: round(v, 1) for k, v in run.stage_s.items()}  # where the time went
    _atomic_save_text(json.dumps(result, indent=1), out / "result.json")
    (out / "ckpt.pt").unlink(missing_ok=True)
    print(f"{cfg.name}: {result}")
    return result


def _atomic_save_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


if __name__ == "__main__":
    main()
