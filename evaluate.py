"""evaluate.py — linear and kNN probes of pretrained encoders, the paper's Tables 1-2 scaled down.

Scores every run's frozen encoder with both probes (probe.py) on the real test split, groups the
runs by method, prints a Markdown table (mean ± std over seeds) and draws a bar chart. Reference
rows are always included: raw pixels and a randomly initialised encoder of the same architecture.
Results are cached per run folder.

    python evaluate.py         # reference rows only: how hard is the dataset from pixels?
    python evaluate.py runs/*  # one table row per pretraining method (mean ± std over seeds)
    python evaluate.py runs/cifar_* --data cifar10
"""
import hashlib, json, sys, time
from dataclasses import dataclass, field
from typing import Literal
from pathlib import Path

import torch

from common import (ConfigError, atomic_path, check_out, check_threads, cli, load_checkpoint,
                    load_weights, parse_config, pick_device, save_atomic)
from data import CACHE, check_classes, load_splits
from encoder import make_encoder
from probe import (extract_features, knn_probe, linear_probe, linear_probe_features,  # noqa: F401
                   random_encoder, split_probe, val_split)


@dataclass
class Config:
    runs: list[str] = field(default_factory=list, metadata={"positional": True})  # run folders
    #                 (or encoder.pt files) of pretrain.py, each once; folders without an encoder
    #                 are skipped with a note
    data: str = ""  # "embedded", "cifar10" or an ImageFolder path with train/ and test/;
    #                 "" = the first run's data
    download: bool = False  # only with --data cifar10: let torchvision download CIFAR-10
    #                         (needs internet once)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" = CUDA when present, else CPU
    threads: int = 0  # torch CPU threads; 0 = torch's default (all cores). 1 is much faster on a
    #                   busy machine
    out: str = ""  # bar chart PNG; "" = runs/probe_<data>.png (the runs/ folder that holds the
    #                first run, if any)
    batch_size: int = 256  # images per forward pass during feature extraction
    k: int = 20  # kNN neighbours (Wu et al. 2018 / solo-learn)
    temperature: float = 0.07  # kNN vote weight exp(sim / T) (Wu et al. 2018 / solo-learn)
    val_frac: float = 0.1  # fraction of the training set held out to choose the linear probe's
    #                        weight decay
    max_iter: int = 300  # most L-BFGS iterations per linear-probe fit (most fits converge before)
    seed: int = 0  # seed of the validation split and of the random-init reference encoder
    recompute: bool = False  # ignore cached probe_<data>.json results (in each run folder, else
    #                          under runs/probes/)

    def rules(self) -> dict:
        """evaluate.py's flags, checked once by parse_config (NaN fails every comparison)."""
        check_threads(self.threads, "evaluate.py")
        return {"batch_size >= 1": self.batch_size >= 1, "k >= 1": self.k >= 1,
                "temperature > 0": self.temperature > 0, "0 < val_frac < 1": 0 < self.val_frac < 1,
                "max_iter >= 1": self.max_iter >= 1,
                "--out ending in .png": not self.out or self.out.endswith(".png")}


# L2 grid, strongest first; picked on a val split (Kornblith 2019)
META_TYPES = {"encoder": (str,), "width": (int,), "wall_time_s": (int, float, type(None)),
              "finished": (bool,)}


# ---- Loading encoders and extracting features ----------------------------------------------------
def load_encoder(path, device="cpu"):
    """runs/<name>/encoder.pt (or the run folder)
    -> (encoder in eval mode, checkpoint dict without state_dict)."""
    path = Path(path)
    path = path / "encoder.pt" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"encoder checkpoint {path} not found "
                                f"(pretrain one with `python pretrain.py`)")
    ckpt = load_checkpoint(path, "encoder", ("encoder", "width", "state_dict", "config"))
    for key, types in META_TYPES.items():  # a hand-edited file: "32" where 32 belongs
        if key in ckpt and type(ckpt[key]) not in types:
            raise ValueError(f"encoder checkpoint {path} has {key} {ckpt[key]!r}, not "
                             f"{' or '.join(t.__name__ for t in types)}")
    if ckpt["encoder"] not in ("cnn", "resnet18") or not 1 <= ckpt["width"] <= 1024:
        raise ValueError(f"encoder checkpoint {path} names no encoder of make_encoder: "
                         f"{ckpt['encoder']!r}, width {ckpt['width']}")
    encoder = make_encoder(ckpt["encoder"], ckpt["width"])
    load_weights(encoder, ckpt["state_dict"], f"encoder checkpoint {path}")
    meta = {key: value for key, value in ckpt.items() if key != "state_dict"}
    return encoder.to(device).eval().requires_grad_(False), meta


