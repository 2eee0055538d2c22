"""check.py — self-checks of the classroom exercises (exercises/README.md).

    python exercises/check.py N      # N = 1..6: checks exercises/exN_*.py; exit 0 when it is done
    python exercises/check.py --help # the list of exercises

Each check prints the evidence it measured, or ONE message that says what is missing or wrong and
where to look, and exits non-zero. Tests point a check at another module (e.g. a reference solution
built from the project's own functions) with run_check(n, module, **options), without touching the
exercise files.
"""
import contextlib, csv, importlib.util, json, math, os, sys, time, traceback
from pathlib import Path
from types import ModuleType

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's flat top level: `import pretrain`, `import agent`
from common import cli  # noqa: E402  (after the path: common.py lives at the top level)

SHIPPED_G = ROOT / "checkpoints" / "embedded_gan.pt"
FILES = {1: "ex1_infonce.py", 2: "ex2_apt.py", 3: "ex3_world.py", 4: "ex4_sac_bug.py",
         5: "ex5_offsets.py", 6: "ex6_ablation.py"}
TITLES = {1: "temporal InfoNCE", 2: "APT particle reward", 3: "the world's transition",
          4: "find the SAC bug", 5: "positives at t+k", 6: "exploration vs persistence"}


class ExerciseFailed(Exception):
    """The student's code runs but is not right yet; the message says what differs and where to
    look."""


def say(*args) -> None:
    print(*args, flush=True)


def load_exercise(n: int) -> ModuleType:
    """exercises/exN_*.py as a fresh module (re-read from disk on every call)."""
    path = ROOT / "exercises" / FILES[n]
    spec = importlib.util.spec_from_file_location(f"exercise{n}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def in_dir(path):
    """Run inside `path` (pretrain.py writes runs/<name> relative to the working directory), then
    come back."""
    cwd = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)


def fresh_name(base: str, runs=Path("runs")) -> str:
    """base, then base-2, base-3, ...: the first name with no folder under `runs` (pretrain.py
    trains every command anew, in a folder of its own, and refuses a --name that exists)."""
    name, n = base, 1
    while (Path(runs) / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _fmt(v: torch.Tensor) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in v.tolist()) + "]"


def small_generator(latent_dim: int = 8, num_classes: int = 3):
    """An untrained tiny generator (like tests/conftest.py's tiny_G): a cheap, checkpoint-free
    decoder."""
    from generator import Generator
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Generator(latent_dim, num_classes, width=4).eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------------
# Exercise 1: temporal InfoNCE
# --------------------------------------------------------------------------------------------------
EX1_BUDGET = ["--updates", "40", "--batch-size", "64", "--num-envs", "16", "--probe-images", "5000"]


def _info_nce_mistakes(a, b, tau) -> dict:
    """Common wrong versions of the loss -> {what is wrong: its value}, to name the mistake a
    student made."""
    ce, target = F.cross_entropy, torch.arange(len(a))
    na, nb = F.normalize(a, dim=1), F.normalize(b, dim=1)
    sym = lambda logits: (ce(logits, target) + ce(logits.T, target)) / 2  # noqa: E731
    return {
        "only the rows (a_i picks b_i): average with the columns (b_i picks a_i) too, the loss is "
        "symmetric": ce(na @ nb.T / tau, target),
        "only the columns: average with the rows too, the loss is symmetric":
            ce((na @ nb.T / tau).T, target),
        "rows and columns summed instead of averaged (divide by 2)": 2 * sym(na @ nb.T / tau),
        "no L2-normalisation: normalise every row of a and b first (F.normalize(x, dim=1))":
            sym(a @ b.T / tau),
        "the rows normalised along the wrong axis: each ROW must have norm 1 (dim=1)":
            sym(F.normalize(a, dim=0) @ F.normalize(b, dim=0).T / tau),
        "no temperature: divide the logits by it": sym(na @ nb.T),
        "the logits multiplied by the temperature: divide by it": sym(na @ nb.T * tau),
        "a sum over the batch instead of a mean": len(a) * sym(na @ nb.T / tau),
    }


