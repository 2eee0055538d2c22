"""benchmarks/cifar.py — the CIFAR-10 results table and the sweeps that chose its settings.

    python benchmarks/cifar.py sweep    # Palm-up knobs one at a time (+ GenRep's sigma), probed on
                                        # a VALIDATION split
    python benchmarks/cifar.py table    # 6 methods x 3 seeds, then evaluate.py's table on the test
                                        # split
    python benchmarks/cifar.py explore  # does exploring help? Palm-up vs the random-policy world vs
                                        # GenRep at an equal budget (512 decoded frames per update),
                                        # 3 seeds, paired by seed
    python benchmarks/cifar.py budget   # how the answer moves with the budget: Palm-up, the
                                        # random-policy world (2 seeds, paired), GenRep and SimCLR
                                        # (1 seed) each trained once to 4,800 updates; its encoder
                                        # snapshots probed on the validation and test splits
    python benchmarks/cifar.py world    # the world's coefficients: rho x w for Palm-up and the
                                        # random-policy world, seed 0, probed on the VALIDATION
                                        # split (--world-seeds 1 --emas .. --mixes .. adds a seed
                                        # to chosen cells; the table lists every seed on disk)
    python benchmarks/cifar.py figure   # docs/cifar_table.png redrawn from the numbers of the
                                        # table in docs/cifar10.md (no training)

Every run is `python pretrain.py --name <run> ...` with the same encoder, batch size and number of
encoder updates (the budget), written to runs/<prefix>_<...>/ under the current folder (run from
the repository root); a run whose result.json exists is read, never trained again, and an
interrupted one continues from its last checkpoint (pretrain.py --resume), so an interrupted table
resumes. A run that fails ends the command, once the others have finished, with one line naming
it and its log runs/<run>.log. `--parallel N` runs N at once, each with cores / N torch threads
unless OMP_NUM_THREADS is set (on a GPU it fills the card; on a 2-core CPU: 2 runs of 1 thread).
The sweep never looks at the test images: pretrain.py's `--probe-split val` fits the probe on 90 %
of the training set and scores the other 10 %.
"""
import dataclasses, functools, json, os, re, shlex, subprocess, sys, textwrap, time
from dataclasses import dataclass
from typing import Literal
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import atomic_path, cli, parse_config, pick_device  # noqa: E402
from evaluate import (cached_probe, extract_features, linear_probe_features,  # noqa: E402
                      load_data, load_encoder, mean_std, val_split)

RUNS = Path("runs")  # pretrain.py's run folders, under the current folder
METHODS = ("palmup", "random", "genrep", "simclr", "supervised", "none")
SWEEP = {  # knob -> values; the first value of each list is the default, run once as the baseline
    "ema": ["0.8", "0.5", "0.95"],
    "mix": ["0.5", "0.25", "0.9"],
    "horizon": ["16", "4", "64"],
    "temperature": ["0.1", "0.05", "0.2"],
    "apt-k": ["12", "3", "48"],
    "action-scale": ["1.732", "1.0", "3.0"],  # the world's action gain s
    "num-envs": ["64", "16", "256", "1024"],  # update ratio: env transitions (and SAC acting) per
    #                                           encoder update
    "width": ["32", "64"],  # encoder width (features 8 x width)
}
GENREP_SIGMAS = ["0.3", "0.6", "1.0"]
EXPLORE = {  # explore: run tag -> (label, flags). 512 envs: as many decoded frames per update as
    #          GenRep's 2 x 256
    "palmup_e512": ("Palm-up, exploring agent, 512 envs",
                    ["--method", "palmup", "--num-envs", "512"]),
    "random_e512": ("random-policy world, 512 envs", ["--method", "random", "--num-envs", "512"]),
    "genrep": ("GenRep, σ 0.6 (default)", ["--method", "genrep"]),
    "genrep03": ("GenRep, σ 0.3 (the sweep's best)",
                 ["--method", "genrep", "--genrep-sigma", "0.3"]),
}
# budget: the worlds' rho and w, chosen by `world` on CIFAR-10's validation split
# (docs/exploration.md section 6); WorldConfig keeps 0.8 and 0.5
WORLD = ["--ema", "0.9", "--mix", "0.8"]
BUDGET = {  # budget: run tag -> (label, flags); the two worlds at the default 64 envs, seeds paired
    "palmup": ("Palm-up", ["--method", "palmup", *WORLD]),
    "random": ("random-policy world", ["--method", "random", *WORLD]),
    "genrep03": ("GenRep, σ 0.3", ["--method", "genrep", "--genrep-sigma", "0.3"]),
    "simclr": ("SimCLR, real images", ["--method", "simclr"]),
}
INTEGERS = re.compile(r"\d+(,\d+)*")  # a comma-separated list of integers >= 0
NUMBERS = re.compile(r"[0-9.]+(,[0-9.]+)*")  # a comma-separated list of numbers >= 0


