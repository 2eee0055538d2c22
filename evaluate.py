"""evaluate.py — linear and kNN probes of pretrained encoders, the paper's Tables 1-2 scaled down.

Every encoder is frozen; its features on the real train split fit the probes, which are scored on
the real test split. Two probes:
  * linear: multinomial logistic regression on standardised features, trained to convergence with
    full-batch L-BFGS; the weight decay is picked on a validation split carved from the training
    set, then the probe is refit on the whole training set (the usual "linear evaluation" of
    SimCLR / Kornblith et al. 2019);
  * kNN: cosine similarity, k = 20 neighbours, votes weighted by exp(sim / 0.07) (Wu et al. 2018).
Reference rows are always included: raw pixels and a randomly initialised encoder of the same
architecture.

    python evaluate.py         # reference rows only: how hard is the dataset from pixels?
    python evaluate.py runs/*  # one table row per pretraining method (mean ± std over seeds)
    python evaluate.py runs/cifar_* --data cifar10
"""
import hashlib, json, sys, time
from dataclasses import dataclass, field
from typing import Literal
from pathlib import Path

import torch
import torch.nn.functional as F

from common import (atomic_path, check_out, check_threads, load_checkpoint, load_weights, mean_std,
                    parse_config, pick_device, require, save_atomic)
from data import CACHE, check_classes, load_splits, to_float
from encoder import make_encoder


@dataclass
class Config:
    runs: list[str] = field(default_factory=list, metadata={"positional": True})  # run folders
    #                 (or encoder.pt files) of pretrain.py; folders without an encoder are skipped
    #                 with a note
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


# L2 grid, strongest first; picked on a val split (Kornblith 2019)
WEIGHT_DECAYS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
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


