"""play.py — steer the latent world by hand, see the EMA and APT's novelty reward, race the agent.

The paper's agent "plays" in the latent manifold of a pretrained class-conditional generator
(world.py): each step its action a in [-1, 1]^d is mixed with fresh noise,
m = w s a + sqrt(1 - w^2) eps, an exponential moving average keeps the latent,
z' = rho z + sqrt(1 - rho^2) m, and G decodes o' = G(z', y). SAC learns to pick a so that the new
frame is far, in an encoder's features, from the frames it has seen (APT's particle reward,
agent.py). Here a person holds the action instead: one key press = one world step, exactly
`world.latent_step`.

Steering directions. The 64-d latent has too many directions for a keyboard, so the keys push
along the two that change the image most at this class. For class y we average the pulled-back
metric of the generator over its prior, M = E_z[J(z)^T J(z)] with J = dG(z, y)/dz (3072 x d, by
central differences at 4 samples z ~ N(0, I)), and take its top two eigenvectors u1, u2
(orthonormal): a small step along u1 changes G's output more, on average, than along any other
unit direction. That is PCA of the output's changes, GANSpace-style (Harkonen et al. 2020, who
take PCA of sampled activations instead). Computed once per class, when the class is first
played.

A push sets the action a = clip(+-push * u / max|u|, -1, 1): the largest action along u inside
the action box (push = 1). `space` steps with a = 0 (the noise alone); w = 0 makes every key a
`space`.

Novelty. Frame t's novelty is APT's statistic against the frames visited so far in this episode,
log(1 + mean distance to its k nearest earlier frames) in the features of a frozen encoder
(agent.knn_distances), and the score is its sum over the episode. pretrain.py computes it across
a batch of envs with a running normaliser instead; the idea, reward what is far from what you
have seen, is the same.

Race. `A` (shift+a) replays the episode for the agent: the same start latent and class, the same
noise draws (the world's state and random stream restored), the same w and rho at each step, as
many steps as you took. The agent is the run's SAC policy (runs/<name>/agent.pt, deterministic)
or, without one, uniform-random actions. With --run the world is the run's (the config["world"]
of its encoder.pt: H, w, rho, s, the EMA's kind), except where a flag sets a value: the agent
races in the world it was trained in.

    python play.py                       # the window: keys w a s d / arrows, space, 0-9, r, A, g
    python play.py --run runs/palmup_s0  # novelty in that run's encoder, race its agent, its world
    python play.py --script wwwwddddssss --out runs/play/demo.gif
                                         # no window: play, race, print both scores
Writes only the GIF (runs/play/ unless --out names another path; never under checkpoints/).
"""
import dataclasses, math, sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from agent import SAC, SACConfig, knn_distances
from common import (ConfigError, atomic_path, check_out, cli, load_checkpoint, load_weights,
                    make_parser, parse_config, pick_device, require)
from evaluate import load_encoder, random_encoder
from data import to_uint8
from generator import load_generator
from world import LatentWorld, WorldConfig

NO_RESET = 10 ** 9  # the game ends its episodes itself: its world never auto-resets
# key -> (steering direction, sign)
PUSH = {"d": (0, 1), "right": (0, 1), "a": (0, -1), "left": (0, -1),
        "w": (1, 1), "up": (1, 1), "s": (1, -1), "down": (1, -1)}
SPACE = (" ", ".")  # '.' stands for space in --script
KEYS = "wasdrA. 0123456789"  # what --script may hold
DECIMALS = 3  # w and rho are shown with this many decimals everywhere: sliders, status, world line
# play.Config field <- WorldConfig field: what a run's world sets unless its flag is given
RUN_WORLD = {"steps": "horizon", "mix": "mix", "ema": "ema", "action_scale": "action_scale",
             "ema_kind": "ema_kind"}


