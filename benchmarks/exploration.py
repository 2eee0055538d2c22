"""benchmarks/exploration.py — how much more diverse are the APT agent's frames than a
uniform-random policy's, and how much could any explorer gain in this world?

For each seed: trains Palm-up (a pretrain.Run stepped by pretrain.palmup_update, default settings)
for `updates` encoder/SAC updates, then rolls out these explorers in fresh copies of the same world
(same world seed: the same class prompts and noise), each for episodes x num_envs x horizon steps:
  random        uniform-random actions on [-1, 1]^d (what `--method random` explores with; the
                reference)
  agent         the trained SAC policy, acting on its encoder's features as during exploration
                (stochastic)
  corners       uniform-random signs, a in {-1, 1}^d: the most action energy the world accepts, no
                intelligence; it shows what diversity leaving the prior alone buys (E[a^2] = 1
                instead of 1/3)
  greedy        an analysis-only upper bound: each step's actions are chosen by `greedy_steps` steps
                of projected gradient ascent on APT's batch objective (the mean of log(1 + mean kNN
                distance) of the new frames' features among themselves and `greedy_reference`
                recently visited frames), differentiated through world.latent_step -> G -> the
                agent's encoder; the world's noise for the step is known to it
  greedy-prior  the same, with each step's latent also kept inside the ball ||z_t+1||^2 <= d (the
                prior's mean squared norm): the gain an explorer can buy while its latents stay on
                the prior's scale
  greedy-blind  (optional) greedy-prior optimised against an independent draw of the world's noise,
                as a policy that cannot see the noise would have to
  agent-prior   (optional) the agent's actions, pulled back into the same ball: its gain without
                leaving the prior
Diversity is APT's statistic, the mean distance to the k nearest other frames, in pixels, in a
random-init encoder that no run trained, and in the agent's own encoder (the space it is rewarded
in); ratios are to `random`. Where the latents go: mean ||z||^2 / d (1 under the prior N(0, I)) and
the share of visited latents outside the prior's central 99 % shell (chi-square quantiles 0.5 % and
99.5 %; 1 % under the prior). Each seed trains in a fresh run folder, runs/exploration_s<seed>
(then -2, -3, ... if taken).

    python benchmarks/exploration.py                 # 3 seeds, embedded world: 16 min, 2-core CPU
    python benchmarks/exploration.py --seeds 0 --updates 100  # a quick look
    python benchmarks/exploration.py --cost --generator checkpoints/cifar10_gan.pt
                                                     # what a greedy world would cost

--train: does the policy matter to the encoder? The random-policy world's loop (pretrain.py --method
random, default 64 envs) with its actions chosen either uniformly (`random`) or by `greedy-prior`
against the encoder being trained, --updates each, paired by seed (same world seed, same first
guesses); each encoder probed on the validation split (fit on 90 % of train, score the other 10 %)
and on the test split. Runs go to runs/explorer_<name>_s<seed>/: a finished one is read back, an
interrupted one continues from its last checkpoint.

    python benchmarks/exploration.py --train --updates 600 --data cifar10 \\
        --generator checkpoints/cifar10_gan.pt
"""
import dataclasses, json, math, os, re, shlex, sys, tempfile, time, traceback
from dataclasses import dataclass
from typing import Literal
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from agent import knn_spread  # noqa: E402
from common import (ConfigError, cli, parse_config, require, run_dir,  # noqa: E402
                    seed_everything, timed)
from evaluate import mean_std  # noqa: E402
from data import to_float  # noqa: E402
from encoder import make_encoder  # noqa: E402
from world import LatentWorld, latent_step  # noqa: E402
import pretrain  # noqa: E402
import runfiles  # noqa: E402

EXPLORERS = ("random", "agent", "corners", "greedy", "greedy-prior", "greedy-blind", "agent-prior")
TRAIN_EXPLORERS = ("random", "greedy-prior")  # --train: the explorers that can choose the actions


