"""pretrain.py — Fig. 1C: learn a representation in the latent world while an APT agent explores.

One iteration of Palm-up (`palmup_update`, read it top to bottom):
  1. act: the SAC policy acts on detached features of the N envs' current frames (agent.py);
  2. step: the world mixes the actions with fresh noise, applies the EMA, decodes (world.py);
  3. store: (o_t, a_t, o_t+1) go to the uint8 replay buffer; o_t+1 is the true successor, also on
     the step that ends an episode, so a pair never crosses a reset;
  4. sample: a batch of consecutive pairs (o_t, o_t+1);
  5. InfoNCE: one step of the Siamese encoder on the temporal contrastive loss, no augmentation;
  6. APT: each pair's reward is the kNN particle entropy of its next frame's features, detached;
  7. SAC: cfg.sac.updates steps on the same batch. RL never updates the encoder.
Baselines (--method) replace steps 1-4 by their own pairs (PAIRS); encoder, batch, budget stay:
  random      uniform-random actions in the same world (exploration ablated)
  genrep      static GAN samples, positives G(z, y) and G(z + sigma eps, y) (Jahanian et al. 2022)
  simclr      SimCLR (Chen et al. 2020) on the real training images, with its augmentations
  supervised  cross-entropy on the real labels (the upper bound)
  none        random initialisation

    python pretrain.py                      # Palm-up on the embedded dataset, minutes on a CPU
    python pretrain.py --data cifar10 --download --generator checkpoints/cifar10_gan.pt
Every command trains anew in a folder of its own, runs/<method>_s<seed>[-2, -3, ...]; --resume
continues one. The harness around the loop (folders, checkpoints, resume, guards): runfiles.py.
"""
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

import runfiles
from agent import SAC, ReplayBuffer, RunningMean, SACConfig, apt_reward, knn_spread
from common import Stopwatch, cli, one_thread, parse_config, pick_device, seed_everything, timed
from data import load_split, to_float, to_uint8
from encoder import Model, augment, info_nce
from probe import split_probe
from gan import load_generator
from world import LatentWorld, WorldConfig, latent_step, rollout, save_filmstrip

METHODS = ("palmup", "random", "genrep", "simclr", "supervised", "none")
LOG_EVERY = 10  # updates between logged updates, the only ones that read numbers from the device


@dataclass
class Config:
    method: Literal[METHODS] = "palmup"  # what to pretrain with (module docstring)
    name: str = ""  # run folder runs/<name>; default "<method>_s<seed>", then -2, -3, ... if taken
    resume: str = ""  # continue this interrupted run folder (runs/<name>) with the same flags
    data: str = "embedded"  # real images: "embedded", "cifar10" or an ImageFolder (train/, test/)
    download: bool = False  # only with --data cifar10: let torchvision download it (internet once)
    # ---- the world (Fig. 1B; world.py)
    generator: str = "checkpoints/embedded_gan.pt"  # generator.py's checkpoint or biggan-deep-128
    classes: str = ""  # BigGAN only: ImageNet class indices or a preset (biggan.py); "" = all 1000
    truncation: float = 1.0  # BigGAN only: truncation in (0, 1]; lower: cleaner, less varied frames
    image_size: int = 32  # side of the frames the buffer stores and the encoder sees
    num_envs: int = 64  # envs stepped once per update (paper leaves it open)
    world: WorldConfig = field(default_factory=WorldConfig)  # --horizon, --mix, --ema, ...
    # ---- the agent (Fig. 1C, exploration; agent.py): left open by the paper (docs/exploration.md)
    apt_k: int = 12  # APT: neighbours in the particle estimate (URLB's value)
    sac: SACConfig = field(default_factory=SACConfig, metadata={"prefix": "sac_"})  # --sac-gamma
    buffer_size: int = 100_000  # replay transitions (each ~6 KB: two uint8 frames)
    warmup: int = 16  # world steps of uniform-random play that fill the buffer first
    # ---- the encoder (Fig. 1C, representation; encoder.py)
    encoder: Literal["cnn", "resnet18"] = "cnn"  # "cnn" (CPU default) or "resnet18" (GPU)
    width: int = 32  # cnn base width (features: 8 x width)
    proj_dim: int = 128  # projection head output (SimCLR's MLP head)
    temperature: float = 0.1  # InfoNCE temperature (paper leaves it open)
    updates: int = 500  # encoder updates, the same for every method (docs/pretrain.md)
    batch_size: int = 128  # positive pairs per update (2 x batch_size images; docs/pretrain.md)
    lr: float = 1e-3  # Adam learning rate of encoder + head
    augment: bool = False  # add SimCLR augmentation to the temporal pairs (off: paper Fig. 1C)
    genrep_sigma: float = 0.6  # genrep: std of the latent perturbation of the positive
    # ---- the run
    seed: int = 0  # seeds python, numpy, torch and the world
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" = CUDA when present, else CPU
    checkpoint_every: int = 250  # updates between resumable checkpoints
    snapshots: str = ""  # comma-separated updates at which to also keep encoder_<update>.pt
    probe: bool = True  # finish with the linear probe on `data` (evaluate.py)
    probe_images: int = 0  # 0 = the whole split; n >= 10: the first n train / n // 5 test images
    probe_split: Literal["test", "val"] = "test"  # "val": fit on 90 % of train, score the rest
    max_weight: float = 1e4  # divergence guard: stop when |an encoder weight| passes this
    chance_patience: int = 10  # divergence guard: stop after this many logged updates at chance

    def rules(self) -> dict:
        return runfiles.rules(self)


