"""world.py — Fig. 1B: the generator's latent space as a world with temporally persistent dynamics.

N environments step together, in one batched generator call per step. Episode e of env i:
    y ~ Uniform{0..K-1}                 class "prompt", sampled at the start of the episode, held for all of it
    z_0 ~ N(0, I)                       the generator's own prior
    for t = 0 .. H-1:
        eps_t ~ N(0, I)                                     a freshly sampled random latent
        m_t   = w * s * a_t + sqrt(1 - w^2) * eps_t         mix the action a_t in [-1, 1]^d with the noise
        z_t+1 = rho * z_t + sqrt(1 - rho^2) * m_t           exponential moving average ("vp", the default)
        o_t+1 = G(z_t+1, y)                                 decode with the pretrained generator
    after H steps the env resets itself: new y, new z_0.
Coefficients — the paper names the mixing and the moving average but gives no values; ours live in WorldConfig
(below) and were chosen by measurement (docs/world.md):
    w   `mix`           weight of the action against the noise (0 = pure noise, 1 = pure action)
    rho `ema`           persistence: 0 = i.i.d. latents every step, -> 1 = frozen latent
    s   `action_scale`  sqrt(3): a uniform action on [-1, 1] has variance 1/3, so s * a has variance 1
    H   `horizon`       steps per episode
Why "vp" (variance-preserving): with uniform random actions Var(m_t) = w^2 s^2 / 3 + 1 - w^2 = 1, and the
sqrt(1 - rho^2) gain keeps z_t ~ N(0, I) at every step — the latents stay where the generator was trained.
The textbook EMA ("plain": z_t+1 = rho z_t + (1 - rho) m_t) shrinks the stationary variance to
(1 - rho) / (1 + rho) (0.11 for rho = 0.8): z collapses toward 0, and G then draws the blurry, low-contrast
"average image" of the class, the same for every episode. It is kept as an option to see that.

    python world.py            # random-policy rollout with the shipped generator -> filmstrip PNG + GIF
"""
import dataclasses, math, sys, time
from dataclasses import dataclass
from typing import Literal
from pathlib import Path

import torch

from common import ConfigError, atomic_path, check_out, parse_config, pick_device, require
from generator import load_generator


