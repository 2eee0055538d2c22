r"""transfer.py — downstream RL: does a frozen pretrained encoder make control easier?

The task: goal reaching in the latent world (world.py). N episodes run in lock-step; in each one
    y ~ U{0..K-1}, z_0 ~ N(0, I), z_goal ~ N(0, I)  class prompt, start and goal, from G's own prior
    for t = 0 .. H-1:
        s_t   = [f(G(z_t, y)), f(G(z_goal, y))]     frame and goal image through a FROZEN encoder f
        a_t   ~ pi(s_t) in [-1, 1]^d                d = G's latent size: the world's action
        z_t+1 = world.latent_step(z_t, a_t, eps_t)  the world's transition, eps_t ~ N(0, I)
        r_t   = -||(z_t+1 - z_goal) W||             W W^T = M / tr M: the "metric" distance
M = E[J^T J] / P, J = dG(z, y)/dz (P pixels, mean over the prior), is the pixel metric pulled back
to the latent space (Arvanitidis et al. 2018, "Latent space oddity"), averaged: each direction
counts as much as it changes the picture. Like ||dz|| / sqrt(d) (`--distance euclid`, M = I) it is
~sqrt(2) between independent N(0, I) latents.
Not the plain ||dz||: most of z does not show in the image, so no image-based agent can see it
(with it the image agents end below uniform-random actions; docs/transfer.md measures this).
A reward on the pixels, -RMS(G(z_t+1, y) - G(z_goal, y)), is gamed: agents push z off the prior.
The agent never sees a latent, except the "oracle", whose s_t = [z_t, z_goal]. Every agent is
agent.SAC with the same settings, env steps and seeds. A curve point is the mean return (sum of
the H rewards) of the deterministic policy tanh(mean) on fixed evaluation episodes, the same for
every agent and seed (paired comparisons). References:
    uniform-random  a_t ~ U[-1, 1]^d: z_t stays ~N(0, I) (world.py), the distance ~sqrt(2)
    greedy          knows z_t and the dynamics:
                    a_t = clip((z_goal - rho z_t) / (sqrt(1 - rho^2) w s), -1, 1)
                    puts the mean of z_t+1 on the goal where |a_t| <= 1 allows; the noise is
                    what is left
World coefficients: pretraining's (world.WorldConfig), so Palm-up's encoder sees its own world;
docs/transfer.md shows they leave enough control. SAC's settings were chosen on the oracle
(docs/transfer.md). Features are standardised with the mean / std of random frames G(z, y), as in
the linear probe, so SAC's inputs have one scale whatever the encoder. The replay holds features
(s, a, r, s'), computed once (the encoder is frozen); the last step's s' is its true successor,
and agent.SAC always bootstraps (a time limit, not a terminal state).

    python transfer.py  # oracle vs random-init, 1 seed, references: minutes on one CPU thread
    python transfer.py --encoders runs/palmup_s0 runs/genrep_s0/encoder.pt random-init oracle \
        --seeds 0 1 2
    python transfer.py --generator checkpoints/cifar10_gan.pt --out runs/transfer_cifar10 \
        --encoders ...
Each (encoder, seed) result is cached in <out>/<label>_s<seed>.json: a rerun computes only the
missing rows (and those whose settings, encoder file or generator file changed).
"""
import dataclasses, math, re, sys, time
from dataclasses import dataclass, field
from typing import Literal
from pathlib import Path

import torch

from agent import SAC, SACConfig
from common import (atomic_path, check_out, check_threads, cli, parse_config, pick_device,
                    save_atomic, seed_everything, shipped, timed)
from evaluate import cached_probe, load_encoder, mean_std, random_encoder
from gan import load_generator
from world import WorldConfig, latent_step

EVAL_SEED = 12345  # the evaluation episodes: the same for every agent and seed
KEYWORDS = ("oracle", "random-init")