@dataclass
class Config:
    data: str = "cifar10"  # "cifar10" (torchvision, in data/cifar10) or an ImageFolder copy with
    #                        train/ and test/
    generator: str = "checkpoints/cifar10_gan.pt"  # the world's generator
    updates: int = 600  # encoder updates per run: the one budget of the table (budget: the largest
    #                     of --budgets)
    seeds: str = "0,1,2"  # table seeds
    prefix: str = "cifar"  # run folders runs/<prefix>_...
    parallel: int = 1  # runs at once
    device: Literal["auto", "cpu", "cuda"] = "auto"  # passed to pretrain.py
    extra: str = ""  # more pretrain.py flags for every run, e.g. "--encoder resnet18"
    knobs: str = ""  # sweep: only these knobs, comma-separated (e.g. "width,num-envs"); "" = all
    split: Literal["val", "test"] = "test"  # explore: probe on the test split, or on validation
    #                                         (choose settings there)
    budgets: str = "300,600,1200,2400,4800"  # budget: encoder updates at which each run keeps a
    #                                          snapshot (pretrain.py --snapshots) that is probed;
    #                                          each run trains to the largest
    budget_seeds: str = "0,1"  # budget: seeds of Palm-up and the random-policy world; GenRep and
    #                            SimCLR run the first
    emas: str = "0.8,0.9,0.95"  # world: the EMA persistences rho of the grid (WorldConfig's
    #                             default: 0.8)
    mixes: str = "0.5,0.8"  # world: the action weights w of the grid (WorldConfig's default: 0.5)
    world_seeds: str = "0"  # world: seeds to run in every cell of the grid
    plot: str = ""  # budget: the curve of test accuracy against updates (PNG); "" =
    #                 runs/<prefix>_budget.png

    def rules(self) -> dict:
        knobs = set(self.knobs.split(",")) - {""}
        return {"parallel >= 1": self.parallel >= 1, "updates >= 1": self.updates >= 1,
                f"knobs among {','.join([*SWEEP, 'genrep-sigma'])}":
                    knobs <= {*SWEEP, "genrep-sigma"},
                "seeds, budget_seeds, world_seeds: comma-separated integers >= 0":
                    all(INTEGERS.fullmatch(s) for s in (self.seeds, self.budget_seeds,
                                                        self.world_seeds)),
                "budgets: comma-separated integers >= 1":
                    INTEGERS.fullmatch(self.budgets) and "0" not in self.budgets.split(","),
                "emas, mixes: comma-separated numbers":
                    all(NUMBERS.fullmatch(s) for s in (self.emas, self.mixes)),
                "prefix: letters, digits, . _ - (runs/<prefix>_... stay under runs/)":
                    re.fullmatch(r"[A-Za-z0-9._-]{1,60}", self.prefix) is not None
                    and ".." not in self.prefix}