def both_probes(encoder, data_splits, cfg: Config, device) -> dict:
    """Both probes for one encoder (None = raw pixels)
    -> dict(linear_top1, knn_top1, weight_decay, probe_s)."""
    (x_tr, y_tr), (x_te, y_te) = data_splits
    t0 = time.time()
    f_tr, f_te = (extract_features(encoder, x, device, cfg.batch_size)
                  for x in (x_tr, x_te))  # (N, D)
    t1 = time.time()
    lin = linear_probe_features(f_tr, y_tr, f_te, y_te, val_frac=cfg.val_frac,
                                max_iter=cfg.max_iter, seed=cfg.seed, device=device)
    t2 = time.time()
    knn = knn_probe(f_tr, y_tr, f_te, y_te, cfg.k, cfg.temperature, device)
    print(f"  extract {t1 - t0:.1f} s | linear {t2 - t1:.1f} s | kNN {time.time() - t2:.1f} s",
          file=sys.stderr)
    return {"linear_top1": lin["test_acc"], "linear_val_top1": lin["val_acc"],
            "weight_decay": lin["weight_decay"], "knn_top1": knn, "probe_s": time.time() - t0}


# ---- CLI: probe every run (cached), group by method, print a Markdown table and draw a bar chart
def load_data(data: str, download: bool = False):
    """-> ((x_train, y_train), (x_test, y_test)),
    checking the folder layout and class lists first."""
    if data not in ("embedded", "cifar10"):
        root = Path(data)
        if not ((root / "train").is_dir() and (root / "test").is_dir()):
            raise FileNotFoundError(f"data folder {root} needs train/ and test/ sub-folders of "
                                    f"class folders")
        classes = [sorted(d.name for d in (root / s).iterdir() if d.is_dir())
                   for s in ("train", "test")]
        check_classes(*classes, root / "train", root / "test")  # before decoding any image
    (x_tr, y_tr, _), (x_te, y_te, _) = load_splits(data, download)
    return (x_tr, y_tr), (x_te, y_te)


def fingerprint(splits) -> str:
    """Short hash of all images and labels (~0.3 s):
    a cached result is reused only on the very same data."""
    h = hashlib.sha1()
    for x, y in splits:
        h.update(x.contiguous().numpy()), h.update(y.contiguous().numpy())
    return h.hexdigest()[:16]


def cached_probe(cache: Path, key: dict, compute, recompute=False) -> dict:
    """Reuse `cache` when it was written with the same key (data, probe settings,
    checkpoint time), else compute."""
    if cache.is_file() and not recompute:
        try:
            result = json.loads(cache.read_text())
            if result.get("key") == key:
                return result
        except (json.JSONDecodeError, AttributeError):
            pass  # a damaged cache is simply recomputed
    result = {"key": key, **compute()}
    save_atomic(json.dumps(result, indent=1), cache)
    return result


def in_run_folder(path: Path) -> bool:
    """Is `path` pretrain.py's runs/<name>/encoder.pt? Its run folder then holds its probe cache."""
    p = Path(path).resolve()
    return p.name == "encoder.pt" and p.parent.parent.name == "runs"


def cache_path(path: Path, tag: str) -> Path:
    """Where the probe results of the encoder file `path` are cached: in its run folder,
    else under runs/probes/ (never beside an encoder elsewhere, e.g. under checkpoints/),
    named by the file's absolute path."""
    if in_run_folder(path):
        return path.parent / f"probe_{tag}.json"
    digest = hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:8]
    return Path("runs") / "probes" / f"{Path(path).stem}_{digest}_{tag}.json"


def reference_cache(tag: str, label: str) -> Path:
    """The cache of a reference row (raw pixels, random-init),
    shared by every evaluation of the same data."""
    return CACHE / f"probe_{tag}_{label.replace(' ', '_')}.json"


def mean_std(values, scale: float = 1.0, digits: int = 1) -> str:
    """'m' for one value, 'm ± s' (sample std, n - 1) for several, after multiplying by scale."""
    v = torch.tensor(values, dtype=torch.float64) * scale
    m = round(v.mean().item(), digits) + 0.0  # + 0.0: a mean rounding to zero prints 0.0, not -0.0
    return f"{m:.{digits}f}" if len(v) == 1 else f"{m:.{digits}f} ± {v.std():.{digits}f}"


def bar_chart(groups: dict, path: Path, title: str) -> None:
    """Linear and kNN bars per method (mean over seeds, sample-std error bars);
    written atomically."""
    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt, numpy as np
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(groups) + 2), 3.6))
    xs = np.arange(len(groups))
    for j, (probe_name, key) in enumerate([("linear", "linear_top1"), ("kNN", "knn_top1")]):
        vals = [100 * np.array([r[key] for r in results]) for results in groups.values()]
        ax.bar(xs + (j - 0.5) * 0.38, [v.mean() for v in vals], 0.38, label=probe_name,
               yerr=[v.std(ddof=1) if len(v) > 1 else 0 for v in vals], capsize=3)
    ax.set_xticks(xs, list(groups), rotation=20, ha="right")
    ax.set_ylabel("test top-1 (%)"), ax.set_title(title), ax.legend(), ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


