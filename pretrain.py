"""pretrain.py — Fig. 1C: learn a representation from the latent world while an APT agent explores it.

One iteration of Palm-up (`palmup_update`, read it top to bottom):
  1. act: the SAC policy acts on detached features of the N envs' current frames (the agent, agent.py);
  2. step: the world mixes the actions with fresh noise, applies the EMA and decodes the next frames (world.py);
  3. store: the transitions (o_t, a_t, o_t+1) go to the uint8 replay buffer; o_t+1 is the true successor, also on
     the step that ends an episode, so a pair never crosses a reset;
  4. sample: a batch of consecutive pairs (o_t, o_t+1);
  5. InfoNCE: the Siamese encoder takes one step on the temporal contrastive loss of the pairs, no augmentation;
  6. APT: the reward of each pair is the kNN particle entropy of its next frame's features, detached and
     standardised per batch;
  7. SAC: `sac_updates` steps on the same batch. RL never updates the encoder.
Baselines (--method) replace steps 1-4 by a `pairs_<method>` function (PAIRS); the encoder, batch and updates stay:
  random      uniform-random actions in the same world (exploration ablated)
  genrep      static GAN samples, positives G(z, y) and G(z + sigma * eps, y) (GenRep, Jahanian et al. 2022)
  simclr      SimCLR (Chen et al. 2020) on the real training images with its standard augmentations
  supervised  cross-entropy on the real labels (the upper bound)
  none        random initialisation

    python pretrain.py                       # Palm-up on the embedded dataset, minutes on a laptop CPU
    python pretrain.py --method genrep --genrep-sigma 0.6 --seed 1
    python pretrain.py --data cifar10 --download --generator checkpoints/cifar10_gan.pt --name cifar_palmup_s0
    python pretrain.py --generator biggan-deep-128 --classes imagenette --device cuda   # docs/scale.md
    torchrun --nproc_per_node 2 pretrain.py --updates 20     # data-parallel: N processes, DDP (docs/scale.md)
Writes runs/<name>/ only (runfiles.py). Re-running the same command resumes an interrupted run from its checkpoint,
bit for bit on the CPU; a finished or interrupted run refuses a command that asks for a different experiment.
"""
import contextlib, math, sys, time
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

import runfiles
from agent import RMS, SAC, ReplayBuffer, SACConfig, apt_reward, knn_spread
from biggan import check_biggan_flags, is_biggan
from common import RunLock, parse_config, pick_device, require, run_dir, seed_everything, timed
from data import check_classes, load_split, load_splits, to_float, to_uint8
from encoder import Model, augment, info_nce
from evaluate import split_probe
from generator import load_generator
from world import LatentWorld, WorldConfig, latent_step, rollout, save_filmstrip

METHODS = ("palmup", "random", "genrep", "simclr", "supervised", "none")
MAY_CHANGE = ("updates", "checkpoint_every", "probe", "probe_images", "probe_split", "download", "overwrite", "device",
              "name")  # what a resumed run may change; anything else must match its checkpoint
REPORTING = ("checkpoint_every", "download", "overwrite", "device", "name")  # what a finished run may differ in