def launch(jobs: list[tuple[str, list[str]]], cfg: Config) -> None:
    """Run (name, flags) jobs through pretrain.py --name <name>, cfg.parallel at a time: a finished
    run (its result.json exists) is skipped, an interrupted one continues (--resume). Every job
    runs; then any failure ends the command in one line naming each failed run and its log."""
    RUNS.mkdir(exist_ok=True)
    todo = [(n, f) for n, f in jobs if not (RUNS / n / "result.json").exists()]
    running, failed = [], {}  # failed: run name -> why
    for name, _ in todo:
        if (RUNS / name).exists() and not (RUNS / name / "ckpt.pt").exists():
            failed[name] = (f"it stopped before its first checkpoint (no ckpt.pt, no result.json): "
                            f"remove runs/{name} to train it anew")
    todo = [(n, f) for n, f in todo if n not in failed]
    while todo or running:
        while todo and len(running) < cfg.parallel:
            name, flags = todo.pop(0)
            resume = ["--resume", str(RUNS / name)] if (RUNS / name).exists() else []
            cmd = [sys.executable, str(ROOT / "pretrain.py"), "--name", name, "--data", cfg.data,
                   "--generator", cfg.generator, "--updates", str(cfg.updates),
                   "--device", cfg.device, *flags, *shlex.split(cfg.extra), *resume]
            log = open(RUNS / f"{name}.log", "w")
            # parallel runs share the cores, never oversubscribe them (10x slower on 2 cores)
            threads = str(max(1, (os.cpu_count() or 1) // cfg.parallel))
            env = {"OMP_NUM_THREADS": threads, **os.environ}
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((name, proc, log, time.time()))
        for job in list(running):
            name, proc, log, t = job
            if proc.poll() is not None:
                running.remove(job)
                log.close()
                if proc.returncode != 0:
                    failed[name] = f"{last_line(name)} (runs/{name}.log)"
                print(f"{name}: {'ok' if proc.returncode == 0 else f'FAILED (runs/{name}.log)'} "
                      f"({time.time() - t:.0f} s)", flush=True)
        time.sleep(0.5)
    if failed:
        sys.exit("error: " + "; ".join(f"run runs/{name} failed: {why}"
                                       for name, why in failed.items()))


def last_line(name: str) -> str:
    """The last non-empty line of runs/<name>.log: pretrain.py's error line when it failed."""
    lines = [line for line in (RUNS / f"{name}.log").read_text(errors="replace").splitlines()
             if line.strip()]
    return lines[-1].strip()[:300] if lines else "no output"


def result(name: str) -> dict:
    """runs/<name>/result.json as a dict ({} while the run is missing)."""
    path = RUNS / name / "result.json"
    return json.loads(path.read_text()) if path.exists() else {}


def row(knob: str, value: str, name: str) -> None:
    """One line of the sweep table: the run's validation probe and wall time ("–" if missing)."""
    r = result(name)
    probe, wall = ((f"{100 * r['linear_probe_val']:.1f}", f"{r['wall_time_s'] / 60:.1f} min")
                   if r else ("–", "–"))
    print(f"| {knob} | {value} | {probe} | {wall} |")


def summary(values) -> str:
    """mean ± std over seeds; '–' while a seed is missing (NaN)."""
    return "–" if any(v != v for v in values) else mean_std(values)


def paired(a, b) -> str:
    """a − b seed by seed, then mean ± std over seeds (a and b list the same seeds)."""
    return summary([x - y for x, y in zip(a, b)])


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A Markdown table, the first column left-aligned and the others right-aligned."""
    print(f"| {' | '.join(header)} |\n|---|{'---:|' * (len(header) - 1)}")
    for r in rows:
        print(f"| {' | '.join(r)} |")


def pyplot():
    """matplotlib.pyplot without a display, imported only by the commands that draw."""
    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    return plt


def save_png(fig, path: Path) -> None:
    """Write the figure atomically (never a half-written PNG) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    pyplot().close(fig)
    print(f"\nwrote {path}")


def sweep(cfg: Config) -> None:
    """Palm-up with one knob changed at a time (--knobs; + GenRep's sigma), seed 0, probed on the
    validation split: a table of each run's probe and wall time."""
    val = ["--probe-split", "val", "--seed", "0"]
    knobs = cfg.knobs.split(",") if cfg.knobs else [*SWEEP, "genrep-sigma"]
    jobs = [(f"{cfg.prefix}_sweep_default", val)]
    jobs += [(f"{cfg.prefix}_sweep_{k}{v}", val + [f"--{k}", v])
             for k in knobs if k in SWEEP for v in SWEEP[k][1:]]
    if "genrep-sigma" in knobs:
        jobs += [(f"{cfg.prefix}_sweep_genrep{s}",
                  val + ["--method", "genrep", "--genrep-sigma", s]) for s in GENREP_SIGMAS]
    launch(jobs, cfg)
    print(f"\nvalidation linear probe (%), Palm-up, seed 0, {cfg.updates} updates; one knob "
          f"changed at a time\n")
    print("| knob | value | val probe | wall time |\n|---|---|---|---|")
    row("defaults", ", ".join(f"{k} {vs[0]}" for k, vs in SWEEP.items()),
        f"{cfg.prefix}_sweep_default")
    for k in knobs:
        for v in SWEEP.get(k, [])[1:]:
            row(k, v, f"{cfg.prefix}_sweep_{k}{v}")
    if "genrep-sigma" in knobs:
        for s in GENREP_SIGMAS:
            row("genrep sigma", s, f"{cfg.prefix}_sweep_genrep{s}")


def table(cfg: Config) -> None:
    """Every method x --seeds, then evaluate.py's linear and kNN probes on the test split
    (runs/<prefix>_table.png) and each method's wall time."""
    seeds = cfg.seeds.split(",")
    launch([(f"{cfg.prefix}_{m}_s{s}", ["--method", m, "--seed", s])
            for s in seeds for m in METHODS], cfg)
    runs = [str(RUNS / f"{cfg.prefix}_{m}_s{s}") for m in METHODS for s in seeds]
    print("\n| method | wall time per run (pretrain.py's training loop, mean over seeds) |\n"
          "|---|---|")
    for m in METHODS:
        walls = [r["wall_time_s"] for s in seeds if (r := result(f"{cfg.prefix}_{m}_s{s}"))]
        print(f"| {m} | {sum(walls) / len(walls) / 60:.1f} min |" if walls else f"| {m} | – |",
              flush=True)
    done = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *runs, "--data", cfg.data,
                           "--device", cfg.device, "--out", str(RUNS / f"{cfg.prefix}_table.png")])
    if done.returncode != 0:
        sys.exit(f"error: evaluate.py failed (exit status {done.returncode}) on the table's runs")