@cli
def main(argv=None) -> None:
    cfg = parse_config(Config, argv)  # every flag checked here (Config.rules)
    device = pick_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    runs = []  # (checkpoint path, meta): every checkpoint is checked before any probing
    given = {}  # resolved encoder path -> the argument that named it
    for arg in cfg.runs:
        p = Path(arg)
        # e.g. runs/world from `python world.py`
        if p.is_dir() and not (p / "encoder.pt").is_file():
            print(f"skipping {p} (no encoder.pt: not a finished pretrain.py run)", file=sys.stderr)
            continue
        if p.is_file() and p.suffix != ".pt":  # e.g. runs/probe_embedded.png caught by `runs/*`
            print(f"skipping {p} (not a run folder)", file=sys.stderr)
            continue
        path = p / "encoder.pt" if p.is_dir() or not p.exists() else p
        if path.resolve() in given:  # one run twice would count as two seeds of its method
            raise ConfigError(f"{arg} and {given[path.resolve()]} are the same run "
                              f"({path.resolve()}): give each run once")
        given[path.resolve()] = arg
        runs.append((path, load_encoder(path)[1]))
    data = cfg.data or (runs[0][1]["config"].get("data", "embedded") if runs else "embedded")
    builtin = data in ("embedded", "cifar10")
    tag, data_id = ((data, data) if builtin
                    else (Path(data).resolve().name, str(Path(data).resolve())))
    top = runs[0][0].parent.parent if runs and in_run_folder(runs[0][0]) else Path("runs")
    # all outputs checked before any probe
    out = check_out(cfg.out or top / f"probe_{tag}.png", "file")
    # the runs' architectures
    archs = sorted({(m["encoder"], m["width"]) for _, m in runs}) or [("cnn", 32)]
    references = {"raw pixels": lambda: None} | {
        f"random-init {name}-{width}":
            lambda name=name, width=width: random_encoder(name, width, cfg.seed).to(device)
        for name, width in archs}
    for cache in ([cache_path(path, tag) for path, _ in runs]
                  + [reference_cache(tag, r) for r in references]):
        check_out(cache, "file", "probe cache")
    splits = load_data(data, cfg.download)
    (_, y_tr), (_, y_te) = splits
    settings = {"data": data_id, "fingerprint": fingerprint(splits), "n_train": len(y_tr),
                "n_test": len(y_te),
                **{f: getattr(cfg, f)
                   for f in ("k", "temperature", "val_frac", "max_iter", "seed")}}
    print(f"data {data} ({len(y_tr)} train / {len(y_te)} test) | device {device}", file=sys.stderr)

    groups = {}  # method -> list of results, in the order the runs were given
    for path, meta in runs:
        print(f"{path}:", file=sys.stderr)
        key = {**settings, "checkpoint_mtime_ns": path.stat().st_mtime_ns}
        res = cached_probe(cache_path(path, tag), key,
                           lambda: both_probes(load_encoder(path, device)[0], splits, cfg, device),
                           cfg.recompute)
        groups.setdefault(meta["config"].get("method", "?"), []).append(
            {**res, "wall_time_s": meta.get("wall_time_s"), "finished": meta.get("finished", True)})
    for label, make in references.items():
        print(f"{label}:", file=sys.stderr)
        res = cached_probe(reference_cache(tag, label), settings,
                           lambda: both_probes(make(), splits, cfg, device), cfg.recompute)
        groups[label] = [{**res, "wall_time_s": None, "finished": True}]

    print(f"\n**{data}**: test top-1 (%), mean ± std over seeds\n")
    print("| method | seeds | linear top-1 | kNN top-1 | pretraining time |")
    print("|---|---|---|---|---|")
    for method, results in groups.items():
        times = [r["wall_time_s"] for r in results if r["wall_time_s"] is not None]
        t = sum(times) / len(times) if times else None
        t_str = "–" if t is None else f"{t:.0f} s" if t < 120 else f"{t / 60:.1f} min"
        name = method + (" (unfinished)" if not all(r["finished"] for r in results) else "")
        print(f"| {name} | {len(results)} | {mean_std([r['linear_top1'] for r in results], 100)} "
              f"| {mean_std([r['knn_top1'] for r in results], 100)} | {t_str} |")
    bar_chart(groups, out, f"probes on {tag} ({len(y_te)} test images)")
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