@dataclass
class Config:
    encoders: list[str] = field(default_factory=lambda: ["oracle", "random-init"])  # encoder.pt
    #                     files or run folders of pretrain.py, or the keywords oracle and
    #                     random-init
    seeds: list[int] = field(default_factory=lambda: [0])  # one SAC run per (encoder, seed)
    generator: str = "checkpoints/embedded_gan.pt"  # the world's generator (generator.py)
    distance: Literal["metric", "euclid"] = "metric"  # "metric": pixel-sensitivity weighted
    #                                                   (docstring);
    #                                                   "euclid": ||z - z_goal|| / sqrt(d)
    env_steps: int = 65536  # env transitions per (encoder, seed) run, warmup included
    num_envs: int = 32  # episodes in lock-step: one batched G and encoder call per step
    world: WorldConfig = field(default_factory=WorldConfig)  # pretraining's world (docstring):
    #                      --horizon, --mix, --ema, --action-scale, --ema-kind
    warmup: int = 1024  # env steps of uniform-random actions before SAC acts and learns
    updates_per_step: float = 0.0625  # sac.update calls per env transition (4,096 by default)
    batch_size: int = 128  # transitions per SAC update
    sac: SACConfig = field(metadata={"prefix": "sac_"}, default_factory=lambda: SACConfig(  # SAC
        # transfer's own settings, chosen on the oracle (docs/transfer.md); the flags are
        # --sac-hidden, --sac-gamma, --sac-alpha, ...; the fields not set here are SACConfig's
        hidden=128,  # width of the hidden layers
        gamma=0.5,  # discount: gamma 0.9 and 0 did no better on the oracle
        alpha=1e-3,  # initial temperature: 0.1 with 64 action dimensions keeps pi uniform
        lr_actor=1e-3,  # Adam lr of the actor
        lr_critic=3e-3,  # Adam lr of both critics
        autotune=True,  # learn alpha toward entropy -|A| (SAC-v2), starting at `alpha`
        reward_norm=False,  # the reward keeps its scale: minus a distance, ~sqrt(2) at random
        updates=1))  # one SAC step per sac.update call: updates_per_step sets the ratio
    eval_every: int = 8192  # env steps between learning-curve points
    eval_episodes: int = 64  # fixed evaluation episodes per curve point
    stats_frames: int = 2048  # random frames for the per-feature mean / std
    random_init_seed: int = 0  # seed of the random-init encoder (as evaluate.py's reference row)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" = CUDA when present, else CPU
    threads: int = 1  # torch CPU threads (small networks: 1 is as fast, leaves the other core
    #                   free); 0 = default
    out: str = "runs/transfer"  # <label>_s<seed>.json per run, references.json, results.md,
    #                             curves.png (not under checkpoints/)
    recompute: bool = False  # ignore cached results

    def rules(self) -> dict:
        return {"env_steps >= num_envs >= 1": self.env_steps >= self.num_envs >= 1,
                "env_steps <= 2**22 (each run keeps every transition, ~4 KB each)":
                    self.env_steps <= 2 ** 22,
                "warmup >= 0": self.warmup >= 0,
                "0 <= updates_per_step < inf": 0 <= self.updates_per_step < math.inf,
                "batch_size >= 1": self.batch_size >= 1, "eval_every >= 1": self.eval_every >= 1,
                "eval_episodes >= 1": self.eval_episodes >= 1,
                "stats_frames >= 2": self.stats_frames >= 2,
                "at least one seed": len(self.seeds) >= 1,
                "seeds in 0 .. 2**32 - 1": all(0 <= s < 2 ** 32 for s in self.seeds),
                "0 <= random_init_seed < 2**32": 0 <= self.random_init_seed < 2 ** 32,
                "at least one encoder": len(self.encoders) >= 1}