def check_1(module, budget=EX1_BUDGET, min_probe: float = 0.15, name: str = "exercise1") -> None:
    import pretrain
    from common import parse_config
    student = module.info_nce
    g = torch.Generator().manual_seed(0)
    for B, P, tau in [(5, 7, 0.3), (64, 128, 0.1), (3, 2, 1.0), (32, 16, 0.05)]:
        a = torch.randn(B, P, generator=g)  # (B, P)
        b = a + torch.randn(B, P, generator=g)  # (B, P): related to a row by row, as a positive
        a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
        out = student(a1, b1, tau)
        if not isinstance(out, torch.Tensor):
            raise ExerciseFailed(f"info_nce must return a torch tensor, got {type(out).__name__}")
        if out.dim() != 0:
            raise ExerciseFailed(f"info_nce must return a scalar (0-dim tensor), got shape "
                                 f"{tuple(out.shape)}: average over the batch (F.cross_entropy "
                                 f"does by default)")
        if not out.requires_grad:
            raise ExerciseFailed("the loss carries no gradient: no .item(), .detach(), numpy or "
                                 "torch.no_grad() inside info_nce, or the encoder cannot learn "
                                 "from it")
        want = pretrain.info_nce(a, b, tau)
        if not torch.allclose(out.detach(), want, rtol=1e-4, atol=1e-5):
            msg = (f"for a, b of shape ({B}, {P}) and temperature {tau} your loss is "
                   f"{out.item():.5f}, the project's is {want.item():.5f}. ")
            for what, value in _info_nce_mistakes(a, b, tau).items():
                if torch.allclose(out.detach(), value, rtol=1e-4, atol=1e-5):
                    raise ExerciseFailed(msg + f"Yours matches a loss with {what}.")
            raise ExerciseFailed(msg + "Check the three steps of the docstring: normalised rows, "
                                       "logits a @ b.T / temperature, the mean of the row and "
                                       "column cross-entropies.")
        out.backward()
        a2, b2 = a.clone().requires_grad_(), b.clone().requires_grad_()
        pretrain.info_nce(a2, b2, tau).backward()
        for what, mine, ref in (("a", a1.grad, a2.grad), ("b", b1.grad, b2.grad)):
            if mine is None:  # the student's loss detached this input: no gradient reaches it
                raise ExerciseFailed(f"the loss value is right but no gradient reaches {what}: "
                                     f"is {what} detached (.detach(), .data, torch.no_grad()) "
                                     f"inside info_nce? Both views must train the encoder")
            if not torch.allclose(mine, ref, atol=1e-5):
                raise ExerciseFailed(f"the loss value is right but its gradient with respect to "
                                     f"{what} is not: is part of it detached?")
    say("1. info_nce matches pretrain.info_nce (values and gradients) on 4 random batches, "
        "B = 3..64")

    cfg = parse_config(pretrain.Config, budget)
    calls = []

    def counted(a, b, temperature):
        calls.append(len(a))
        return student(a, b, temperature)

    name = fresh_name(name)  # runs/exercise1, then -2, -3, ...: every check trains anew
    real, t0 = pretrain.info_nce, time.time()
    pretrain.info_nce = counted  # pretrain.encoder_step looks the loss up in its module: yours
    try:
        result = pretrain.main([*budget, "--generator", str(SHIPPED_G), "--name", name])
    except SystemExit as e:
        raise ExerciseFailed(f"the pretraining run with your loss stopped: {e}") from None
    finally:
        pretrain.info_nce = real
    with open(Path("runs") / name / "metrics.csv") as fh:
        losses = [float(row["loss"]) for row in csv.DictReader(fh)]  # every 10 updates
    chance = math.log(cfg.batch_size)
    if len(calls) != cfg.updates:
        raise ExerciseFailed(f"pretrain.py called your info_nce {len(calls)} times in "
                             f"{cfg.updates} updates")
    if losses[-1] >= chance or (len(losses) > 1 and losses[-1] >= losses[0]):
        raise ExerciseFailed(f"with your loss the InfoNCE did not fall: {losses} (log B = "
                             f"{chance:.2f})")
    if not result.get("linear_probe", -1.0) > min_probe:  # a run that did not probe fails too
        raise ExerciseFailed(f"linear probe {result.get('linear_probe')} after pretraining with "
                             f"your loss: not above {min_probe} (chance 0.1)")
    say(f"2. pretrain.py with YOUR info_nce: {cfg.updates} updates of {cfg.batch_size} pairs in "
        f"{time.time() - t0:.0f} s (runs/{name}); InfoNCE {losses[0]:.2f} -> {losses[-1]:.2f} "
        f"(log B = {chance:.2f} when the pairs cannot be told apart)")
    say(f"   linear probe {100 * result['linear_probe']:.1f} % with "
        f"{cfg.probe_images or 'all'} train images (chance 10 %, the check asks for > "
        f"{100 * min_probe:.0f} %)")


# --------------------------------------------------------------------------------------------------
# Exercise 2: APT reward
# --------------------------------------------------------------------------------------------------
def _apt_mistakes(x, k) -> dict:
    """Common wrong versions of the APT reward -> {what is wrong: rewards (B,)}."""
    d = torch.cdist(x, x)  # (B, B)
    d_own = d.topk(k, dim=1, largest=False).values  # (B, k), the point itself (0) included
    d_excl = d.clone().fill_diagonal_(float("inf")).topk(k, dim=1, largest=False).values  # (B, k)
    mistakes = {
        "each point counted as its own nearest neighbour (distance 0, as URLB does). agent.py "
        "does NOT count it: read agent.knn_distances, which agent.apt_reward calls, and exclude "
        "the point itself":
            torch.log1p(d_own.mean(1)),
        "no log: r = log(1 + mean distance)": d_excl.mean(1),
        "log instead of log(1 + .): r = log(1 + mean distance)": torch.log(d_excl.mean(1)),
        "a sum over the k neighbours instead of their mean": torch.log1p(d_excl.sum(1)),
        "squared distances: use the Euclidean distance itself": torch.log1p((d_excl ** 2).mean(1)),
        "only the k-th neighbour's distance: average all k": torch.log1p(d_excl[:, -1]),
    }
    if k > 1:
        mistakes["k - 1 neighbours: after excluding the point itself, keep k"] = \
            torch.log1p(d_excl[:, :-1].mean(1))
    return mistakes