def explore(cfg: Config) -> None:
    """Palm-up, the random-policy world and GenRep at an equal budget: a table (mean ± std over
    seeds), each row's paired difference to the random-policy world, and learning curves
    (runs/<prefix>_explore_curves.png)."""
    seeds = cfg.seeds.split(",")
    key = "linear_probe" if cfg.split == "test" else "linear_probe_val"

    def name(tag, s):
        return f"{cfg.prefix}_{tag}{'_test' if cfg.split == 'test' else ''}_s{s}"
    val = ["--probe-split", "val"] if cfg.split == "val" else []
    launch([(name(t, s), [*flags, "--seed", s, *val])
            for s in seeds for t, (_, flags) in EXPLORE.items()], cfg)
    probes = {t: [100 * result(name(t, s)).get(key, float("nan")) for s in seeds] for t in EXPLORE}
    print(f"\n{cfg.split} linear probe (%), {cfg.updates} updates, seeds {cfg.seeds}\n")
    print_table(["method", *(f"seed {s}" for s in seeds), "mean ± std", "paired vs random world"],
                [[label, *(f"{v:.1f}" for v in probes[t]), summary(probes[t]),
                  "–" if t == "random_e512" else paired(probes[t], probes["random_e512"])]
                 for t, (label, _) in EXPLORE.items()])
    import csv
    fig, axes = pyplot().subplots(1, 3, figsize=(12, 3))
    for t, color in (("palmup_e512", "C0"), ("random_e512", "C1")):
        for i, s in enumerate(seeds):
            path = RUNS / name(t, s) / "metrics.csv"
            rows = list(csv.DictReader(path.read_text().splitlines())) if path.exists() else []
            for ax, k in zip(axes, ("loss", "spread_ratio", "z_sq")):
                pts = [(int(r["update"]), float(r[k])) for r in rows if r.get(k)]
                if pts:
                    label = EXPLORE[t][0].split(",")[0] if i == 0 else None
                    ax.plot(*zip(*pts), color=color, lw=1, label=label)
    titles = ("InfoNCE loss", "agent / uniform-random spread, one step", "agent's mean ||z||^2 / d")
    for ax, title in zip(axes, titles):
        ax.set(xlabel="encoder update", title=title)
    if axes[0].lines:  # none while no run has logged an update
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, RUNS / f"{cfg.prefix}_explore_curves.png")


