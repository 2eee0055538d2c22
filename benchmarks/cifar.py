"""benchmarks/cifar.py — the CIFAR-10 results table and the sweeps that chose its settings.

    python benchmarks/cifar.py sweep     # Palm-up knobs one at a time (+ GenRep's sigma), probe on a VALIDATION split
    python benchmarks/cifar.py table     # 6 methods x 3 seeds, then evaluate.py's table on the test split
    python benchmarks/cifar.py explore   # does exploring help? Palm-up vs the random-policy world vs GenRep at an
                                         # equal budget (512 decoded frames per update), 3 seeds, paired by seed

Every run is `python pretrain.py ...` with the same encoder, batch size and number of encoder updates (the budget),
written to runs/<prefix>_<...>/; finished runs are skipped, so an interrupted table resumes. `--parallel N` runs N
at once, each with cores / N torch threads unless OMP_NUM_THREADS is set (on a GPU it fills the card; on a 2-core
CPU: 2 runs of 1 thread). The sweep never looks at the test images: pretrain.py's `--probe-split val` fits the
probe on 90 % of the training set and scores the other 10 %.
"""
import json, os, subprocess, sys, time
from dataclasses import dataclass
from typing import Literal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import mean_std, parse_config  # noqa: E402

METHODS = ("palmup", "random", "genrep", "simclr", "supervised", "none")
SWEEP = {  # knob -> values; the first value of each list is the default, run once as the baseline
    "ema": ["0.8", "0.5", "0.95"],
    "mix": ["0.5", "0.25", "0.9"],
    "horizon": ["16", "4", "64"],
    "temperature": ["0.1", "0.05", "0.2"],
    "apt-k": ["12", "3", "48"],
    "action-scale": ["1.732", "1.0", "3.0"],  # the world's action gain s
    "num-envs": ["64", "16", "256", "1024"],  # update ratio: env transitions (and SAC acting) per encoder update
    "width": ["32", "64"],  # encoder width (features 8 x width)
}
GENREP_SIGMAS = ["0.3", "0.6", "1.0"]
EXPLORE = {  # explore: run tag -> (label, flags). 512 envs: as many decoded frames per update as GenRep's 2 x 256
    "palmup_e512": ("Palm-up, exploring agent, 512 envs", ["--method", "palmup", "--num-envs", "512"]),
    "random_e512": ("random-policy world, 512 envs", ["--method", "random", "--num-envs", "512"]),
    "genrep": ("GenRep, σ 0.6 (default)", ["--method", "genrep"]),
    "genrep03": ("GenRep, σ 0.3 (the sweep's best)", ["--method", "genrep", "--genrep-sigma", "0.3"]),
}


@dataclass
class Config:
    data: str = "cifar10"  # "cifar10" (torchvision, in data/cifar10) or an ImageFolder copy with train/ and test/
    generator: str = "checkpoints/cifar10_gan.pt"  # the world's generator
    updates: int = 600  # encoder updates per run: the one budget of the table
    seeds: str = "0,1,2"  # table seeds
    prefix: str = "cifar"  # run folders runs/<prefix>_...
    parallel: int = 1  # runs at once
    device: Literal["auto", "cpu", "cuda"] = "auto"  # passed to pretrain.py
    extra: str = ""  # more pretrain.py flags for every run, e.g. "--encoder resnet18"
    knobs: str = ""  # sweep: only these knobs, comma-separated (e.g. "width,num-envs"); "" = all
    split: Literal["val", "test"] = "test"  # explore: probe on the test split, or on validation (choose settings there)