def check_2(module) -> None:
    import agent
    student = module.apt_reward
    g = torch.Generator().manual_seed(0)
    cases = [(5, 3, 1), (13, 4, 3), (40, 8, 12), (64, 2, 7), (256, 16, 12)]
    for B, D, k in cases:
        x = torch.randn(B, D, generator=g, dtype=torch.float64) * 3  # (B, D)
        got, want = student(x, k), agent.apt_reward(x, k)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != (B,):
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise ExerciseFailed(f"apt_reward must return a tensor of shape (B,) = ({B},), got "
                                 f"{shape}")
        if not torch.allclose(got.double(), want, rtol=1e-5, atol=1e-6):
            msg = (f"for B = {B} points in D = {D}, k = {k}: your first rewards {_fmt(got[:3])}, "
                   f"agent.py's {_fmt(want[:3])}. ")
            for what, value in _apt_mistakes(x, k).items():
                if torch.allclose(got.double(), value, rtol=1e-5, atol=1e-6):
                    raise ExerciseFailed(msg + f"Yours matches {what}.")
            raise ExerciseFailed(msg + "r_i = log(1 + mean of the k smallest distances "
                                       "||f_i - f_j||).")
    say(f"1. apt_reward matches agent.apt_reward on {len(cases)} random batches (B = 5..256, "
        f"k = 1..12)")

    dup = torch.randn(5, 3, generator=g, dtype=torch.float64).repeat(2, 1)  # (10, 3): all twice
    got, want = student(dup, 2), agent.apt_reward(dup, 2)
    if not torch.allclose(got.double(), want, rtol=1e-5, atol=1e-6):
        raise ExerciseFailed(f"with duplicate points (each point appears twice) your rewards "
                             f"{_fmt(got[:3])} differ from agent.py's {_fmt(want[:3])}. A copy at "
                             f"distance 0 IS a neighbour: exclude the point itself by its index "
                             f"(the diagonal), not every zero distance")
    say("2. duplicates: a copy at distance 0 counts as a neighbour, the point itself does not "
        "(agent.py)")

    enc = nn.Linear(4, 8)
    if student(enc(torch.randn(32, 4)), 4).requires_grad:
        raise ExerciseFailed("the reward carries a gradient back to the encoder: it is a number "
                             "for RL, not a loss (Fig. 1C, representation detached); use "
                             "@torch.no_grad() or .detach()")
    say("3. no gradient flows from the reward to the encoder")

    cluster = torch.randn(50, 16, generator=g) * 0.1  # (50, 16)
    r = student(torch.cat([cluster, torch.full((1, 16), 10.0)]), 5)  # a far outlier as point 50
    spread = student(torch.randn(256, 16, generator=g) * 2, 12).mean().item()
    tight = student(torch.randn(256, 16, generator=g) * 0.1, 12).mean().item()
    if r.argmax().item() != 50:
        raise ExerciseFailed("an outlier far from a tight cluster should earn the largest reward")
    if not spread > tight:
        raise ExerciseFailed(f"a spread-out batch should earn a larger mean reward than a tight "
                             f"one (got {spread:.2f} vs {tight:.2f}): the reward must grow with "
                             f"the distance to the neighbours")
    say(f"   evidence: an outlier earns {r[50]:.2f} vs {r[:50].mean():.2f} for the cluster's "
        f"points; mean reward of a spread batch {spread:.2f} vs a tight one {tight:.2f} "
        f"(exploring = spreading the features)")


# --------------------------------------------------------------------------------------------------
# Exercise 3: the world's transition
# --------------------------------------------------------------------------------------------------
def _transition_mistakes(z, a, eps, mix, ema, s) -> dict:
    """Common wrong versions of z_next -> {what is wrong: z_next (N, d)}."""
    m = mix * s * a + math.sqrt(1 - mix ** 2) * eps  # (N, d)
    vp = math.sqrt(1 - ema ** 2)
    return {
        f"the textbook EMA gain 1 - rho. It shrinks Var(z) to (1 - rho) / (1 + rho) = "
        f"{(1 - ema) / (1 + ema):.2f}: z drifts away from the N(0, I) that G was trained on. "
        f"Which gain g keeps Var(rho z + g m) = 1 when Var(z) = Var(m) = 1?":
            ema * z + (1 - ema) * m,
        "the gain sqrt(1 - rho) instead of sqrt(1 - rho^2)": ema * z + math.sqrt(1 - ema) * m,
        "the action not multiplied by action_scale s":
            ema * z + vp * (mix * a + math.sqrt(1 - mix ** 2) * eps),
        "the noise weighted by 1 - w instead of sqrt(1 - w^2) (then Var(m) != 1)":
            ema * z + vp * (mix * s * a + (1 - mix) * eps),
        "rho and the gain swapped: rho multiplies the OLD latent z": vp * z + ema * m,
    }