def probe_snapshot(path: Path, data, device) -> dict:
    """Linear probes of one encoder snapshot (evaluate.py): on pretrain.py's validation split (fit
    on 90 % of train, score the fixed 10 % of evaluate.val_split) and on the test split.
    data = ((x, y) train, (x, y) test). The features of each image are extracted once and serve
    both probes."""
    encoder, ((x, y), (x_test, y_test)) = load_encoder(path, device)[0], data
    f, f_test = (extract_features(encoder, images, device) for images in (x, x_test))
    # f (N, D), f_test (M, D)
    fit, val = val_split(len(x))  # pretrain.py --probe-split val's 10 %
    return {"val": linear_probe_features(f[fit], y[fit], f[val], y[val], device=device)["test_acc"],
            "test": linear_probe_features(f, y, f_test, y_test, device=device)["test_acc"]}


def budget(cfg: Config) -> None:
    """Palm-up and the random-policy world (--budget-seeds, paired), GenRep at sigma 0.3 and SimCLR
    (the first seed) are each trained once to the largest of --budgets, keeping an encoder snapshot
    at every budget (pretrain.py --snapshots, runs/<prefix>_budget_<method>_s<seed>/
    encoder_<update>.pt). Every snapshot is probed on the validation split (fit on 90 % of train,
    score the other 10 %) and on the test split, cached in runs/<run>/probe_<update>.json (keyed by
    the snapshot's size and mtime). Prints a table per split (method x budget, mean ± std over
    seeds, Palm-up − random paired by seed) and each run's wall time, and draws test accuracy
    against updates (--plot). Finished runs are skipped and interrupted ones resume."""
    budgets, all_seeds = [int(b) for b in cfg.budgets.split(",")], cfg.budget_seeds.split(",")
    seeds = {t: all_seeds if t in ("palmup", "random") else all_seeds[:1] for t in BUDGET}

    def name(tag, s):
        return f"{cfg.prefix}_budget_{tag}_s{s}"
    launch([(name(t, s), [*flags, "--seed", s, "--snapshots", cfg.budgets, "--no-probe"])
            for t, (_, flags) in BUDGET.items() for s in seeds[t]],
           dataclasses.replace(cfg, updates=max(budgets)))
    # the data is loaded only if a probe is not cached
    data, device = functools.cache(lambda: load_data(cfg.data)), pick_device(cfg.device)
    acc = {}  # (tag, split) -> per seed, the accuracy (%) at each budget (NaN: no snapshot)
    for t in BUDGET:
        for s in seeds[t]:
            p = {}
            for b in budgets:
                if (snap := RUNS / name(t, s) / f"encoder_{b}.pt").is_file():
                    key = {"data": cfg.data, "size": snap.stat().st_size,
                           "mtime_ns": snap.stat().st_mtime_ns}
                    p[b] = cached_probe(snap.with_name(f"probe_{b}.json"), key,
                                        lambda snap=snap: probe_snapshot(snap, data(), device))
            for split in ("val", "test"):
                acc.setdefault((t, split), []).append(
                    [100 * p[b][split] if b in p else float("nan") for b in budgets])
    for split in ("val", "test"):
        print(f"\n{split} linear probe (%) against encoder updates, mean ± std over seeds\n")
        # tag -> per budget, the seeds' accuracies
        per_budget = {t: list(zip(*acc[t, split])) for t in BUDGET}
        print_table(["method", "seeds", *map(str, budgets)],
                    [[label, ",".join(seeds[t]), *map(summary, per_budget[t])]
                     for t, (label, _) in BUDGET.items()]
                    + [["Palm-up − random (paired by seed)", ",".join(all_seeds),
                        *map(paired, per_budget["palmup"], per_budget["random"])]])
    print()
    print_table(["run", "wall time (pretrain.py's training loop)"],
                [[name(t, s), f"{r['wall_time_s'] / 60:.1f} min" if (r := result(name(t, s)))
                  else "–"] for t in BUDGET for s in seeds[t]])
    fig, ax = pyplot().subplots(figsize=(6, 4))
    for i, (t, (label, _)) in enumerate(BUDGET.items()):
        a = torch.tensor(acc[t, "test"], dtype=torch.float64)  # (seeds, budgets); NaN: no snapshot
        if a.isnan().all():
            continue  # a run not started yet gets no legend entry (the table shows its "–")
        ax.plot(budgets, a.mean(0), "o-", color=f"C{i}",
                label=f"{label} ({len(a)} seed{'s' if len(a) > 1 else ''})")
        if len(a) > 1:
            ax.fill_between(budgets, a.min(0).values, a.max(0).values, color=f"C{i}", alpha=0.2,
                            lw=0)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets], minor=False)
    ax.minorticks_off()
    ax.set(xlabel="encoder updates (log scale)", ylabel="test linear probe (%)",
           title=f"{Path(cfg.data).name}: linear probe against budget; band: min–max over seeds")
    ax.grid(alpha=0.3)
    if ax.lines:  # none before the first snapshot
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, Path(cfg.plot) if cfg.plot else RUNS / f"{cfg.prefix}_budget.png")