class Run:
    """What one run holds: the Siamese encoder and its optimiser, and what its method needs."""

    def __init__(self, cfg: Config, folder, rank: int = 0, world_size: int = 1):
        start = time.perf_counter()
        self.cfg, self.dir, self.rank, self.world_size = cfg, folder, rank, world_size
        self.device = pick_device(cfg.device)
        real = cfg.method in ("simclr", "supervised") or cfg.probe  # real images: the train split
        self.x, self.y, classes = (load_split(cfg.data, "train", cfg.download) if real
                                   else (None, None, None))
        test = cfg.probe and cfg.probe_split == "test"  # "val" never reads the test split
        self.test = load_split(cfg.data, "test", cfg.download) if test else None
        self.model = Model(cfg.encoder, cfg.width, cfg.proj_dim, len(classes or [0]),
                           supervised=cfg.method == "supervised").to(self.device)
        self.net = self.model  # what the encoder step calls: the model, or its DDP wrapper (ddp.py)
        self.opt = torch.optim.Adam(self.model.parameters(), cfg.lr)
        self.step, self.metrics, self.wall, self.stage_s = 0, [], 0.0, {}  # stage_s: s per stage
        self.watch = Stopwatch(self.stage_s, self.device, LOG_EVERY)
        self.G = self.world = self.buffer = self.sac = None
        if cfg.method in ("palmup", "random", "genrep"):
            self.G = load_generator(cfg.generator, self.device, cfg.classes, cfg.truncation,
                                    cfg.image_size)
        if cfg.method in ("palmup", "random"):
            self.world = LatentWorld(self.G, cfg.num_envs, cfg.world, seed=cfg.seed + rank)
            frame = (3, cfg.image_size, cfg.image_size)  # S = cfg.image_size
            self.buffer = ReplayBuffer(cfg.buffer_size, self.G.latent_dim, frame, self.device)
            self.obs = self.world.reset()  # (N, 3, S, S)
        if cfg.method == "palmup":  # --method random acts uniformly: no agent
            self.sac = SAC(self.model.encoder.feature_dim, self.G.latent_dim, cfg.sac, self.device)
            self.knn_mean = RunningMean(self.device)  # APT's normaliser of kNN distances
            self.spread_rng = torch.Generator(self.device).manual_seed(cfg.seed)  # spread_vs_random
        runfiles.check_data(self, classes)  # class lists agree; enough images for the probe
        self.stage_s["load data + generator"] = time.perf_counter() - start


# ---- Fig. 1C: one iteration of Palm-up, in the order it runs (module docstring, steps 1-7) -----
def palmup_update(run: Run, logged: bool) -> dict:
    cfg = run.cfg
    with run.watch("explore + pairs"):
        action = run.sac.act(features(run, run.obs))  # 1. act on detached features: (N, d)
        log = spread_vs_random(run, action) if logged else {}  # where it goes vs uniform actions
        explore(run, action)  # 2. step the world, 3. store (o_t, a_t, o_t+1)
        batch = run.buffer.sample(cfg.batch_size)  # 4. consecutive pairs, never across a reset
        v1, v2 = views(cfg, to_float(batch["obs"]), to_float(batch["next_obs"]))  # (B, 3, S, S)
    with run.watch("encoder update"):
        f, loss = encoder_step(run, v1, v2)  # 5. InfoNCE: one step of the Siamese encoder; (2B, D)
    with run.watch("SAC update + APT reward"), one_thread():  # small ops: one thread (common.py)
        # (B, D) each: features of o_t and o_t+1, detached (Fig. 1C). They come from the encoder's
        # training pass (BN batch statistics) while acting uses eval mode: a free reuse.
        feat, next_feat = f.detach().chunk(2)
        reward = apt_reward(next_feat, cfg.apt_k, run.knn_mean)  # 6. APT: (B,) kNN particle entropy
        log |= run.sac.update(feat, batch["action"], reward, next_feat)  # 7. SAC; never the encoder
    if logged:
        log |= run.sac.diagnostics()
    return {"loss": loss, "reward": reward.mean(), **log}  # () tensors, read on logged updates only