def check_3(module, G=None, steps: int = 10) -> None:
    from generator import load_generator
    from world import LatentWorld, WorldConfig
    G = G if G is not None else load_generator(SHIPPED_G)
    d, N = G.latent_dim, 6
    settings = [dict(mix=0.5, ema=0.8, action_scale=math.sqrt(3)),
                dict(mix=0.3, ema=0.95, action_scale=1.5)]
    for coef in settings:
        # horizon 4: resets inside the replay
        world = LatentWorld(G, N, WorldConfig(horizon=4, **coef), seed=0)
        world.reset()
        drawn, draw = [], world.noise
        world.noise = lambda: drawn.append(draw()) or drawn[-1]  # record the world's eps
        g = torch.Generator().manual_seed(1)
        for step in range(1, steps + 1):
            z, y = world.z.clone(), world.y.clone()  # (N, d), (N,) before the step
            a = torch.rand(N, d, generator=g) * 2 - 1  # (N, d)
            drawn.clear()
            _, info = world.step(a)
            eps = drawn[0].clone()  # (N, d): a step's first draw is its eps (then resets' z_0)
            with torch.no_grad():
                z_s, o_s = module.transition(G, z, y, a, eps, coef["mix"], coef["ema"],
                                             coef["action_scale"])
            where = (f"step {step} of world.py's replay (mix {coef['mix']}, ema {coef['ema']}, "
                     f"action_scale {coef['action_scale']:.3f})")
            obs_shape = tuple(info["next_obs"].shape)
            if tuple(z_s.shape) != (N, d) or tuple(o_s.shape) != obs_shape:
                raise ExerciseFailed(f"{where}: transition returned z_next {tuple(z_s.shape)}, "
                                     f"obs {tuple(o_s.shape)}; expected {(N, d)} and "
                                     f"{obs_shape}")
            if not torch.allclose(z_s, info["z"], atol=1e-5):
                msg = (f"{where}: your z_next[0, :3] = {_fmt(z_s[0, :3])}, world.py's = "
                       f"{_fmt(info['z'][0, :3])}. ")
                for what, value in _transition_mistakes(z, a, eps, coef["mix"], coef["ema"],
                                                        coef["action_scale"]).items():
                    if torch.allclose(z_s, value, atol=1e-5):
                        raise ExerciseFailed(msg + f"Yours matches {what}")
                raise ExerciseFailed(msg + "Re-read the mix and EMA steps of the docstring.")
            if not torch.allclose(o_s, info["next_obs"], atol=1e-5):
                raise ExerciseFailed(f"{where}: z_next is right but the image is not: decode the "
                                     f"NEW latent with the episode's class, G(z_next, y)")
    say(f"1. {2 * steps} steps of world.py replayed with the same seed (two coefficient settings, "
        f"resets every 4 steps): your z_next and frames equal world.py's")

    G_small = small_generator(d, G.num_classes)  # any decoder will do for the latent statistics
    g, line = torch.Generator().manual_seed(2), []
    for ema in (0.0, 0.8, 0.95):
        z = torch.randn(128, d, generator=g)  # (128, d) ~ N(0, I), the prior
        y = torch.randint(G.num_classes, (128,), generator=g)
        zs = []
        for _ in range(50):
            a = torch.rand(128, d, generator=g) * 2 - 1  # (128, d)
            eps = torch.randn(128, d, generator=g)  # (128, d)
            with torch.no_grad():
                z, _ = module.transition(G_small, z, y, a, eps, 0.5, ema, math.sqrt(3))
            zs.append(z)
        var = torch.stack(zs[10:]).var().item()
        if not 0.8 <= var <= 1.2:
            raise ExerciseFailed(f"with ema = {ema} and uniform random actions Var(z) = "
                                 f"{var:.3f} after 50 steps; it must stay ~1 (the generator's "
                                 f"prior N(0, I))")
        line.append(f"rho = {ema}: {var:.3f}")
    say("2. stationary Var(z) under uniform random actions (128 envs, 50 steps): "
        + ", ".join(line) + " — in [0.8, 1.2]")


# --------------------------------------------------------------------------------------------------
# Exercise 4: the SAC bug
# --------------------------------------------------------------------------------------------------
def _target_mistakes(sac, f2, r, seed: int) -> dict:
    """The soft Bellman target (SAC Eq. 3) of agent.SAC.step, and common wrong versions of it, for
    the next action that the policy samples after torch.manual_seed(seed) -> {what: target (B,)}."""
    cfg, alpha = sac.cfg, sac.log_alpha.exp().detach()
    with torch.no_grad():
        torch.manual_seed(seed)
        a2, logp2, _ = sac.policy(f2)  # (B, A), (B,): the step's first random draw
        q1_t, q2_t = sac.q(sac.q1_target, sac.q2_target, f2, a2)  # (B,), (B,)
        q_min, q_max = torch.min(q1_t, q2_t), torch.max(q1_t, q2_t)  # (B,) each
        return {
            "right": r + cfg.gamma * (q_min - alpha * logp2),
            "no bootstrap (target = r): the world has no terminal states, every target adds "
            "gamma times the next state's soft value": r,
            "no discount: multiply the next state's soft value by gamma": r + q_min - alpha * logp2,
            "the entropy bonus with the wrong sign: the soft value is min Q - alpha log pi "
            "(SAC Eq. 3)": r + cfg.gamma * (q_min + alpha * logp2),
            "no entropy term: the soft value is min Q - alpha log pi (SAC Eq. 3)":
                r + cfg.gamma * q_min,
            "the larger of the two target critics (torch.max): clipped double-Q takes the "
            "smaller one, against overestimation (TD3)": r + cfg.gamma * (q_max - alpha * logp2),
        }


