"""Exercise 5 — experiment: positives at t+k instead of t+1 (paper Fig. 1C: temporal contrastive
learning).

Palm-up's positive pair is (o_t, o_t+1). The further apart two frames of an episode are, the more
the world has changed between them: a harder positive, which may teach a more invariant
representation — or pair frames that no longer share much. This exercise measures the linear probe
for k = 1, 2, 4, 8.

Part 1 (you): write `sample_pairs`. The frames of a random-policy rollout are stored by `collect`
below as a grid: row s = the s-th frame an env showed, column n = the env. t[s, n] is the frame's
time index inside its episode: 0 for the first frame after a reset, then 1, 2, ..., H (world.py's
info["t"]). A pair is (s, n) and (s + k, n); it is valid only if both frames belong to the SAME
episode — a positive must never straddle a reset, where the class and the latent are drawn anew.
Sample anchors uniformly among all valid ones.

Part 2: `python exercises/check.py 5` checks your pairs (k apart, same episode, all valid anchors
reachable, uniform). Then run the experiment, `python exercises/ex5_offsets.py` (1-3 min on one CPU
thread: 4 tiny pretrainings of 50 updates and a linear probe each, plus a random-init reference;
`--seed S` for another seed, default 0), and `python exercises/check.py 5` again to see the table
beside the range that the reference solution gave over three seeds. The budget is tiny on
purpose: differences of a few points are within noise (800 test images).
"""
import json, math, os, sys, time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OFFSETS = (1, 2, 4, 8)  # k
# The rollout: 32 envs x 4 episodes of 16 steps (2,176 frames)
NUM_ENVS, HORIZON, EPISODES = 32, 16, 4
# Each k: 50 encoder updates of 64 pairs (pretrain.py's temperature and lr)
UPDATES, BATCH, TEMPERATURE, LR = 50, 64, 0.1, 1e-3
PROBE_IMAGES = 4000  # linear probe on the first 4,000 train / 800 test images of the embedded data
OUT = Path("runs") / "exercise5"  # results.json and probe_vs_k.png (from the repository root)