@dataclass
class Config:
    generator: str = "checkpoints/embedded_gan.pt"  # the world's generator
    data: str = "embedded"  # the probe's images (--train); the comparison never reads real images
    updates: int = 300  # Palm-up updates before the comparison (--train: updates of each run)
    episodes: int = 4  # episodes per env in each rollout
    k: int = 12  # neighbours of the diversity statistic (APT's k)
    seeds: str = "0,1,2"  # comma-separated: one trained agent and one set of rollouts per seed
    greedy_steps: int = 5  # greedy: gradient-ascent steps per env step (analysis only)
    greedy_lr: float = 0.5  # greedy: Adam step size on the actions in [-1, 1] (analysis only)
    greedy_reference: int = 192  # greedy: recently visited frames in its kNN batch (num_envs +
    #                              this = APT's batch)
    extra: str = ""  # more pretrain.py flags for the training runs, e.g. "--sac-alpha 0.03"
    explorers: str = "random,agent,corners,greedy,greedy-prior"  # which to roll out (+
    #                                                               greedy-blind, agent-prior)
    curve_every: int = 50  # learning curve: agent vs random (1 episode each) every this many
    #                        updates
    jobs: int = 2  # runs trained in parallel processes of one torch thread each (2: a 2-core CPU)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" = CUDA when present, else CPU
    cost: bool = False  # only time one greedy step against one random-policy world update, then
    #                     exit
    cost_envs: int = 512  # --cost: envs stepped per update (512: the equal-budget CIFAR-10 runs)
    train: bool = False  # pretrain an encoder with each of --train-explorers choosing the world's
    #                      actions, then probe it
    train_explorers: str = "random,greedy-prior"  # --train: the explorers that choose the actions

    def rules(self) -> dict:
        return {"seeds: comma-separated integers >= 0": re.fullmatch(r"\d+(,\d+)*", self.seeds),
                "updates >= 1": self.updates >= 1, "episodes >= 1": self.episodes >= 1,
                "k >= 1": self.k >= 1, "greedy_steps >= 0": self.greedy_steps >= 0,
                "greedy_reference >= k": self.greedy_reference >= self.k,
                "curve_every >= 1": self.curve_every >= 1, "jobs >= 1": self.jobs >= 1,
                "cost_envs >= 1": self.cost_envs >= 1,
                f"explorers among {','.join(EXPLORERS)}":
                    set(self.explorers.split(",")) - {""} <= set(EXPLORERS),
                f"train_explorers among {','.join(TRAIN_EXPLORERS)}":
                    set(self.train_explorers.split(",")) <= set(TRAIN_EXPLORERS)}