@dataclass
class Config:
    method: Literal[METHODS] = "palmup"  # what to pretrain with (module docstring)
    name: str = ""  # run folder runs/<name> (letters, digits, . _ -); default "<method>_s<seed>"
    data: str = "embedded"  # real images (simclr / supervised training, the final probe): "embedded", "cifar10"
    #                          or an ImageFolder path with train/ and test/
    download: bool = False  # only with --data cifar10: let torchvision download CIFAR-10 (needs internet once)
    # ---- the world (Fig. 1B; world.py): its defaults live in world.WorldConfig
    generator: str = "checkpoints/embedded_gan.pt"  # the world's generator: a checkpoint of generator.py, or
    #                                                  biggan-deep-128 / -256 / -512 (requirements-biggan.txt)
    classes: str = ""  # BigGAN only: ImageNet classes of the world, comma-separated indices or a preset name
    #                    (imagenet100, imagenette, imagewoof; biggan.py); "" = all 1000
    truncation: float = 1.0  # BigGAN only: truncation in (0, 1]; lower = cleaner, less varied images (docs/scale.md)
    image_size: int = 32  # side of the frames the buffer stores and the encoder sees; BigGAN frames are resized to it
    num_envs: int = 64  # envs stepped once per update (paper leaves it open)
    horizon: int = WorldConfig.horizon  # H: steps per episode (paper leaves it open)
    mix: float = WorldConfig.mix  # w: weight of the action against fresh noise (paper leaves it open)
    ema: float = WorldConfig.ema  # rho: EMA persistence (paper leaves it open)
    action_scale: float = WorldConfig.action_scale  # s: action gain; sqrt(3) gives uniform actions unit variance
    # ---- the agent (Fig. 1C, exploration; agent.py): the paper leaves these open, chosen in docs/exploration.md
    apt_k: int = 12  # APT: neighbours in the particle estimate (URLB's value)
    sac_gamma: float = 0.5  # SAC discount in [0, 1): APT rewards the next frame (CleanRL: 0.99; transfer.py: 0.5 too)
    sac_alpha: float = 0.1  # SAC temperature, on standardised rewards (fixed as in SAC-v1; 0.1 = DrQ / URLB's init)
    sac_autotune: bool = False  # learn alpha toward entropy -|A| (SAC-v2); on: the policy collapses, leaves the prior
    reward_norm: bool = True  # standardise each batch's APT rewards (SAC-v1: reward scale is its sensitive knob)
    sac_updates: int = 4  # SAC steps per encoder update, same batch: update-to-data ratio (REDQ / DroQ: up to 20)
    buffer_size: int = 100_000  # replay transitions (each ~6 KB: two uint8 frames)
    warmup: int = 16  # world steps of uniform-random play that fill the buffer before the first update
    # ---- the encoder (Fig. 1C, representation; encoder.py)
    encoder: Literal["cnn", "resnet18"] = "cnn"  # "cnn" (CPU default) or "resnet18" (GPU)
    width: int = 32  # cnn base width (features: 8 * width)
    proj_dim: int = 128  # projection head output (SimCLR, Chen et al. 2020: MLP head)
    temperature: float = 0.1  # InfoNCE temperature (paper leaves it open)
    updates: int = 600  # encoder updates, the same for every method
    batch_size: int = 256  # positive pairs per update (2 x batch_size images)
    lr: float = 1e-3  # Adam learning rate of encoder + head
    augment: bool = False  # add SimCLR augmentation to the temporal pairs (off: paper Fig. 1C)
    genrep_sigma: float = 0.6  # genrep: std of the latent perturbation of the positive
    # ---- the run
    seed: int = 0  # seeds python, numpy, torch and the world
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" = CUDA when present, else CPU
    checkpoint_every: int = 250  # updates between resumable checkpoints
    snapshots: str = ""  # comma-separated updates at which to also keep runs/<name>/encoder_<update>.pt
    probe: bool = True  # finish with the linear probe on `data` (evaluate.py)
    probe_images: int = 0  # 0 = the whole split; n >= 10 = only the first n train / n // 5 test images (quick checks)
    probe_split: Literal["test", "val"] = "test"  # "val": fit on 90 % of train, score the other 10 % (tune on this)
    overwrite: bool = False  # redo a finished run of the same name, or start an interrupted one over
    max_weight: float = 1e4  # divergence guard: stop when any encoder weight grows past this in absolute value
    chance_patience: int = 10  # divergence guard: stop when the loss sits at its chance value for this many logged
    #                            steps (one per 10 updates) after the first 100 updates


