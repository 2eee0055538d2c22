"""benchmarks/cifar.py — the CIFAR-10 results table (issue 7) and the sweeps that chose its settings.

    python benchmarks/cifar.py sweep     # Palm-up knobs one at a time (+ GenRep's sigma), probe on a VALIDATION split
    python benchmarks/cifar.py table     # 6 methods x 3 seeds, then evaluate.py's table on the test split

Every run is `python pretrain.py ...` with the same encoder, batch size and number of encoder updates (the budget),
written to runs/<prefix>_<...>/; finished runs are skipped, so an interrupted table resumes. `--parallel N` runs N
at once (useful on a GPU; on a 2-core CPU keep 1). The sweep never looks at the test images: pretrain.py's
`--probe-split val` fits the probe on 90 % of the training set and scores the other 10 %.
"""
import json, os, subprocess, sys, time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from generator import parse_config  # noqa: E402

METHODS = ("palmup", "random", "genrep", "simclr", "supervised", "none")
SWEEP = {  # knob -> values; the first value of each list is the default, run once as the baseline
    "ema": ["0.8", "0.5", "0.95"],
    "mix": ["0.5", "0.25", "0.9"],
    "horizon": ["16", "4", "64"],
    "temperature": ["0.1", "0.05", "0.2"],
    "apt-k": ["12", "3", "48"],
}
GENREP_SIGMAS = ["0.3", "0.6", "1.0"]


@dataclass
class Config:
    data: str = "../shared/data/cifar10"  # ImageFolder with train/ and test/ (the probes' real images)
    generator: str = "checkpoints/cifar10_gan.pt"  # the world's generator
    updates: int = 600  # encoder updates per run: the one budget of the table
    seeds: str = "0,1,2"  # table seeds
    prefix: str = "cifar"  # run folders runs/<prefix>_...
    parallel: int = 1  # runs at once
    device: str = "auto"  # passed to pretrain.py
    extra: str = ""  # more pretrain.py flags for every run, e.g. "--encoder resnet18"


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
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            running.append((name, proc, log, time.time()))
        for job in list(running):
            name, proc, log, t = job
            if proc.poll() is not None:
                running.remove(job)
                log.close()
                print(f"{name}: {'ok' if proc.returncode == 0 else f'FAILED (runs/{name}.log)'} "
                      f"({time.time() - t:.0f} s)", flush=True)
        time.sleep(0.5)


def result(name: str, key: str) -> str:
    path = ROOT / "runs" / name / "result.json"
    return f"{100 * json.loads(path.read_text())[key]:.1f}" if path.exists() else "–"


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    what = argv.pop(0) if argv and argv[0] in ("sweep", "table") else sys.exit("usage: cifar.py sweep|table [flags]")
    cfg = parse_config(Config, argv)
    (ROOT / "runs").mkdir(exist_ok=True)
    if what == "sweep":
        val = ["--probe-split", "val", "--seed", "0"]
        jobs = [(f"{cfg.prefix}_sweep_default", val)]
        jobs += [(f"{cfg.prefix}_sweep_{k}{v}", val + [f"--{k}", v]) for k, vs in SWEEP.items() for v in vs[1:]]
        jobs += [(f"{cfg.prefix}_sweep_genrep{s}", val + ["--method", "genrep", "--genrep-sigma", s])
                 for s in GENREP_SIGMAS]
        launch(jobs, cfg)
        print(f"\nvalidation linear probe (%), Palm-up, seed 0, {cfg.updates} updates; one knob changed at a time\n")
        print("| knob | value | val probe |\n|---|---|---|")
        print(f"| defaults | ema 0.8, mix 0.5, horizon 16, temperature 0.1, apt-k 12 | "
              f"{result(f'{cfg.prefix}_sweep_default', 'linear_probe_val')} |")
        for k, vs in SWEEP.items():
            for v in vs[1:]:
                print(f"| {k} | {v} | {result(f'{cfg.prefix}_sweep_{k}{v}', 'linear_probe_val')} |")
        for s in GENREP_SIGMAS:
            print(f"| genrep sigma | {s} | {result(f'{cfg.prefix}_sweep_genrep{s}', 'linear_probe_val')} |")
        return
    seeds = cfg.seeds.split(",")
    launch([(f"{cfg.prefix}_{m}_s{s}", ["--method", m, "--seed", s]) for s in seeds for m in METHODS], cfg)
    runs = [str(ROOT / "runs" / f"{cfg.prefix}_{m}_s{s}") for m in METHODS for s in seeds]
    subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *runs, "--data", cfg.data, "--device", cfg.device,
                    "--out", str(ROOT / "runs" / f"{cfg.prefix}_table.png")], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