def distance_weights(G, kind: str = "metric", samples: int = 64, h: float = 0.1,
                     seed: int = 0) -> torch.Tensor:
    """-> W (d, d), the task's distance being ||(z - z_goal) W||. "euclid": W = I / sqrt(d).
    "metric": W W^T = M / tr M, M = E[J^T J] / P with J = dG(z, y)/dz by forward differences of
    step h at `samples` prior draws."""
    d, dev = G.latent_dim, next(G.parameters()).device
    if kind == "euclid":
        return torch.eye(d, device=dev) / math.sqrt(d)
    g = torch.Generator(device=dev).manual_seed(seed)
    z = torch.randn(samples, d, generator=g, device=dev)  # (n, d)
    y = torch.randint(G.num_classes, (samples,), generator=g, device=dev)  # (n,)
    with torch.no_grad():  # G in eval mode is deterministic: differences are exact up to O(h)
        x = G(z, y).flatten(1)  # (n, P)
        J = torch.stack([(G(z + h * e, y).flatten(1) - x) / h
                         for e in torch.eye(d, device=dev)], 2)  # (n, P, d)
    M = torch.einsum("npi,npj->ij", J, J) / (J.shape[0] * J.shape[1])  # (d, d) symmetric PSD
    eigval, eigvec = torch.linalg.eigh(M / M.trace())  # M / tr M = V diag(l) V^T
    return eigvec * eigval.clamp_min(0).sqrt()  # (d, d): W W^T = M / tr M