def world(cfg: Config) -> None:
    """Palm-up and the random-policy world in every cell of rho (--emas) x w (--mixes), probed on
    the validation split: a table with every finished seed of each cell, mean ± std, and Palm-up −
    random paired by seed."""
    cells = [(e, m) for e in cfg.emas.split(",") for m in cfg.mixes.split(",")]

    def name(meth, e, m, s):
        return f"{cfg.prefix}_world_{meth}_ema{e}_mix{m}_s{s}"
    launch([(name(meth, e, m, s), ["--method", meth, "--ema", e, "--mix", m, "--seed", s,
                                   "--probe-split", "val"])
            for s in cfg.world_seeds.split(",") for e, m in cells for meth in ("random", "palmup")],
           cfg)
    print(f"\nvalidation linear probe (%), {cfg.updates} updates; every finished seed of each cell "
          f"(s0, s1, ...)\n")
    rows = []
    for e, m in cells:
        seeds = [s for s in map(str, range(10))
                 if result(name("random", e, m, s)) and result(name("palmup", e, m, s))]
        got = {meth: [100 * result(name(meth, e, m, s))["linear_probe_val"] for s in seeds]
               for meth in ("random", "palmup")}
        rows.append([e, m, ",".join(seeds) or "–",
                     *(", ".join(f"{v:.1f}" for v in got[k]) or "–" for k in got),
                     *(summary(got[k]) if seeds else "–" for k in got),
                     paired(got["palmup"], got["random"]) if seeds else "–"])
    print_table(["rho", "w", "seeds", "random world", "Palm-up", "random, mean ± std",
                 "Palm-up, mean ± std", "Palm-up − random (paired)"], rows)


# ---- figure: the docs' picture of the table ----------------------------------------------------
DOC_TABLE = ROOT / "docs" / "cifar10.md"
DOC_FIGURE = ROOT / "docs" / "cifar_table.png"
DOC_HEADER = "| method | seeds | linear top-1 | kNN top-1 |"  # the results table's header line


def mean_and_std(cell: str) -> tuple:
    """A table cell -> (mean, std): '50.7 ± 0.8' -> (50.7, 0.8), '42.2' -> (42.2, None) for one
    seed, '–' -> (None, None) for not measured."""
    parts = [p.strip() for p in cell.split("±")]
    if parts[0] in ("–", "-", ""):
        return None, None
    return float(parts[0]), (float(parts[1]) if len(parts) > 1 else None)