def apt_objective(new: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """APT's batch objective for the new frames: mean over rows of new (n, D) of log(1 + mean
    distance to their k nearest neighbours among the other new rows and the reference rows (m, D)).
    Differentiable in `new`."""
    n = len(new)
    d = torch.cdist(new, torch.cat([new, reference]))  # (n, n + m)
    self_pairs = torch.diag(torch.full((n,), float("inf"), device=new.device))  # (n, n)
    d = d + torch.cat([self_pairs, torch.zeros(n, len(reference), device=new.device)], dim=1)
    # d: (n, n + m), no row its own neighbour
    return torch.log1p(d.topk(k, dim=1, largest=False).values.mean(1)).mean()  # () APT Eq. 6, c = 1


def greedy_actions(world: LatentWorld, encoder, reference: torch.Tensor, start: torch.Tensor,
                   steps: int, lr: float, k: int, max_sq_norm: float | None = None,
                   knows_noise: bool = True) -> tuple[torch.Tensor, list[float]]:
    """Projected gradient ascent of apt_objective over this step's actions, through latent_step ->
    G -> encoder. knows_noise: the world's next noise is read with world.peek_noise() (world.step
    then draws the same); else the explorer optimises against an independent draw of it, as a
    policy would have to. start (N, d) in [-1, 1]: the first guess; max_sq_norm: also keep
    ||z_t+1||^2 <= it per env (on the prior's scale). -> actions (N, d) in [-1, 1], the objective
    before each step and after the last (steps + 1 floats)."""
    eps = world.peek_noise()  # (N, d): exactly the noise world.step will draw next
    if not knows_noise:
        eps = torch.randn_like(eps)  # (N, d) an independent draw (torch's stream, not the world's)

    def step(a):
        return latent_step(world.z, a, eps, world.cfg)  # (N, d)
    gain = step(torch.ones_like(eps))[0, 0] - step(torch.zeros_like(eps))[0, 0]  # () dz_t+1 / da

    def project(a):  # onto the cube, and (alternating projections) onto ||z_t+1||^2 <= max_sq_norm
        for _ in range(50 if max_sq_norm is not None else 1):
            a = a.clamp(-1, 1)
            if max_sq_norm is not None:
                z0 = step(torch.zeros_like(a))  # (N, d): z_t+1 at a = 0
                z = z0 + gain * a  # (N, d)
                sq = z.pow(2).sum(1, keepdim=True).clamp_min(1e-12)  # (N, 1)
                shrink = (max_sq_norm / sq).clamp(max=1).sqrt()  # (N, 1)
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
    """-> dict(frames (T*N, 3, S, S), latents (T*N, d), objective (the greedy explorers' mean gain
    over inner steps, else nan)) of every successor frame `explorer` visited."""
    pc, G, dev = run.cfg, run.G, run.device
    world = LatentWorld(G, pc.num_envs, pc.world, seed=seed + 1000)
    g = torch.Generator(device=dev).manual_seed(seed)
    encoder = run.model.encoder.eval()
    obs, frames, latents, gains = world.reset(), [], [], []
    seen = torch.empty(0, encoder.feature_dim, device=dev)  # (m, D): features of frames visited
    for _ in range(cfg.episodes * pc.world.horizon):
        u = torch.rand(pc.num_envs, G.latent_dim, generator=g, device=dev) * 2 - 1  # (N, d)
        if explorer.startswith("agent"):
            a = run.sac.act(pretrain.features(run, obs))  # (N, d)
            if explorer == "agent-prior":  # pulled back into ||z_t+1||^2 <= d (no ascent step)
                a, _ = greedy_actions(world, encoder, seen, a, 0, cfg.greedy_lr, cfg.k,
                                      float(G.latent_dim))
        elif explorer == "corners":
            a = torch.sign(u)  # (N, d) in {-1, 1}
        elif explorer.startswith("greedy"):
            ref = seen[-cfg.greedy_reference:]  # the most recent frames, as a young buffer's batch
            if len(ref) < cfg.k:  # the first step: no history yet, random actions
                a, trace = u, [0.0, 0.0]
            else:
                # ||z_t+1||^2 <= d, its mean under the prior, unless plain greedy
                budget = None if explorer == "greedy" else float(G.latent_dim)
                a, trace = greedy_actions(world, encoder, ref, u, cfg.greedy_steps, cfg.greedy_lr,
                                          cfg.k, budget, knows_noise=explorer != "greedy-blind")
            gains.append(trace[-1] - trace[0])
        else:
            a = u
        obs, info = world.step(a)
        frames.append(info["next_obs"])
        latents.append(info["z"])
        if explorer.startswith("greedy"):
            with torch.no_grad():
                new = encoder.eval()(info["next_obs"])  # (N, D)
                seen = torch.cat([seen, new])[-cfg.greedy_reference:]  # (m, D)
    return {"frames": torch.cat(frames), "latents": torch.cat(latents),  # (T*N, 3, S, S), (T*N, d)
            "objective": sum(gains) / len(gains) if gains else float("nan")}


def chi2_quantile(p: float, d: int) -> float:
    """The p-quantile of the chi-square distribution with d degrees of freedom (bisection on its
    CDF)."""
    lo, hi = 0.0, d + 20.0 * math.sqrt(2 * d) + 20
    half = lambda x: torch.tensor(x / 2, dtype=torch.float64)  # noqa: E731
    for _ in range(100):
        mid = (lo + hi) / 2
        cdf = torch.special.gammainc(half(d), half(mid))  # regularised lower incomplete gamma
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
    """-> {explorer: {column: float}}: kNN diversity in three spaces and the latent statistics."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same random-init encoder for every seed: a space no run shaped
        fixed = make_encoder("cnn", 32).to(run.device).eval()
    spaces = {"pixels": lambda x: x.flatten(1), "random-init": fixed,
              "own": run.model.encoder.eval()}
    out = {}
    for name, v in visited.items():
        n = len(v["frames"])
        # batches of 512 frames: bounded memory; each space's features (n, D)
        row = {s: knn_spread(torch.cat([f(v["frames"][i:i + 512]) for i in range(0, n, 512)]),
                             k).item() for s, f in spaces.items()}
        row["z2"], row["outside"] = latent_stats(v["latents"])
        row["objective"] = v["objective"]
        out[name] = row
    return out


# ---- training runs: pretrain.py's loop with another update step ---------------------------------
def pretrain_config(cfg: Config, *flags) -> "pretrain.Config":
    """pretrain.py's config for a run of this benchmark: --extra's flags, then its own (which win),
    every rule checked by parse_config."""
    argv = [*shlex.split(cfg.extra), "--generator", cfg.generator, "--data", cfg.data,
            "--device", cfg.device, *map(str, flags)]
    return parse_config(pretrain.Config, argv)


def fresh_name(base: str) -> str:
    """base, else base-2, base-3, ...: the first name without a run folder (runs never share
    one)."""
    name, n = base, 1
    while run_dir(name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def run_seed(cfg: Config, pc: "pretrain.Config", explorers: list[str], threads: int = 0) -> dict:
    """Train one agent (pretrain config pc) and roll out the explorers -> {explorer: {column:
    value}, "curve": [(update, agent / random spread, agent's mean ||z||^2 / d)]}."""
    if threads:
        torch.set_num_threads(threads)
    t, seed = time.time(), pc.seed
    seed_everything(seed)
    run = pretrain.Run(pc, runfiles.choose_folder(pc))
    curve = []
    short = dataclasses.replace(cfg, episodes=1)
    cuda = [run.device.index or 0] if run.device.type == "cuda" else []

    def update_and_measure(run, logged: bool) -> dict:
        """Palm-up's update; every curve_every updates the learning curve: agent vs random rollouts
        of one episode in fresh worlds, outside training's random streams and its wall time."""
        log = pretrain.palmup_update(run, logged)
        if (run.step + 1) % cfg.curve_every == 0:
            start = time.time()
            with torch.no_grad(), torch.random.fork_rng(devices=cuda):
                r = measure(run, {e: rollout(run, e, short, seed) for e in ("random", "agent")},
                            cfg.k)
            curve.append((run.step + 1, r["agent"]["own"] / r["random"]["own"], r["agent"]["z2"]))
            run.model.train()
            run.started += time.time() - start
        return log

    with runfiles.open_run(run, None):  # the fresh folder and its lock
        pretrain.train(run, update_and_measure)
        runfiles.save_result(run, {})
    print(f"seed {seed}: trained Palm-up for {pc.updates} updates in {time.time() - t:.0f} s",
          flush=True)
    run.model.encoder.requires_grad_(False)  # the greedy explorers differentiate through it only
    result = measure(run, {e: rollout(run, e, cfg, seed) for e in explorers}, cfg.k)
    for e, r in result.items():
        print(f"  seed {seed} {e:13s} pixels {r['pixels']:.3f} random-init {r['random-init']:.4f} "
              f"own {r['own']:.3f} |z|^2/d {r['z2']:.3f} outside {r['outside']:.3f} "
              f"objective gain {r['objective']:.3f}", flush=True)
    result["curve"] = curve
    return result


def run_all(fn, jobs: list[tuple], names: list[str], parallel: int) -> list:
    """fn(*job) for every job, in `parallel` processes of one torch thread each (else here, one
    after the other) -> the results in order. Every job runs even if one fails; then any failure
    ends the benchmark in one line naming each failed run (with the traceback of a bug first)."""
    outcomes = []
    if parallel > 1 and len(jobs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(parallel, len(jobs)), mp_context=spawn) as pool:
            futures = [pool.submit(fn, *job, threads=1) for job in jobs]
            for future in futures:
                try:
                    outcomes.append((True, future.result()))
                except Exception as e:  # any failure of one run: reported below with its name
                    outcomes.append((False, e))
    else:
        for job in jobs:
            try:
                outcomes.append((True, fn(*job)))
            except Exception as e:  # any failure of one run: reported below with its name
                outcomes.append((False, e))
    failed = [(name, e) for name, (ok, e) in zip(names, outcomes) if not ok]
    for _, e in failed:
        if not isinstance(e, (ValueError, OSError, FloatingPointError, MemoryError)):
            traceback.print_exception(e)  # a bug, not bad input: keep its traceback
    if failed:
        sys.exit("error: " + "; ".join(f"run runs/{name} failed: "
                                       f"{' '.join(str(e).split()) or type(e).__name__}"
                                       for name, e in failed))
    return [result for _, result in outcomes]


# ---- --cost --------------------------------------------------------------------------------------
def cost(cfg: Config, reps: int = 3) -> None:
    """Median seconds of one greedy-prior action choice for cfg.cost_envs envs (what a
    greedy-explorer world would add to each update) and of one whole update of the random-policy
    world (pretrain.py --method random). Nothing is written."""
    pc = pretrain_config(cfg, "--method", "random", "--num-envs", cfg.cost_envs, "--no-probe")
    seed_everything(0)
    run = pretrain.Run(pc, Path(tempfile.gettempdir()) / "exploration_cost")  # never created
    for _ in range(pc.warmup):
        pretrain.explore(run, pretrain.uniform_actions(run))
    encoder, d = run.model.encoder, float(run.G.latent_dim)
    m = min(cfg.greedy_reference, len(run.buffer))

    def greedy():
        reference = pretrain.features(run, to_float(run.buffer.next_obs[:m]))  # (m, D)
        encoder.eval()
        greedy_actions(run.world, encoder, reference, pretrain.uniform_actions(run),
                       cfg.greedy_steps, cfg.greedy_lr, cfg.k, d)
        encoder.train()

    times = {}
    for name, fn in (("random-policy world, one update",
                      lambda: pretrain.baseline_update(run, False)),
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


# ---- --train -------------------------------------------------------------------------------------
def from_result(r: dict) -> dict:
    """A --train run's result.json -> {"val": %, "test": %, "wall_s": s}."""
    return {"val": 100 * r["linear_probe_val"], "test": 100 * r["linear_probe"],
            "wall_s": r["wall_time_s"]}


def train_with(cfg: Config, explorer: str, seed: int, threads: int = 0) -> dict:
    """Pretrain an encoder in the random-policy world's loop with `explorer` choosing every step's
    actions, probe it on the validation and the test split -> {"val": %, "test": %, "wall_s": s}.
    A finished run is read back from its result.json; an interrupted one resumes from its last
    checkpoint (runfiles.py)."""
    if threads:
        torch.set_num_threads(threads)
    from cifar import probe_snapshot  # benchmarks/cifar.py: the budget curve's two probes
    folder = run_dir(f"explorer_{explorer}_s{seed}")
    if (folder / "result.json").is_file():
        return from_result(json.loads((folder / "result.json").read_text()))
    resume = ["--resume", folder] if (folder / "ckpt.pt").is_file() else []
    if folder.exists() and not resume:
        raise ConfigError(f"{folder} holds an unfinished run without a checkpoint to continue: "
                          f"remove it to train it anew")
    pc = pretrain_config(cfg, "--method", "random", "--seed", seed, "--name", folder.name,
                         "--updates", cfg.updates, "--probe", "--probe-split", "test", *resume)
    seed_everything(seed)
    run = pretrain.Run(pc, runfiles.choose_folder(pc))
    m, d = cfg.greedy_reference, float(run.G.latent_dim)

    def update(run, logged: bool) -> dict:
        """pretrain.baseline_update with pairs_random, the actions chosen by `explorer`."""
        if explorer == "random":
            return pretrain.baseline_update(run, logged)
        with run.watch("explore + pairs"):
            a = pretrain.uniform_actions(run)  # (N, d): the random world's actions, the first guess
            buffer = run.buffer
            newest = (buffer.ptr - 1 - torch.arange(min(m, len(buffer)), device=run.device)
                      ) % buffer.capacity  # (m,) the most recent transitions
            reference = pretrain.features(run, to_float(buffer.next_obs[newest]))  # (m, D)
            encoder = run.model.encoder.eval().requires_grad_(False)  # differentiated through only
            a, _ = greedy_actions(run.world, encoder, reference, a, cfg.greedy_steps, cfg.greedy_lr,
                                  cfg.k, d)
            run.model.train()
            encoder.requires_grad_(True)
            pretrain.explore(run, a)
            batch = buffer.sample(pc.batch_size)
            v1, v2 = pretrain.views(pc, to_float(batch["obs"]), to_float(batch["next_obs"]))
            # v1, v2: (B, 3, S, S) each
        with run.watch("encoder update"):
            return {"loss": pretrain.encoder_step(run, v1, v2)[1]}

    with runfiles.open_run(run, None):  # the folder (fresh, or the resumed one) and its lock
        try:
            pretrain.train(run, update)  # runs/explorer_<explorer>_s<seed>/encoder.pt
        except KeyboardInterrupt:
            sys.exit(f"interrupted: the same command continues {run.dir} from its last checkpoint")
        n = pc.probe_images  # n > 0: the first n training and n // 5 test images (quick checks)
        (x, y), test = runfiles.probe_data(run)
        m = max(n // 5, 1) if n else len(test[0])
        train, test = (x[:n or len(x)], y[:n or len(y)]), (test[0][:m], test[1][:m])
        with timed(run.stage_s, "linear probe", run.device):
            probes = probe_snapshot(run.dir / "encoder.pt", (train, test), run.device)
        result = runfiles.save_result(run, {"linear_probe_val": round(probes["val"], 4),
                                            "linear_probe": round(probes["test"], 4)})
    return from_result(result)


def train_table(cfg: Config) -> None:
    """--train: every (explorer, seed) pair through train_with, cfg.jobs at once; the paired
    table."""
    from cifar import print_table
    explorers, seeds = cfg.train_explorers.split(","), [int(s) for s in cfg.seeds.split(",")]
    jobs = [(e, s) for s in seeds for e in explorers]
    results = run_all(train_with, [(cfg, e, s) for e, s in jobs],
                      [f"explorer_{e}_s{s}" for e, s in jobs], cfg.jobs)
    got = dict(zip(jobs, results))
    print(f"\nlinear probe (%) after {cfg.updates} updates, actions chosen by each explorer; "
          f"seeds {cfg.seeds}\n")
    rows = []
    for e in explorers:
        for split in ("val", "test"):
            v = [got[e, s][split] for s in seeds]
            diff = "–"
            if "random" in explorers and e != "random":
                diff = mean_std([x - got["random", s][split] for x, s in zip(v, seeds)])
            rows.append([e, split, *(f"{x:.1f}" for x in v), mean_std(v), diff,
                         f"{mean_std([got[e, s]['wall_s'] / 60 for s in seeds])} min"])
    print_table(["explorer", "split", *(f"seed {s}" for s in seeds), "mean ± std",
                 "− random (paired)", "training loop"], rows)


@cli
def main(argv=None) -> None:
    cfg = parse_config(Config, argv)
    pretrain_config(cfg)  # a bad --extra stops here, before any run starts
    if cfg.cost:
        return cost(cfg)
    if cfg.train:
        return train_table(cfg)
    explorers = ["random", *[e for e in cfg.explorers.split(",") if e and e != "random"]]
    seeds = [int(s) for s in cfg.seeds.split(",")]
    start = time.time()
    names = [fresh_name(f"exploration_s{seed}") for seed in seeds]
    configs = [pretrain_config(cfg, "--name", name, "--updates", cfg.updates, "--seed", seed,
                               "--no-probe", "--checkpoint-every", cfg.updates)
               for seed, name in zip(seeds, names)]  # no checkpoints: the benchmark never resumes
    pc = configs[0]
    require({"k < num_envs x horizon (the frames of one episode)":
             cfg.k < pc.num_envs * pc.world.horizon}, "exploration.py")
    results = run_all(run_seed, [(cfg, c, explorers) for c in configs], names, cfg.jobs)
    frames = cfg.episodes * pc.num_envs * pc.world.horizon
    print(f"\n{len(seeds)} seeds ({','.join(map(str, seeds))}), {cfg.updates} Palm-up updates; "
          f"each explorer visits {cfg.episodes} episodes x {pc.num_envs} envs x "
          f"{pc.world.horizon} steps = {frames} frames. kNN diversity (k = {cfg.k}) as a ratio to "
          f"uniform-random (mean ± std over seeds); latents: mean ||z||^2/d and the share outside "
          f"the prior's 99 % shell.\n")
    print("| explorer | pixels | random-init encoder | agent's own encoder | mean ‖z‖²/d "
          "| outside 99 % shell |")
    print("|---|---:|---:|---:|---:|---:|")
    for e in explorers:
        ratio = {s: mean_std([r[e][s] / r["random"][s] for r in results], digits=3)
                 for s in ("pixels", "random-init", "own")}
        print(f"| {e} | {ratio['pixels']} | {ratio['random-init']} | {ratio['own']} | "
              f"{mean_std([r[e]['z2'] for r in results], digits=3)} | "
              f"{mean_std([r[e]['outside'] for r in results], digits=3)} |")
    plot_curves(results, seeds, Path("runs") / "exploration_curves.png")
    print("\nlearning curves (agent / random, own features, 1 episode each): "
          "runs/exploration_curves.png")
    print(f"total {time.time() - start:.0f} s")


def plot_curves(results: list[dict], seeds: list[int], path: Path) -> None:
    """Agent / random kNN diversity (own features) and the agent's mean ||z||^2 / d over updates,
    one line a seed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from common import atomic_path
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