@dataclass
class Config:
    generator: str = "checkpoints/embedded_gan.pt"  # the world's generator (a checkpoint of
    #                                                 generator.py)
    run: str = ""  # a pretrain.py run folder runs/<name>: its encoder.pt scores novelty, its
    #                agent.pt races you, its world (config["world"]) sets the five flags below
    #                that are not given; "" = a random-init encoder, a uniform-random opponent
    steps: int = WorldConfig.horizon  # steps per episode (the world's horizon H); the race lasts
    #                                   as many steps as you took
    mix: float = WorldConfig.mix  # w at the start (a slider): weight of the action against the
    #                               noise, in [0, 1]
    ema: float = WorldConfig.ema  # rho at the start (a slider): persistence of the latent,
    #                               in [0, 1)
    action_scale: float = WorldConfig.action_scale  # s: makes uniform actions unit-variance
    #                                                 (world.py)
    ema_kind: Literal["vp", "plain"] = WorldConfig.ema_kind  # "vp" (variance-preserving) or
    #                                                         "plain" EMA (world.py)
    push: float = 1.0  # size of one push in (0, 1]: the action is push * u / max|u| along a
    #                    steering direction u
    label: int = -1  # class prompt of the first episode; -1 = drawn by the world
    apt_k: int = 12  # APT neighbours (at most the frames visited before)
    script: str = ""  # play these keys without a window (w a s d, '.' or ' ' = no push, r, 0-9,
    #                   A = race), then race the agent and print both scores
    out: str = ""  # the GIF; "" = runs/play/script.gif (--script) or runs/play/session.gif (key g)
    seed: int = 0  # seeds the world's stream and the random opponent (the random-init encoder is
    #                always seed 0)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "auto" = CUDA when present, else CPU

    def rules(self) -> dict:
        bad = "".join(sorted(set(self.script) - set(KEYS)))
        return {"steps >= 1": self.steps >= 1, "0 <= mix <= 1": 0 <= self.mix <= 1,
                "0 <= ema < 1": 0 <= self.ema < 1,
                "0 < action_scale < inf": 0 < self.action_scale < math.inf,
                "0 < push <= 1": 0 < self.push <= 1, "apt_k >= 1": self.apt_k >= 1,
                "label >= -1 (-1 = drawn)": self.label >= -1,
                f"a --script of w a s d, '.' or ' ' (no push), r, 0-9 and A (race), not {bad!r}":
                    not bad,
                "an --out that names a .gif file":
                    self.out.lower().endswith(".gif") or not self.out}


def dynamics(mix: float, ema: float) -> str:
    """w and rho as the game shows them everywhere: 'w 0.500, rho 0.800'."""
    return f"w {mix:.{DECIMALS}f}, rho {ema:.{DECIMALS}f}"


# ---- the one place each that calls into world.py and agent.py -----------------------------------
def make_world(G, mix: float, ema: float, cfg: Config, state: dict | None = None) -> LatentWorld:
    """The game's world: one env with w = mix, rho = ema, continuing from a world's `state` when
    given."""
    wc = WorldConfig(horizon=NO_RESET, mix=mix, ema=ema, action_scale=cfg.action_scale,
                     ema_kind=cfg.ema_kind)
    world = LatentWorld(G, 1, wc, seed=cfg.seed)
    if state is not None:
        world.load(state)
    return world


def reset_world(world: LatentWorld, G, label: int) -> torch.Tensor:
    """A new episode, z_0 ~ N(0, I) from the world's stream, class `label` (-1: drawn)
    -> frame (1, 3, 32, 32)."""
    obs = world.reset()  # (1, 3, 32, 32)
    if label >= 0:
        s = world.state()
        s["y"] = torch.full_like(s["y"], label)
        world.load(s)
        obs = G(s["z"], s["y"])  # (1, 3, 32, 32)
    return obs