def encoder_step(run: Run, v1: torch.Tensor, v2: torch.Tensor, labels=None):
    """One Adam step on the temporal InfoNCE of the pairs (rows of v1, v2), or on the labels'
    cross-entropy (the supervised baseline) -> features of both views (2B, D), the loss ()."""
    f, p = run.net(torch.cat([v1, v2]))  # (2B, D), (2B, P): one pass for both views (shared BN)
    if labels is None:
        loss = info_nce(p[:len(v1)], p[len(v1):], run.cfg.temperature)
    else:
        loss = F.cross_entropy(p, labels)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    return f, loss.detach()


def features(run: Run, obs: torch.Tensor) -> torch.Tensor:
    """Detached features (N, D) of float frames, the encoder in eval mode (acting leaves BN be)."""
    run.model.eval()
    with torch.no_grad():
        f = run.model.encoder(obs)  # (N, D)
    run.model.train()
    return f


def explore(run: Run, action: torch.Tensor) -> None:
    """All envs take one step; (o_t, a_t, o_t+1) go to the buffer, o_t+1 the true successor."""
    obs, info = run.world.step(action)
    run.buffer.add(to_uint8(run.obs), action, to_uint8(info["next_obs"]), info["y"])
    run.obs = obs


def views(cfg: Config, v1: torch.Tensor, v2: torch.Tensor):
    """The pair as the encoder sees it: unchanged (Fig. 1C), or augmented (--augment ablation)."""
    return (augment(v1), augment(v2)) if cfg.augment else (v1, v2)


@torch.no_grad()
def spread_vs_random(run: Run, action: torch.Tensor) -> dict:
    """Before the envs step with `action` (N, d): how much more spread out (kNN distance in the
    encoder's features, APT's k) are the frames it leads to than those of uniform actions from the
    same latents with the same noise; and where the agent's latents go (mean ||z||^2 / d, 1 under
    the prior). Logged: curves.png."""
    w, eps = run.world, run.world.peek_noise()  # (N, d): the noise the step will draw
    uniform = torch.rand(action.shape, generator=run.spread_rng, device=run.device) * 2 - 1
    z = [latent_step(w.z, a, eps, w.cfg) for a in (action, uniform)]  # 2 x (N, d)
    f = features(run, w.G(torch.cat(z), torch.cat([w.y, w.y])))  # (2N, D)
    k, n = min(run.cfg.apt_k, w.num_envs - 1), w.num_envs
    return {"spread_ratio": knn_spread(f[:n], k) / knn_spread(f[n:], k), "z_sq": z[0].pow(2).mean()}


# ---- the baselines: each replaces steps 1-4 by its own positive pairs -------------------------
def uniform_actions(run: Run) -> torch.Tensor:
    return torch.rand(run.cfg.num_envs, run.G.latent_dim, device=run.device) * 2 - 1  # (N, d)


def pairs_random(run: Run):
    """The same world, uniform-random actions: exploration ablated."""
    explore(run, uniform_actions(run))
    batch = run.buffer.sample(run.cfg.batch_size)
    return (*views(run.cfg, to_float(batch["obs"]), to_float(batch["next_obs"])), None)


@torch.no_grad()
def pairs_genrep(run: Run):
    """GenRep (Jahanian et al. 2022, Sec. 3): static samples; positives G(z, y), G(z + s eps, y)"""
    B, G = run.cfg.batch_size, run.G
    z = torch.randn(B, G.latent_dim, device=run.device)  # (B, d)
    y = torch.randint(G.num_classes, (B,)).to(run.device)  # (B,)
    return (*views(run.cfg, G(z, y), G(z + run.cfg.genrep_sigma * torch.randn_like(z), y)), None)


