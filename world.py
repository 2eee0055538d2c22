"""world.py — Fig. 1B: the generator's latent space as a world with temporally persistent dynamics.

N environments step together, in one batched generator call per step. Episode e of env i:
    y ~ Uniform{0..K-1}                 class "prompt", drawn when the episode starts (Fig. 1B)
    z_0 ~ N(0, I)                       the generator's own prior
    for t = 0 .. H-1:
        eps_t ~ N(0, I)                               a fresh random latent
        m_t   = w * s * a_t + sqrt(1 - w^2) * eps_t   mix the action a_t in [-1, 1]^d with the noise
        z_t+1 = rho * z_t + sqrt(1 - rho^2) * m_t     exponential moving average ("vp", default)
        o_t+1 = G(z_t+1, y)                           decode with the pretrained generator
    after H steps the env resets itself: new y, new z_0.
The paper names the mixing and the moving average but gives no values; ours live in WorldConfig and
were chosen by measurement (docs/world.md). Why "vp" (variance-preserving): with uniform
actions Var(m_t) = w^2 s^2 / 3 + 1 - w^2 = 1, and the sqrt(1 - rho^2) gain keeps z_t ~ N(0, I) at
every step, where the generator was trained. The textbook EMA ("plain": z_t+1 = rho z_t +
(1 - rho) m_t) shrinks the stationary variance to (1 - rho) / (1 + rho), 0.11 for rho = 0.8: G
then draws the blurry "average image" of the class. It is kept as an option to see that.

    python world.py     # a random-policy rollout -> runs/world/filmstrip.png and rollout.gif
"""
import math, time
from dataclasses import dataclass, field
from typing import Literal

import torch

from common import atomic_path, check_out, cli, parse_config, pick_device
from gan import load_generator


@dataclass
class WorldConfig:
    """The world's coefficients, declared once: every script nests this config in its own."""
    horizon: int = 16  # H: steps per episode, then auto-reset (paper leaves it open)
    mix: float = 0.5  # w: weight of the action against fresh noise in [0, 1] (paper leaves it open)
    ema: float = 0.8  # rho: EMA persistence in [0, 1) (paper leaves it open)
    action_scale: float = math.sqrt(3)  # s: sqrt(3) gives uniform actions unit variance (open)
    ema_kind: Literal["vp", "plain"] = "vp"  # "vp" (variance-preserving) or "plain" (shrinks z)

    def rules(self) -> dict:
        return {"1 <= horizon <= 10**6": 1 <= self.horizon <= 10 ** 6,
                "0 <= mix <= 1": 0 <= self.mix <= 1, "0 <= ema < 1": 0 <= self.ema < 1,
                "0 < action_scale < inf": 0 < self.action_scale < math.inf}


def latent_step(z, action, eps, cfg: WorldConfig):
    """Fig. 1B, one latent transition: z (N, d), action (N, d), eps (N, d) -> z_next (N, d)."""
    w, s, rho = cfg.mix, cfg.action_scale, cfg.ema
    m = w * s * action + math.sqrt(1 - w ** 2) * eps  # (N, d): mix the action with fresh noise
    gain = math.sqrt(1 - rho ** 2) if cfg.ema_kind == "vp" else 1 - rho
    return rho * z + gain * m  # (N, d): the EMA, for persistence