def random_encoder(name: str = "cnn", width: int = 32, seed: int = 0):
    """Reference: a randomly initialised encoder (fixed seed; the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_encoder(name, width).eval().requires_grad_(False)


def extract_features(encoder, x_uint8, device="cpu", batch_size=256) -> torch.Tensor:
    """Frozen features of uint8 images (N, 3, 32, 32) -> float (N, D) on the CPU;
    encoder None = raw pixels."""
    if encoder is None:
        return to_float(x_uint8).flatten(1)  # (N, 3072)
    was_training = encoder.training
    with torch.inference_mode():
        encoder.eval()  # BatchNorm uses its running statistics
        chunks = [encoder(to_float(x_uint8[i:i + batch_size].to(device))).float().cpu()
                  for i in range(0, len(x_uint8), batch_size)]
    encoder.train(was_training)  # pretrain.py may probe mid-training
    # a normal tensor (cat outside inference mode): safe to use with autograd
    return torch.cat(chunks)  # (N, D)


# ---- The probes ----------------------------------------------------------------------------------
def _fit_logreg(f, y, num_classes, weight_decay, init=None, max_iter=300):
    """min_W,b  mean CE(W f + b, y) + wd/2 ||W||^2  by full-batch L-BFGS (deterministic)
    -> (W (C, D), b (C,)).

    Loss and gradient are written out by hand in a (C, N) layout: several times faster on a CPU
    than autograd."""
    fT, n = f.T.contiguous(), len(y)  # (D, N)
    # (N,) index of (y_i, i) in a flattened (C, N) matrix
    flat_y = y * n + torch.arange(n, device=f.device)
    W, b = ((torch.zeros(num_classes, f.shape[1], device=f.device),
             torch.zeros(num_classes, device=f.device))
            if init is None else (init[0].clone(), init[1].clone()))
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, history_size=20, tolerance_grad=1e-5,
                            tolerance_change=1e-8, line_search_fn="strong_wolfe")

    def closure():
        logp = (W @ fT + b[:, None]).log_softmax(0)  # (C, N)
        loss = -logp.view(-1)[flat_y].mean() + 0.5 * weight_decay * W.square().sum()
        grad = logp.exp_()  # softmax (C, N); d loss / d logits = (softmax - onehot) / N
        grad.view(-1)[flat_y] -= 1
        grad /= n
        W.grad, b.grad = grad @ f + weight_decay * W, grad.sum(1)  # (C, D), (C,)
        return loss

    opt.step(closure)
    return W, b


def _accuracy(f, y, Wb) -> float:
    return (f @ Wb[0].T + Wb[1]).argmax(1).eq(y).float().mean().item() if len(y) else float("nan")


def linear_probe_features(f_train, y_train, f_test, y_test, weight_decays=WEIGHT_DECAYS,
                          val_frac=0.1, max_iter=300, seed=0, device="cpu") -> dict:
    """Linear probe on fixed features -> dict(test_acc, val_acc, weight_decay).
    Test labels are used only to score.

    Standardise with train statistics; for each weight decay (strongest first, warm-started) fit on
    90 % of the training set and score the held-out 10 %; refit on the whole training set with the
    best decay; score test."""
    f_train, y_train = f_train.to(device, torch.float32), y_train.to(device)
    mean, std = f_train.mean(0), f_train.std(0).clamp_min(1e-6)  # (D,) from the training set only
    f_train, f_test = (f_train - mean) / std, (f_test.to(device, torch.float32) - mean) / std
    num_classes = int(y_train.max()) + 1
    perm = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed)).to(device)
    n_val = max(1, int(len(y_train) * val_frac))
    (f_val, y_val), (f_fit, y_fit) = [(f_train[i], y_train[i])
                                      for i in (perm[:n_val], perm[n_val:])]
    best, Wb = None, None
    for wd in weight_decays:
        Wb = _fit_logreg(f_fit, y_fit, num_classes, wd, Wb, max_iter)
        acc = _accuracy(f_val, y_val, Wb)
        if best is None or acc > best[0]:  # ties keep the stronger decay
            best = (acc, wd, Wb)
    val_acc, wd, Wb = best
    Wb = _fit_logreg(f_train, y_train, num_classes, wd, Wb, max_iter)  # refit on all training data
    return {"test_acc": _accuracy(f_test, y_test.to(device), Wb), "val_acc": val_acc,
            "weight_decay": wd}


def linear_probe(encoder, train_set, test_set, device="cpu", batch_size=256, **kw) -> float:
    """Test top-1 accuracy of a linear probe on the frozen encoder;
    sets are (uint8 images, labels) pairs."""
    f_train, f_test = (extract_features(encoder, x, device, batch_size)
                       for x in (train_set[0], test_set[0]))
    return linear_probe_features(f_train, train_set[1], f_test, test_set[1], device=device,
                                 **kw)["test_acc"]


def val_split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation rule for n training images: a fixed random 10 %, the same in every run
    -> (fit, val) indices."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return perm[n // 10:], perm[:n // 10]


def split_probe(encoder, train, test, split: str = "test", n: int = 0, device="cpu") -> dict:
    """A pretraining run's closing probe: fit on train (x, y), score test (x, y, ...)
    -> {"linear_probe": acc}; with split "val" fit on 90 % of train and score a fixed other 10 %
    -> {"linear_probe_val": acc} (choose settings there, never on the test split). n > 0: only the
    first n training and n // 5 scored images (quick checks)."""
    x, y = train
    if split == "val":
        (xtr, ytr), (xte, yte) = [(x[i], y[i]) for i in val_split(len(x))]
    else:
        (xtr, ytr), (xte, yte) = (x, y), test[:2]
    m = max(n // 5, 1) if n else len(xte)  # the whole scored split unless n cuts it
    n = n or len(xtr)
    key = "linear_probe" if split == "test" else "linear_probe_val"
    return {key: round(linear_probe(encoder, (xtr[:n], ytr[:n]), (xte[:m], yte[:m]),
                                    device=device), 4)}


def knn_probe(f_train, y_train, f_test, y_test, k=20, temperature=0.07, device="cpu",
              chunk_elems=2 ** 24) -> float:
    """Weighted kNN top-1 accuracy (Wu et al. 2018 (InstDisc) / solo-learn, k=20, T=0.07):
    cosine similarity, each of the k nearest training points votes for its label with weight
    exp(sim / T)."""
    f_train = F.normalize(f_train.to(device, torch.float32), dim=1)  # (N, D)
    y_train, y_test = y_train.to(device), y_test.to(device)
    num_classes, k = int(max(y_train.max(), y_test.max())) + 1, min(k, len(y_train))
    # chunk bounds the (chunk, N) similarity matrix
    chunk, correct = max(1, chunk_elems // len(f_train)), 0
    for i in range(0, len(f_test), chunk):
        q = F.normalize(f_test[i:i + chunk].to(device, torch.float32), dim=1)  # (b, D)
        sim, idx = (q @ f_train.T).topk(k, dim=1)  # (b, k)
        votes = torch.zeros(len(q), num_classes, device=device)
        votes.scatter_add_(1, y_train[idx], (sim / temperature).exp())  # (b, C)
        correct += votes.argmax(1).eq(y_test[i:i + chunk]).sum().item()
    return correct / len(f_test)


def probe(encoder, data_splits, cfg: Config, device) -> dict:
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


def main(argv=None) -> None:
    cfg = parse_config(Config, argv)
    try:
        check_threads(cfg.threads, "evaluate.py")
        require({"batch_size >= 1": cfg.batch_size >= 1, "k >= 1": cfg.k >= 1,
                 "temperature > 0": cfg.temperature > 0, "0 < val_frac < 1": 0 < cfg.val_frac < 1,
                 "max_iter >= 1": cfg.max_iter >= 1,
                 "--out ending in .png": not cfg.out or cfg.out.endswith(".png")},
                "evaluate.py")
        device = pick_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        runs = []  # (checkpoint path, meta): every checkpoint is checked before any probing
        for arg in cfg.runs:
            p = Path(arg)
            # e.g. runs/world from `python world.py`
            if p.is_dir() and not (p / "encoder.pt").is_file():
                print(f"skipping {p} (no encoder.pt: not a finished pretrain.py run)",
                      file=sys.stderr)
                continue
            if p.is_file() and p.suffix != ".pt":  # e.g. runs/probe_embedded.png caught by `runs/*`
                print(f"skipping {p} (not a run folder)", file=sys.stderr)
                continue
            path = p / "encoder.pt" if p.is_dir() or not p.exists() else p
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
    except (FileNotFoundError, ValueError) as e:
        sys.exit("error: " + " ".join(str(e).splitlines()))  # one line, no traceback
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
                           lambda: probe(load_encoder(path, device)[0], splits, cfg, device),
                           cfg.recompute)
        groups.setdefault(meta["config"].get("method", "?"), []).append(
            {**res, "wall_time_s": meta.get("wall_time_s"), "finished": meta.get("finished", True)})
    for label, make in references.items():
        print(f"{label}:", file=sys.stderr)
        res = cached_probe(reference_cache(tag, label), settings,
                           lambda: probe(make(), splits, cfg, device), cfg.recompute)
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
