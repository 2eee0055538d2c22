"""benchmarks/speed.py — where the time goes, as ratios to the limits the hardware sets (one
process, ~80 s).

Each row is a measured rate and its ratio to the rate of the bare computation that bounds it:
  1. world      LatentWorld.step (env steps/s) vs the bare batched G(z, y) forward at the same
                batch size (goal >= 0.9; each episode of H steps also decodes its first frame, so
                the ceiling is about H / (H + 1) = 0.94 for H = 16), and the world's own
                bookkeeping per step measured with a generator that costs nothing
  2. encoder    pretrain.py's update (img/s) vs the bare encoder forward + backward on the same
                images; once for the encoder step alone (goal >= 0.8), once for the whole Palm-up
                iteration (acting + world step + buffer + encoder + APT + SAC; goal >= 0.85)
  3. agent      SAC updates/s (on one thread, as in the run) and apt_reward cost for batch sizes
                256 ... 4096 (APT is O(B^2))
  (--envs and --batches choose the sizes of rows 1 and 3)
  4. breakdown  the default `python pretrain.py` by stage: per-update stages measured over a few
                updates and scaled to the default number of updates; the probe measured once, in
                full
Rows 2 and 4 measure pretrain.py's default run; --extra changes it like pretrain.py's flags.

    python benchmarks/speed.py                    # CPU (the numbers in the README)
    python benchmarks/speed.py --device cuda      # the same rows on a GPU
    python benchmarks/speed.py --world-only --repeats 6   # the world rows, 6 times each (~1.5 min)
"""
import dataclasses, os, shlex, sys, tempfile, time
from dataclasses import dataclass, field
from typing import Literal
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from agent import SAC, apt_reward  # noqa: E402
from common import check_threads, cli, one_thread, parse_config, pick_device  # noqa: E402
from data import load_split, to_float  # noqa: E402
from evaluate import split_probe  # noqa: E402
from generator import load_generator  # noqa: E402
from world import LatentWorld  # noqa: E402
import common  # noqa: E402
import pretrain  # noqa: E402


@dataclass
class Config:
    generator: str = "checkpoints/embedded_gan.pt"  # the world's generator
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" = CUDA when present, else CPU
    threads: int = 0  # torch CPU threads (0 = torch's default)
    min_time: float = 1.0  # seconds each rate is measured for (after a warm-up call)
    breakdown_updates: int = 20  # updates of the default run measured for the breakdown
    tune_malloc: bool = True  # common.keep_freed_memory on the CPU; --no-tune-malloc: without it
    repeats: int = 1  # world rows: measure each batch size this many times, show the mean ratio
    #                   and its range
    world_only: bool = False  # stop after the world rows (with --repeats: the 0.9 goal against
    #                           the spread)
    envs: list[int] = field(default_factory=lambda: [1, 8, 64, 256])  # world rows: env counts
    batches: list[int] = field(default_factory=lambda: [256, 1024, 4096])  # agent rows: batch sizes
    extra: str = ""  # pretrain.py flags for the measured run (rows 2 and 4), e.g. a quick check:
    #                  "--batch-size 32 --num-envs 16 --probe-images 100"

    def rules(self) -> dict:
        check_threads(self.threads, "speed.py")
        return {"min_time > 0": self.min_time > 0, "breakdown_updates >= 1":
                self.breakdown_updates >= 1, "repeats >= 1": self.repeats >= 1,
                "envs: at least one, each >= 1": bool(self.envs) and min(self.envs) >= 1,
                "batches: at least one, each > 12 (APT's k)":
                    bool(self.batches) and min(self.batches) > 12}


