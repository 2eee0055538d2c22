"""benchmarks/exploration.py — does the APT agent visit more diverse observations than a uniform-random policy?

Trains Palm-up (pretrain.py's Run, default settings) for `updates` encoder/SAC updates, then rolls out two
policies in fresh copies of the same world (same seed, so the same class prompts and the same noise):
  * the trained SAC policy, acting on its encoder's features exactly as during exploration (stochastic);
  * the uniform-random policy (what `--method random` explores with).
Each visits episodes x num_envs x horizon frames. Diversity of the visited frames is the APT statistic itself,
the mean distance to the k nearest other frames (APT, Liu & Abbeel 2021), measured in three fixed spaces:
pixels, a random-init encoder that neither run trained, and the agent's own encoder (the space it is rewarded
in). A ratio > 1 means the agent's frames are more spread out than the random policy's.

    python benchmarks/exploration.py                 # embedded world, ~5 min on 2 CPU cores
    python benchmarks/exploration.py --generator checkpoints/cifar10_gan.pt --data cifar10
"""
import os, sys, time
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import make_encoder, parse_config, seed_everything  # noqa: E402
from world import LatentWorld  # noqa: E402
import pretrain  # noqa: E402


@dataclass
class Config:
    generator: str = "checkpoints/embedded_gan.pt"  # the world's generator
    data: str = "embedded"  # only names the run; exploration never reads real images
    updates: int = 300  # Palm-up updates before the comparison
    episodes: int = 4  # episodes per env in each rollout
    k: int = 12  # neighbours of the diversity statistic (APT's k)
    seed: int = 0  # seeds the training run and the rollouts' world
    device: str = "auto"  # "auto" = CUDA when present, else CPU


def knn_distance(x: torch.Tensor, k: int) -> float:
    """Mean distance from each row of x (n, D) to its k nearest other rows."""
    d = torch.cdist(x, x)  # (n, n)
    d.fill_diagonal_(float("inf"))  # a frame is not its own neighbour
    return d.topk(k, dim=1, largest=False).values.mean().item()


@torch.no_grad()
def rollout(run: "pretrain.Run", policy: str, cfg: Config) -> torch.Tensor:
    """-> all frames visited by `policy` ("agent" or "random"): (episodes * H * N, 3, 32, 32)."""
    pc = run.cfg
    world = LatentWorld(run.G, pc.num_envs, pc.horizon, pc.mix, pc.ema, pc.action_scale, seed=cfg.seed + 1000)
    g = torch.Generator(device=run.device).manual_seed(cfg.seed)
    obs, frames = world.reset(), []
    for _ in range(cfg.episodes * pc.horizon):
        if policy == "agent":
            a = run.sac.act(run.features(obs))  # (N, d)
        else:
            a = torch.rand(pc.num_envs, run.G.latent_dim, generator=g, device=run.device) * 2 - 1  # (N, d)
        obs, info = world.step(a)
        frames.append(info["next_obs"])
    return torch.cat(frames)  # (T * N, 3, 32, 32)


def main(argv=None) -> None:
    cfg = parse_config(Config, argv)
    start = time.time()
    pc = pretrain.Config(name=f"exploration_s{cfg.seed}", generator=cfg.generator, data=cfg.data,
                         updates=cfg.updates, seed=cfg.seed, device=cfg.device, probe=False, overwrite=True)
    seed_everything(cfg.seed)
    run = pretrain.Run(pc)
    run.dir.mkdir(parents=True, exist_ok=True)
    run.train()  # writes runs/exploration_s<seed>/ (filmstrips, curves)
    print(f"trained Palm-up for {cfg.updates} updates in {time.time() - start:.0f} s")
    visited = {p: rollout(run, p, cfg) for p in ("agent", "random")}
    fixed = make_encoder("cnn", 32).to(run.device).eval()  # random-init: a space neither run shaped
    run.model.eval()
    spaces = {"pixels": lambda x: x.flatten(1), "random-init cnn-32 features": fixed,
              "agent's encoder features": run.model.encoder}
    n = len(visited["agent"])
    print(f"\n{n} frames per policy ({cfg.episodes} episodes x {pc.num_envs} envs x {pc.horizon} steps); "
          f"mean distance to the {cfg.k} nearest other frames:\n")
    print("| space | APT agent | uniform random | ratio agent / random |\n|---|---:|---:|---:|")
    with torch.no_grad():
        for name, f in spaces.items():
            d = {p: knn_distance(torch.cat([f(x[i:i + 512]) for i in range(0, n, 512)]), cfg.k)
                 for p, x in visited.items()}
            print(f"| {name} | {d['agent']:.3f} | {d['random']:.3f} | {d['agent'] / d['random']:.2f} |")
    print(f"\ntotal {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