def doc_table(path: Path = DOC_TABLE) -> list[dict]:
    """The results table of docs/cifar10.md -> one dict per row: method (its footnote marks
    dropped), seeds, linear and knn (means, %), linear_std and knn_std (None for one seed), in the
    table's order. Raises ValueError if the table is missing or a row does not parse."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    if DOC_HEADER not in lines:
        raise ValueError(f"{path} holds no table headed {DOC_HEADER}")
    rows = []
    for line in lines[lines.index(DOC_HEADER) + 2:]:  # + 2: past the header's |---| line
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4:
            raise ValueError(f"{path}: a row of the results table has {len(cells)} cells: {line}")
        (linear, linear_std), (knn, knn_std) = mean_and_std(cells[2]), mean_and_std(cells[3])
        rows.append(dict(method=cells[0].rstrip("¹²³ "), seeds=int(cells[1]), linear=linear,
                         linear_std=linear_std, knn=knn, knn_std=knn_std))
    return rows


def draw_doc_table(md: Path = DOC_TABLE, png: Path = DOC_FIGURE) -> list[dict]:
    """png from md's results table: one bar per row, its linear top-1 (with the seeds' std), and
    the kNN top-1 as a marker. The numbers drawn are kept in the PNG's Description (JSON), so a
    test can tell that the picture follows the table -> the rows drawn."""
    rows = doc_table(md)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4))
    x = list(range(len(rows)))
    ax.bar(x, [r["linear"] for r in rows], yerr=[r["linear_std"] or 0 for r in rows], capsize=3,
           color="C0", label="linear probe (mean ± std over the seeds)")
    for i, r in enumerate(rows):
        ax.text(i - 0.38, 2, f"{r['linear']:.1f}", color="white", fontsize=8, fontweight="bold")
    knn = [(i, r) for i, r in enumerate(rows) if r["knn"] is not None]
    ax.errorbar([i for i, _ in knn], [r["knn"] for _, r in knn],
                yerr=[r["knn_std"] or 0 for _, r in knn], fmt="D", color="C1", capsize=3,
                label="kNN probe")
    for i, r in enumerate(rows):
        if r["knn"] is None:
            ax.text(i, r["linear"] + (r["linear_std"] or 0) + 2, "kNN not\nmeasured", ha="center",
                    fontsize=7, color="C1")
    labels = [textwrap.fill(f"{r['method']} ({r['seeds']} seed{'s' * (r['seeds'] > 1)})", 18)
              for r in rows]
    ax.set_xticks(x, labels, fontsize=7)
    ax.set(ylabel="CIFAR-10 test top-1 (%)", ylim=(0, 85),
           title=f"CIFAR-10 probes of each method's encoder, the table of {Path(md).name}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=80, metadata={"Description": json.dumps(rows)})
    plt.close(fig)
    return rows


def figure(cfg: Config) -> None:
    """docs/cifar_table.png redrawn from the numbers of the results table in docs/cifar10.md, one
    bar per row (no training; run it after editing the table)."""
    rows = draw_doc_table()
    print(f"wrote {DOC_FIGURE}: {len(rows)} bars from the table of {DOC_TABLE}")


MODES = {"sweep": sweep, "table": table, "explore": explore, "budget": budget, "world": world,
         "figure": figure}


@cli
def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):  # the overview; each mode's flags: cifar.py <mode> --help
        print(f"{__doc__.strip()}\n\nusage: cifar.py {'|'.join(MODES)} [flags]; "
              f"cifar.py <mode> --help lists the flags")
        return
    if not argv or argv[0] not in MODES:
        sys.exit(f"usage: cifar.py {'|'.join(MODES)} [flags] (see cifar.py <mode> --help)")
    mode = MODES[argv.pop(0)]
    if {"-h", "--help"} & set(argv):  # the overview and what this mode does, then its flags
        what = textwrap.fill(f"cifar.py {mode.__name__}: {' '.join(mode.__doc__.split())}", 100)
        print(f"{__doc__.strip()}\n\n{what}\n")
    cfg = parse_config(Config, argv)
    mode(cfg)


if __name__ == "__main__":
    main()