def _compare_one_step(cls, steps: int = 3) -> None:
    """The student's step against agent.SAC.step: the same weights, seed and batch (gamma > 0, an
    entropy bonus), features given directly (an identity encoder). Raises ExerciseFailed."""
    from agent import SAC, SACConfig
    A, D, B = 2, 6, 64
    cfg = SACConfig(hidden=32, gamma=0.9, alpha=0.2, policy_frequency=1, updates=1)
    torch.manual_seed(0)
    ref = SAC(D, A, cfg)
    mine = cls(D, A, cfg)
    mine.load_state_dict(ref.state_dict())  # the same networks
    g = torch.Generator().manual_seed(3)
    for step in range(1, steps + 1):
        f, f2 = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)  # (B, D) each
        a = torch.rand(B, A, generator=g) * 2 - 1  # (B, A)
        r = torch.randn(B, generator=g)  # (B,)
        seed = 100 + step
        targets = _target_mistakes(ref, f2, r, seed)
        torch.manual_seed(seed)
        ref.step(f, a, r, f2)
        torch.manual_seed(seed)
        mine.step(nn.Identity(), f, a, r, f2)
        where = f"on step {step} of a batch with gamma {cfg.gamma} and alpha {cfg.alpha}"
        got = getattr(mine, "last", {}).get("target")
        if isinstance(got, torch.Tensor) and got.shape == r.shape and \
                not torch.allclose(got.detach(), targets["right"], atol=1e-5):
            msg = (f"{where} your critic's target is {_fmt(got[:3].detach())}..., agent.SAC.step's "
                   f"{_fmt(targets['right'][:3])}... ")
            for what, value in targets.items():
                if what != "right" and torch.allclose(got.detach(), value, atol=1e-5):
                    raise ExerciseFailed(msg + f"Yours matches {what}. The fix should only stop "
                                               f"gradients, never change a value")
            raise ExerciseFailed(msg + "The fix should only stop gradients, never change a "
                                       "value: compare the target line with agent.SAC.step")
        theirs = ref.state_dict()
        differ = sorted({key.split(".")[0] for key, value in mine.state_dict().items()
                         if not torch.allclose(value, theirs[key], rtol=1e-6, atol=1e-7)})
        if differ:
            raise ExerciseFailed(f"{where}, from the same weights and random seed, your step left "
                                 f"{', '.join(differ)} different from agent.SAC.step's. The fix "
                                 f"should only stop gradients, never change what a step computes: "
                                 f"compare ExerciseSAC.step with agent.SAC.step line by line")


def check_4(module, one_step_updates: int = 600) -> None:
    from agent import SACConfig
    cls = module.ExerciseSAC
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(16, 8), nn.Tanh())  # the CNN's stand-in: (B, 16) -> (B, 8)
    enc_opt = torch.optim.Adam(encoder.parameters(), 1e-3)  # its own optimiser, as in pretrain.py
    w0 = [p.detach().clone() for p in encoder.parameters()]
    sac = cls(8, 2, SACConfig(hidden=64, gamma=0.99, policy_frequency=1))
    leaked = 0.0
    for _ in range(20):
        obs, next_obs = torch.randn(32, 16), torch.randn(32, 16)  # (B, 16)
        actions, rewards = torch.rand(32, 2) * 2 - 1, torch.randn(32)  # (B, 2), (B,)
        enc_opt.zero_grad(set_to_none=True)
        sac.update(encoder, obs, actions, rewards, next_obs)
        grads = [p.grad.abs().max().item() for p in encoder.parameters() if p.grad is not None]
        leaked = max([leaked, *grads])
        enc_opt.step()  # no loss of its own here: it moves only if RL left gradients in it
    moved = max((p.detach() - w).abs().max().item() for p, w in zip(encoder.parameters(), w0))
    if not all(p.requires_grad for p in encoder.parameters()):
        raise ExerciseFailed("update() switched off the encoder's gradients; the contrastive loss "
                             "still needs them. Stop the RL graph at the features instead")
    if leaked > 0 or moved > 0:
        raise ExerciseFailed(f"the RL update leaves gradients in the encoder (largest |grad| "
                             f"{leaked:.2e}) and its optimiser moved the weights by up to "
                             f"{moved:.2e} in 20 updates, though the encoder has no loss here. "
                             f"Palm-up detaches the representation from RL (Fig. 1C): which "
                             f"features in ExerciseSAC.step still carry a graph back to the "
                             f"encoder, and which part of the step should not be differentiated "
                             f"at all? Compare agent.SAC.step")
    say(f"1. 20 RL updates ({sac.cfg.updates} SAC steps each) with the encoder's optimiser "
        f"stepping after each: no gradient reached the encoder, its weights did not move")

    _compare_one_step(cls)
    say("2. three steps from the same weights, seed and batch (gamma 0.9, alpha 0.2): the same "
        "critic target and the same networks as agent.SAC.step")

    A, D, B = 2, 4, 128  # one-step bandit of tests/test_agent.py: reward -||a - a*||^2, gamma = 0
    a_star = torch.tensor([0.5, -0.6])
    torch.manual_seed(0)
    sac = cls(D, A, SACConfig(hidden=128, gamma=0.0, updates=1))  # one SAC step per update
    g = torch.Generator().manual_seed(0)
    probe = torch.randn(256, D, generator=g)  # (256, D) held-out states
    start = sac.act(probe, deterministic=True).mean(0)  # (A,)
    for _ in range(one_step_updates):
        f = torch.randn(B, D, generator=g)  # (B, D) features (identity encoder)
        a = (sac.act(f) + 0.3 * torch.randn(B, A, generator=g)).clamp(-1, 1)  # (B, A)
        r = -((a - a_star) ** 2).sum(-1)  # (B,)
        sac.update(nn.Identity(), f, a, r, torch.randn(B, D, generator=g))
    mean_action = sac.act(probe, deterministic=True)  # (256, A)
    err = (mean_action.mean(0) - a_star).abs()  # (A,)
    worst = (mean_action - a_star).abs().max(0).values  # (A,)
    if not ((err < 0.1).all() and (worst < 0.2).all()):
        raise ExerciseFailed(f"the encoder is safe now, but SAC no longer learns the one-step "
                             f"task: after {one_step_updates} updates the policy mean is "
                             f"{_fmt(mean_action.mean(0))}, the optimal action {_fmt(a_star)}. "
                             f"Did the fix remove more than the bug?")
    say(f"3. one-step task (reward -||a - a*||^2, {one_step_updates} updates): the policy mean "
        f"moved from {_fmt(start)} to {_fmt(mean_action.mean(0))}, the optimal action a* = "
        f"{_fmt(a_star)} (|error| < 0.1)")


