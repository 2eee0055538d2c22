"""runfiles.py — the harness around pretrain.py's loop: what a run keeps in runs/<name>/, guards.

None of this is the method: pretrain.py reads top to bottom without it. A run folder holds
    ckpt.pt         all a resumed run needs (weights, optimisers, RNG states, world, replay buffer)
    encoder.pt      the encoder alone, with its config (evaluate.py and transfer.py load it)
    encoder_<u>.pt  the same at update u (--snapshots); agent.pt: the SAC actor (play.py races it)
    filmstrip_*.png, metrics.csv, curves.png, result.json
`--resume runs/<name>` continues an interrupted run to the same weights as an uninterrupted one
(same thread count), refusing a finished run or another experiment. torchrun: ddp.py, only then.
"""
import contextlib, csv, dataclasses, hashlib, itertools, json, math, os, shlex, sys, time
from pathlib import Path

import torch

from common import (ConfigError, RunLock, atomic_path, load_checkpoint, pick_device,
                    release_freed_memory, require_finite_weights, run_dir, save_atomic, shipped,
                    timed)
from data import check_classes, load_split

# What --resume may change; every other field must match the checkpoint's.
MAY_CHANGE = ("name", "resume", "updates", "checkpoint_every", "snapshots", "probe", "probe_images",
              "probe_split", "download", "device")


def rules(cfg) -> dict:
    """pretrain.Config's flags, checked once by parse_config (NaN fails every comparison)."""
    biggan = cfg.generator.startswith("biggan-deep-")
    S, ram = cfg.image_size, 2 ** 50  # ram: this machine's memory, where the OS says
    if hasattr(os, "sysconf"):
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    # What the sizes would take, before anything is allocated (orders of magnitude, measured on
    # the CPU): a transition holds two uint8 frames and an action of <= 1024 floats; the encoder
    # keeps ~48 B per pixel and base channel of each of the 2B images for its backward; decoding a
    # reset's 2N frames takes ~64 float frames each.
    buffer = cfg.buffer_size * (2 * 3 * S * S + 4 * 1024)
    encoder = 2 * cfg.batch_size * 48 * cfg.width * S * S
    world = 2 * cfg.num_envs * 64 * 3 * S * S * 4
    fits = f"<= this machine's {ram / 2 ** 30:.0f} GiB of memory"
    if cfg.name:
        run_dir(cfg.name)  # letters, digits, . _ - only
    return {
        f"the replay buffer (buffer_size x {buffer // cfg.buffer_size} B) {fits}": buffer <= ram,
        f"the encoder's activations (~2 x batch_size x 48 x width x image_size^2 B) {fits}":
            encoder <= ram,
        f"the world's frames (~2 x num_envs x 64 x 3 x image_size^2 x 4 B) {fits}": world <= ram,
        "updates >= 1": cfg.updates >= 1, "2 <= batch_size <= 65536": 2 <= cfg.batch_size <= 65536,
        "1e-3 <= temperature <= 10": 1e-3 <= cfg.temperature <= 10, "0 < lr <= 1": 0 < cfg.lr <= 1,
        "1 <= width <= 1024": 1 <= cfg.width <= 1024,
        "1 <= proj_dim <= 65536": 1 <= cfg.proj_dim <= 65536,
        "1 <= num_envs <= 65536": 1 <= cfg.num_envs <= 65536,
        "1 <= apt_k < batch_size": 1 <= cfg.apt_k < cfg.batch_size,
        "num_envs <= buffer_size": cfg.num_envs <= cfg.buffer_size,
        "0 <= warmup <= 10**5": 0 <= cfg.warmup <= 10 ** 5,
        "0 <= genrep_sigma < inf": 0 <= cfg.genrep_sigma < math.inf,
        "checkpoint_every >= 1": cfg.checkpoint_every >= 1,
        "probe_images == 0 or >= 10": cfg.probe_images == 0 or cfg.probe_images >= 10,
        "snapshots in 1..updates":
            all(1 <= u <= cfg.updates for u in parse_snapshots(cfg.snapshots)),
        "0 < max_weight < inf": 0 < cfg.max_weight < math.inf,
        "chance_patience >= 1": cfg.chance_patience >= 1,
        "0 < truncation <= 1": 0 < cfg.truncation <= 1,
        "8 <= image_size <= 512": 8 <= cfg.image_size <= 512,
        "--classes, --truncation, --image-size only with a biggan-deep generator":
            biggan or (not cfg.classes and cfg.truncation == 1 and cfg.image_size == 32)}