class Run:
    """What one run holds: the Siamese encoder and its optimiser, and what its method needs (world, buffer, agent)."""

    def __init__(self, cfg: Config, rank: int = 0, world_size: int = 1):
        self.cfg, self.dir = cfg, run_dir(cfg.name)
        self.rank, self.world_size = rank, world_size  # torchrun: this process and how many there are (distributed())
        self.device = pick_device(cfg.device)
        needs_images = cfg.method in ("simclr", "supervised") or cfg.probe
        self.x, self.y, classes = load_split(cfg.data, "train", cfg.download) if needs_images else (None, None, [])
        self.model = Model(cfg.encoder, cfg.width, cfg.proj_dim, max(len(classes), 1),
                           supervised=cfg.method == "supervised").to(self.device)
        self.net = self.model  # what the encoder step calls: the model, or its DDP wrapper (runfiles.distribute)
        self.opt = torch.optim.Adam(self.model.parameters(), cfg.lr)
        self.step, self.metrics, self.wall, self.stage_s = 0, [], 0.0, {}  # stage_s: seconds per stage (result.json)
        self.G = self.world = self.buffer = self.sac = None
        self.generator_id = runfiles.generator_id(cfg.generator) if cfg.method in ("palmup", "random", "genrep") else ""
        if self.generator_id:
            biggan = dict(classes=cfg.classes, truncation=cfg.truncation, image_size=cfg.image_size)
            self.G = load_generator(cfg.generator, self.device, **(biggan if is_biggan(cfg.generator) else {}))
            if classes and not is_biggan(cfg.generator):  # the world's class y and the data's label y must agree
                check_classes(self.G.classes, classes, f"the generator {cfg.generator}", f"--data {cfg.data}")
        if cfg.method in ("palmup", "random"):
            self.world = LatentWorld(self.G, cfg.num_envs, WorldConfig.of(cfg), seed=cfg.seed + rank)  # own envs
            self.buffer = ReplayBuffer(cfg.buffer_size, self.G.latent_dim, (3, cfg.image_size, cfg.image_size),
                                       device=self.device)
        if cfg.method == "palmup":  # --method random acts uniformly: no agent
            sac_cfg = SACConfig(gamma=cfg.sac_gamma, init_alpha=cfg.sac_alpha, autotune=cfg.sac_autotune,
                                reward_norm=cfg.reward_norm, updates_per_call=cfg.sac_updates)
            self.sac = SAC(self.model.encoder.feature_dim, self.G.latent_dim, sac_cfg, self.device)
            self.probe_rng = torch.Generator(device=self.device).manual_seed(cfg.seed)  # spread_vs_random's actions
            self.rms = RMS(device=self.device)
        if self.world is not None:
            self.obs = self.world.reset()  # (N, 3, S, S), S = cfg.image_size


# ---- Fig. 1C: one iteration of Palm-up, in the order it runs (module docstring, steps 1-7) ---------------------------
def palmup_update(run: Run) -> dict:
    cfg = run.cfg
    with timed(run.stage_s, "explore + pairs", run.device):
        action = run.sac.act(features(run, run.obs))  # 1. act on detached features: (N, d) in [-1, 1]
        log = spread_vs_random(run, action) if (run.step + 1) % 10 == 0 else {}  # logged updates: exploration
        explore(run, action)  # 2. step the world, 3. store (o_t, a_t, o_t+1)
        batch = run.buffer.sample(cfg.batch_size)  # 4. sample consecutive pairs, never across a reset
        v1, v2 = views(cfg, to_float(batch["obs"]), to_float(batch["next_obs"]))  # (B, 3, S, S) each
    with timed(run.stage_s, "encoder update", run.device):
        f, loss = encoder_step(run, v1, v2)  # 5. InfoNCE: one Adam step of the Siamese encoder; f (2B, D)
    with timed(run.stage_s, "SAC update + APT reward", run.device):
        # (B, D) each: features of o_t and o_t+1, detached (Fig. 1C). They come from the encoder's training pass (BN
        # batch statistics) while acting uses eval mode: a free reuse, at the price of a small train/eval mismatch.
        feat, next_feat = f.detach().chunk(2)
        reward = apt_reward(next_feat, cfg.apt_k, run.rms)  # 6. APT (Liu & Abbeel 2021): (B,) kNN particle entropy
        log |= run.sac.update(feat, batch["action"], reward, next_feat)  # 7. SAC; RL never updates the encoder
    return {"loss": loss, **log, "reward": reward.mean().item()}


def encoder_step(run: Run, v1: torch.Tensor, v2: torch.Tensor, labels=None) -> tuple[torch.Tensor, float]:
    """One Adam step on the temporal InfoNCE of the pairs (rows of v1, v2), or on the labels' cross-entropy (the
    supervised baseline). -> features of both views (2B, D) and the loss."""
    f, p = run.net(torch.cat([v1, v2]))  # (2B, D), (2B, proj_dim): one pass for both views (shared BN statistics)
    loss = info_nce(p[:len(v1)], p[len(v1):], run.cfg.temperature) if labels is None else F.cross_entropy(p, labels)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the loss is {loss.item()} at update {run.step}; lower --lr")
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    return f, loss.item()