# --------------------------------------------------------------------------------------------------
# Exercise 5: positives at t+k
# --------------------------------------------------------------------------------------------------
def check_5(module, G=None, runs=Path("runs")) -> None:
    from world import LatentWorld, WorldConfig
    G = G if G is not None else small_generator()
    H, N = 9, 8
    world = LatentWorld(G, N, WorldConfig(horizon=H), seed=0)
    traj = module.collect(world, 3 * H + 4)  # 3.4 episodes per env
    t, y, ep = traj["t"], traj["y"], traj["episode"]  # (T, N) each
    T = len(t)
    same = ep[1:] == ep[:-1]  # (T - 1, N)
    step_ok = ((t[1:] == t[:-1] + 1) & same) | ((t[1:] == 0) & (ep[1:] == ep[:-1] + 1))
    if not step_ok.all():  # the given `collect` must record t and episode ids as the world does
        raise ExerciseFailed("collect() in ex5_offsets.py was changed and no longer records t / "
                             "episode ids as world.py reports them; restore it")
    for k in (1, 2, 4, 8):
        batch = 2000
        out = module.sample_pairs(t, k, batch, torch.Generator().manual_seed(0))
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ExerciseFailed("sample_pairs must return a tuple (s, n) of two index tensors")
        s, n = out
        shapes_ok = tuple(s.shape) == (batch,) and tuple(n.shape) == (batch,)
        if not shapes_ok or s.is_floating_point() or n.is_floating_point():
            raise ExerciseFailed(f"sample_pairs(t, k={k}, batch_size={batch}) must return two "
                                 f"integer tensors of shape ({batch},), got {tuple(s.shape)} "
                                 f"{s.dtype} and {tuple(n.shape)} {n.dtype}")
        if (s < 0).any() or (s + k >= T).any() or (n < 0).any() or (n >= N).any():
            raise ExerciseFailed(f"k = {k}: some anchors [s, n] have s + k outside the {T} rows "
                                 f"or n outside the {N} envs: the positive [s + k, n] must exist")
        bad = (t[s + k, n] != t[s, n] + k) | (ep[s + k, n] != ep[s, n]) | (y[s + k, n] != y[s, n])
        if bad.any():  # bad: (B,)
            i = bad.nonzero()[0, 0].item()
            si, ni = s[i].item(), n[i].item()
            raise ExerciseFailed(f"k = {k}: {bad.sum().item()} of {batch} pairs are not k steps "
                                 f"apart in one episode, e.g. anchor [s={si}, n={ni}]: t goes "
                                 f"from {t[si, ni].item()} to {t[si + k, ni].item()} (episode "
                                 f"{ep[si, ni].item()} -> {ep[si + k, ni].item()}, class "
                                 f"{y[si, ni].item()} -> {y[si + k, ni].item()}): a reset lies "
                                 f"between them")
        valid = (t[k:] == t[:-k] + k).sum().item()  # number of valid anchors
        distinct = len(set(zip(s.tolist(), n.tolist())))
        if distinct < 0.9 * valid:
            raise ExerciseFailed(f"k = {k}: {batch} draws hit only {distinct} of the {valid} "
                                 f"valid anchors: sample uniformly among ALL of them (the last, "
                                 f"unfinished episode too)")
        again = module.sample_pairs(t, k, batch, torch.Generator().manual_seed(0))
        if not (torch.equal(again[0], s) and torch.equal(again[1], n)):
            raise ExerciseFailed("sample_pairs must draw its random numbers from `generator` "
                                 "(same seed, same pairs)")
    try:
        module.sample_pairs(t, H + 1, 16, torch.Generator().manual_seed(0))
    except ValueError:
        pass
    else:
        raise ExerciseFailed(f"k = {H + 1} is longer than an episode of {H} steps: no pair "
                             f"exists, raise ValueError")
    say("1. sample_pairs: for k = 1, 2, 4, 8 all pairs are k steps apart in one episode (t, "
        "class and episode id agree; never across a reset), every valid anchor is reachable, and "
        "k > H raises ValueError")

    folder = Path(runs) / "exercise5"
    results, plot = folder / "results.json", folder / "probe_vs_k.png"
    if not (results.is_file() and plot.is_file()):
        raise ExerciseFailed(f"your sampler is right. Now run the experiment, python "
                             f"exercises/ex5_offsets.py (~2 min), then this check again ({plot} "
                             f"does not exist yet)")
    r = json.loads(results.read_text())
    if list(r.get("offsets", [])) != [1, 2, 4, 8] or len(r.get("linear_probe", [])) != 4:
        raise ExerciseFailed(f"{results} does not hold the four offsets 1, 2, 4, 8: run "
                             f"ex5_offsets.py again")
    say(f"2. the experiment ran ({r.get('wall_time_s', '?')} s); {plot}:")
    say("   | k | final InfoNCE | linear probe top-1 |\n   |---|---|---|")
    for k, loss, acc in zip(r["offsets"], r.get("final_loss", ["?"] * 4), r["linear_probe"]):
        say(f"   | {k} | {loss} | {100 * acc:.1f} % |")
    if "random_init_probe" in r:
        say(f"   random-init encoder: {100 * r['random_init_probe']:.1f} %; chance 10 %. Budget "
            f"{r.get('budget')}")