class LatentWorld:
    """N envs in lock-step. reset() -> obs (N, 3, S, S) in [-1, 1]; step(action (N, d)) -> obs, info
    No extrinsic reward: the agent computes its own. info holds tensors of the step just taken:
        next_obs (N, 3, S, S)  the frame the action led to: equals obs, except on the step that ends
                               an episode, where obs is already the next episode's first frame
        z (N, d), y (N,), t (N,)  the latent, class and time index (1..H) of next_obs
        done (N,)              True on the step that ends an episode (t == H)
    """

    def __init__(self, G, num_envs: int = 8, cfg: WorldConfig = WorldConfig(), seed: int = 0):
        self.G, self.num_envs, self.cfg = G, num_envs, cfg
        self.latent_dim, self.num_classes = G.latent_dim, G.num_classes
        self.device = next(G.parameters()).device
        self.rng = torch.Generator(device=self.device).manual_seed(seed)  # the world's own stream
        self.z = torch.zeros(num_envs, self.latent_dim, device=self.device)  # (N, d)
        self.y = torch.zeros(num_envs, dtype=torch.long, device=self.device)  # (N,)
        self.t = torch.zeros(num_envs, dtype=torch.long, device=self.device)  # (N,)
        self.steps = 0  # one clock for all envs, kept in Python: reading it needs no device sync

    def noise(self) -> torch.Tensor:  # (N, d): a fresh random latent per env
        return torch.randn(self.num_envs, self.latent_dim, generator=self.rng, device=self.device)

    def peek_noise(self) -> torch.Tensor:
        """The noise eps (N, d) that the next step() will draw, leaving the stream as it was."""
        state = self.rng.get_state()
        eps = self.noise()
        self.rng.set_state(state)
        return eps

    def new_episodes(self) -> None:
        """Fig. 1B: a class prompt and z_0 ~ N(0, I) for every env (new tensors: what was handed out
        in `info` never changes)."""
        self.y = torch.randint(self.num_classes, (self.num_envs,), generator=self.rng,
                               device=self.device)  # (N,)
        self.z = self.noise()  # (N, d)
        self.t = torch.zeros_like(self.y)  # (N,)

    @torch.inference_mode()
    def reset(self) -> torch.Tensor:
        self.new_episodes()
        self.steps = 0
        return self.G(self.z, self.y)  # (N, 3, S, S)

    @torch.inference_mode()
    def step(self, action: torch.Tensor):
        self.z = latent_step(self.z, action, self.noise(), self.cfg)  # (N, d)
        self.steps += 1
        k = (self.steps - 1) % self.cfg.horizon + 1  # every env's time index 1..H
        self.t = torch.full_like(self.y, k)  # (N,)
        done = torch.full_like(self.y, k == self.cfg.horizon, dtype=torch.bool)  # (N,)
        info = {"z": self.z, "y": self.y, "t": self.t, "done": done}
        if k < self.cfg.horizon:
            info["next_obs"] = obs = self.G(self.z, self.y)  # (N, 3, S, S)
            return obs, info
        # Auto-reset: the episodes' last frames and the next ones' first frames in ONE generator
        # call (G is in eval mode, so the batch's composition changes no image).
        self.new_episodes()
        z, y = torch.cat([info["z"], self.z]), torch.cat([info["y"], self.y])  # (2N, d), (2N,)
        frames = self.G(z, y)  # (2N, 3, S, S)
        info["next_obs"] = frames[:self.num_envs]  # (N, 3, S, S): the episodes' last frames
        return frames[self.num_envs:], info  # (N, 3, S, S): the new episodes' first frames

    def state(self) -> dict:
        """What a resumed world needs to continue the same episodes with the same noise."""
        return {"z": self.z, "y": self.y, "t": self.t, "steps": self.steps,
                "rng": self.rng.get_state()}

    def load(self, s: dict) -> None:
        self.z, self.y, self.t, self.steps = s["z"], s["y"], s["t"], s["steps"]
        self.rng.set_state(s["rng"].cpu())  # a generator's state is a CPU byte tensor


def rollout(world: LatentWorld, steps: int, seed: int = 0, policy=None):
    """Play `steps` steps from a reset with policy(obs (N, 3, S, S)) -> (N, d) in [-1, 1], by
    default uniform-random. Frame k is the successor of step k (k = 0: the reset frame).
    -> frames (T, N, 3, S, S), classes (T, N), latents (T, N, d), times t (T, N); T = steps + 1"""
    g = torch.Generator(device=world.device).manual_seed(seed)
    policy = policy or (lambda obs: torch.rand(len(obs), world.latent_dim, generator=g,
                                               device=world.device) * 2 - 1)
    obs = world.reset()
    frames, classes, latents, times = [obs], [world.y], [world.z], [world.t]
    for _ in range(steps):
        obs, info = world.step(policy(obs))
        frames.append(info["next_obs"])
        classes.append(info["y"])
        latents.append(info["z"])
        times.append(info["t"])
    return torch.stack(frames), torch.stack(classes), torch.stack(latents), torch.stack(times)


def save_filmstrip(frames: torch.Tensor, path) -> None:
    """frames (T, N, 3, S, S) in [-1, 1] -> a PNG, one row per env, one column per step."""
    import torchvision
    T, N = frames.shape[:2]
    grid = frames.transpose(0, 1).reshape(N * T, *frames.shape[2:])  # (N * T, 3, S, S), env-major
    with atomic_path(path) as tmp:
        torchvision.utils.save_image(grid.cpu() * 0.5 + 0.5, tmp, nrow=T, padding=1, format="png")


