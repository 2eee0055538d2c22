"""benchmarks/exploration.py — how much more diverse are the APT agent's frames than a uniform-random policy's,
and how much could any explorer gain in this world?

For each seed: trains Palm-up (a pretrain.Run, through pretrain.train with pretrain.palmup_update, default
settings) for `updates` encoder/SAC updates, then rolls out these explorers in fresh copies of the same world
(same world seed: the same class prompts and noise), each for episodes x num_envs x horizon env steps:
  random         uniform-random actions on [-1, 1]^d (what `--method random` explores with; the reference)
  agent          the trained SAC policy, acting on its encoder's features as during exploration (stochastic)
  corners        uniform-random signs, a in {-1, 1}^d: the most action energy the world accepts, no intelligence;
                 it shows what diversity leaving the prior alone buys (E[a^2] = 1 instead of 1/3)
  greedy         an analysis-only upper bound: each step's actions are chosen by `greedy_steps` steps of projected
                 gradient ascent on APT's batch objective (the mean of log(1 + mean kNN distance) of the new frames'
                 features among themselves and `greedy_reference` recently visited frames), differentiated through
                 world.latent_step -> G -> the agent's encoder; the world's noise for the step is known to it
  greedy-prior   the same, with each step's latent also kept inside the ball ||z_t+1||^2 <= d (the prior's mean
                 squared norm): the gain an explorer can buy while its latents stay on the prior's scale
  greedy-blind   (optional) greedy-prior optimised against an independent draw of the world's noise, as a policy
                 that cannot see the noise would have to
  agent-prior    (optional) the agent's actions, pulled back into the same ball: its gain without leaving the prior
Diversity is APT's statistic, the mean distance to the k nearest other frames, in pixels, in a random-init encoder
that no run trained, and in the agent's own encoder (the space it is rewarded in); ratios are to `random`.
Where the latents go: mean ||z||^2 / d (1 under the prior N(0, I)) and the share of visited latents outside the
prior's central 99 % shell (chi-square quantiles 0.5 % and 99.5 %; 1 % under the prior).

    python benchmarks/exploration.py                      # 3 seeds, embedded world: 16 min on a 2-core x86 CPU
    python benchmarks/exploration.py --seeds 0 --updates 100  # a quick look
    python benchmarks/exploration.py --cost --generator checkpoints/cifar10_gan.pt   # what a greedy world would cost

--train: does the policy matter to the encoder? The random-policy world's loop (pretrain.py --method random, default
64 envs) with its actions chosen either uniformly (`random`) or by `greedy-prior` against the encoder being trained,
--updates each, paired by seed (same world seed, same first guesses); each encoder probed on the validation split
(fit on 90 % of train, score the other 10 %) and on the test split. Runs go to runs/explorer_<name>_s<seed>/;
a finished one is read back, not redone.

    python benchmarks/exploration.py --train --updates 600 --data cifar10 --generator checkpoints/cifar10_gan.pt
"""
import dataclasses, json, math, os, shlex, sys, time
from dataclasses import dataclass
from typing import Literal
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from agent import knn_spread  # noqa: E402
from common import mean_std, parse_config, run_dir, save_atomic, seed_everything, timed  # noqa: E402
from data import to_float  # noqa: E402
from encoder import make_encoder  # noqa: E402
from world import LatentWorld, WorldConfig, latent_step  # noqa: E402
import pretrain  # noqa: E402

EXPLORERS = ("random", "agent", "corners", "greedy", "greedy-prior", "greedy-blind", "agent-prior")