def load_policy(path, device="cpu", feature_dim: int | None = None, action_dim: int | None = None):
    """runs/<name>/agent.pt (pretrain.py) -> policy: features (B, D) -> actions (B, A),
    deterministic tanh(mean). Raises FileNotFoundError / ValueError (one line) for a missing,
    corrupt, foreign or mismatched file."""
    ckpt = load_checkpoint(path, "agent", ("feature_dim", "action_dim", "config", "actor"))
    for name, want in (("feature_dim", feature_dim), ("action_dim", action_dim)):
        if want is not None and ckpt[name] != want:
            raise ValueError(f"agent checkpoint {path} has {name} {ckpt[name]}, "
                             f"this game needs {want}")
    try:
        cfg = SACConfig(**ckpt["config"]["sac"])
        sac = SAC(ckpt["feature_dim"], ckpt["action_dim"], cfg, device)
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(f"agent checkpoint {path} does not match agent.SAC: {first}") from None
    load_weights(sac.actor, ckpt["actor"], f"agent checkpoint {path}")
    return lambda f: sac.act(f, deterministic=True)  # (B, D) -> (B, A) in [-1, 1]


def novelty(feats: torch.Tensor, k: int) -> float:
    """APT's statistic of the newest frame against the earlier ones: feats (t + 1, D)
    -> log(1 + mean kNN distance)."""
    # (k,) the new frame's k nearest earlier frames
    knn = knn_distances(feats, min(k, len(feats) - 1))[-1]
    return math.log1p(knn.mean().item())


# ---- the game: state and rules, no window --------------------------------------------------------
@torch.no_grad()
def steering_directions(G, label: int, samples: int = 4, h: float = 0.05, seed: int = 0):
    """Top-2 eigenvectors of E_z[J^T J] at class `label` (module docstring) -> ((2, d) orthonormal
    rows, their share of the trace: how much of G's change the two carry)."""
    d, dev = G.latent_dim, next(G.parameters()).device
    z = torch.randn(samples, d,
                    generator=torch.Generator().manual_seed(seed * 1000 + label)).to(dev)  # (n, d)
    dz = h * torch.eye(d, device=dev)  # (d, d)
    zs = torch.cat([z[:, None] + dz, z[:, None] - dz], 1).reshape(-1, d)  # (n * 2d, d): z +- h e_i
    # (n, 2, d, 3 * 32 * 32)
    x = G(zs, torch.full((len(zs),), label, device=dev)).reshape(samples, 2, d, -1)
    J = (x[:, 0] - x[:, 1]) / (2 * h)  # (n, d, P): row i = dG/dz_i
    # ascending, (d,), (d, d)
    vals, vecs = torch.linalg.eigh(torch.einsum("nip,njp->ij", J, J).double() / samples)
    u = vecs[:, -2:].flip(1).T.float()  # (2, d): u1 (the largest eigenvalue), u2
    # sign: the largest entry positive (deterministic)
    u = u * u.gather(1, u.abs().argmax(1, keepdim=True)).sign()
    return u, (vals[-2:].sum() / vals.sum()).item()


@dataclass
class Episode:
    label: int
    start: dict  # the world's state at o_0: latent, class and random stream (the race restarts
    #              from it)
    frames: list  # o_0 .. o_t, each (3, 32, 32) in [-1, 1]
    feats: list  # their encoder features, each (D,)
    z: list  # their latents, each (d,)
    novelty: list = field(default_factory=list)  # novelty of o_1 .. o_t
    dynamics: list = field(default_factory=list)  # (w, rho) of each step
    rival: "Episode | None" = None  # the agent's race of this episode

    @property
    def score(self) -> float:
        return sum(self.novelty)