def launch(jobs: list[tuple[str, list[str]]], cfg: Config) -> None:
    """Run (name, flags) jobs through pretrain.py, cfg.parallel at a time; skip finished ones."""
    todo = [(n, f) for n, f in jobs if not (ROOT / "runs" / n / "result.json").exists()]
    running = []
    while todo or running:
        while todo and len(running) < cfg.parallel:
            name, flags = todo.pop(0)
            cmd = [sys.executable, str(ROOT / "pretrain.py"), "--name", name, "--data", cfg.data, "--generator",
                   cfg.generator, "--updates", str(cfg.updates), "--device", cfg.device, *flags, *cfg.extra.split()]
            log = open(ROOT / "runs" / f"{name}.log", "w")
            threads = str(max(1, (os.cpu_count() or 1) // cfg.parallel))  # parallel runs share the cores, never
            env = {"OMP_NUM_THREADS": threads, **os.environ}  # oversubscribe them (10x slower on 2 cores)
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((name, proc, log, time.time()))
        for job in list(running):
            name, proc, log, t = job
            if proc.poll() is not None:
                running.remove(job)
                log.close()
                print(f"{name}: {'ok' if proc.returncode == 0 else f'FAILED (runs/{name}.log)'} "
                      f"({time.time() - t:.0f} s)", flush=True)
        time.sleep(0.5)


def result(name: str) -> dict:
    """runs/<name>/result.json as a dict ({} while the run is missing)."""
    path = ROOT / "runs" / name / "result.json"
    return json.loads(path.read_text()) if path.exists() else {}


def row(knob: str, value: str, name: str) -> None:
    """One line of the sweep table: the run's validation probe and wall time ("–" while it is missing)."""
    r = result(name)
    probe, wall = (f"{100 * r['linear_probe_val']:.1f}", f"{r['wall_time_s'] / 60:.1f} min") if r else ("–", "–")
    print(f"| {knob} | {value} | {probe} | {wall} |")


def explore(cfg: Config) -> None:
    """Palm-up, the random-policy world and GenRep at an equal budget: a table (mean ± std over seeds), each row's
    paired difference to the random-policy world, and learning curves (runs/<prefix>_explore_curves.png)."""
    seeds, key = cfg.seeds.split(","), "linear_probe" if cfg.split == "test" else "linear_probe_val"
    name = lambda tag, s: f"{cfg.prefix}_{tag}{'_test' if cfg.split == 'test' else ''}_s{s}"  # noqa: E731
    launch([(name(t, s), [*flags, "--seed", s] + (["--probe-split", "val"] if cfg.split == "val" else []))
            for s in seeds for t, (_, flags) in EXPLORE.items()], cfg)
    probes = {t: [100 * result(name(t, s)).get(key, float("nan")) for s in seeds] for t in EXPLORE}
    print(f"\n{cfg.split} linear probe (%), {cfg.updates} updates, seeds {cfg.seeds}\n")
    print(f"| method | {' | '.join(f'seed {s}' for s in seeds)} | mean ± std | paired vs random world |")
    print(f"|---|{'---:|' * len(seeds)}---:|---:|")
    for t, (label, _) in EXPLORE.items():
        diff = [a - b for a, b in zip(probes[t], probes["random_e512"])]
        print(f"| {label} | {' | '.join(f'{v:.1f}' for v in probes[t])} | {mean_std(probes[t])} | "
              f"{'–' if t == 'random_e512' else mean_std(diff)} |")
    import csv
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    for t, color in (("palmup_e512", "C0"), ("random_e512", "C1")):
        for i, s in enumerate(seeds):
            path = ROOT / "runs" / name(t, s) / "metrics.csv"
            rows = list(csv.DictReader(path.read_text().splitlines())) if path.exists() else []
            for ax, k in zip(axes, ("loss", "spread_ratio", "z_sq")):
                pts = [(int(r["update"]), float(r[k])) for r in rows if r.get(k)]
                if pts:
                    ax.plot(*zip(*pts), color=color, lw=1, label=EXPLORE[t][0].split(",")[0] if i == 0 else None)
    for ax, title in zip(axes, ("InfoNCE loss", "agent / uniform-random spread, one step", "agent's mean ||z||^2 / d")):
        ax.set(xlabel="encoder update", title=title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(ROOT / "runs" / f"{cfg.prefix}_explore_curves.png", dpi=80)
    plt.close(fig)
    print(f"\nlearning curves: runs/{cfg.prefix}_explore_curves.png")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    modes = ("sweep", "table", "explore")
    what = argv.pop(0) if argv and argv[0] in modes else sys.exit("usage: cifar.py sweep|table|explore [flags]")
    cfg = parse_config(Config, argv)
    (ROOT / "runs").mkdir(exist_ok=True)
    if what == "sweep":
        val = ["--probe-split", "val", "--seed", "0"]
        knobs = cfg.knobs.split(",") if cfg.knobs else [*SWEEP, "genrep-sigma"]
        if unknown := set(knobs) - {*SWEEP, "genrep-sigma"}:
            sys.exit(f"error: unknown knob(s) {sorted(unknown)}; choose from {[*SWEEP, 'genrep-sigma']}")
        jobs = [(f"{cfg.prefix}_sweep_default", val)]
        jobs += [(f"{cfg.prefix}_sweep_{k}{v}", val + [f"--{k}", v]) for k in knobs if k in SWEEP for v in SWEEP[k][1:]]
        if "genrep-sigma" in knobs:
            jobs += [(f"{cfg.prefix}_sweep_genrep{s}", val + ["--method", "genrep", "--genrep-sigma", s])
                     for s in GENREP_SIGMAS]
        launch(jobs, cfg)
        print(f"\nvalidation linear probe (%), Palm-up, seed 0, {cfg.updates} updates; one knob changed at a time\n")
        print("| knob | value | val probe | wall time |\n|---|---|---|---|")
        row("defaults", ", ".join(f"{k} {vs[0]}" for k, vs in SWEEP.items()), f"{cfg.prefix}_sweep_default")
        for k in knobs:
            for v in SWEEP.get(k, [])[1:]:
                row(k, v, f"{cfg.prefix}_sweep_{k}{v}")
        if "genrep-sigma" in knobs:
            for s in GENREP_SIGMAS:
                row("genrep sigma", s, f"{cfg.prefix}_sweep_genrep{s}")
        return
    if what == "explore":
        return explore(cfg)
    seeds = cfg.seeds.split(",")
    launch([(f"{cfg.prefix}_{m}_s{s}", ["--method", m, "--seed", s]) for s in seeds for m in METHODS], cfg)
    runs = [str(ROOT / "runs" / f"{cfg.prefix}_{m}_s{s}") for m in METHODS for s in seeds]
    print("\n| method | wall time per run (pretrain.py's training loop, mean over seeds) |\n|---|---|")
    for m in METHODS:
        walls = [r["wall_time_s"] for s in seeds if (r := result(f"{cfg.prefix}_{m}_s{s}"))]
        print(f"| {m} | {sum(walls) / len(walls) / 60:.1f} min |" if walls else f"| {m} | – |")
    subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *runs, "--data", cfg.data, "--device", cfg.device,
                    "--out", str(ROOT / "runs" / f"{cfg.prefix}_table.png")], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