@dataclass
class Config:
    generator: str = "checkpoints/embedded_gan.pt"  # the world's generator
    data: str = "embedded"  # only names the run; exploration never reads real images
    updates: int = 300  # Palm-up updates before the comparison
    episodes: int = 4  # episodes per env in each rollout
    k: int = 12  # neighbours of the diversity statistic (APT's k)
    seeds: str = "0,1,2"  # comma-separated: one trained agent and one set of rollouts per seed
    greedy_steps: int = 5  # greedy: gradient-ascent steps per env step (analysis only)
    greedy_lr: float = 0.5  # greedy: Adam step size on the actions in [-1, 1] (analysis only)
    greedy_reference: int = 192  # greedy: recently visited frames in its kNN batch (num_envs + this = APT's batch)
    extra: str = ""  # more pretrain.py flags for the agent's training run, e.g. "--sac-alpha 0.03"
    explorers: str = "random,agent,corners,greedy,greedy-prior"  # which to roll out (+ greedy-blind, agent-prior)
    curve_every: int = 50  # learning curve: agent vs random (1 episode each) every this many updates
    jobs: int = 2  # seeds trained in parallel processes of one torch thread each (2 fills a 2-core CPU)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" = CUDA when present, else CPU
    cost: bool = False  # only time one greedy step against one update of the random-policy world, then exit
    cost_envs: int = 512  # --cost: envs stepped per update (512: the equal-budget CIFAR-10 comparison)
    train: bool = False  # pretrain an encoder with each of --train-explorers as the data source, then probe it
    train_explorers: str = "random,greedy-prior"  # --train: the explorers that choose the world's actions