def parse_snapshots(spec: str) -> set[int]:
    try:
        return {int(s) for s in spec.split(",") if s.strip()}
    except ValueError:
        raise ConfigError(f"--snapshots takes comma-separated update counts, "
                          f"got {spec!r}") from None


def distributed(device: str) -> tuple[int, int]:
    """(rank, world_size): (0, 1) for one process; under torchrun ddp.py joins the process group."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0, 1
    import ddp
    return ddp.join(device)


def choose_folder(cfg, rank: int = 0) -> Path:
    """The run's folder, printed first: --resume's, --name's (refused if it exists), or the first
    free one of runs/<method>_s<seed>, -2, -3, ... Nothing is created yet."""
    if cfg.resume:
        folder = Path(cfg.resume)
        if not (folder / "ckpt.pt").is_file():
            raise ConfigError(f"{folder} is a finished run: start a new one without --resume"
                              if (folder / "result.json").is_file()
                              else f"{folder} holds no checkpoint to resume (ckpt.pt)")
    elif cfg.name:
        folder = run_dir(cfg.name)
        if folder.exists():
            raise ConfigError(f"{folder} exists: pass --resume {folder} to continue it, or another "
                              f"--name")
    else:
        base = run_dir(f"{cfg.method}_s{cfg.seed}")
        more = (base.with_name(f"{base.name}-{n}") for n in itertools.count(2))
        folder = next(f for f in itertools.chain([base], more) if not f.exists())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import ddp
        folder = ddp.same_folder(folder)  # rank 0's choice on every rank
    if rank == 0:
        print(f"run {folder} | method {cfg.method} | seed {cfg.seed} | "
              f"device {pick_device(cfg.device)}")
    return folder


def check_data(run, classes: list) -> None:
    """The data's and the generator's class lists agree (label i means one class); enough images."""
    cfg = run.cfg
    if run.test is not None:
        check_classes(classes, run.test[2], f"{cfg.data} train/", f"{cfg.data} test/")
    if run.G is not None and classes and not cfg.generator.startswith("biggan"):
        check_classes(run.G.classes, classes, f"the generator {cfg.generator}",
                      f"--data {cfg.data}")
    if cfg.probe and len(run.x) < 10:
        raise ValueError(f"the probe needs at least 10 training images, {cfg.data} has "
                         f"{len(run.x)}")
    if cfg.method not in ("simclr", "supervised"):  # only the probe reads them: not held in
        run.x = run.y = run.test = None  # memory while training (probe_data loads them again)


def probe_data(run) -> tuple:
    """The closing probe's (train images, labels) and test split, after training: the replay
    buffer goes first, to make room (a finished run keeps none)."""
    run.buffer = None
    release_freed_memory()  # keep_freed_memory kept the buffer's pages: the peak would grow
    if run.x is None:
        run.x, run.y, _ = load_split(run.cfg.data, "train", run.cfg.download)
        test = run.cfg.probe_split == "test"
        run.test = load_split(run.cfg.data, "test", run.cfg.download) if test else None
    return (run.x, run.y), run.test


@contextlib.contextmanager
def open_run(run, argv):
    """Create (or resume) the run folder and hold its lock while the run trains; Ctrl-C says how to
    continue. Under torchrun only rank 0 writes."""
    if run.rank == 0 and not run.cfg.resume:
        try:
            run.dir.mkdir(parents=True)
        except FileExistsError:
            raise ConfigError(f"{run.dir} was created meanwhile by another command; "
                              f"run again") from None
    with RunLock(run.dir) if run.rank == 0 else contextlib.nullcontext():
        run.generator_id = generator_id(run.cfg.generator) if run.G is not None else ""
        if run.cfg.resume:
            resume(run)
        if run.world_size > 1:
            import ddp
            ddp.distribute(run)
        try:
            yield
        except KeyboardInterrupt:
            sys.exit(interrupted(run, argv))


def interrupted(run, argv) -> str:
    """The one line Ctrl-C prints: what was kept, and the exact command that continues."""
    ckpt, where = run.dir / "ckpt.pt", f"at update {run.step}"
    if (run.dir / "encoder.pt").exists():  # training had finished: the probe was cut
        where = (f"during the linear probe ({run.dir}/encoder.pt is complete: python evaluate.py "
                 f"{run.dir} scores it)")
    if not ckpt.exists():
        return (f"interrupted {where}, before the first checkpoint (every "
                f"{run.cfg.checkpoint_every} updates): nothing to resume in {run.dir}")
    args = list(sys.argv[1:] if argv is None else map(str, argv))
    i = next((i for i, a in enumerate(args) if a.split("=")[0] == "--resume"), len(args))
    del args[i:i + (2 if args[i:i + 1] == ["--resume"] else 1)]  # an earlier --resume (+ folder)
    done = torch.load(ckpt, weights_only=True, map_location="cpu")["step"]
    launcher = "python pretrain.py" if run.world_size == 1 else \
        f"torchrun --nproc_per_node {run.world_size} pretrain.py"
    return (f"interrupted {where}; continue from update {done} with: "
            f"{launcher} {shlex.join([*args, '--resume', str(run.dir)])}")


def generator_id(path) -> str:
    """The world's generator as a checkpoint remembers it: its file's content hash, or its name."""
    path = shipped(path)
    if not path.is_file():
        return str(path)
    with open(path, "rb") as fh:
        return "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()[:16]


# ---- the loop's edges: logging, the divergence guard, checkpoints --------------------------------
def log_update(run, log: dict, bar) -> None:
    """A logged update: every metric and the largest encoder weight in ONE read from the device,
    then the divergence guard."""
    big = torch.stack([p.detach().abs().max() for p in run.model.encoder.parameters()]).max()
    values = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in log.values()] + [big])
    values = values.tolist()  # the one host read of the update
    if run.world_size > 1:
        import ddp
        values = ddp.mean_over_ranks(values)  # every rank logs and checks the same numbers
    log = dict(zip(log, values[:-1]), update=run.step, time_s=round(wall(run), 2))
    run.metrics.append(log)
    if run.rank == 0:  # other ranks draw no progress bar
        seconds = max(time.time() - bar.start_t, 1e-9)
        img_s = 2 * run.cfg.batch_size * (bar.n - bar.initial) / seconds
        bar.set_postfix(loss=f"{log['loss']:.3f}", reward=f"{log.get('reward', 0):.3f}",
                        alpha=f"{log.get('alpha', 0):.3f}", img_s=f"{img_s:.0f}")
    check_divergence(run, log, values[-1])


def check_divergence(run, log: dict, biggest_weight: float) -> None:
    """Stop a run that diverged: the loss, reward or a SAC loss NaN or inf, an encoder weight past
    --max-weight, or the loss at its chance value (ln B for InfoNCE, ln C for the supervised loss)
    for --chance-patience logged updates in a row after update 100."""
    cfg = run.cfg
    bad = [k for k in log if (k in ("loss", "reward", "alpha") or k.endswith("_loss"))
           and not math.isfinite(log[k])]
    if bad:
        raise FloatingPointError(f"{bad[0]} is {log[bad[0]]} at update {run.step}; lower --lr")
    if not biggest_weight <= cfg.max_weight:
        raise FloatingPointError(f"diverged at update {run.step}: an encoder weight reached "
                                 f"{biggest_weight:.3g} (> --max-weight {cfg.max_weight:g}); "
                                 f"lower --lr")
    classes = run.model.classifier.out_features if cfg.method == "supervised" else cfg.batch_size
    chance = math.log(classes)
    recent = [m["loss"] for m in run.metrics[-cfg.chance_patience:] if m["update"] > 100]
    if len(recent) == cfg.chance_patience and all(abs(v - chance) < 1e-3 * chance for v in recent):
        raise FloatingPointError(f"diverged: the loss has stayed at its chance value {chance:.4f} "
                                 f"for {10 * cfg.chance_patience} updates (at update {run.step}); "
                                 f"lower --lr")


def end_distributed(run) -> None:
    import ddp
    ddp.end(run)


def wall(run) -> float:
    """Seconds of training so far, this process's and those before a resume."""
    return run.wall + time.time() - run.started