class Game:
    """press(key) -> a message; the state after it is in .ep (the current Episode), .world, .mix,
    .ema, .last; .ignored counts the pushes refused because the episode was over."""

    def __init__(self, G, encoder, policy, cfg: Config):
        self.G, self.encoder, self.policy, self.cfg = G, encoder, policy, cfg
        self.device = next(G.parameters()).device
        self.opponent = "trained SAC" if policy else "uniform-random"
        self.mix, self.ema, self.last, self.ignored = cfg.mix, cfg.ema, "-", 0
        self.world, self.dirs, self.episodes = make_world(G, cfg.mix, cfg.ema, cfg), {}, []
        self.new_episode(cfg.label)

    def new_episode(self, label: int = -1) -> None:
        obs = reset_world(self.world, self.G, label)  # (1, 3, 32, 32)
        s = self.world.state()
        y = int(s["y"][0])
        if y not in self.dirs:
            self.dirs[y] = steering_directions(self.G, y, seed=self.cfg.seed)
        self.U, self.share = self.dirs[y]  # (2, d), float
        self.ep = Episode(y, s, [obs[0]], [self.encoder(obs)[0]], [s["z"][0]])
        self.episodes.append(self.ep)

    def action(self, key: str) -> torch.Tensor:
        """The key's action (1, d): +-push along a steering direction, scaled to the action box;
        0 for space."""
        if key not in PUSH:
            return torch.zeros(1, self.G.latent_dim, device=self.device)
        i, sign = PUSH[key]
        u = self.U[i]  # (d,)
        return (sign * self.cfg.push * u / u.abs().max()).clamp(-1, 1)[None]  # (1, d)

    def set_dynamics(self, mix: float, ema: float) -> None:
        """The sliders: w and rho for the next steps (the same latent, class and random stream)."""
        self.mix, self.ema = mix, ema
        self.world = make_world(self.G, mix, ema, self.cfg, self.world.state())

    @torch.no_grad()
    def advance(self, world, ep: Episode, action: torch.Tensor, dynamics: tuple) -> None:
        """One step of `world` (w, rho = dynamics) in episode `ep`, the person's or the agent's:
        the same rules."""
        _, info = world.step(action)
        ep.frames.append(info["next_obs"][0])  # (3, 32, 32)
        ep.feats.append(self.encoder(info["next_obs"])[0])  # (D,)
        ep.z.append(info["z"][0])  # (d,)
        ep.novelty.append(novelty(torch.stack(ep.feats), self.cfg.apt_k))
        ep.dynamics.append(dynamics)

    def press(self, key: str) -> str:
        if key.isdigit() or key == "r":  # a new episode: class `key`, or drawn by the world (r)
            if key != "r" and int(key) >= self.G.num_classes:
                return f"no class {key}: this generator has classes 0-{self.G.num_classes - 1}"
            self.new_episode(-1 if key == "r" else int(key))
            return f"new episode, class {self.ep.label}"
        if key in ("A", "enter"):
            return self.race()
        if key not in PUSH and key not in SPACE:
            return ""
        if len(self.ep.novelty) >= self.cfg.steps:
            self.ignored += 1
            return (f"the episode's {self.cfg.steps} steps are played: "
                    "A races the agent, r or 0-9 starts a new one")
        # (1, d); a race is over as many steps as you took
        a, self.ep.rival = self.action(key), None
        self.last = "no push" if key in SPACE else f"{'+-'[PUSH[key][1] < 0]}u{PUSH[key][0] + 1}"
        self.advance(self.world, self.ep, a, (self.mix, self.ema))
        return (f"step {len(self.ep.novelty)}: {self.last} (|a| = {a.norm():.2f}), "
                f"novelty {self.ep.novelty[-1]:.3f}")

    @torch.no_grad()
    def race(self) -> str:
        """The agent plays this episode: same start, same noise, same (w, rho) per step, as many
        steps as you."""
        ep = self.ep
        rival = Episode(ep.label, ep.start, ep.frames[:1], ep.feats[:1], ep.z[:1])
        world, g = None, torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        for mix, ema in ep.dynamics:
            world = make_world(self.G, mix, ema, self.cfg, world.state() if world else ep.start)
            if self.policy:
                a = self.policy(rival.feats[-1][None]).clamp(-1, 1)  # (1, d)
            else:
                a = torch.rand(1, self.G.latent_dim, generator=g,
                               device=self.device) * 2 - 1  # (1, d)
            self.advance(world, rival, a, (mix, ema))
        ep.rival = rival
        return (f"race over {len(ep.novelty)} steps: you {ep.score:.3f} | "
                f"agent ({self.opponent}) {rival.score:.3f}")

    def save_gif(self, path, scale: int = 4) -> None:
        """The session: one GIF frame per step, your frame (left, labelled "you") beside the
        agent's (right, labelled "agent"; grey where it did not race). The GIF's comment says the
        same."""
        from PIL import Image
        labels = ("you", f"agent ({self.opponent})")
        pics = []
        for ep in self.episodes:
            for t, frame in enumerate(ep.frames):
                other = (ep.rival.frames[t] if ep.rival and t < len(ep.rival.frames)
                         else torch.zeros_like(frame))
                # (3, 32, 66): you | agent
                pair = torch.cat([frame, torch.ones_like(frame[:, :, :2]), other], 2)
                pic = Image.fromarray(to_uint8(pair).permute(1, 2, 0).cpu().numpy())  # (32, 66, 3)
                pic = pic.resize((pic.width * scale, pic.height * scale), Image.NEAREST)
                pics.append(with_labels(pic, labels, frame.shape[-1] * scale))
        comment = f"left: {labels[0]}, right: {labels[1]}".encode()
        with atomic_path(path) as tmp:
            pics[0].save(tmp, format="GIF", save_all=True, append_images=pics[1:], duration=250,
                         loop=0, comment=comment)