def pairs_simclr(run: Run):
    """SimCLR (Chen et al. 2020) on the real training images: two augmentations of each image."""
    i = torch.randint(len(run.x), (run.cfg.batch_size,))  # (B,)
    x = to_float(run.x[i].to(run.device))  # (B, 3, S, S)
    return augment(x), augment(x), None


def pairs_supervised(run: Run):
    """The upper bound: 2B real images, each with its own label, for the cross-entropy."""
    i, j = (torch.randint(len(run.x), (run.cfg.batch_size,)) for _ in range(2))
    x1, x2 = to_float(run.x[i].to(run.device)), to_float(run.x[j].to(run.device))  # (B, 3, S, S)
    return x1, x2, torch.cat([run.y[i], run.y[j]]).to(run.device)  # (2B,) labels of cat([x1, x2])


PAIRS = {"random": pairs_random, "genrep": pairs_genrep, "simclr": pairs_simclr,
         "supervised": pairs_supervised}


def baseline_update(run: Run, logged: bool) -> dict:
    with run.watch("explore + pairs"):
        v1, v2, labels = PAIRS[run.cfg.method](run)  # (B, 3, S, S) each; labels (2B,) or None
    with run.watch("encoder update"):
        return {"loss": encoder_step(run, v1, v2, labels)[1]}


# ---- the loop -------------------------------------------------------------------------------
def train(run: Run, update=None) -> None:
    """Palm-up's iteration (or a baseline's, or `update`) until cfg.updates; logs, checkpoints and
    the guard against divergence are runfiles.py's, at the loop's edges."""
    from tqdm import tqdm
    cfg = run.cfg
    update = update or (palmup_update if cfg.method == "palmup" else baseline_update)
    total = cfg.updates if cfg.method != "none" else 0
    if run.step == 0 and run.world is not None:  # a resumed run has its buffer already
        with timed(run.stage_s, "filmstrips, checkpoints, plots", run.device):
            filmstrip(run, "filmstrip_start.png")
        with timed(run.stage_s, "explore + pairs", run.device):
            for _ in range(cfg.warmup):  # fill the buffer with uniform-random play
                explore(run, uniform_actions(run))
    bar = tqdm(total=total, initial=run.step, desc=run.dir.name, mininterval=1, disable=run.rank)
    run.started = time.time()  # the run's wall time counts the loop only
    while run.step < total:
        logged = (run.step + 1) % LOG_EVERY == 0
        run.watch.sampling = logged
        log = update(run, logged)
        run.step += 1
        bar.update()
        if logged:
            runfiles.log_update(run, log, bar)  # one read from the device; the divergence guard
        runfiles.keep_progress(run)  # snapshots and resumable checkpoints, when due
    bar.close()
    run.wall += time.time() - run.started
    if run.world_size > 1:
        runfiles.end_distributed(run)
    if run.rank == 0:
        with timed(run.stage_s, "filmstrips, checkpoints, plots", run.device):
            if run.world is not None:
                filmstrip(run, "filmstrip_end.png")
            runfiles.save_finished(run)  # encoder.pt, agent.pt, metrics.csv, curves.png


def filmstrip(run: Run, name: str) -> None:
    """8 envs of the run's world for one episode, acting as the run acts (the SAC policy, or
    uniform-random actions): rows are envs, columns time."""
    world = LatentWorld(run.G, 8, run.world.cfg, seed=12345)
    policy = (lambda obs: run.sac.act(features(run, obs))) if run.sac is not None else None
    frames = rollout(world, run.cfg.world.horizon, policy=policy)[0]  # (H + 1, 8, 3, S, S)
    save_filmstrip(frames, run.dir / name)


@cli
def main(argv=None) -> dict:
    cfg = parse_config(Config, argv)  # every flag checked here, once
    rank, world_size = runfiles.distributed(cfg.device)
    seed_everything(cfg.seed + rank)  # rank 0 draws what a single process draws
    run = Run(cfg, runfiles.choose_folder(cfg, rank), rank, world_size)  # bad input stops here
    with runfiles.open_run(run, argv):  # the folder, its lock, resume, Ctrl-C's --resume line
        train(run)
        result = {}
        if cfg.probe and rank == 0:  # the frozen encoder's linear probe on real images (probe.py)
            with timed(run.stage_s, "linear probe", run.device):
                result = split_probe(run.model.encoder, *runfiles.probe_data(run), cfg.probe_split,
                                     cfg.probe_images, run.device)
        result = runfiles.save_result(run, result)
    return result


if __name__ == "__main__":
    main()