def keep_progress(run) -> None:
    """After an update: the --snapshots encoders and the resumable checkpoint, when due."""
    if run.step in parse_snapshots(run.cfg.snapshots) and run.rank == 0:
        save_encoder(run, run.dir / f"encoder_{run.step}.pt")
    if run.step % run.cfg.checkpoint_every == 0 and run.step < run.cfg.updates:
        start = time.time()
        with timed(run.stage_s, "filmstrips, checkpoints, plots"):
            save_checkpoint(run)
        run.started += time.time() - start  # saving is not training time


def state(run) -> dict:
    s = {"kind": "resumable", "config": dataclasses.asdict(run.cfg), "step": run.step,
         "threads": torch.get_num_threads(),  # another count sums in another order: other bits
         "metrics": run.metrics, "wall": wall(run), "stage_s": run.stage_s,
         "model": run.model.state_dict(), "opt": run.opt.state_dict(), "rng": torch.get_rng_state(),
         "generator_id": run.generator_id}
    if torch.cuda.is_available():
        s["cuda_rng"] = torch.cuda.get_rng_state_all()
    if run.world is not None:
        b = run.buffer  # its filled part only, cloned (a slice would save the whole storage)
        s["buffer"] = {"ptr": b.ptr, "size": b.size,
                       **{k: getattr(b, k)[:b.size].clone() for k in BUFFER}}
        s["world"] = {**run.world.state(), "obs": run.obs}
    if run.sac is not None:
        s["sac"] = {"nets": run.sac.state_dict(), "steps": run.sac.num_steps,
                    "opts": [getattr(run.sac, k).state_dict() for k in SAC_OPTIMISERS]}
        s["knn_mean"] = run.knn_mean.mean, run.knn_mean.count
        s["spread_rng"] = run.spread_rng.get_state()
    return s