def goal_distance(z: torch.Tensor, z_goal: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """||(z - z_goal) W||: z, z_goal (N, d), W (d, d) -> (N,)."""
    return ((z - z_goal) @ weights).norm(dim=1)


class GoalReaching:
    """N episodes of the task in lock-step: world.py's prompts, prior, noise and transition
    (latent_step with the world's WorldConfig) plus a goal z_goal ~ N(0, I) per episode. Not a
    LatentWorld: a step returns the reward and decodes no frame (the oracle never needs one);
    frames() / goal_frames() decode (N, 3, 32, 32) on demand.
    reset() starts new episodes in all envs; step(action (N, d) in [-1, 1]) -> reward (N,)."""

    def __init__(self, G, num_envs: int, wc: WorldConfig, weights: torch.Tensor, seed: int):
        self.G, self.num_envs, self.wc, self.weights = G, num_envs, wc, weights
        self.device = next(G.parameters()).device
        # prompts, starts, goals and noise
        self.rng = torch.Generator(device=self.device).manual_seed(seed)
        self.reset()

    def _noise(self) -> torch.Tensor:
        return torch.randn(self.num_envs, self.G.latent_dim, generator=self.rng,
                           device=self.device)  # (N, d)

    def reset(self) -> None:
        self.y = torch.randint(self.G.num_classes, (self.num_envs,), generator=self.rng,
                               device=self.device)  # (N,)
        # (N, d) each: start and goal from the prior
        self.z, self.z_goal = self._noise(), self._noise()
        self._steps = 0

    @property
    def done(self) -> bool:
        return self._steps >= self.wc.horizon

    def step(self, action: torch.Tensor) -> torch.Tensor:
        if not action.abs().max() <= 1 + 1e-6:  # NaN fails too
            raise ValueError("GoalReaching: actions must lie in [-1, 1]")
        self.z = latent_step(self.z, action.to(self.device, torch.float32), self._noise(),
                             self.wc)  # (N, d)
        self._steps += 1
        return -goal_distance(self.z, self.z_goal, self.weights)  # (N,) the reward

    def greedy_action(self) -> torch.Tensor:
        """Reference controller that knows z and the dynamics: the mean of z_t+1 on the goal,
        clipped -> (N, d)."""
        zero = torch.zeros_like(self.z)  # (N, d)
        drift = latent_step(self.z, zero, zero, self.wc)  # (N, d): rho z_t, no action, no noise
        gain = latent_step(zero, torch.ones_like(zero), zero, self.wc)  # (N, d): a unit action's
        return ((self.z_goal - drift) / gain).clamp(-1, 1)  # (N, d)

    @torch.no_grad()
    def frames(self) -> torch.Tensor:
        return self.G(self.z, self.y)  # (N, 3, 32, 32)

    @torch.no_grad()
    def goal_frames(self) -> torch.Tensor:
        return self.G(self.z_goal, self.y)  # (N, 3, 32, 32)


class Observer:
    """What an agent sees. encoder None (oracle): s = [z_t, z_goal] (N, 2d). Otherwise
    s = [f(o_t), f(o_goal)] (N, 2D), f = the frozen encoder's features standardised with the
    statistics of random frames G(z, y)."""

    def __init__(self, encoder, G, stats_frames: int = 2048, seed: int = 0):
        self.encoder, self.dim = encoder, 2 * G.latent_dim
        if encoder is None:
            return
        encoder.eval()  # BatchNorm uses its running statistics and never updates them
        dev = next(G.parameters()).device
        g = torch.Generator(device=dev).manual_seed(seed)
        with torch.no_grad():
            f = torch.cat([encoder(G(torch.randn(256, G.latent_dim, generator=g, device=dev),
                                     torch.randint(G.num_classes, (256,), generator=g, device=dev)))
                           for _ in range(max(1, stats_frames // 256))])  # (stats_frames, D)
        # (D,) each; a dead feature stays 0
        self.mean, self.std = f.mean(0), f.std(0).clamp_min(1e-6)
        self.dim = 2 * f.shape[1]

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        return (self.encoder(images) - self.mean) / self.std  # (N, D)

    def goal(self, env: GoalReaching) -> torch.Tensor:
        """The goal half of s, computed once per episode: (N, d) or (N, D)."""
        return env.z_goal.clone() if self.encoder is None else self.features(env.goal_frames())

    def __call__(self, env: GoalReaching, goal: torch.Tensor) -> torch.Tensor:
        # (N, d) or (N, D)
        now = env.z.clone() if self.encoder is None else self.features(env.frames())
        return torch.cat([now, goal], 1)  # (N, S)


class FeatureBuffer:
    """Replay of float (s, a, r, s') rows, preallocated for the whole run (65,536 rows of 2 x 512
    features: 0.28 GB)."""

    def __init__(self, capacity: int, state_dim: int, action_dim: int, device):
        self.s, self.s2 = torch.zeros(2, capacity, state_dim, device=device)  # (C, S) each
        self.a = torch.zeros(capacity, action_dim, device=device)  # (C, A)
        self.r = torch.zeros(capacity, device=device)  # (C,)
        self.size = 0

    def add(self, s, a, r, s2) -> None:
        i = slice(self.size, self.size + len(s))  # IndexError past capacity
        self.s[i], self.a[i], self.r[i], self.s2[i] = s, a, r, s2
        self.size += len(s)

    def sample(self, batch_size: int, generator: torch.Generator):
        i = torch.randint(self.size, (batch_size,), generator=generator,
                          device=generator.device).to(self.s.device)
        return self.s[i], self.a[i], self.r[i], self.s2[i]  # (B, S), (B, A), (B,), (B, S)


def evaluate_policy(cfg: Config, G, weights, act, observer: Observer | None = None) -> dict:
    """Mean return and final distance of act(env, s) -> (E, d) on the fixed evaluation episodes."""
    env = GoalReaching(G, cfg.eval_episodes, cfg.world, weights, EVAL_SEED)
    goal, ret = observer.goal(env) if observer else None, 0.0
    while not env.done:
        r = env.step(act(env, observer(env, goal) if observer else None))  # (E,)
        ret = ret + r
    euclid = goal_distance(env.z, env.z_goal, distance_weights(G, "euclid"))  # (E,) also reported
    return {"return": ret.mean().item(), "final_distance": -r.mean().item(),
            "final_euclid": euclid.mean().item()}


def references(cfg: Config, G, weights) -> dict:
    g = torch.Generator(device=next(G.parameters()).device).manual_seed(EVAL_SEED)
    uniform = lambda env, s: (  # noqa: E731
        torch.rand(env.z.shape, generator=g, device=g.device) * 2 - 1)
    return {"uniform-random policy": evaluate_policy(cfg, G, weights, uniform),
            "greedy controller (knows z)": evaluate_policy(cfg, G, weights,
                                                           lambda env, s: env.greedy_action())}


def train_agent(cfg: Config, G, weights, encoder, seed: int) -> dict:
    """One SAC run on the task, observing through `encoder` (None = oracle) -> curve, timings."""
    seed_everything(seed)
    device, times, t_start = next(G.parameters()).device, {}, time.perf_counter()
    frozen = {k: v.clone() for k, v in encoder.state_dict().items()} if encoder is not None else {}
    with timed(times, "feature statistics"):
        observer = Observer(encoder, G, cfg.stats_frames)
    sac = SAC(observer.dim, G.latent_dim, cfg.sac, device)
    buffer = FeatureBuffer(cfg.env_steps + cfg.num_envs, observer.dim, G.latent_dim, device)
    env = GoalReaching(G, cfg.num_envs, cfg.world, weights, seed)
    sample_rng = torch.Generator(device=device).manual_seed(seed)
    goal = observer.goal(env)
    state = observer(env, goal)  # (N, S)
    steps, updates_due, updates, curve = 0, 0.0, 0, []

    def point():
        with timed(times, "evaluation"):
            curve.append({"env_steps": steps, **evaluate_policy(
                cfg, G, weights, lambda env, s: sac.act(s, deterministic=True), observer)})

    point()
    while steps < cfg.env_steps:
        with timed(times, "acting"):
            a = (sac.act(state) if steps >= cfg.warmup
                 else torch.rand(cfg.num_envs, G.latent_dim, device=device) * 2 - 1)
        with timed(times, "world + encoder"):
            r = env.step(a)  # (N,)
            next_state = observer(env, goal)  # (N, S): the true successor, same goal
            buffer.add(state, a, r, next_state)
            if env.done:
                env.reset()
                goal = observer.goal(env)
                next_state = observer(env, goal)  # (N, S): first frames of the new episodes
        state, steps = next_state, steps + cfg.num_envs
        if steps >= cfg.warmup:
            updates_due += cfg.num_envs * cfg.updates_per_step
            with timed(times, "SAC updates"):
                while updates < int(updates_due):
                    sac.update(*buffer.sample(cfg.batch_size, sample_rng))
                    updates += 1
        if steps % cfg.eval_every < cfg.num_envs or steps >= cfg.env_steps:
            point()
    if any(not torch.equal(v, frozen[k])
           for k, v in (encoder.state_dict() if encoder is not None else {}).items()):
        # weights or BN statistics: eval mode is a must
        raise RuntimeError("the frozen encoder changed during RL")
    return {"curve": curve, "final": curve[-1], "sac_updates": updates,
            "wall_time_s": round(time.perf_counter() - t_start, 1),
            "time_s": {k: round(v, 1) for k, v in times.items()}}


# ---- CLI: one cached run per (encoder, seed), a Markdown table and a learning-curve plot ---------
def label_of(spec: str) -> str:
    """oracle / random-init / runs/palmup_s0/encoder.pt -> palmup_s0 (a file name, no slashes)."""
    if spec in KEYWORDS:
        return spec
    p = Path(spec)
    name = p.parent.name if p.name == "encoder.pt" else p.name if p.is_dir() else p.stem
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "encoder"


def load_agent_encoder(spec: str, cfg: Config, device):
    """-> (encoder, or None for the oracle; identity for the cache key).
    Raises FileNotFoundError / ValueError."""
    if spec == "oracle":
        return None, {"encoder": "oracle", "name": "oracle (observes z_t, z_goal)"}
    if spec == "random-init":
        return random_encoder("cnn", 32, cfg.random_init_seed).to(device), {
            "encoder": "random-init", "seed_init": cfg.random_init_seed,
            "name": "random-init cnn-32"}
    try:
        encoder, meta = load_encoder(spec, device)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}; --encoders takes encoder.pt files, run folders, "
                                f"{' or '.join(KEYWORDS)}")
    path = Path(spec) / "encoder.pt" if Path(spec).is_dir() else Path(spec)
    return encoder, {"encoder": str(path.resolve()), "mtime_ns": path.stat().st_mtime_ns,
                     "name": f"{label_of(spec)} ({meta['config'].get('method', '?')})"}


def table(cfg: Config, rows: dict, refs: dict) -> str:
    lo, hi = (refs[k]["return"] for k in refs)  # uniform-random, greedy
    lines = [f"Goal reaching ({cfg.distance} distance, H = {cfg.world.horizon}, "
             f"{cfg.env_steps} env steps per run). "
             f"Return: sum of -distances (0 is best), mean ± std over seeds. "
             f"Gap closed: 0 % = uniform-random, 100 % = greedy\n",
             "| agent | seeds | final return | gap closed | final distance | time / seed |",
             "|---" * 6 + "|"]
    for ident, results in rows.values():
        ret = [r["final"]["return"] for r in results]
        closed = 100 * (sum(ret) / len(ret) - lo) / (hi - lo)
        lines.append(f"| {ident['name']} | {len(ret)} | {mean_std(ret, digits=2)} | "
                     f"{closed:.0f} % | "
                     f"{mean_std([r['final']['final_distance'] for r in results], digits=2)} | "
                     f"{sum(r['wall_time_s'] for r in results) / len(results):.0f} s |")
    lines += [f"| *{name}* | – | {res['return']:.2f} | – | {res['final_distance']:.2f} | – |"
              for name, res in refs.items()]
    return "\n".join(lines)


def plot(rows: dict, refs: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt, numpy as np
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for ident, results in rows.values():
        x = np.array([p["env_steps"] for p in results[0]["curve"]])
        y = np.array([[p["return"] for p in r["curve"]] for r in results])  # (seeds, points)
        line, = ax.plot(x, y.mean(0),
                        label=f"{ident['name']} ({len(results)} seed{'s' * (len(results) > 1)})")
        # seed spread: min to max
        ax.fill_between(x, y.min(0), y.max(0), color=line.get_color(), alpha=0.2)
    for (name, res), style in zip(refs.items(), (":", "--")):
        ax.axhline(res["return"], color="gray", linestyle=style, label=name)
    ax.set(xlabel="env steps", ylabel="evaluation return", title=title)
    ax.legend(fontsize=7), ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


@cli
def main(argv=None) -> dict:
    cfg = parse_config(Config, argv)
    check_threads(cfg.threads, "transfer.py")
    out = check_out(cfg.out, "dir")
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    G = load_generator(cfg.generator, device)
    labels = [label_of(s) for s in cfg.encoders]
    if len(set(labels)) < len(labels):
        raise ValueError(f"two --encoders get the same label ({labels}): "
                         "give each run its own folder name")
    # every encoder loaded (and so checked) before anything is written
    agents = {lab: load_agent_encoder(s, cfg, device) for lab, s in zip(labels, cfg.encoders)}
    out.mkdir(parents=True, exist_ok=True)
    gen = shipped(cfg.generator).resolve()
    # what changes no result
    ignore = ("device", "threads", "out", "recompute", "encoders", "seeds")
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ignore}
    settings.update(generator=str(gen), generator_mtime_ns=gen.stat().st_mtime_ns)
    print(f"generator {cfg.generator} | device {device} | agents {', '.join(labels)} | "
          f"seeds {cfg.seeds}", file=sys.stderr)
    weights = distance_weights(G, cfg.distance)  # (d, d)
    refs = cached_probe(out / "references.json", settings, lambda: references(cfg, G, weights),
                        cfg.recompute)
    refs, rows = {k: v for k, v in refs.items() if k != "key"}, {}
    try:
        for label, (encoder, ident) in agents.items():
            for seed in cfg.seeds:
                def run():
                    print(f"{label} seed {seed}: training", file=sys.stderr)
                    return train_agent(cfg, G, weights, encoder, seed)
                res = cached_probe(out / f"{label}_s{seed}.json",
                                   {**settings, **ident, "seed": seed}, run, cfg.recompute)
                print(f"{label} seed {seed}: return {res['final']['return']:.2f} | "
                      f"{res['wall_time_s']} s {res['time_s']}", file=sys.stderr)
                rows.setdefault(label, (ident, []))[1].append(res)
    except KeyboardInterrupt:
        sys.exit(f"interrupted; the finished (encoder, seed) runs are cached in {out}: "
                 "the same command goes on")
    text = table(cfg, rows, refs)
    print("\n" + text)
    save_atomic(text + "\n", out / "results.md")
    plot(rows, refs, out / "curves.png",
         f"goal reaching in the world of {Path(cfg.generator).name}")
    print(f"\nwrote {out / 'results.md'} and {out / 'curves.png'}", file=sys.stderr)
    return {"rows": rows, "references": refs}


if __name__ == "__main__":
    main()