LABEL_HEIGHT = 14  # pixels of the GIF's white band that names the two sides


def with_labels(pic, labels: tuple, side: int):
    """pic (the two players' frames side by side, each `side` pixels wide) under a white band
    that names them: labels[0] over the left frame, labels[1] over the right one."""
    from PIL import Image, ImageDraw
    out = Image.new("RGB", (pic.width, pic.height + LABEL_HEIGHT), "white")
    out.paste(pic, (0, LABEL_HEIGHT))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(labels):
        left = i * (pic.width - side)  # the right frame starts where the left one's gap ends
        while draw.textlength(text) > side - 4 and " " in text:  # too wide: drop the details
            text = text.rsplit(" ", 1)[0]
        draw.text((left + 2, 1), text, fill="black")
    return out


# ---- the window: thin drawing on top of Game -----------------------------------------------------
class Window:
    """The frame, the latent map, the novelty plot, both players' strips, sliders for w and rho;
    keys -> Game."""

    def __init__(self, game: Game, gif: str):
        import matplotlib.pyplot as plt
        from matplotlib.widgets import Slider
        self.game, self.gif, self.message = game, gif, "w a s d / arrows push, space = noise alone"
        self.fig = fig = plt.figure(figsize=(12, 7))
        # our keys, not matplotlib's (s = save, r = home, ...)
        if getattr(fig.canvas, "manager", None) is not None:
            fig.canvas.mpl_disconnect(fig.canvas.manager.key_press_handler_id)
        self.axes = [fig.add_axes(r) for r in (  # frame, latent map, novelty, strips
            [0.02, 0.4, 0.27, 0.5], [0.35, 0.4, 0.27, 0.5], [0.7, 0.4, 0.28, 0.5],
            [0.03, 0.12, 0.94, 0.16])]
        self.sliders = [Slider(fig.add_axes([0.08, y, 0.3, 0.03]), name, 0.0, top, valinit=v,
                               valfmt=f"%.{DECIMALS}f")  # as in the status line
                        for y, name, top, v in ((0.06, "w (mix)", 1.0, game.mix),
                                                (0.015, "rho (ema)", 0.99, game.ema))]
        for s in self.sliders:
            s.on_changed(lambda _: (game.set_dynamics(self.sliders[0].val, self.sliders[1].val),
                                    self.draw()))
        self.status = fig.text(0.45, 0.02, "", fontsize=9, family="monospace")
        fig.suptitle("play the latent world: w a s d / arrows push, space = noise alone, "
                     "0-9 class, r new episode, A (shift+a) race the agent, g GIF", fontsize=10)
        fig.canvas.mpl_connect("key_press_event", self.on_key)
        self.draw()

    def on_key(self, event) -> None:
        if event.key == "g":
            self.game.save_gif(self.gif)
            self.message = f"wrote {self.gif}"
        elif event.key is not None:
            self.message = self.game.press(event.key) or self.message
        self.draw()

    def draw(self) -> None:
        from matplotlib.patches import Circle
        g, ep = self.game, self.game.ep
        pix = lambda frames: (  # noqa: E731 (T, H, W, 3)
            to_uint8(torch.stack(frames)).permute(0, 2, 3, 1).cpu().numpy())
        players = [("you", ep, "C0")] + ([(f"agent ({g.opponent})", ep.rival, "C1")]
                                         if ep.rival else [])
        for ax in self.axes:
            ax.clear()
        frame, latent, nov, strip = self.axes
        frame.imshow(pix(ep.frames[-1:])[0], interpolation="nearest")
        frame.set_title(f"you: class {ep.label}, step {len(ep.novelty)}/{g.cfg.steps}")
        lim = 3.0
        for r in (1, 2):  # the prior N(0, I) seen on two orthonormal directions is N(0, I_2)
            latent.add_patch(Circle((0, 0), r, fill=False, ls="--", color="grey"))
            latent.text(-0.71 * r, -0.71 * r, f"{r}σ", color="grey", ha="right", va="top")
        for who, e, colour in players:
            p = (torch.stack(e.z) @ g.U.T).cpu().numpy()  # (t + 1, 2): the latents on u1, u2
            latent.plot(p[:, 0], p[:, 1], "o-", color=colour, ms=3, label=who)
            latent.plot(*p[-1], "o", color=colour, ms=9)
            nov.plot(range(1, len(e.novelty) + 1), e.novelty, "o-", color=colour,
                     label=f"{who}: {e.score:.2f}")
            lim = max(lim, float(np.abs(p).max()) + 0.5)
        latent.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal",
                   xlabel="z · u1   (a  d)", ylabel="z · u2   (s  w)",
                   title=f"the latent on u1, u2 ({100 * g.share:.0f} % of G's change)")
        nov.set(xlim=(0.5, g.cfg.steps + 0.5), xlabel="step", ylabel="novelty of the new frame",
                title=f"APT novelty (k = {g.cfg.apt_k}); legend: score")
        latent.legend(loc="lower right", fontsize=8), nov.legend(loc="lower right", fontsize=8)
        # each (steps + 1, H, W, 3), white where no step was taken yet
        rows = [pix(e.frames + [torch.ones_like(e.frames[0])] * (g.cfg.steps + 1 - len(e.frames)))
                for _, e, _ in players]
        strip.imshow(np.concatenate([np.concatenate(list(r), 1) for r in rows], 0),
                     interpolation="nearest")
        strip.set_title("this episode: you" + (" (top) and the agent (bottom)" if ep.rival else ""),
                        fontsize=9)
        frame.set_axis_off(), strip.set_axis_off()
        z = ep.z[-1]  # (d,)
        self.status.set_text(f"last push: {g.last} | {dynamics(g.mix, g.ema)} | "
                             f"z·u1 {z @ g.U[0]:+.2f}, z·u2 {z @ g.U[1]:+.2f}, "
                             f"|z|²/d {z.square().mean():.2f}\n{self.message}")
        self.fig.canvas.draw_idle()


