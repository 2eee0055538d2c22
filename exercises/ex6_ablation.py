"""Exercise 6 — experiment: what matters more, exploration or persistence? (paper Fig. 1B and 1C)

Palm-up has two ingredients on top of "contrastive learning on generated images":
  * exploration (Fig. 1C): an APT agent steers the latent towards frames that are new to the
    encoder. Ablation: `--method random` — the same world, uniform-random actions;
  * persistence (Fig. 1B): the EMA keeps consecutive latents close, so (o_t, o_t+1) show the same
    "object" slightly moved. Ablation: `--ema 0` — z_t+1 = m_t, the previous latent is forgotten
    (the class prompt y is still held for the episode: a positive pair shares its class and
    whatever the two actions share, nothing else).

1. BEFORE running anything, write your prediction below: which ablation hurts the linear probe
   more, and why (one or two sentences). Think about what a positive pair contains in each case.
2. Run `python exercises/ex6_ablation.py` (1-2 min on one CPU thread): three pretrainings with the
   same tiny budget — Palm-up, no exploration, no persistence — each followed by a linear probe
   (5,000 / 1,000 images). They go to runs/exercise6_{palmup,random,ema0}; every command trains a
   fresh set, so a second command writes runs/exercise6_*-2, a third -3, and so on.
3. Run `python exercises/check.py 6`: it checks your prediction is written and the newest set of
   three runs shares one budget, and prints the table, each probe beside the range that three
   seeds gave. With this budget, differences of a few points are noise (the difference of two
   probes on 1,000 test images has a standard error of ~2 points; the check prints it), and the
   seed moves each probe by more than that: a second seed,
   `python exercises/ex6_ablation.py --seed 1`, tells you more than a longer run.
"""
import os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PREDICTION = ""  # "random" (losing exploration hurts more) or "ema0" (losing persistence)
REASON = ""  # why? one or two sentences

BUDGET = ["--updates", "60", "--batch-size", "64", "--num-envs", "16", "--probe-images", "5000"]
RUNS = {"exercise6_palmup": [], "exercise6_random": ["--method", "random"],
        "exercise6_ema0": ["--ema", "0"]}


def fresh_suffix(runs=Path("runs")) -> str:
    """"" for the first set of three runs, then "-2", "-3", ...: the first suffix that no run folder
    of the set has yet (pretrain.py refuses a --name that exists)."""
    n = 1
    while any((runs / f"{name}{'' if n == 1 else f'-{n}'}").exists() for name in RUNS):
        n += 1
    return "" if n == 1 else f"-{n}"


def train(seed: int = 0, runs=Path("runs")) -> str:
    """The three runs with one budget and --seed `seed`, as a fresh set under `runs` (pretrain.py
    writes runs/<name> under the current folder: call it from the repository root) -> the set's
    suffix."""
    import pretrain
    generator = ["--generator", str(ROOT / "checkpoints" / "embedded_gan.pt")]
    suffix = fresh_suffix(Path(runs))
    for name, extra in RUNS.items():
        pretrain.main([*BUDGET, "--seed", str(seed), *generator, *extra,
                       "--name", f"{name}{suffix}"])
    return suffix


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if not (args == [] or (len(args) == 2 and args[0] == "--seed" and args[1].isdigit())):
        sys.exit("usage: python exercises/ex6_ablation.py [--seed S]   (S: an integer >= 0, "
                 "default 0)")
    if PREDICTION.strip().lower() not in ("random", "ema0") or not REASON.strip():
        sys.exit("write PREDICTION ('random' or 'ema0') and REASON at the top of "
                 "exercises/ex6_ablation.py first")
    import torch
    torch.set_num_threads(1)
    os.chdir(ROOT)
    suffix = train(int(args[1]) if args else 0)
    print(f"wrote runs/exercise6_*{suffix}; now run python exercises/check.py 6")


if __name__ == "__main__":
    main()