# ---- the demo: python world.py ------------------------------------------------------------------
@dataclass
class Config:
    generator: str = "checkpoints/embedded_gan.pt"  # a generator.py checkpoint, or biggan-deep-128
    world: WorldConfig = field(default_factory=WorldConfig)  # the world's coefficients
    num_envs: int = 8  # envs stepped together (rows of the filmstrip)
    steps: int = 32  # steps of the random-policy rollout
    seed: int = 0  # seeds the world's own random stream (classes, resets, noise)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" = CUDA when present, else CPU
    out: str = "runs/world"  # folder for filmstrip.png and rollout.gif (not under checkpoints/)

    def rules(self) -> dict:  # a GIF is < 65,536 px wide; the rollouts' frames are kept (< 3 GiB)
        frames = (self.steps + 1) * self.num_envs + (8 * self.world.horizon + 1) * 64
        return {"steps >= 1": self.steps >= 1, "1 <= num_envs <= 512": 1 <= self.num_envs <= 512,
                "(steps + 1) num_envs + (8 horizon + 1) 64 <= 2**18": frames <= 2 ** 18}


def persistence(frames, classes, times) -> tuple[float, float]:
    """Mean cosine similarity of consecutive frames (same episode) vs random same-class frames.
    frames (T, N, 3, S, S), classes and times (T, N) as rollout() returns them."""
    T, N = classes.shape
    flat = frames.reshape(T, N, -1)  # (T, N, 3 S S)
    flat = flat - flat.mean((0, 1))  # centred on the mean frame: cosine measures content
    cos = torch.nn.functional.cosine_similarity
    same_episode = times[1:] == times[:-1] + 1  # (T - 1, N): frame k + 1 follows frame k
    consecutive = cos(flat[:-1], flat[1:], dim=-1)[same_episode].mean().item()
    f, y = flat.reshape(T * N, -1), classes.reshape(-1)  # (T N, 3 S S), (T N,)
    i, j = torch.randint(T * N, (2, 20000), generator=torch.Generator().manual_seed(0)).to(f.device)
    keep = (y[i] == y[j]) & (i != j)
    return consecutive, cos(f[i[keep]], f[j[keep]], dim=-1).mean().item()


def save_gif(frames: torch.Tensor, path, scale: int = 3) -> None:
    """frames (T, N, 3, S, S) -> an animated GIF, envs side by side."""
    import torchvision
    from PIL import Image
    pics = []
    for f in frames:
        grid = torchvision.utils.make_grid(f.cpu() * 0.5 + 0.5, nrow=len(f), padding=1)  # (3, H, W)
        arr = (grid.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()  # (H, W, 3)
        size = (arr.shape[1] * scale, arr.shape[0] * scale)
        pics.append(Image.fromarray(arr).resize(size, Image.NEAREST))
    with atomic_path(path) as tmp:
        pics[0].save(tmp, format="GIF", save_all=True, append_images=pics[1:], duration=150, loop=0)


@cli
def main(argv=None) -> None:
    cfg = parse_config(Config, argv)
    out = check_out(cfg.out, "dir")
    G = load_generator(cfg.generator, pick_device(cfg.device))
    w = cfg.world
    print(f"seed {cfg.seed} | generator {cfg.generator} | mix {w.mix} ema {w.ema} ({w.ema_kind}) "
          f"H {w.horizon}")
    start = time.time()
    frames = rollout(LatentWorld(G, cfg.num_envs, w, cfg.seed), cfg.steps, cfg.seed)[0]
    rate = cfg.steps * cfg.num_envs / (time.time() - start)
    save_filmstrip(frames, out / "filmstrip.png")
    save_gif(frames, out / "rollout.gif")
    big_world = LatentWorld(G, 64, w, cfg.seed + 1)  # 64 envs for 8 episodes
    big = rollout(big_world, 8 * w.horizon, cfg.seed + 1)
    consecutive, same_class = persistence(big[0], big[1], big[3])
    print(f"{rate:.0f} env steps/s | Var(z) = {big[2].var().item():.3f} | cosine(o_t, o_t+1) = "
          f"{consecutive:.3f} vs random same-class pairs {same_class:.3f}")
    print(f"wrote {out}/filmstrip.png and {out}/rollout.gif")


if __name__ == "__main__":
    main()