BUFFER = ("obs", "next_obs", "action", "label")  # the replay buffer's tensors
SAC_OPTIMISERS = ("actor_opt", "critic_opt", "alpha_opt")


def load(run, s: dict) -> None:
    run.step, run.metrics, run.wall = s["step"], s["metrics"], s["wall"]
    for stage, seconds in s["stage_s"].items():  # this process's loading time plus earlier ones
        run.stage_s[stage] = run.stage_s.get(stage, 0.0) + seconds
    run.model.load_state_dict(s["model"])
    run.opt.load_state_dict(s["opt"])
    torch.set_rng_state(s["rng"].cpu())  # the CPU generator's state (torch.load moved it)
    if "cuda_rng" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([r.cpu() for r in s["cuda_rng"]])
    if run.world is not None:
        run.world.load(s["world"])
        run.obs = s["world"]["obs"]
        b = run.buffer
        b.ptr, b.size = s["buffer"]["ptr"], s["buffer"]["size"]
        for k in BUFFER:
            getattr(b, k)[:b.size] = s["buffer"][k]
    if run.sac is not None:
        run.sac.load_state_dict(s["sac"]["nets"])
        run.sac.num_steps = s["sac"]["steps"]
        for k, o in zip(SAC_OPTIMISERS, s["sac"]["opts"]):
            getattr(run.sac, k).load_state_dict(o)
        run.knn_mean.mean, run.knn_mean.count = s["knn_mean"]
        run.spread_rng.set_state(s["spread_rng"].cpu())


def save_checkpoint(run) -> None:
    """runs/<name>/ckpt.pt, written by rank 0; under torchrun it holds every rank's own part too."""
    s = state(run)
    if run.world_size > 1:
        import ddp
        s = ddp.gather_checkpoint(run, s)
    if run.rank == 0:
        save_atomic(s, run.dir / "ckpt.pt")


def flat(config: dict, prefix: str = "") -> dict:
    """A nested config dict as flag names: {"sac": {"gamma": 0.5}} -> {"sac_gamma": 0.5}."""
    out = {}
    for k, v in config.items():
        sub = prefix + ("sac_" if k == "sac" else "")
        out |= flat(v, sub) if isinstance(v, dict) else {prefix + k: v}
    return out