def features(run: Run, obs: torch.Tensor) -> torch.Tensor:
    """Detached features (N, D) of float frames, encoder in eval mode (acting never changes BN statistics)."""
    run.model.eval()
    with torch.no_grad():
        f = run.model.encoder(obs)  # (N, D)
    run.model.train()
    if not torch.isfinite(f).all():  # one sync per update: a diverged encoder stops here, not inside SAC
        raise FloatingPointError(f"the encoder's features are NaN or inf at update {run.step}; lower --lr")
    return f


def explore(run: Run, action: torch.Tensor) -> None:
    """All envs take one step; (o_t, a_t, o_t+1) go to the buffer, o_t+1 the true successor (world.py)."""
    obs, info = run.world.step(action)
    run.buffer.add(to_uint8(run.obs), action, to_uint8(info["next_obs"]), info["y"])
    run.obs = obs


def views(cfg: Config, v1: torch.Tensor, v2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair as the encoder sees it: unchanged (Fig. 1C), or through SimCLR's augmentations (--augment ablation)."""
    return (augment(v1), augment(v2)) if cfg.augment else (v1, v2)


@torch.no_grad()
def spread_vs_random(run: Run, action: torch.Tensor) -> dict:
    """Before the envs step with `action` (N, d): how much more spread out (kNN distance in the encoder's features,
    APT's k) are the frames it leads to than those uniform-random actions lead to from the same latents with the
    same noise, and where the agent's latents go (mean ||z_t+1||^2 / d, 1 under the prior). Logged: curves.png."""
    w, eps = run.world, run.world.peek_noise()  # (N, d): the noise the step will draw
    u = torch.rand(action.shape, generator=run.probe_rng, device=run.device) * 2 - 1  # (N, d)
    z = [latent_step(w.z, a, eps, w.cfg) for a in (action, u)]  # 2 x (N, d)
    f = features(run, w.G(torch.cat(z), torch.cat([w.y, w.y])))  # (2N, D)
    k = min(run.cfg.apt_k, w.num_envs - 1)
    return {"spread_ratio": knn_spread(f[:w.num_envs], k) / knn_spread(f[w.num_envs:], k),
            "z_sq": z[0].pow(2).mean().item()}


# ---- the baselines: each replaces steps 1-4 by its own positive pairs -----------------------------------------------
def uniform_actions(run: Run) -> torch.Tensor:
    return torch.rand(run.cfg.num_envs, run.G.latent_dim, device=run.device) * 2 - 1  # (N, d) in [-1, 1]


def pairs_random(run: Run):
    """The same world, uniform-random actions: exploration ablated."""
    explore(run, uniform_actions(run))
    batch = run.buffer.sample(run.cfg.batch_size)
    return (*views(run.cfg, to_float(batch["obs"]), to_float(batch["next_obs"])), None)


@torch.no_grad()
def pairs_genrep(run: Run):
    """GenRep (Jahanian et al. 2022, Sec. 3): static samples, positives G(z, y) and G(z + sigma * eps, y)."""
    B, G = run.cfg.batch_size, run.G
    z, y = torch.randn(B, G.latent_dim, device=run.device), torch.randint(G.num_classes, (B,)).to(run.device)
    return (*views(run.cfg, G(z, y), G(z + run.cfg.genrep_sigma * torch.randn_like(z), y)), None)


def pairs_simclr(run: Run):
    """SimCLR (Chen et al. 2020) on the real training images: two augmentations of each image."""
    x = to_float(run.x[torch.randint(len(run.x), (run.cfg.batch_size,))].to(run.device))  # (B, 3, 32, 32)
    return augment(x), augment(x), None


def pairs_supervised(run: Run):
    """The upper bound: 2B real images, each with its own label, for the cross-entropy."""
    i, j = torch.randint(len(run.x), (run.cfg.batch_size,)), torch.randint(len(run.x), (run.cfg.batch_size,))
    x1, x2 = to_float(run.x[i].to(run.device)), to_float(run.x[j].to(run.device))  # (B, 3, 32, 32) each
    return x1, x2, torch.cat([run.y[i], run.y[j]]).to(run.device)  # (2B,) the labels of cat([x1, x2])


PAIRS = {"random": pairs_random, "genrep": pairs_genrep, "simclr": pairs_simclr, "supervised": pairs_supervised}


def baseline_update(run: Run) -> dict:
    with timed(run.stage_s, "explore + pairs", run.device):
        v1, v2, labels = PAIRS[run.cfg.method](run)  # (B, 3, S, S) each; labels (2B,) or None
    with timed(run.stage_s, "encoder update", run.device):
        return {"loss": encoder_step(run, v1, v2, labels)[1]}


def act(run: Run, obs: torch.Tensor) -> torch.Tensor:
    """How the run acts in the world: the SAC policy (palmup) or uniform-random actions (random)."""
    return run.sac.act(features(run, obs)) if run.sac is not None else uniform_actions(run)[:len(obs)]


# ---- the loop ---------------------------------------------------------------------------------------------------------
def train(run: Run, update=None) -> None:
    """The loop: `update` (Palm-up's iteration, or a baseline's) until cfg.updates, with logs, checkpoints, files."""
    from tqdm import tqdm
    cfg, update = run.cfg, update or (palmup_update if run.cfg.method == "palmup" else baseline_update)
    snapshots = runfiles.parse_snapshots(cfg.snapshots)
    if run.step == 0 and run.rank == 0:
        with timed(run.stage_s, "filmstrips, checkpoints, plots"):
            filmstrip(run, run.dir / "filmstrip_start.png")
    if run.step == 0 and run.buffer is not None:  # fill the buffer with uniform-random play (a resumed run has its own)
        with timed(run.stage_s, "explore + pairs", run.device):
            for _ in range(cfg.warmup):
                explore(run, uniform_actions(run))
    total = cfg.updates if cfg.method != "none" else 0
    t0 = t_start = time.time()  # t0: start of the time not yet added to run.wall
    images = 0  # images through the encoder since t_start (a resumed run starts counting anew)
    with tqdm(total=total, initial=run.step, desc=cfg.name, mininterval=1, disable=run.rank > 0) as bar:
        while run.step < total:
            log = update(run)
            run.step += 1
            images += 2 * cfg.batch_size
            bar.update()
            if run.step % 10 == 0:
                if run.world_size > 1:
                    log = runfiles.mean_over_ranks(log)  # every rank logs and checks the same numbers
                log.update(update=run.step, time_s=round(run.wall + time.time() - t0, 2))  # since the start
                run.metrics.append(log)
                bar.set_postfix(loss=f"{log['loss']:.3f}", reward=f"{log.get('reward', 0):.3f}",
                                alpha=f"{log.get('alpha', 0):.3f}", img_s=f"{images / (time.time() - t_start):.0f}")
                runfiles.check_divergence(run, log)
            if run.step in snapshots and run.rank == 0:
                runfiles.save_encoder(run, run.dir / f"encoder_{run.step}.pt", finished=True)
            if run.step % cfg.checkpoint_every == 0 and run.step < total:
                run.wall, t0 = run.wall + time.time() - t0, time.time()
                with timed(run.stage_s, "filmstrips, checkpoints, plots"):
                    runfiles.save_checkpoint(run)
    run.wall += time.time() - t0  # the training loop only
    if run.world_size > 1:
        runfiles.broadcast(run.model)  # BN running statistics too: every rank ends with what rank 0 saves
    if run.rank > 0:
        return
    with timed(run.stage_s, "filmstrips, checkpoints, plots"):
        filmstrip(run, run.dir / "filmstrip_end.png")
        runfiles.save_encoder(run, run.dir / "encoder.pt", finished=True)
        if run.sac is not None:
            runfiles.save_agent(run)
        runfiles.plot(run.metrics, run.dir)


def filmstrip(run: Run, path) -> None:
    """8 envs of the run's world for one episode, acting as the run acts: rows are envs, columns time."""
    if run.world is not None:
        world = LatentWorld(run.G, 8, run.world.cfg, seed=12345)
        save_filmstrip(rollout(world, run.cfg.horizon, policy=lambda obs: act(run, obs))[0], path)  # (H+1, 8, 3, S, S)


# ---- before and after: the flags, the probe, main ---------------------------------------------------------------------
def check(cfg: Config) -> None:
    """Every flag, before anything is loaded or written (NaN fails every comparison)."""
    run_dir(cfg.name)
    snaps = runfiles.parse_snapshots(cfg.snapshots)
    require({"updates >= 1": cfg.updates >= 1, "batch_size >= 2": cfg.batch_size >= 2, "1e-3 <= temperature <= 10":
             1e-3 <= cfg.temperature <= 10, "0 < lr <= 1": 0 < cfg.lr <= 1, "width >= 1": cfg.width >= 1,
             "proj_dim >= 1": cfg.proj_dim >= 1, "1 <= num_envs <= 65536": 1 <= cfg.num_envs <= 65536,
             "1 <= apt_k < batch_size": 1 <= cfg.apt_k < cfg.batch_size, "0 <= sac_gamma < 1": 0 <= cfg.sac_gamma < 1,
             "0 < sac_alpha < inf": 0 < cfg.sac_alpha < math.inf, "sac_updates >= 1": cfg.sac_updates >= 1,
             "buffer_size >= num_envs": cfg.buffer_size >= cfg.num_envs, "warmup >= 0": cfg.warmup >= 0,
             "0 <= genrep_sigma < inf": 0 <= cfg.genrep_sigma < math.inf, "checkpoint_every >= 1":
             cfg.checkpoint_every >= 1, "probe_images == 0 or >= 10": cfg.probe_images == 0 or cfg.probe_images >= 10,
             "snapshots in 1..updates": all(1 <= u <= cfg.updates for u in snaps), "0 < max_weight < inf":
             0 < cfg.max_weight < math.inf, "chance_patience >= 1": cfg.chance_patience >= 1,
             "0 < truncation <= 1": 0 < cfg.truncation <= 1, "8 <= image_size <= 512": 8 <= cfg.image_size <= 512},
            "pretrain")
    WorldConfig.of(cfg)  # horizon, mix, ema, action_scale: the world's own rules
    check_biggan_flags(cfg.generator, cfg.classes, cfg.truncation, cfg.image_size)


def main(argv=None) -> dict:
    cfg = parse_config(Config, argv)
    cfg.name = cfg.name or f"{cfg.method}_s{cfg.seed}"
    try:
        check(cfg)
        out = run_dir(cfg.name)
        result = runfiles.finished(cfg, out, REPORTING)
        if result is not None:
            print(f"run {cfg.name} already finished: {result}; pass --overwrite (or another --name) to redo it")
            return result
        rank, world_size = runfiles.distributed(cfg.device)
        seed_everything(cfg.seed + rank)  # rank 0 draws what a single process draws
        print(f"seed {cfg.seed} | method {cfg.method} | device {pick_device(cfg.device)} | run {out}")
        if world_size > 1:
            print(f"torchrun: {world_size} processes | per update {world_size} x {cfg.batch_size} pairs, {world_size} x "
                  f"{cfg.num_envs} envs, each rank with its own world seed and replay buffer")
        t_load = time.perf_counter()
        run = Run(cfg, rank, world_size)
        test_split = None
        if cfg.probe and cfg.probe_split == "test":  # no test/, or other classes than train/: stops here
            test_split = load_splits(cfg.data, cfg.download)[1]
        if cfg.probe and len(run.x) < 10:
            raise ValueError(f"the probe needs at least 10 training images, {cfg.data} has {len(run.x)}")
        t_load = time.perf_counter() - t_load
    except (FileNotFoundError, ValueError, OSError) as e:
        sys.exit("error: " + " ".join(str(e).splitlines()))
    except KeyboardInterrupt:
        sys.exit("interrupted while loading; nothing was written")
    try:
        with RunLock(out) if rank == 0 else contextlib.nullcontext():  # rank 0 owns the run folder
            runfiles.resume_or_start(run, MAY_CHANGE)
            if world_size > 1:
                runfiles.distribute(run)
            run.stage_s["load data + generator"] = run.stage_s.get("load data + generator", 0.0) + t_load
            try:
                train(run)
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
                    with timed(run.stage_s, "linear probe", run.device):
                        result |= split_probe(run.model.encoder, (run.x, run.y), test_split, cfg.probe_split,
                                              cfg.probe_images, run.device)
                except KeyboardInterrupt:
                    sys.exit(f"interrupted during the linear probe: {out}/encoder.pt is complete; score it with "
                             f"`python evaluate.py {out}`")
            runfiles.save_result(run, result)  # result.json, with the config and the time per stage; removes ckpt.pt
    except (FileNotFoundError, ValueError, FloatingPointError, OSError) as e:
        sys.exit("error: " + " ".join(str(e).splitlines()))
    print(f"{cfg.name}: {result}")
    return result


if __name__ == "__main__":
    main()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