def rate(fn, min_time: float, device: torch.device) -> float:
    """Calls of fn per second: one warm-up call, then repeat until min_time has passed."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < min_time or n < 3:
        fn()
        n += 1
    sync()
    return n / (time.perf_counter() - t)


def paired(bare, target, min_time: float, device: torch.device, block: int = 16
           ) -> tuple[float, float, float]:
    """Two functions timed call by call in alternation, bare, target, bare, target, ..., in whole
    blocks of `block` pairs (a world with horizon 16 then pays for its resets in proportion).
    -> (bare calls/s, target calls/s, ratio target/bare). The rates are over all blocks; the
    ratio is the MEDIAN of the per-block ratios: on a shared 2-core VM another tenant's burst
    stalls a few blocks by tens of ms, and the median keeps such a stall (not ours) out of the
    ratio (bare against itself: 0.98-1.02)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    bare(), target(), sync()  # warm-up
    blocks = []  # (bare seconds, target seconds) per block
    while sum(map(sum, blocks)) < min_time or len(blocks) < 5:
        spent = [0.0, 0.0]
        for _ in range(block):
            for i, fn in enumerate((bare, target)):
                t = time.perf_counter()
                fn()
                sync()
                spent[i] += time.perf_counter() - t
        blocks.append(spent)
    n = block * len(blocks)
    ratios = sorted(b / t for b, t in blocks)
    return n / sum(b for b, _ in blocks), n / sum(t for _, t in blocks), ratios[len(ratios) // 2]


def row(name: str, value: float, unit: str, ratio=None, goal=None) -> None:
    r = "" if ratio is None else f"{ratio:.2f}"
    verdict = "" if goal is None else ("ok" if ratio >= goal else f"below {goal}")
    print(f"| {name} | {value:,.0f} {unit} | {r} | {verdict} |")


def world_rows(cfg: Config, pc: "pretrain.Config", G, dev: torch.device) -> None:
    """1. LatentWorld.step against the bare generator at each of cfg.envs envs."""
    for n in cfg.envs:
        z = torch.randn(n, G.latent_dim, device=dev)  # (n, d)
        y = torch.randint(G.num_classes, (n,), device=dev)  # (n,)
        world = LatentWorld(G, n, pc.world, seed=0)
        world.reset()
        a = torch.rand(n, G.latent_dim, device=dev) * 2 - 1  # (n, d)
        bare_G = torch.inference_mode()(lambda: G(z, y))
        # [(bare calls/s, world calls/s, ratio)] per repeat
        runs = [paired(bare_G, lambda: world.step(a), 2 * cfg.min_time, dev)
                for _ in range(cfg.repeats)]
        bare, steps, ratio = (sum(r[i] for r in runs) / len(runs) for i in range(3))  # means
        row(f"bare G(z, y) forward, batch {n}", n * bare, "frames/s")
        lo, hi = min(r[2] for r in runs), max(r[2] for r in runs)
        spread = f" (ratio {lo:.3f}-{hi:.3f} over {len(runs)} repeats)" if len(runs) > 1 else ""
        row(f"world.step, {n} envs{spread}", n * steps, "env steps/s", ratio, 0.9)


@cli
def main(argv=None) -> None:
    cfg = parse_config(Config, argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    common.TUNE_MALLOC = cfg.tune_malloc  # before the first pick_device: all with it, or without
    dev = pick_device(cfg.device)
    # the measured run: pretrain.py's defaults, --extra, no probe (row 4 times it apart)
    pc = parse_config(pretrain.Config, [*shlex.split(cfg.extra), "--generator", cfg.generator,
                                        "--device", dev.type, "--no-probe"])
    start = time.time()
    torch.manual_seed(0)
    print(f"device {dev} | torch {torch.__version__} | {torch.get_num_threads()} threads\n")
    print("| measurement | rate | ratio to its bound | goal |")
    print("|---|---:|---:|---|")

    # 1. world vs bare generator ---------------------------------------------------------------
    G = load_generator(cfg.generator, dev)
    world_rows(cfg, pc, G, dev)
    if cfg.world_only:
        return
    # The world's own bookkeeping (noise, EMA, resets) with a generator that costs nothing: the
    # part of world.step that is not G. Unlike the ratios above it hardly depends on how busy the
    # CPU is.
    stub = torch.nn.Linear(1, 1).to(dev)
    stub.latent_dim, stub.num_classes, stub.forward = G.latent_dim, G.num_classes, lambda z, y: z
    world = LatentWorld(stub, 64, pc.world, seed=0)
    world.reset()
    a = torch.rand(64, G.latent_dim, device=dev) * 2 - 1  # (64, d)
    us = 1e6 / rate(lambda: world.step(a), cfg.min_time, dev)
    print(f"| world.step without G (bookkeeping), 64 envs | {us:.0f} us/step | | |")

    # 2. encoder update vs bare encoder forward + backward -------------------------------------
    folder = Path(tempfile.gettempdir()) / "speed"  # never created: nothing here writes files
    run = pretrain.Run(pc, folder)
    for _ in range(pc.warmup):
        pretrain.explore(run, pretrain.uniform_actions(run))
    x = to_float(run.buffer.sample(2 * pc.batch_size)["obs"])  # (2B, 3, S, S): one update's images
    enc = run.model.encoder

    def bare_step():
        enc(x).square().mean().backward()  # forward + backward only: no head, no loss, no optimiser

    def update():  # pretrain.train's cadence: every LOG_EVERY-th update is logged
        logged = (run.step + 1) % pretrain.LOG_EVERY == 0
        run.watch.sampling = logged
        pretrain.palmup_update(run, logged)
        run.step += 1
    bare, whole, whole_ratio = paired(bare_step, update, 3 * cfg.min_time, dev, block=4)
    bare, whole = x.shape[0] * bare, x.shape[0] * whole  # img/s
    run.stage_s.clear()
    n_up = max(3, cfg.breakdown_updates)
    for _ in range(n_up):
        update()
    # over n_up updates (their mean, not the best)
    enc_only = n_up * x.shape[0] / run.stage_s["encoder update"]
    row(f"bare encoder fwd + bwd ({pc.encoder}-{pc.width}, {x.shape[0]} images)", bare, "img/s")
    row("encoder update (InfoNCE, head, Adam)", enc_only, "img/s", enc_only / bare, 0.8)
    row("whole Palm-up iteration (acting, world, SAC, ...)", whole, "img/s", whole_ratio, 0.85)
    per_update = {k: v / n_up for k, v in run.stage_s.items()}  # seconds per update, by stage

    # 3. SAC updates and the APT reward vs batch size ------------------------------------------
    d = enc.feature_dim
    apt_base = None
    for B in cfg.batches:
        sac = SAC(d, G.latent_dim, pc.sac, dev)
        f, f2 = torch.randn(B, d, device=dev), torch.randn(B, d, device=dev)  # (B, D) each
        act = torch.rand(B, G.latent_dim, device=dev) * 2 - 1  # (B, d)
        rew = torch.rand(B, device=dev)  # (B,)
        with one_thread():  # as pretrain.palmup_update runs it
            row(f"SAC update ({pc.sac.updates} steps), batch {B}",
                rate(lambda: sac.update(f, act, rew, f2), cfg.min_time / 2, dev), "updates/s")
        apt_ms = 1e3 / rate(lambda: apt_reward(f, 12), cfg.min_time / 2, dev)
        apt_base = apt_base or apt_ms
        first = cfg.batches[0]
        print(f"| apt_reward, batch {B} | {apt_ms:.2f} ms | {apt_ms / apt_base:.1f} x batch "
              f"{first} (B^2 predicts {(B / first) ** 2:.0f}) | |")

    # 4. the default run, by stage -------------------------------------------------------------
    t = time.perf_counter()
    probed = dataclasses.replace(pc, probe=True)
    pretrain.Run(probed, folder)  # what main() pays before the first update
    stages = {"load data + generator": time.perf_counter() - t}
    stages.update({k: v * pc.updates for k, v in per_update.items()})
    train, test = load_split(pc.data, "train"), load_split(pc.data, "test")
    t = time.perf_counter()
    # in full (or --probe-images): a subset scaled up overstated it 1.6-12x
    split_probe(enc, train[:2], test, "test", pc.probe_images, dev)
    stages["linear probe"] = time.perf_counter() - t
    total = sum(stages.values())
    command = " ".join(["python pretrain.py", *shlex.split(cfg.extra)])
    print(f"\n`{command}` ({pc.updates} updates), estimated from {n_up} updates: "
          f"{total / 60:.1f} min")
    print("| stage | seconds | share |")
    print("|---|---:|---:|")
    for k, v in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v:.0f} | {v / total:.0%} |")
    print(f"\nbenchmark wall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