def apt_objective(new: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """APT's batch objective for the new frames: mean over rows of new (n, D) of log(1 + mean distance to their k
    nearest neighbours among the other new rows and the reference rows (m, D)). Differentiable in `new`."""
    n = len(new)
    d = torch.cdist(new, torch.cat([new, reference]))  # (n, n + m)
    d = d + torch.cat([torch.diag(torch.full((n,), float("inf"), device=new.device)),
                       torch.zeros(n, len(reference), device=new.device)], dim=1)  # (n, n + m): no self-neighbour
    return torch.log1p(d.topk(k, dim=1, largest=False).values.mean(1)).mean()  # () APT Eq. 6, c = 1


def greedy_actions(world: LatentWorld, encoder, reference: torch.Tensor, start: torch.Tensor, steps: int, lr: float,
                   k: int, max_sq_norm: float | None = None, knows_noise: bool = True
                   ) -> tuple[torch.Tensor, list[float]]:
    """Projected gradient ascent of apt_objective over this step's actions, through latent_step -> G -> encoder.
    knows_noise: the world's next noise is read with world.peek_noise() (world.step(actions) then draws the
    same); else the explorer optimises against an independent draw of it, as a policy would have to.
    start (N, d) in [-1, 1]: the first guess; max_sq_norm: also keep ||z_t+1||^2 <= it per env (on the prior's
    scale). -> actions (N, d) in [-1, 1], the objective before each step and after the last (steps + 1 floats)."""
    eps = world.peek_noise()  # (N, d): exactly the noise world.step will draw next
    if not knows_noise:
        eps = torch.randn_like(eps)  # (N, d) an independent draw (the global stream, not the world's)
    step = lambda a: latent_step(world.z, a, eps, world.cfg)  # noqa: E731
    gain = step(torch.ones_like(eps))[0, 0] - step(torch.zeros_like(eps))[0, 0]  # () dz_t+1 / da (a scalar)

    def project(a):  # onto the cube, and (alternating projections) onto the ball ||z_t+1||^2 <= max_sq_norm
        for _ in range(50 if max_sq_norm is not None else 1):
            a = a.clamp(-1, 1)
            if max_sq_norm is not None:
                z0 = step(torch.zeros_like(a))  # (N, d): z_t+1 at a = 0
                z = z0 + gain * a  # (N, d)
                shrink = (max_sq_norm / z.pow(2).sum(1, keepdim=True).clamp_min(1e-12)).clamp(max=1).sqrt()  # (N, 1)
                a = (z * shrink - z0) / gain
        return a.clamp(-1, 1)  # (N, d)

    if steps == 0:
        return project(start.clone()), []
    a = project(start.clone()).requires_grad_(True)
    opt = torch.optim.Adam([a], lr=lr)
    trace = []
    for i in range(steps + 1):
        objective = apt_objective(encoder(world.G(step(a), world.y)), reference, k)  # ()
        trace.append(objective.item())
        if i == steps:
            break
        opt.zero_grad(set_to_none=True)
        (-objective).backward()
        opt.step()
        with torch.no_grad():
            a.copy_(project(a))
    return a.detach(), trace


def rollout(run: "pretrain.Run", explorer: str, cfg: Config, seed: int) -> dict:
    """-> dict(frames (T*N, 3, 32, 32), latents (T*N, d), objective (the greedy explorers' mean gain over inner
    steps, else nan)) of every successor frame `explorer` visited."""
    pc, G, dev = run.cfg, run.G, run.device
    world = LatentWorld(G, pc.num_envs, WorldConfig.of(pc), seed=seed + 1000)
    g = torch.Generator(device=dev).manual_seed(seed)
    encoder = run.model.encoder.eval()
    obs, frames, latents, gains = world.reset(), [], [], []
    seen = torch.empty(0, encoder.feature_dim, device=dev)  # (m, D): features of the frames visited so far
    for _ in range(cfg.episodes * pc.horizon):
        u = torch.rand(pc.num_envs, G.latent_dim, generator=g, device=dev) * 2 - 1  # (N, d) uniform on [-1, 1]
        if explorer.startswith("agent"):
            with torch.no_grad():
                a = run.sac.act(pretrain.features(run, obs))  # (N, d)
            if explorer == "agent-prior":  # the agent's actions, pulled back into ||z_t+1||^2 <= d (no ascent step)
                a, _ = greedy_actions(world, encoder, seen, a, 0, cfg.greedy_lr, cfg.k, float(G.latent_dim))
        elif explorer == "corners":
            a = torch.sign(u)  # (N, d) in {-1, 1}
        elif explorer.startswith("greedy"):
            ref = seen[-cfg.greedy_reference:]  # the most recent frames, as in a replay batch of a young buffer
            if len(ref) < cfg.k:  # the first step: no history yet, random actions
                a, trace = u, [0.0, 0.0]
            else:
                budget = None if explorer == "greedy" else float(G.latent_dim)  # ||z_t+1||^2 <= d: E under the prior
                a, trace = greedy_actions(world, encoder, ref, u, cfg.greedy_steps, cfg.greedy_lr, cfg.k, budget,
                                          knows_noise=explorer != "greedy-blind")
            gains.append(trace[-1] - trace[0])
        else:
            a = u
        obs, info = world.step(a)
        frames.append(info["next_obs"])
        latents.append(info["z"])
        if explorer.startswith("greedy"):
            with torch.no_grad():
                seen = torch.cat([seen, encoder.eval()(info["next_obs"])])[-cfg.greedy_reference:]  # (m, D)
    return {"frames": torch.cat(frames), "latents": torch.cat(latents),
            "objective": sum(gains) / len(gains) if gains else float("nan")}  # (T*N, 3, 32, 32), (T*N, d)


def chi2_quantile(p: float, d: int) -> float:
    """The p-quantile of the chi-square distribution with d degrees of freedom (bisection on its CDF)."""
    lo, hi = 0.0, d + 20.0 * math.sqrt(2 * d) + 20
    for _ in range(100):
        mid = (lo + hi) / 2
        half = lambda x: torch.tensor(x / 2, dtype=torch.float64)  # noqa: E731
        cdf = torch.special.gammainc(half(d), half(mid))  # the regularised lower incomplete gamma P(d/2, x/2)
        lo, hi = (mid, hi) if cdf.item() < p else (lo, mid)
    return (lo + hi) / 2


def latent_stats(z: torch.Tensor) -> tuple[float, float]:
    """z (n, d) -> (mean ||z||^2 / d, share of rows outside the prior's central 99 % shell)."""
    d = z.shape[1]
    sq = z.pow(2).sum(1)  # (n,)
    lo, hi = chi2_quantile(0.005, d), chi2_quantile(0.995, d)
    return (sq.mean() / d).item(), ((sq < lo) | (sq > hi)).float().mean().item()


@torch.no_grad()
def measure(run: "pretrain.Run", visited: dict, k: int) -> dict:
    """-> {explorer: {column: value}}: kNN diversity in three spaces and the latent statistics."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same random-init encoder for every seed: a space no run shaped
        fixed = make_encoder("cnn", 32).to(run.device).eval()
    spaces = {"pixels": lambda x: x.flatten(1), "random-init": fixed, "own": run.model.encoder.eval()}
    out = {}
    for name, v in visited.items():
        n = len(v["frames"])
        row = {s: knn_spread(torch.cat([f(v["frames"][i:i + 512]) for i in range(0, n, 512)]), k)
               for s, f in spaces.items()}  # batches of 512 frames: bounded memory
        row["z2"], row["outside"] = latent_stats(v["latents"])
        row["objective"] = v["objective"]
        out[name] = row
    return out


def run_seed(cfg: Config, seed: int, explorers: list[str], threads: int = 0) -> dict:
    """Train one agent and roll out the explorers -> {explorer: {column: value}} (a worker of main)."""
    if threads:
        torch.set_num_threads(threads)
    t = time.time()
    pc = dataclasses.replace(parse_config(pretrain.Config, shlex.split(cfg.extra)), name=f"exploration_s{seed}",
                             generator=cfg.generator, data=cfg.data, updates=cfg.updates, seed=seed, device=cfg.device,
                             probe=False, overwrite=True)
    seed_everything(seed)
    run = pretrain.Run(pc)
    run.dir.mkdir(parents=True, exist_ok=True)
    curve = []
    short = dataclasses.replace(cfg, episodes=1)

    def update_and_measure() -> dict:  # the learning curve: agent vs random rollouts of one episode, in fresh worlds
        log = pretrain.palmup_update(run)
        if (run.step + 1) % cfg.curve_every == 0:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):  # training's random stream stays untouched
                r = measure(run, {e: rollout(run, e, short, seed) for e in ("random", "agent")}, cfg.k)
            curve.append((run.step + 1, r["agent"]["own"] / r["random"]["own"], r["agent"]["z2"]))
            run.model.train()
        return log

    pretrain.train(run, update_and_measure)  # writes runs/exploration_s<seed>/ (filmstrips, metrics.csv, curves.png)
    print(f"seed {seed}: trained Palm-up for {cfg.updates} updates in {time.time() - t:.0f} s", flush=True)
    run.model.encoder.requires_grad_(False)  # the greedy explorers differentiate through it, never train it
    result = measure(run, {e: rollout(run, e, cfg, seed) for e in explorers}, cfg.k)
    result["curve"] = curve
    for e, r in result.items():
        if e == "curve":
            continue
        print(f"  seed {seed} {e:13s} pixels {r['pixels']:.3f} random-init {r['random-init']:.4f} own {r['own']:.3f} "
              f"|z|^2/d {r['z2']:.3f} outside {r['outside']:.3f} objective gain {r['objective']:.3f}", flush=True)
    return result


def cost(cfg: Config, reps: int = 3) -> None:
    """Median seconds of one greedy-prior action choice for cfg.cost_envs envs (what a greedy-explorer world would add
    to each update) and of one whole update of the random-policy world (pretrain.py --method random)."""
    pc = dataclasses.replace(parse_config(pretrain.Config, shlex.split(cfg.extra)), name="exploration_cost",
                             method="random", generator=cfg.generator, data=cfg.data, num_envs=cfg.cost_envs,
                             device=cfg.device, probe=False)
    seed_everything(0)
    run = pretrain.Run(pc)
    for _ in range(pc.warmup):
        pretrain.explore(run, pretrain.act(run, run.obs))
    encoder, d = run.model.encoder, float(run.G.latent_dim)

    def greedy():
        reference = pretrain.features(run, to_float(run.buffer.next_obs[:cfg.greedy_reference]))  # (m, D)
        encoder.eval()
        greedy_actions(run.world, encoder, reference, pretrain.act(run, run.obs), cfg.greedy_steps, cfg.greedy_lr, cfg.k, d)
        encoder.train()

    times = {}
    for name, fn in (("random-policy world, one update", lambda: pretrain.baseline_update(run)),
                     (f"greedy-prior action choice, {cfg.greedy_steps} steps", greedy)):
        fn()  # warm-up
        runs = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        times[name] = sorted(runs)[reps // 2]
    for name, t in times.items():
        print(f"{name} ({cfg.cost_envs} envs, {torch.get_num_threads()} threads): {t:.2f} s")
    base, extra = times.values()
    print(f"a greedy-explorer world would make each update {(base + extra) / base:.1f}x as long")


def train_with(cfg: Config, explorer: str, seed: int, threads: int = 0) -> dict:
    """Pretrain an encoder in the random-policy world's loop with `explorer` choosing every step's actions, probe
    it on the validation and the test split -> {"val": %, "test": %, "wall_s": s} (a worker of train_table)."""
    if threads:
        torch.set_num_threads(threads)
    from cifar import probe_snapshot  # benchmarks/cifar.py: the budget curve's probes, validation and test
    from data import load_splits
    pc = dataclasses.replace(parse_config(pretrain.Config, shlex.split(cfg.extra)), method="random", seed=seed,
                             name=f"explorer_{explorer}_s{seed}", generator=cfg.generator, data=cfg.data,
                             updates=cfg.updates, device=cfg.device, probe=True, overwrite=True)
    out = run_dir(pc.name) / "result.json"
    if out.is_file():
        return json.loads(out.read_text())
    seed_everything(seed)
    run = pretrain.Run(pc)
    run.dir.mkdir(parents=True, exist_ok=True)
    m, d = cfg.greedy_reference, float(run.G.latent_dim)

    def update(run) -> dict:  # pretrain.baseline_update with pairs_random, the actions chosen by `explorer`
        with timed(run.stage_s, "explore + pairs", run.device):
            a = pretrain.uniform_actions(run)  # (N, d): the random world's actions, the greedy explorer's first guess
            if explorer == "greedy-prior":
                newest = (run.buffer.ptr - 1 - torch.arange(min(m, len(run.buffer)))) % run.buffer.capacity  # newest
                reference = pretrain.features(run, to_float(run.buffer.next_obs[newest.to(run.buffer.device)]))
                encoder = run.model.encoder.eval().requires_grad_(False)  # differentiated through, not trained here
                a, _ = greedy_actions(run.world, encoder, reference, a, cfg.greedy_steps, cfg.greedy_lr, cfg.k, d)
                run.model.train(), encoder.requires_grad_(True)
            pretrain.explore(run, a)
            batch = run.buffer.sample(pc.batch_size)
            v1, v2 = pretrain.views(pc, to_float(batch["obs"]), to_float(batch["next_obs"]))  # (B, 3, S, S) each
        with timed(run.stage_s, "encoder update", run.device):
            return {"loss": pretrain.encoder_step(run, v1, v2)[1]}

    pretrain.train(run, update)  # writes runs/explorer_<explorer>_s<seed>/encoder.pt
    probes = probe_snapshot(run.dir / "encoder.pt", ((run.x, run.y), load_splits(pc.data)[1][:2]), run.device)
    result = {"val": 100 * probes["val"], "test": 100 * probes["test"], "wall_s": round(run.wall, 1)}
    save_atomic(json.dumps(result), out)
    print(f"{pc.name}: {result}", flush=True)
    return result


def train_table(cfg: Config) -> None:
    """--train: every (explorer, seed) pair through train_with, cfg.jobs at once; the paired table."""
    explorers, seeds = cfg.train_explorers.split(","), [int(s) for s in cfg.seeds.split(",")]
    if unknown := set(explorers) - {"random", "greedy-prior"}:
        sys.exit(f"error: --train-explorers takes random and greedy-prior, got {sorted(unknown)}")
    jobs = [(e, s) for s in seeds for e in explorers]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(cfg.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        got = dict(zip(jobs, pool.map(train_with, [cfg] * len(jobs), *zip(*jobs), [1 if cfg.jobs > 1 else 0] * len(jobs))))
    from cifar import print_table
    print(f"\nlinear probe (%) after {cfg.updates} updates, actions chosen by each explorer; seeds {cfg.seeds}\n")
    rows = []
    for e in explorers:
        for split in ("val", "test"):
            v = [got[e, s][split] for s in seeds]
            diff = mean_std([x - got["random", s][split] for x, s in zip(v, seeds)]) if "random" in explorers else "–"
            rows.append([e, split, *(f"{x:.1f}" for x in v), mean_std(v), diff if e != "random" else "–",
                         f"{mean_std([got[e, s]['wall_s'] / 60 for s in seeds])} min"])
    print_table(["explorer", "split", *(f"seed {s}" for s in seeds), "mean ± std", "− random (paired)",
                 "training loop"], rows)


def main(argv=None) -> None:
    cfg = parse_config(Config, argv)
    if cfg.jobs < 1:
        sys.exit(f"error: --jobs must be >= 1 (runs at once), got {cfg.jobs}")
    if cfg.cost:
        return cost(cfg)
    if cfg.train:
        return train_table(cfg)
    explorers = ["random", *[e for e in cfg.explorers.split(",") if e and e != "random"]]
    if unknown := set(explorers) - set(EXPLORERS):
        sys.exit(f"error: unknown explorer(s) {sorted(unknown)}; choose from {list(EXPLORERS)}")
    seeds = [int(s) for s in cfg.seeds.split(",")]
    start = time.time()
    if cfg.jobs > 1 and len(seeds) > 1:  # seeds in parallel processes, one torch thread each
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(cfg.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(run_seed, [cfg] * len(seeds), seeds, [explorers] * len(seeds), [1] * len(seeds)))
    else:
        results = [run_seed(cfg, seed, explorers) for seed in seeds]
    pc = pretrain.Config()
    print(f"\n{len(seeds)} seeds ({','.join(map(str, seeds))}), {cfg.updates} Palm-up updates; each explorer visits "
          f"{cfg.episodes} episodes x {pc.num_envs} envs x {pc.horizon} steps = "
          f"{cfg.episodes * pc.num_envs * pc.horizon} frames. kNN diversity (k = {cfg.k}) as a ratio to uniform-random "
          f"(mean ± std over seeds); latents: mean ||z||^2/d and the share outside the prior's 99 % shell.\n")
    print("| explorer | pixels | random-init encoder | agent's own encoder | mean ‖z‖²/d | outside 99 % shell |")
    print("|---|---:|---:|---:|---:|---:|")
    for e in explorers:
        ratio = {s: mean_std([r[e][s] / r["random"][s] for r in results], digits=3)
                 for s in ("pixels", "random-init", "own")}
        print(f"| {e} | {ratio['pixels']} | {ratio['random-init']} | {ratio['own']} | "
              f"{mean_std([r[e]['z2'] for r in results], digits=3)} | "
              f"{mean_std([r[e]['outside'] for r in results], digits=3)} |")
    plot_curves(results, seeds, Path("runs") / "exploration_curves.png")
    print("\nlearning curves (agent / random, own features, 1 episode each): runs/exploration_curves.png")
    print(f"total {time.time() - start:.0f} s")


def plot_curves(results: list[dict], seeds: list[int], path: Path) -> None:
    """Agent / random kNN diversity (own features) and the agent's mean ||z||^2 / d over updates, one line a seed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for seed, r in zip(seeds, results):
        if r["curve"]:
            u, ratio, z2 = zip(*r["curve"])
            axes[0].plot(u, ratio, marker="o", label=f"seed {seed}")
            axes[1].plot(u, z2, marker="o", label=f"seed {seed}")
    axes[0].axhline(1, color="gray", ls="--", lw=1)
    axes[1].axhspan(0.8, 1.25, color="green", alpha=0.1)
    axes[0].set(xlabel="encoder / SAC update", title="agent / uniform-random spread (own features)")
    axes[1].set(xlabel="encoder / SAC update", title="agent's mean ||z||^2 / d (prior: 1)")
    if any(r["curve"] for r in results):
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