# ---- the command line ----------------------------------------------------------------------------
def named_flags(argv=None) -> set[str]:
    """The Config fields that the command line sets (a run's world fills the others)."""
    parser = make_parser(Config)
    parser.set_defaults(**{f.name: None for f in dataclasses.fields(Config)})
    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    return {k for k, v in vars(parser.parse_intermixed_args(args)).items() if v is not None}


def run_world(cfg: Config, meta: dict, named=frozenset()) -> Config:
    """cfg with the world of the run whose encoder.pt gave `meta` (pretrain.py's config["world"])
    for each of steps, mix, ema, action_scale and ema_kind that is not in `named`: the agent
    races in the world it was trained in."""
    where = f"the encoder.pt of --run {cfg.run}"
    try:
        world = WorldConfig(**meta["config"]["world"])
        require(world.rules(), where)
    except (KeyError, TypeError) as e:  # no such entry, a field WorldConfig lacks, a non-number
        raise ValueError(f"{where} holds no world settings of pretrain.py (config['world']): "
                         f"{type(e).__name__} {e}") from None
    return dataclasses.replace(cfg, **{k: getattr(world, w) for k, w in RUN_WORLD.items()
                                       if k not in named})


def setup(cfg: Config, named=frozenset()):
    """Check every input, load G, the encoder and the policy -> (Game, GIF path); raises before
    writing any file. With --run, the run's world fills the world's flags not in `named`."""
    gif = check_out(cfg.out or f"runs/play/{'script' if cfg.script else 'session'}.gif")
    device = pick_device(cfg.device)
    G = load_generator(cfg.generator, device)
    digits = [int(c) for c in cfg.script if c.isdigit()] + [cfg.label]
    if max(digits) >= G.num_classes:
        raise ConfigError(f"class prompts must lie in 0-{G.num_classes - 1} "
                          "(--label, digits in --script)")
    if cfg.run and not Path(cfg.run).is_dir():
        raise FileNotFoundError(f"--run {cfg.run}: no such run folder "
                                "(pretrain.py writes runs/<name>/)")
    if cfg.run:
        encoder, meta = load_encoder(cfg.run, device)
        theirs = meta["config"].get("generator", "")
        if theirs and Path(str(theirs)).resolve() != Path(cfg.generator).resolve():
            raise ConfigError(f"--run {cfg.run} explored the world of {theirs}, not of "
                              f"{cfg.generator}: pass --generator {theirs}")
        cfg = run_world(cfg, meta, named)
    else:
        encoder = random_encoder().to(device)
    agent = Path(cfg.run) / "agent.pt" if cfg.run else None
    policy = (load_policy(agent, device, encoder.feature_dim, G.latent_dim)
              if agent and agent.is_file() else None)
    return Game(G, encoder, policy, cfg), gif