# --------------------------------------------------------------------------------------------------
# Exercise 6: exploration vs persistence
# --------------------------------------------------------------------------------------------------
EX6_RUNS = ("exercise6_palmup", "exercise6_random", "exercise6_ema0")
BUDGET_FREE = {"method", "ema", "name", "resume"}  # the only flags the three runs may differ in


def flat_config(config: dict, prefix: str = "") -> dict:
    """A run's nested config as pretrain.py's flag names: {"world": {"ema": 0.8}} -> {"ema": 0.8},
    {"sac": {"gamma": 0.5}} -> {"sac_gamma": 0.5} (--ema, --sac-gamma)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flat_config(value, prefix + ("" if key == "world" else f"{key}_"))
        else:
            out[prefix + key] = value
    return out


def ex6_sets(runs=Path("runs")) -> list[str]:
    """The suffixes ("", "-2", "-3", ...) of ex6_ablation.py's sets of three runs whose folders
    exist, oldest first (each command of it trains a fresh set)."""
    found, n = [], 1
    while True:
        suffix = "" if n == 1 else f"-{n}"
        if not any((Path(runs) / f"{name}{suffix}").exists() for name in EX6_RUNS):
            return found
        found.append(suffix)
        n += 1


def check_6(module, runs=Path("runs")) -> None:
    from common import load_checkpoint
    prediction = str(getattr(module, "PREDICTION", "")).strip().lower().replace(" ", "")
    if prediction not in ("random", "ema0"):
        raise ExerciseFailed("write your prediction first, before running anything: in "
                             "exercises/ex6_ablation.py set PREDICTION = 'random' (losing "
                             "exploration hurts more) or 'ema0' (losing persistence hurts more)")
    if len(str(getattr(module, "REASON", "")).strip()) < 10:
        raise ExerciseFailed("write REASON in exercises/ex6_ablation.py: one or two sentences on "
                             "why")

    def finished(folder: Path) -> bool:
        return (folder / "result.json").is_file() and (folder / "encoder.pt").is_file()
    sets = ex6_sets(runs)
    done = [s for s in sets if all(finished(Path(runs) / f"{name}{s}") for name in EX6_RUNS)]
    if not done:
        missing = Path(runs) / f"{EX6_RUNS[0]}{sets[-1] if sets else ''}"
        raise ExerciseFailed(f"{missing} and its two ablations are not three finished runs: run "
                             f"python exercises/ex6_ablation.py (~2 min)")
    suffix = done[-1]  # the newest finished set
    rows = {}
    for name in EX6_RUNS:
        folder = Path(runs) / f"{name}{suffix}"
        result = json.loads((folder / "result.json").read_text())
        try:
            ckpt = load_checkpoint(folder / "encoder.pt", "encoder", ("config",))
        except ValueError as e:
            raise ExerciseFailed(f"{e}: run python exercises/ex6_ablation.py again") from None
        if "linear_probe" not in result:
            raise ExerciseFailed(f"{folder} was run without the probe: run python "
                                 f"exercises/ex6_ablation.py")
        rows[name] = (flat_config(ckpt["config"]), result)
    base = rows["exercise6_palmup"][0]
    for name, (config, _) in rows.items():
        diff = {key for key in base.keys() | config.keys()
                if key not in BUDGET_FREE and base.get(key) != config.get(key)}
        if diff:
            raise ExerciseFailed(f"{name}{suffix} and exercise6_palmup{suffix} differ in "
                                 f"{sorted(diff)}: the comparison needs the same budget; run "
                                 f"python exercises/ex6_ablation.py again")
    expected = {"exercise6_palmup": ("palmup", base["ema"]),
                "exercise6_random": ("random", base["ema"]), "exercise6_ema0": ("palmup", 0.0)}
    for name, (method, ema) in expected.items():
        config = rows[name][0]
        if config["method"] != method or config["ema"] != ema or \
                (name == "exercise6_palmup" and ema == 0):
            raise ExerciseFailed(f"{name}{suffix} should be --method {method} with ema {ema}, "
                                 f"found --method {config['method']} with ema {config['ema']}; "
                                 f"run ex6_ablation.py again")
    folders = Path(runs) / f"exercise6_*{suffix}"
    say(f"1. prediction written ({prediction!r}); three runs ({folders}) with one budget: "
        f"{base['updates']} updates of {base['batch_size']} pairs, {base['num_envs']} envs, seed "
        f"{base['seed']}, probe on {base['probe_images'] or 'all'} train images")
    acc = {name: result["linear_probe"] for name, (_, result) in rows.items()}
    say("   | run | exploration | persistence (EMA rho) | linear probe top-1 | change |\n"
        "   |---|---|---|---|---|")
    for name, (config, result) in rows.items():
        change = "–" if name == "exercise6_palmup" else \
            f"{100 * (acc[name] - acc['exercise6_palmup']):+.1f}"
        exploration = "APT + SAC" if config["method"] == "palmup" else "uniform random"
        say(f"   | {name}{suffix} | {exploration} | {config['ema']} | {100 * acc[name]:.1f} % | "
            f"{change} |")
    worse = "random" if acc["exercise6_random"] < acc["exercise6_ema0"] else "ema0"
    gap = 100 * abs(acc["exercise6_random"] - acc["exercise6_ema0"])
    n_test = max((base["probe_images"] or 50000) // 5, 1)  # pretrain.py: probe_images // 5 test
    p1, p2 = acc["exercise6_random"], acc["exercise6_ema0"]
    se = 100 * math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n_test)  # binomial std of the gap
    noise = ": this gap is within noise at this budget." if gap < 2 * se else "."
    say(f"2. you predicted {prediction!r}; measured, {worse!r} hurts more by {gap:.1f} points. "
        f"With {n_test} test images the difference of two probes has a standard error of "
        f"~{se:.1f} points{noise}")


# --------------------------------------------------------------------------------------------------
CHECKS = {1: check_1, 2: check_2, 3: check_3, 4: check_4, 5: check_5, 6: check_6}


def run_check(n: int, module, **options) -> bool:
    """Run check n on `module` (the student's exercise file or any object with the same names).
    Prints the evidence, or one message saying what is missing; -> True when the exercise is
    done."""
    say(f"== exercise {n}: {TITLES[n]} ==")
    try:
        CHECKS[n](module, **options)
    except NotImplementedError as e:
        say(f"NOT DONE YET: {e}.\n  Edit exercises/{FILES[n]}, then run: python exercises/check.py "
            f"{n}")
        return False
    except ExerciseFailed as e:
        say(f"NOT YET: {e}")
        return False
    except Exception as e:  # the student's code crashed: show where, in their file
        tb = traceback.extract_tb(e.__traceback__)
        frames = [f for f in tb if "exercises" in f.filename
                  and not f.filename.endswith("check.py")] or tb[-1:]
        say(f"ERROR: your code raised {type(e).__name__}: {e}\n  at {frames[-1].filename}:"
            f"{frames[-1].lineno} ({frames[-1].line})")
        return False
    say(f"PASSED: exercise {n}")
    return True


def usage() -> str:
    """--help's text: the command and the six exercises."""
    lines = [f"  {n}  {TITLES[n]} (exercises/{FILES[n]})" for n in FILES]
    return ("usage: python exercises/check.py N\n\n"
            "Checks exercise N of exercises/README.md: prints the evidence it measured and PASSED\n"
            "(exit status 0), or one message saying what is missing or wrong (exit status 1).\n\n"
            "N:\n" + "\n".join(lines))


@cli
def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv in (["-h"], ["--help"]):
        print(usage())
        return
    if len(argv) != 1 or argv[0] not in {str(n) for n in FILES}:
        sys.exit(f"error: give an exercise number 1-{len(FILES)} (usage: python "
                 f"exercises/check.py N; --help lists them)")
    torch.set_num_threads(1)  # small tensors, shared 2-core machine: one thread is fastest
    n = int(argv[0])
    with in_dir(ROOT):  # runs/ and checkpoints/ are relative to the repository root
        try:
            module = load_exercise(n)
        except Exception as e:  # the student's file: a syntax error, a bad import, ...
            why = " ".join(f"{type(e).__name__}: {e}".split())
            sys.exit(f"error: exercises/{FILES[n]} does not import: {why}")
        ok = run_check(n, module)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