def sample_pairs(t: torch.Tensor, k: int, batch_size: int, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """t (T, N) long: time index in the episode of frame [s, n]. -> (s (B,), n (B,)) long: the
    anchors [s, n], each positive being [s + k, n] in the same episode. Uniform over all valid
    anchors, drawn with `generator`. Raise ValueError if no valid anchor exists (e.g. k larger than
    an episode)."""
    # your code here: about 6 lines (which (s, n) are valid? how does t tell you that no reset
    # came between?)
    raise NotImplementedError("sample_pairs is not written yet: find every anchor [s, n] whose "
                              "frame [s + k, n] is k steps later in the SAME episode (compare "
                              "t[s + k, n] with t[s, n]), then draw batch_size of them uniformly "
                              "with `generator`")


@torch.no_grad()
def collect(world, steps: int, seed: int = 0) -> dict:
    """Uniform-random policy for `steps` world steps. Every frame an env shows is stored, the first
    frame of each episode (t = 0) included. -> dict of frames (T, N, 3, 32, 32), t (T, N),
    y (T, N), z (T, N, d), episode (T, N). LatentWorld resets all envs together (one shared
    horizon), so the rows line up across envs."""
    g = torch.Generator(device=world.device).manual_seed(seed)
    obs = world.reset()  # (N, 3, 32, 32)
    episode = torch.zeros(world.num_envs, dtype=torch.long)  # (N,) episode counter per env
    rows = [(obs, world.t.clone(), world.y.clone(), world.z.clone(), episode.clone())]
    for _ in range(steps):
        shape = (world.num_envs, world.latent_dim)
        a = torch.rand(shape, generator=g, device=world.device) * 2 - 1  # (N, d)
        obs, info = world.step(a)
        rows.append((info["next_obs"], info["t"], info["y"], info["z"], episode.clone()))
        if info["done"].any():
            if not info["done"].all():
                raise ValueError("collect needs envs that reset together (LatentWorld does)")
            episode += 1
            # the next episode's first frame, t = 0
            rows.append((obs, world.t.clone(), world.y.clone(), world.z.clone(), episode.clone()))
    frames, t, y, z, ep = (torch.stack(col).cpu() for col in zip(*rows))
    return {"frames": frames, "t": t, "y": y, "z": z, "episode": ep}


def pretrain_offset(frames: torch.Tensor, t: torch.Tensor, k: int, seed: int = 0, sampler=None):
    """A fresh encoder + head trained for UPDATES steps on pairs k apart, drawn by `sampler`
    (default: your sample_pairs) -> (encoder, last InfoNCE loss)."""
    import pretrain
    from common import seed_everything
    from encoder import Model
    seed_everything(seed)
    c = pretrain.Config()  # pretrain.py's encoder, head and sizes
    model = Model(c.encoder, c.width, c.proj_dim, num_classes=10)
    opt = torch.optim.Adam(model.parameters(), LR)
    g = torch.Generator().manual_seed(seed)
    sampler = sampler or sample_pairs
    for _ in range(UPDATES):
        s, n = sampler(t, k, BATCH, g)  # (B,), (B,)
        v1, v2 = frames[s, n], frames[s + k, n]  # (B, 3, 32, 32) each
        p = model.head(model.encoder(torch.cat([v1, v2])))  # (2B, proj_dim): one pass, as pretrain
        loss = pretrain.info_nce(p[:BATCH], p[BATCH:], TEMPERATURE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.encoder, loss.item()


def experiment(seed: int = 0, out: Path = OUT, sampler=None) -> dict:
    """Part 2: one rollout, then for each k a fresh encoder trained on pairs k apart and its linear
    probe, plus a random-init encoder; everything seeded by `seed`. Writes out/results.json and
    out/probe_vs_k.png (from the repository root) -> the results."""
    from evaluate import linear_probe, random_encoder
    from data import load_split
    from generator import load_generator
    from world import LatentWorld, WorldConfig
    start = time.time()
    G = load_generator(ROOT / "checkpoints" / "embedded_gan.pt")
    world = LatentWorld(G, NUM_ENVS, WorldConfig(horizon=HORIZON), seed=seed)
    traj = collect(world, EPISODES * HORIZON, seed=seed)
    print(f"collected {traj['frames'].shape[0]} x {NUM_ENVS} frames ({time.time() - start:.0f} s)")
    x, y, _ = load_split("embedded", "train")
    xte, yte, _ = load_split("embedded", "test")
    m = PROBE_IMAGES // 5
    train, test = (x[:PROBE_IMAGES], y[:PROBE_IMAGES]), (xte[:m], yte[:m])
    budget = dict(num_envs=NUM_ENVS, horizon=HORIZON, episodes=EPISODES, updates=UPDATES,
                  batch=BATCH, temperature=TEMPERATURE, lr=LR, probe_images=PROBE_IMAGES)
    results = {"offsets": list(OFFSETS), "linear_probe": [], "final_loss": [], "budget": budget,
               "seed": seed}
    for k in OFFSETS:
        encoder, loss = pretrain_offset(traj["frames"], traj["t"], k, seed, sampler)
        acc = linear_probe(encoder, train, test)
        results["linear_probe"].append(round(acc, 4))
        results["final_loss"].append(round(loss, 3))
        print(f"k = {k}: final InfoNCE {loss:.3f} (log B = {math.log(BATCH):.2f}) | linear probe "
              f"{acc:.3f} ({time.time() - start:.0f} s)", flush=True)
    results["random_init_probe"] = round(linear_probe(random_encoder(seed=seed), train, test), 4)
    results["wall_time_s"] = round(time.time() - start, 1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "probe_vs_k.png")
    print(f"random-init encoder: {results['random_init_probe']:.3f} | wrote {out}/results.json "
          f"and {out}/probe_vs_k.png in {results['wall_time_s']:.0f} s")
    return results


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if not (args == [] or (len(args) == 2 and args[0] == "--seed" and args[1].isdigit())):
        sys.exit("usage: python exercises/ex5_offsets.py [--seed S]   (S: an integer >= 0, "
                 "default 0)")
    seed = int(args[1]) if args else 0
    try:  # the stub: one line, not a traceback
        sample_pairs(torch.tensor([[1], [2]]), 1, 1, torch.Generator())  # one valid anchor
    except NotImplementedError:
        sys.exit("write `sample_pairs` first (exercises/ex5_offsets.py), then run this again")
    torch.set_num_threads(1)
    os.chdir(ROOT)
    experiment(seed)
    print("now run python exercises/check.py 5")


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(results["offsets"], [100 * a for a in results["linear_probe"]], "o-",
            label="temporal InfoNCE, t+k")
    ax.axhline(100 * results["random_init_probe"], color="gray", ls="--",
               label="random-init encoder")
    ax.axhline(10, color="gray", ls=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xticks(results["offsets"], [str(k) for k in results["offsets"]])
    ax.minorticks_off()
    budget = results["budget"]
    ax.set(xlabel="offset k of the positive", ylabel="linear probe top-1 (%)",
           title=f"{budget['updates']} updates, {budget['probe_images']} probe images")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