@cli
def main(argv=None) -> None:
    cfg = parse_config(Config, argv)
    game, gif = setup(cfg, named_flags(argv))
    cfg = game.cfg
    if not cfg.script:
        import matplotlib.pyplot as plt
        from matplotlib.backends import BackendFilter, backend_registry
        if (plt.get_backend().lower()
                not in backend_registry.list_builtin(BackendFilter.INTERACTIVE)):
            raise ConfigError(f"no window can open here (matplotlib backend "
                              f"{plt.get_backend()!r}): run on a desktop, or `xvfb-run python "
                              f"play.py` (a virtual one); --script wwddss --out runs/play/x.gif "
                              f"needs none")
    if cfg.run:
        print(f"world: {cfg.steps} steps, {dynamics(cfg.mix, cfg.ema)} ({cfg.ema_kind}), "
              f"s {cfg.action_scale:.3f}; {cfg.run}'s where no flag sets them", file=sys.stderr)
    if game.policy is None:
        print(f"note: {f'no {cfg.run}/agent.pt' if cfg.run else 'no --run'}: "
              f"you race uniform-random actions"
              f"{'' if cfg.run else ', novelty is in a random-init encoder'}", file=sys.stderr)
    if cfg.script:
        for key in cfg.script:
            game.press(key)
        if game.ignored:
            print(f"note: {game.ignored} key(s) of --script came after the episode's {cfg.steps} "
                  f"steps and were not played (--steps sets an episode's length; r or 0-9 in "
                  f"the script starts a new episode)", file=sys.stderr)
        print(game.race())
        game.save_gif(gif)
        print(f"wrote {gif}")
        return
    window = Window(game, str(gif))  # noqa: F841 (keeps the widgets alive)
    plt.show()


if __name__ == "__main__":
    main()