@dataclass(frozen=True)
class WorldConfig:
    """The world's coefficients, in one place; every script that builds a world takes its defaults from here."""
    horizon: int = 16  # H: steps per episode, then auto-reset (paper leaves it open)
    mix: float = 0.5  # w: weight of the action against fresh noise in [0, 1] (paper leaves it open)
    ema: float = 0.8  # rho: EMA persistence in [0, 1) (paper leaves it open)
    action_scale: float = math.sqrt(3)  # s: sqrt(3) makes uniform actions on [-1, 1] unit-variance (paper: open)
    ema_kind: Literal["vp", "plain"] = "vp"  # "vp" (variance-preserving) or "plain" (shrinks z: washed-out images)

    def __post_init__(self):
        rules = {"horizon >= 1": self.horizon >= 1, "0 <= mix <= 1": 0 <= self.mix <= 1, "0 <= ema < 1":
                 0 <= self.ema < 1, "0 < action_scale < inf": 0 < self.action_scale < math.inf,
                 "ema_kind in ('vp', 'plain')": self.ema_kind in ("vp", "plain")}
        for rule, ok in rules.items():
            if not ok:
                raise ConfigError(f"the world needs {rule} (got {self})")

    @classmethod
    def of(cls, cfg) -> "WorldConfig":
        """The world's coefficients out of a script's config that has fields of the same names."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if hasattr(cfg, f.name)})


@dataclass
class Config:
    generator: str = "checkpoints/embedded_gan.pt"  # generator checkpoint (generator.py), or biggan-deep-128 (-256,
    #                                                  -512) at 32x32 with all 1000 classes (docs/scale.md)
    num_envs: int = 8  # environments stepped together (rows of the filmstrip)
    horizon: int = WorldConfig.horizon  # H: steps per episode, then auto-reset (paper leaves it open)
    mix: float = WorldConfig.mix  # w: weight of the action against fresh noise in [0, 1] (paper leaves it open)
    ema: float = WorldConfig.ema  # rho: EMA persistence in [0, 1) (paper leaves it open)
    action_scale: float = WorldConfig.action_scale  # s: makes uniform actions unit-variance
    ema_kind: Literal["vp", "plain"] = "vp"  # "vp" (variance-preserving) or "plain" (shrinks z: washed-out images)
    steps: int = 32  # demo: steps of the random-policy rollout
    seed: int = 0  # seeds the world's own random stream (labels, resets, noise)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" = CUDA when present, else CPU
    out: str = "runs/world"  # demo: folder for filmstrip.png and rollout.gif (not under checkpoints/)


FRAME_BYTES = 3 * 32 * 32 * 4  # one float32 frame: the demo keeps every frame of its rollouts in memory
MAX_FRAME_BYTES = 4 * 2 ** 30
MAX_ENVS = 512  # the GIF puts the envs side by side, 99 px each, and a GIF is at most 65,535 px wide


def latent_step(z, action, eps, wc: WorldConfig):
    """One latent transition (module docstring): z (N, d), action (N, d), eps (N, d) -> z_next (N, d)."""
    w, s, rho = wc.mix, wc.action_scale, wc.ema
    m = torch.add(math.sqrt(1 - w ** 2) * eps, action, alpha=w * s)  # (N, d): w s a + sqrt(1-w^2) eps (Fig. 1B: mix)
    gain = math.sqrt(1 - rho ** 2) if wc.ema_kind == "vp" else 1 - rho
    return torch.add(rho * z, m, alpha=gain)  # (N, d): rho z + gain m (Fig. 1B: the EMA; fused for batch-1 steps)


class LatentWorld:
    """Vectorised world. reset() -> obs (N, 3, 32, 32) in [-1, 1]; step(action (N, d) in [-1, 1]) -> (obs, info).

    No extrinsic reward: the agent computes its own. info (all tensors of the step just taken):
        next_obs (N, 3, 32, 32)  the frame the action led to: equals obs, except where done, where obs is
                                 already the first frame of the next episode (store (obs, a, next_obs) pairs!)
        z (N, d), y (N,), t (N,) the latent, label and time index (1..H) of next_obs (t and done: made once per time
                                 index and handed out again at every visit; read-only)
        done (N,)                True on the step that ends an episode (t == H); the envs run in lock-step
    """

    def __init__(self, G, num_envs: int = 8, cfg: WorldConfig = WorldConfig(), seed: int = 0):
        if num_envs < 1:
            raise ConfigError(f"the world needs num_envs >= 1, got {num_envs}")
        self.G, self.num_envs, self.cfg, self.horizon = G, num_envs, cfg, cfg.horizon
        self.latent_dim, self.num_classes = G.latent_dim, G.num_classes
        self.device = next(G.parameters()).device
        self.rng = torch.Generator(device=self.device).manual_seed(seed)  # the world's only random stream
        self.z = torch.zeros(num_envs, self.latent_dim, device=self.device)  # (N, d); reset() draws z_0
        self.y = torch.zeros(num_envs, dtype=torch.long, device=self.device)  # (N,)
        self.t = torch.zeros(num_envs, dtype=torch.long, device=self.device)  # (N,)
        self._steps = 0
        self._clock = {}  # k -> (t, done): the lock-step clock's (N,) tensors for k = 1..H, made once (read-only)

    def peek_noise(self) -> torch.Tensor:
        """The noise eps (N, d) that the next step() will draw, without drawing it (the stream is left as it was)."""
        state = self.rng.get_state()
        eps = self._noise(self.num_envs)
        self.rng.set_state(state)
        return eps

    def _noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=self.rng, device=self.device)  # (n, d)

    def _new_episodes(self) -> None:
        """Start fresh episodes in all envs: new class prompts and z_0 ~ N(0, I) (new tensors: what was already
        handed out in `info` never changes)."""
        self.y = torch.randint(self.num_classes, (self.num_envs,), generator=self.rng, device=self.device)  # (N,)
        self.z = self._noise(self.num_envs)  # (N, d)
        self.t = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)  # (N,)

    @torch.inference_mode()
    def reset(self) -> torch.Tensor:
        self._new_episodes()
        self._steps = 0  # the envs run in lock-step: one clock for all, kept in Python (no GPU sync to read it)
        return self.G(self.z, self.y)  # (N, 3, 32, 32)

    def state(self) -> dict:
        """Everything a resumed world needs to continue the same episodes with the same noise."""
        return {"z": self.z, "y": self.y, "t": self.t, "steps": self._steps, "rng": self.rng.get_state()}

    def load(self, s: dict) -> None:
        self.z, self.y, self.t, self._steps = s["z"], s["y"], s["t"], s["steps"]
        self.rng.set_state(s["rng"].cpu())  # a generator's state is a CPU byte tensor

    @torch.inference_mode()
    def step(self, action: torch.Tensor):
        if action.shape != (self.num_envs, self.latent_dim):
            raise ValueError(f"action must have shape {(self.num_envs, self.latent_dim)}, got {tuple(action.shape)}")
        # Every torch op here shows at batch 1, right after G has evicted the caches (docs/performance.md): so one op
        # (the inf-norm, which propagates NaN) and one sync check the range and NaN at once, and the clock's tensors
        # are made once per time index.
        max_abs = torch.linalg.vector_norm(action, math.inf).item()
        if not max_abs <= 1 + 1e-6:  # NaN <= 1 is False
            bad = "NaN or inf" if not max_abs < math.inf else f"max |a| = {max_abs:.3g}"
            raise ValueError(f"action must lie in [-1, 1], got {bad}")
        if action.dtype != torch.float32 or action.device != self.device:
            action = action.to(self.device, torch.float32)
        self.z = latent_step(self.z, action, self._noise(self.num_envs), self.cfg)  # (N, d), a new tensor
        self._steps += 1
        k = (self._steps - 1) % self.horizon + 1  # every env's time index 1..H
        if k not in self._clock:
            self._clock[k] = (torch.full((self.num_envs,), k, dtype=torch.long, device=self.device),  # (N,)
                              torch.full((self.num_envs,), k == self.horizon, device=self.device))  # (N,) bool
        self.t, done = self._clock[k]
        info = {"z": self.z, "y": self.y, "t": self.t, "done": done}
        if k < self.horizon:
            info["next_obs"] = obs = self.G(self.z, self.y)  # (N, 3, 32, 32)
            return obs, info
        # Auto-reset: the episodes' last frames and the next episodes' first frames in ONE generator call (one call
        # per step keeps the world close to the bare generator rate; G is in eval mode, so the batch composition
        # changes no image). At large batches this extra decode sets the ceiling world / bare G = H / (H + 1).
        self._new_episodes()
        frames = self.G(torch.cat([info["z"], self.z]), torch.cat([info["y"], self.y]))  # (2N, 3, 32, 32)
        info["next_obs"] = frames[:self.num_envs]  # (N, 3, 32, 32): the episodes' last frames
        return frames[self.num_envs:], info  # (N, 3, 32, 32): the new episodes' first frames


def rollout(world: LatentWorld, steps: int, seed: int = 0, policy=None):
    """Play `steps` steps from a reset, acting with policy(obs (N, 3, S, S)) -> (N, d) in [-1, 1], by default the
    uniform-random policy. Frame k is the successor of step k (k = 0: the reset frame); the first frame of a later
    episode is not recorded (frame k+1 is then its successor, t = 1).

    -> frames (steps + 1, N, 3, 32, 32), labels (steps + 1, N), latents (steps + 1, N, d), times t (steps + 1, N)"""
    g = torch.Generator(device=world.device).manual_seed(seed)
    policy = policy or (lambda obs: torch.rand(len(obs), world.latent_dim, generator=g, device=world.device) * 2 - 1)
    obs = world.reset()
    frames, labels, latents, times = [obs], [world.y.clone()], [world.z.clone()], [world.t.clone()]
    for _ in range(steps):
        obs, info = world.step(policy(obs))
        frames.append(info["next_obs"])
        labels.append(info["y"])
        latents.append(info["z"])
        times.append(info["t"])
    return torch.stack(frames), torch.stack(labels), torch.stack(latents), torch.stack(times)


def persistence(frames: torch.Tensor, labels: torch.Tensor, times: torch.Tensor) -> tuple[float, float]:
    """Mean cosine similarity of consecutive frames (same episode) vs. random frames of the same class.
    frames (T, N, 3, 32, 32), labels and times (T, N) as rollout() returns them."""
    T, N = labels.shape
    flat = frames.reshape(T, N, -1)  # (T, N, 3072)
    flat = flat - flat.mean((0, 1))  # centre on the mean frame, so that cosine measures content, not brightness
    cos = torch.nn.functional.cosine_similarity
    same_ep = times[1:] == times[:-1] + 1  # (T-1, N): frame k+1 is frame k's successor, not a new episode's
    consecutive = cos(flat[:-1], flat[1:], dim=-1)[same_ep].mean().item()
    f, y = flat.reshape(T * N, -1), labels.reshape(-1)
    g = torch.Generator().manual_seed(0)
    i, j = torch.randint(T * N, (2, 20000), generator=g).to(f.device)  # drawn on the CPU: the same pairs everywhere
    keep = (y[i] == y[j]) & (i != j)
    return consecutive, cos(f[i[keep]], f[j[keep]], dim=-1).mean().item()


def save_filmstrip(frames: torch.Tensor, path) -> None:
    """frames (T, N, 3, 32, 32) in [-1, 1] -> PNG with one row per env, one column per step (written atomically)."""
    import torchvision
    T, N = frames.shape[:2]
    grid = frames.transpose(0, 1).reshape(N * T, *frames.shape[2:])  # (N * T, 3, 32, 32), row-major by env
    with atomic_path(path) as tmp:
        torchvision.utils.save_image(grid.cpu() * 0.5 + 0.5, tmp, nrow=T, padding=1, format="png")


def save_gif(frames: torch.Tensor, path, scale: int = 3) -> None:
    """frames (T, N, 3, 32, 32) -> animated GIF, envs side by side (Pillow ships with torchvision), written
    atomically."""
    import torchvision
    from PIL import Image
    pics = []
    for f in frames:
        grid = torchvision.utils.make_grid(f.cpu() * 0.5 + 0.5, nrow=len(f), padding=1)  # (3, H, W)
        arr = (grid.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()  # (H, W, 3)
        pics.append(Image.fromarray(arr).resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST))
    with atomic_path(path) as tmp:
        pics[0].save(tmp, format="GIF", save_all=True, append_images=pics[1:], duration=150, loop=0)


def check(cfg: Config) -> None:
    """Every flag, before the generator is loaded or any file written."""
    frames = (cfg.steps + 1) * cfg.num_envs + (8 * cfg.horizon + 1) * 64  # the demo's rollout and the statistics'
    gib = max(frames, 0) * FRAME_BYTES / 2 ** 30
    require({"steps >= 1": cfg.steps >= 1, "num_envs >= 1": cfg.num_envs >= 1,
             f"the rollouts' frames in {MAX_FRAME_BYTES / 2 ** 30:.0f} GiB ((steps + 1) x num_envs + (8 x horizon + 1) "
             f"x 64 frames of {FRAME_BYTES // 1024} KiB: {gib:.1f} GiB here)": frames * FRAME_BYTES <= MAX_FRAME_BYTES,
             f"num_envs <= {MAX_ENVS} (the GIF puts the envs side by side, 99 px each, and a GIF is at most 65,535 px "
             f"wide)": cfg.num_envs <= MAX_ENVS, "0 <= seed < 2**32": 0 <= cfg.seed < 2 ** 32}, "world")
    WorldConfig.of(cfg)  # horizon, mix, ema, action_scale, ema_kind: the world's own rules
    check_out(cfg.out, "dir")


def main(argv=None) -> None:
    cfg = parse_config(Config, argv)
    try:
        check(cfg)
        G = load_generator(cfg.generator, pick_device(cfg.device))
        wc = WorldConfig.of(cfg)
        world = LatentWorld(G, cfg.num_envs, wc, cfg.seed)
    except (FileNotFoundError, ValueError) as e:
        sys.exit("error: " + " ".join(str(e).splitlines()))
    print(f"seed {cfg.seed} | generator {cfg.generator} | mix {cfg.mix} ema {cfg.ema} ({cfg.ema_kind}) H {cfg.horizon}")
    start = time.time()
    frames = rollout(world, cfg.steps, cfg.seed)[0]
    rate = cfg.steps * cfg.num_envs / (time.time() - start)
    save_filmstrip(frames, Path(cfg.out) / "filmstrip.png")
    save_gif(frames, Path(cfg.out) / "rollout.gif")
    big = rollout(LatentWorld(G, 64, wc, cfg.seed + 1), 8 * cfg.horizon, cfg.seed + 1)  # 64 envs x 8 episodes
    consecutive, same_class = persistence(big[0], big[1], big[3])
    print(f"{rate:.0f} env steps/s | Var(z) = {big[2].var().item():.3f} | cosine(o_t, o_t+1) = {consecutive:.3f}"
          f" vs random same-class pairs {same_class:.3f}")
    print(f"wrote {cfg.out}/filmstrip.png and {cfg.out}/rollout.gif")


if __name__ == "__main__":
    main()