def resume(run) -> None:
    """Load runs/<name>/ckpt.pt into `run`, refusing a checkpoint of another experiment: another
    config (outside MAY_CHANGE), another generator file, or more updates done than asked for."""
    ckpt = run.dir / "ckpt.pt"
    s = load_checkpoint(ckpt, "resumable", ("config", "step"), run.device)
    saved, now = flat(s["config"]), flat(dataclasses.asdict(run.cfg))
    diff = [f"--{k.replace('_', '-')} {saved.get(k)!r} there, {now[k]!r} here"
            for k in now if k not in MAY_CHANGE and saved.get(k) != now[k]]
    if diff:
        raise ConfigError(f"{ckpt} belongs to another experiment ({'; '.join(diff)}): resume it "
                          f"with the same flags, or start a new run without --resume")
    if s.get("threads", torch.get_num_threads()) != torch.get_num_threads():  # other sums
        raise ConfigError(f"{ckpt} was trained with {s['threads']} torch threads, not "
                          f"{torch.get_num_threads()}: resume with OMP_NUM_THREADS={s['threads']}")
    if s.get("generator_id") != run.generator_id:
        raise ConfigError(f"{ckpt} was made with another generator file than {run.cfg.generator}")
    if not isinstance(s["step"], int) or s["step"] > run.cfg.updates:
        raise ConfigError(f"{ckpt} is at update {s['step']}, past --updates {run.cfg.updates}")
    require_finite_weights(s.get("model", {}), f"checkpoint {ckpt}")
    if run.world_size > 1 or "ranks" in s:
        import ddp
        s = ddp.own_part(s, run.rank, run.world_size)
    try:
        load(run, s)
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as e:
        why = " ".join(str(e).split())[:200]
        raise ValueError(f"checkpoint {ckpt} cannot be resumed ({why})") from None
    print(f"resuming {run.dir} from update {run.step}")


# ---- the finished run's files --------------------------------------------------------------------
def save_encoder(run, path) -> None:
    cfg = run.cfg
    save_atomic({"kind": "encoder", "encoder": cfg.encoder, "width": cfg.width, "update": run.step,
                 "state_dict": run.model.encoder.state_dict(), "config": dataclasses.asdict(cfg),
                 "wall_time_s": wall(run), "finished": True}, path)


def save_finished(run) -> None:
    """encoder.pt; agent.pt (the SAC actor, what acts, and what rebuilds it); metrics, curves."""
    save_encoder(run, run.dir / "encoder.pt")
    if run.sac is not None:
        save_atomic({"kind": "agent", "feature_dim": run.model.encoder.feature_dim,
                     "action_dim": run.sac.action_dim, "actor": run.sac.actor.state_dict(),
                     "config": dataclasses.asdict(run.cfg)}, run.dir / "agent.pt")
    plot(run.metrics, run.dir)


def save_result(run, probe: dict) -> dict:
    """result.json: the result, the seconds per stage, the config and the generator's identity. The
    finished run needs no checkpoint any more."""
    if run.rank > 0:
        return {}
    cfg = run.cfg
    result = {"method": cfg.method, "seed": cfg.seed, "updates": cfg.updates,
              "wall_time_s": round(run.wall, 1), **probe}
    if run.world_size > 1:
        result |= {"processes": run.world_size, "pairs_per_update": run.world_size * cfg.batch_size,
                   "envs": run.world_size * cfg.num_envs}
    result["stage_s"] = {k: round(v, 1) for k, v in run.stage_s.items()}
    kept = {**result, "config": dataclasses.asdict(cfg), "generator_id": run.generator_id}
    save_atomic(json.dumps(kept, indent=1), run.dir / "result.json")
    (run.dir / "ckpt.pt").unlink(missing_ok=True)
    print(f"{run.dir.name}: {result}")
    return result


def plot(metrics: list, folder: Path) -> None:
    """metrics.csv and curves.png (the encoder's loss and the agent's diagnostics by update)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    if not metrics:
        return
    with atomic_path(folder / "metrics.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, sorted({k for m in metrics for k in m}))
        w.writeheader()
        w.writerows(metrics)
    keys = [k for k in ("loss", "reward", "alpha", "entropy_gap", "spread_ratio", "z_sq")
            if k in metrics[-1]]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(m["update"], m[k]) for m in metrics if k in m and math.isfinite(m[k])]
        ax.plot(*zip(*pts))
        ax.set(xlabel="encoder update", title=k)
    fig.tight_layout()
    with atomic_path(folder / "curves.png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
