"""runfiles.py — what pretrain.py keeps in runs/<name>/, and torchrun's data-parallel plumbing around a run.

    ckpt.pt            everything a resumed run needs to be the same run: config, weights, optimisers, RNGs, the
                       world, the replay buffer, SAC and its reward normaliser (removed when the run finishes)
    encoder.pt         the encoder alone, with its config (evaluate.py and transfer.py load it)
    encoder_<u>.pt     the same at update u (--snapshots)
    agent.pt           Palm-up's SAC actor with its config (play.py races it)
    metrics.csv, curves.png, result.json
check_divergence, the guard that stops a diverged run, lives here too. None of this is the method: pretrain.py
reads top to bottom without it. The run object it takes is pretrain.Run.
"""
import csv, dataclasses, hashlib, json, math, os, sys
from pathlib import Path

import torch
import torch.nn as nn

from common import ConfigError, atomic_path, load_checkpoint, pick_device, require_finite_weights, save_atomic

LOCAL = ("rng", "cuda_rng", "world", "buffer", "rms", "bn")  # checkpoint parts each torchrun rank has its own of


def generator_id(path) -> str:
    """The world's generator as a checkpoint remembers it: the content hash of its file (or the BigGAN name)."""
    path = Path(path)
    if not path.is_file():
        return str(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()[:16]


# ---- the resumable checkpoint --------------------------------------------------------------------------------------
def state(run) -> dict:
    s = {"config": dataclasses.asdict(run.cfg), "step": run.step, "metrics": run.metrics, "wall": run.wall,
         "stage_s": run.stage_s, "model": run.model.state_dict(), "opt": run.opt.state_dict(),
         "rng": torch.get_rng_state(), "generator_id": run.generator_id}
    if torch.cuda.is_available():
        s["cuda_rng"] = torch.cuda.get_rng_state_all()
    if run.world is not None:
        s["world"], s["buffer"] = {**run.world.state(), "obs": run.obs}, run.buffer.state()
    if run.sac is not None:
        s["sac"], s["rms"] = {**run.sac.state(), "probe_rng": run.probe_rng.get_state()}, run.rms.state()
    return s


def load(run, s: dict) -> None:
    if run.world_size > 1 or "ranks" in s:
        s = own_part(s, run.rank, run.world_size)
    run.step, run.metrics, run.wall, run.stage_s = s["step"], s["metrics"], s["wall"], s["stage_s"]
    run.model.load_state_dict(s["model"])
    run.opt.load_state_dict(s["opt"])
    torch.set_rng_state(s["rng"].cpu())  # the CPU generator's state (torch.load moved it to run.device)
    if "cuda_rng" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([r.cpu() for r in s["cuda_rng"]])
    if run.world is not None:
        run.world.load(s["world"])
        run.obs = s["world"]["obs"]
        run.buffer.load(s["buffer"])
    if run.sac is not None:
        run.sac.load(s["sac"])
        run.probe_rng.set_state(s["sac"]["probe_rng"].cpu())
        run.rms.load(s["rms"])


def save_checkpoint(run) -> None:
    """runs/<name>/ckpt.pt, written by rank 0 only; under torchrun it also holds every rank's own part."""
    s = state(run)
    if run.world_size > 1:  # BN statistics are rank-local between DDP's broadcasts: each rank keeps its own
        s["bn"] = dict(run.model.named_buffers())
        if "sac" in s:  # distribute() wrapped SAC's modules in DDP: save them under their plain names
            s["sac"]["nets"] = {k.replace(".module.", "."): v for k, v in s["sac"]["nets"].items()}
        s = gather_ranks(s, run.rank, run.world_size, LOCAL)
    if run.rank == 0:
        save_atomic(s, run.dir / "ckpt.pt")


def config_diff(saved: dict, now: dict, ignore) -> str:
    """'' when the two configs agree on every field outside `ignore`, else the fields that differ, in words."""
    diff = [k for k in now if k not in ignore and saved.get(k) != now[k]]
    return ", ".join(f"{k} {saved.get(k)!r} there, {now[k]!r} here" for k in diff)


def resume_or_start(run, may_change) -> None:
    """Load runs/<name>/ckpt.pt into `run` when there is one, refusing a checkpoint of another experiment: another
    config (outside `may_change`), another generator file, or more updates done than this command asks for."""
    ckpt = run.dir / "ckpt.pt"
    if run.cfg.overwrite and run.rank == 0:  # an interrupted redo must pass neither for the old run nor resume it
        (run.dir / "result.json").unlink(missing_ok=True)
        if ckpt.exists():
            print(f"--overwrite: starting {run.dir} over from update 0")
            ckpt.unlink()
    if not ckpt.exists() or run.cfg.overwrite:
        return
    s = load_checkpoint(ckpt, "checkpoint", run.device)
    what = config_diff(s.get("config", {}), dataclasses.asdict(run.cfg), may_change)
    if what:
        raise ConfigError(f"{ckpt} belongs to another experiment ({what}); pass --overwrite to start over or choose "
                          f"another --name")
    if s.get("generator_id", run.generator_id) != run.generator_id:
        raise ConfigError(f"{ckpt} was made with another generator file than {run.cfg.generator} "
                          f"({s['generator_id']} there, {run.generator_id} here); pass --overwrite to start over")
    if s.get("step", 0) > run.cfg.updates:
        raise ConfigError(f"{ckpt} is at update {s['step']}, past --updates {run.cfg.updates}; ask for at least "
                          f"{s['step']} or pass --overwrite to start over")
    require_finite_weights(s.get("model", {}), f"checkpoint {ckpt} (pass --overwrite to start over)")
    try:
        load(run, s)
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as e:
        first = str(e).replace("\n", " ")[:200]
        raise ValueError(f"checkpoint {ckpt} cannot be resumed ({first}); pass --overwrite to start over") from None
    print(f"resuming {run.dir} from update {run.step}")


def check_divergence(run, log: dict) -> None:
    """Stop a run that diverged: a loss or the reward NaN or inf, weights past cfg.max_weight, or the loss pinned
    at its chance value (uniform logits: ln B for InfoNCE, ln C for the supervised loss) for cfg.chance_patience
    logged steps."""
    cfg = run.cfg
    core = [k for k in log if k in ("loss", "reward", "alpha") or k.endswith("_loss")]  # (diagnostics may be NaN)
    bad = [k for k in core if not math.isfinite(log[k])]
    if bad:
        raise FloatingPointError(f"{bad[0]} is {log[bad[0]]} at update {run.step}; lower --lr")
    big = max(p.detach().abs().max().item() for p in run.model.encoder.parameters())
    if not big <= cfg.max_weight:
        raise FloatingPointError(f"diverged at update {run.step}: an encoder weight reached {big:.3g} "
                                 f"(> --max-weight {cfg.max_weight:g}); lower --lr")
    chance = math.log(run.model.classifier.out_features if cfg.method == "supervised" else cfg.batch_size)
    recent = [m["loss"] for m in run.metrics[-cfg.chance_patience:] if m["update"] > 100]
    if len(recent) == cfg.chance_patience and all(abs(v - chance) < 1e-3 * chance for v in recent):
        raise FloatingPointError(f"diverged: the loss has stayed at its chance value {chance:.4f} for "
                                 f"{10 * cfg.chance_patience} updates (at update {run.step}); lower --lr")


def parse_snapshots(spec: str) -> set[int]:
    try:
        return {int(s) for s in spec.split(",") if s.strip()}
    except ValueError:
        raise ConfigError(f"--snapshots takes comma-separated update counts, got {spec!r}") from None


def finished(cfg, out, reporting) -> dict | None:
    """The result of a finished run of this same experiment, None if there is none; another experiment: refused."""
    if not (out / "result.json").exists() or cfg.overwrite:
        return None
    result = json.loads((out / "result.json").read_text())
    saved, _ = result.pop("config", None), result.pop("generator_id", None)
    if saved is None and (out / "encoder.pt").is_file():  # a result.json written before it kept its config
        saved = load_checkpoint(out / "encoder.pt", "encoder checkpoint").get("config")
    what = config_diff(saved or {}, dataclasses.asdict(cfg), reporting) if saved is not None else ""
    if what:
        raise ConfigError(f"run {cfg.name} already finished as another experiment ({what}); pass --overwrite to redo "
                          f"it, or choose another --name")
    return result


# ---- the finished run's files ---------------------------------------------------------------------------------------
def save_encoder(run, path, finished: bool) -> None:
    cfg = run.cfg
    save_atomic({"kind": "encoder", "encoder": cfg.encoder, "width": cfg.width, "finished": finished,
                 "update": run.step, "state_dict": run.model.encoder.state_dict(), "config": dataclasses.asdict(cfg),
                 "wall_time_s": run.wall}, path)


def save_agent(run) -> None:
    """runs/<name>/agent.pt: the SAC actor (what acts) with what rebuilds it; play.py loads it with weights_only."""
    save_atomic({"kind": "agent", "feature_dim": run.model.encoder.feature_dim, "action_dim": run.sac.action_dim,
                 "sac_config": dataclasses.asdict(run.sac.cfg),
                 "actor": getattr(run.sac.actor, "module", run.sac.actor).state_dict(),  # unwrapped under torchrun
                 "config": dataclasses.asdict(run.cfg)}, run.dir / "agent.pt")


def save_result(run, result: dict) -> None:
    """result.json: the result, where the time went (seconds per stage), the config and the generator's identity.
    The finished run needs no checkpoint any more."""
    result["stage_s"] = {k: round(v, 1) for k, v in run.stage_s.items()}
    kept = {**result, "config": dataclasses.asdict(run.cfg), "generator_id": run.generator_id}
    save_atomic(json.dumps(kept, indent=1), run.dir / "result.json")
    (run.dir / "ckpt.pt").unlink(missing_ok=True)


def plot(metrics: list, folder: Path) -> None:
    """metrics.csv and curves.png (the encoder's loss and the agent's diagnostics against updates)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not metrics:
        return
    with atomic_path(folder / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, sorted({k for m in metrics for k in m}))
        w.writeheader()
        w.writerows(metrics)
    keys = [k for k in ("loss", "reward", "alpha", "entropy_gap", "spread_ratio", "z_sq") if k in metrics[-1]]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(m["update"], m[k]) for m in metrics if k in m and math.isfinite(m[k])]
        ax.plot(*zip(*pts))
        ax.set(xlabel="encoder update", title=k)
    fig.tight_layout()
    with atomic_path(folder / "curves.png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


# ---- torchrun: N processes, one model (docs/scale.md); a single process never calls these ---------------------------
def distributed(device: str) -> tuple[int, int]:
    """Join torchrun's process group (NCCL on GPUs, gloo on CPUs) -> (rank, world_size); (0, 1) without torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    import torch.distributed as dist
    cuda = pick_device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per process
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if dist.get_rank() > 0:
        sys.stdout = open(os.devnull, "w")  # only rank 0 prints (errors still reach stderr)
    return dist.get_rank(), world_size


def broadcast(module: nn.Module) -> None:
    """Every tensor of module.state_dict() (weights and buffers) from rank 0 to all ranks, in place."""
    import torch.distributed as dist
    for t in module.state_dict().values():
        dist.broadcast(t, src=0)


def average_grad(g: torch.Tensor) -> torch.Tensor:
    """Gradient hook: the mean of g over the ranks."""
    import torch.distributed as dist
    g = g.clone()
    dist.all_reduce(g)
    return g / dist.get_world_size()


def mean_over_ranks(log: dict) -> dict:
    """The metrics of one update, averaged over the ranks."""
    import torch.distributed as dist
    v = torch.tensor(list(log.values()), dtype=torch.float64)  # (M,) one value per metric
    if dist.get_backend() == "nccl":  # NCCL reduces GPU tensors only
        v = v.cuda()
    dist.all_reduce(v)
    return dict(zip(log, (v / dist.get_world_size()).tolist()))


def gather_ranks(s: dict, rank: int, world_size: int, local: tuple) -> dict:
    """Rank 0 gets the checkpoint s with s["ranks"][r] = rank r's own entries (the keys in `local`)."""
    import torch.distributed as dist
    own = {k: s.pop(k) for k in local if k in s}
    own = to_cpu(own)  # gather_object pickles it
    parts = [None] * world_size if rank == 0 else None
    dist.gather_object(own, parts, dst=0)
    return {**s, "ranks": parts, "world_size": world_size}


def to_cpu(x):
    """Tensors in nested dicts and lists -> the same structure on the CPU."""
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if isinstance(x, dict):
        return {k: to_cpu(v) for k, v in x.items()}
    return type(x)(to_cpu(v) for v in x) if isinstance(x, (list, tuple)) else x


def own_part(s: dict, rank: int, world_size: int) -> dict:
    """The checkpoint as rank `rank` resumes it: the shared weights plus its own part."""
    saved = s.get("world_size", 1)
    if saved != world_size:
        raise ValueError(f"it was written by {saved} process(es), this run has {world_size}; resume with "
                         f"--nproc_per_node {saved}")
    own = dict(s["ranks"][rank])
    return {**s, **own, "model": {**s["model"], **own.pop("bn")}}


def distribute(run) -> None:
    """After a resume: every rank takes rank 0's weights, and DDP averages the gradients of the encoder + head and of
    the SAC networks over the ranks in each backward, so the weights stay the same on every rank."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    if run.cfg.method == "supervised":  # its projection head is never used; DDP expects a gradient for every
        run.model.head.requires_grad_(False)  # trainable parameter of what it wraps
    bn = {k: v.clone() for k, v in run.model.named_buffers()}  # BN statistics: a resumed rank keeps its own
    broadcast(run.model)
    run.net = DDP(run.model)  # DDP broadcasts rank 0's BN statistics at the start and before each forward
    run.model.load_state_dict(bn, strict=False)
    if run.sac is not None:
        broadcast(run.sac)  # the target critics and log alpha too
        for k in ("actor", "q1", "q2"):  # SAC calls these modules: wrapped, their backward averages the gradients
            setattr(run.sac, k, DDP(getattr(run.sac, k)))
        run.sac.log_alpha.register_hook(average_grad)  # a bare parameter: averaged by a hook
