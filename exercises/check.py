"""check.py — self-checks of the classroom exercises (exercises/README.md).

    python exercises/check.py N             # N = 1..6: checks exercises/exN_*.py; exit 0 when done
    python exercises/check.py N --seed S    # the seed of what the check trains or draws (default 0)
    python exercises/check.py N --reference # checks the project's own solution instead (teachers)
    python exercises/check.py --help        # the list of exercises

Each check prints the evidence it measured, or ONE message that says what is missing or wrong and
where to look, and exits non-zero. Whatever the answer does (a wrong value, a wrong type, an
exception), the student gets one message, never a traceback of the checker. Numbers that a seed
changes are printed beside the range that the reference solution gave over three seeds (EXPECTED).
Tests point a check at another module with run_check(n, module, **options), without touching the
exercise files; reference(n) builds the project's own solution of exercise n from its functions.
"""
import contextlib, csv, importlib.util, json, math, os, sys, time, traceback
from pathlib import Path
from types import ModuleType, SimpleNamespace

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

# What the reference solution measures, as (lowest, highest) over the seeds in SEEDS, rounded
# outward. Measured on a 2-core x86 CPU with OMP_NUM_THREADS=1 (while other jobs used the second
# core) by the command in the comment above each group, for S = 0, 1, 2. Another CPU or thread count
# changes the bits of a training run, so a number just outside its range is no reason for worry.
SEEDS = (0, 1, 2)
EXPECTED = {
    # measured by: python exercises/check.py 1 --reference --seed S  (40 updates of 64 pairs)
    "ex1 first InfoNCE": (2.7, 3.2),  # the loss logged at update 10: 2.80, 3.15, 2.98
    "ex1 last InfoNCE": (2.1, 2.7),  # the loss logged at update 40: 2.65, 2.50, 2.14
    "ex1 linear probe": (37, 41),  # %, 5,000 / 1,000 images: 40.5, 40.6, 37.4
    # measured by: python exercises/check.py 2 --reference --seed S  (the check's random batches)
    "ex2 outlier reward": (3.70, 3.72),  # 3.71, 3.71, 3.71
    "ex2 cluster reward": (0.33, 0.36),  # mean over the cluster's 50 points: 0.35, 0.35, 0.34
    "ex2 spread batch": (2.13, 2.17),  # mean over 256 points of std 2: 2.14, 2.16, 2.15
    "ex2 tight batch": (0.31, 0.34),  # mean over 256 points of std 0.1: 0.33, 0.32, 0.32
    # measured by: python exercises/check.py 3 --reference --seed S  (128 envs, steps 10-50)
    "ex3 Var(z), rho 0.0": (0.99, 1.01),  # 1.003, 1.004, 0.999
    "ex3 Var(z), rho 0.8": (0.99, 1.01),  # 1.006, 0.992, 1.000
    "ex3 Var(z), rho 0.95": (1.00, 1.02),  # 1.007, 1.001, 1.014
    # measured by: python exercises/check.py 4 --reference --seed S  (600 one-step updates)
    "ex4 policy error": (0.03, 0.05),  # largest |policy mean - a*|: 0.037, 0.041, 0.034
    # measured by: python exercises/check.py 5 --reference --seed S  (ex5_offsets.py's experiment
    # with the reference sampler, into runs/exercise5_reference_sS: ~1 min each)
    "ex5 final InfoNCE, k = 1": (2.1, 2.5),  # 2.17, 2.24, 2.41
    "ex5 final InfoNCE, k = 2": (3.1, 3.5),  # 3.21, 3.43, 3.10
    "ex5 final InfoNCE, k = 4": (3.9, 4.1),  # 4.04, 3.99, 3.91
    "ex5 final InfoNCE, k = 8": (3.9, 4.2),  # 3.98, 4.18, 4.04
    "ex5 linear probe, k = 1": (38, 44),  # %: 38.2, 43.2, 41.0
    "ex5 linear probe, k = 2": (35, 39),  # %: 39.0, 35.0, 36.5
    "ex5 linear probe, k = 4": (30, 34),  # %: 31.2, 30.5, 33.4
    "ex5 linear probe, k = 8": (25, 38),  # %: 37.8, 25.0, 31.1
    "ex5 random-init probe": (23, 26),  # %: 25.4, 25.6, 23.5
    # measured by: python exercises/check.py 6 --reference --seed S  (a fresh set
    # runs/exercise6_*-N of ex6_ablation.py's three runs with --seed S: ~40 s each)
    "ex6 exercise6_palmup": (42, 49),  # %: 49.0, 42.2, 45.6
    "ex6 exercise6_random": (44, 48),  # %: 44.8, 47.3, 44.9
    "ex6 exercise6_ema0": (33, 52),  # %: 35.8, 33.3, 51.4
}


class ExerciseFailed(Exception):
    """The student's code runs but is not right yet; the message says what differs and where to
    look."""


class StudentCodeRaised(ExerciseFailed):
    """The student's code raised an exception; the message names the function and the line."""


def say(*args) -> None:
    print(*args, flush=True)


def expect(key: str, value: float, unit: str = "", digits: int = 1) -> str:
    """'37.0 % (expected 33–41 %, 3 seeds)': a measured value beside the reference's range."""
    text = f"{value:.{digits}f}{unit}"
    span = EXPECTED.get(key)
    if span is None:
        return f"{text} (no expected range measured yet)"
    lo, hi = span
    places = max(len(f"{x:g}".partition(".")[2]) for x in span)  # 1.0, 1.02 -> 1.00–1.02
    outside = "" if lo <= round(value, digits) <= hi else "; yours is outside it"  # as printed
    return f"{text} (expected {lo:.{places}f}–{hi:.{places}f}{unit}, {len(SEEDS)} seeds{outside})"


def _where(e: BaseException) -> str:
    """The line of the student's code that raised e: the deepest frame outside this file and
    outside installed packages (torch, ...)."""
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if Path(f.filename).name != "check.py" and "-packages" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f"\n  at {f.filename}:{f.lineno} ({(f.line or '').strip()})"


def call(what: str, fn, *args, **kwargs):
    """fn(*args, **kwargs), the student's code: any exception it raises becomes ONE message naming
    `what` and the exception (NotImplementedError, an unwritten stub, passes through)."""
    try:
        return fn(*args, **kwargs)
    except (NotImplementedError, ExerciseFailed):
        raise
    except (Exception, SystemExit) as e:
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise StudentCodeRaised(f"your {what} raised {type(e).__name__}: {first}{_where(e)}"
                                ) from None


def _close(x, y, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
    """x equals the reference tensor y within tolerance; False (never an exception) for another
    type, shape or dtype family."""
    if not isinstance(x, torch.Tensor) or x.shape != y.shape or x.is_complex():
        return False
    try:
        return torch.allclose(x.detach().double(), y.detach().double(), rtol=rtol, atol=atol)
    except RuntimeError:
        return False


def _name_mistake(failures: list, hint: str, **tol) -> None:
    """failures: [(message, [(what is wrong, value), ...], the student's value)] of the cases that
    differ. Raises ExerciseFailed naming the first mistake that any case matches, else the first
    case's message with `hint`."""
    for msg, mistakes, got in failures:
        for what, value in mistakes:
            if _close(got, value, **tol):
                raise ExerciseFailed(msg + f"Yours matches {what}")
    raise ExerciseFailed(failures[0][0] + hint)


def _need(module, name: str, n: int):
    """module.name, or ONE message saying the exercise file lost it."""
    if not hasattr(module, name):
        raise ExerciseFailed(f"exercises/{FILES[n]} has no {name}: keep the name and signature "
                             f"that the file came with")
    return getattr(module, name)


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


def _fmt(v) -> str:
    try:
        return "[" + ", ".join(f"{x:.3f}" for x in v.detach().double().reshape(-1).tolist()) + "]"
    except (AttributeError, RuntimeError, TypeError):
        return repr(v)[:80]


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


def _info_nce_mistakes(a, b, tau) -> list:
    """Common wrong versions of the loss -> [(what is wrong, its value)], to name the mistake a
    student made."""
    ce, target = F.cross_entropy, torch.arange(len(a))
    na, nb = F.normalize(a, dim=1), F.normalize(b, dim=1)
    sym = lambda logits: (ce(logits, target) + ce(logits.T, target)) / 2  # noqa: E731
    zeros = torch.zeros_like(target)
    return [
        ("only the rows (a_i picks b_i): average with the columns (b_i picks a_i) too, the loss is "
         "symmetric", ce(na @ nb.T / tau, target)),
        ("only the columns: average with the rows too, the loss is symmetric",
         ce((na @ nb.T / tau).T, target)),
        ("rows and columns summed instead of averaged (divide by 2)", 2 * sym(na @ nb.T / tau)),
        ("no L2-normalisation: normalise every row of a and b first (F.normalize(x, dim=1))",
         sym(a @ b.T / tau)),
        ("the rows normalised along the wrong axis: each ROW must have norm 1 (dim=1)",
         sym(F.normalize(a, dim=0) @ F.normalize(b, dim=0).T / tau)),
        ("the sign flipped: a cross-entropy is >= 0 and must FALL as the positives match; "
         "minimising minus it pushes the positive pairs apart", -sym(na @ nb.T / tau)),
        ("no temperature: divide the logits by it", sym(na @ nb.T)),
        ("the logits multiplied by the temperature: divide by it", sym(na @ nb.T * tau)),
        ("a sum over the batch instead of a mean", len(a) * sym(na @ nb.T / tau)),
        ("target class 0 for every row: the positive of row i is column i, the diagonal "
         "(torch.arange(B))", (ce(na @ nb.T / tau, zeros) + ce(nb @ na.T / tau, zeros)) / 2),
        ("a compared with itself (a @ a.T): the logits pair a with b",
         sym(na @ na.T / tau)),
    ]


def check_1(module, budget=EX1_BUDGET, min_probe: float = 0.15, name: str = "exercise1",
            seed: int = 0) -> None:
    import pretrain
    from common import parse_config
    student = _need(module, "info_nce", 1)
    g = torch.Generator().manual_seed(0)
    failures = []
    for B, P, tau in [(5, 7, 0.3), (64, 128, 0.1), (3, 2, 1.0), (32, 16, 0.05)]:
        a = torch.randn(B, P, generator=g)  # (B, P)
        b = a + torch.randn(B, P, generator=g)  # (B, P): related to a row by row, as a positive
        a1, b1 = a.clone().requires_grad_(), b.clone().requires_grad_()
        out = call(f"info_nce(a, b, {tau})", student, a1, b1, tau)
        if not isinstance(out, torch.Tensor) or not (out.is_floating_point()):
            kind = f"a {out.dtype} tensor" if isinstance(out, torch.Tensor) else \
                type(out).__name__
            raise ExerciseFailed(f"info_nce must return a floating-point torch tensor, got {kind}"
                                 f" (no .item(), float() or numpy: autograd needs the tensor)")
        if out.dim() != 0:
            raise ExerciseFailed(f"info_nce must return a scalar (0-dim tensor), got shape "
                                 f"{tuple(out.shape)}: average over the batch (F.cross_entropy "
                                 f"does by default)")
        if not out.requires_grad:
            raise ExerciseFailed("the loss carries no gradient: no .item(), .detach(), numpy or "
                                 "torch.no_grad() inside info_nce, or the encoder cannot learn "
                                 "from it")
        want = pretrain.info_nce(a, b, tau)
        if not _close(out, want, rtol=1e-4, atol=1e-5):
            failures.append((f"for a, b of shape ({B}, {P}) and temperature {tau} your loss is "
                             f"{out.item():.5f}, the project's is {want.item():.5f}. ",
                             _info_nce_mistakes(a, b, tau), out))
            continue
        call("info_nce's loss .backward()", out.backward)
        a2, b2 = a.clone().requires_grad_(), b.clone().requires_grad_()
        pretrain.info_nce(a2, b2, tau).backward()
        for what, mine, ref in (("a", a1.grad, a2.grad), ("b", b1.grad, b2.grad)):
            if mine is None:  # the student's loss detached this input: no gradient reaches it
                raise ExerciseFailed(f"the loss value is right but no gradient reaches {what}: "
                                     f"is {what} detached (.detach(), .data, torch.no_grad()) "
                                     f"inside info_nce? Both views must train the encoder")
            if not _close(mine, ref, rtol=1e-4, atol=1e-5):
                raise ExerciseFailed(f"the loss value is right but its gradient with respect to "
                                     f"{what} is not: is part of it detached?")
    if failures:
        _name_mistake(failures, "Check the three steps of the docstring: normalised rows, logits "
                                "a @ b.T / temperature, the mean of the row and column "
                                "cross-entropies.", rtol=1e-4, atol=1e-5)
    say("1. info_nce matches pretrain.info_nce (values and gradients) on 4 random batches, "
        "B = 3..64")

    budget = [*budget, "--seed", str(seed)]
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
    except (NotImplementedError, ExerciseFailed):
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise StudentCodeRaised(f"pretrain.py with your info_nce raised {type(e).__name__}: "
                                f"{first}{_where(e)}") from None
    finally:
        pretrain.info_nce = real
    try:
        with open(Path("runs") / name / "metrics.csv") as fh:
            losses = [float(row["loss"]) for row in csv.DictReader(fh)]  # every 10 updates
    except (OSError, KeyError, ValueError) as e:
        raise ExerciseFailed(f"runs/{name}/metrics.csv cannot be read ({e})") from None
    chance = math.log(cfg.batch_size)
    if len(calls) != cfg.updates:
        raise ExerciseFailed(f"pretrain.py called your info_nce {len(calls)} times in "
                             f"{cfg.updates} updates")
    if not losses or not losses[-1] < chance or (len(losses) > 1 and not losses[-1] < losses[0]):
        raise ExerciseFailed(f"with your loss the InfoNCE did not fall: {losses} (log B = "
                             f"{chance:.2f})")
    probe = result.get("linear_probe", -1.0) if isinstance(result, dict) else -1.0
    if not probe > min_probe:  # a run that did not probe fails too
        raise ExerciseFailed(f"linear probe {probe} after pretraining with your loss: not above "
                             f"{min_probe} (chance 0.1)")
    every = pretrain.LOG_EVERY  # updates between logged losses
    say(f"2. pretrain.py with YOUR info_nce: {cfg.updates} updates of {cfg.batch_size} pairs, seed "
        f"{seed}, in {time.time() - t0:.0f} s (runs/{name}); InfoNCE at update {every} "
        f"{expect('ex1 first InfoNCE', losses[0], digits=2)} -> at update "
        f"{every * len(losses)} {expect('ex1 last InfoNCE', losses[-1], digits=2)}; log B = "
        f"{chance:.2f} when the pairs cannot be told apart")
    say(f"   linear probe {expect('ex1 linear probe', 100 * probe, ' %')} with "
        f"{cfg.probe_images or 'all'} train images (chance 10 %, the check asks for > "
        f"{100 * min_probe:.0f} %)")


# --------------------------------------------------------------------------------------------------
# Exercise 2: APT reward
# --------------------------------------------------------------------------------------------------
def _apt_mistakes(x, k) -> list:
    """Common wrong versions of the APT reward -> [(what is wrong, rewards (B,))]."""
    d = torch.cdist(x, x)  # (B, B)
    d_own = d.topk(k, dim=1, largest=False).values  # (B, k), the point itself (0) included
    d_inf = d.clone().fill_diagonal_(float("inf"))  # (B, B): the point itself excluded
    d_excl = d_inf.topk(k, dim=1, largest=False).values  # (B, k)
    farthest = "topk returns the LARGEST values unless largest=False: the k farthest points"
    mistakes = [
        ("each point counted as its own nearest neighbour (distance 0, as URLB does). agent.py "
         "does NOT count it: read agent.knn_distances, which agent.apt_reward calls, and exclude "
         "the point itself", torch.log1p(d_own.mean(1))),
        ("no log: r = log(1 + mean distance)", d_excl.mean(1)),
        ("log instead of log(1 + .): r = log(1 + mean distance)", torch.log(d_excl.mean(1))),
        ("a sum over the k neighbours instead of their mean", torch.log1p(d_excl.sum(1))),
        ("squared distances: use the Euclidean distance itself",
         torch.log1p((d_excl ** 2).mean(1))),
        ("only the k-th neighbour's distance: average all k", torch.log1p(d_excl[:, -1])),
        (farthest, torch.log1p(d.topk(k, dim=1).values.mean(1))),
        (farthest + " (here the +inf of the diagonal among them)",
         torch.log1p(d_inf.topk(k, dim=1).values.mean(1))),
    ]
    if k > 1:
        mistakes.append(("k - 1 neighbours: after excluding the point itself, keep k",
                         torch.log1p(d_excl[:, :-1].mean(1))))
    if k + 1 < len(x):
        mistakes.append(("k + 1 neighbours: the point itself is already excluded, keep k",
                         torch.log1p(d_inf.topk(k + 1, dim=1, largest=False).values.mean(1))))
    return mistakes


def _rewards(student, x, k, B):
    """The student's apt_reward(x, k) on a copy of x, checked to be a tensor of shape (B,)."""
    got = call(f"apt_reward(features, k={k})", student, x.clone(), k)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != (B,) or got.is_complex():
        shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
        raise ExerciseFailed(f"apt_reward must return a real tensor of shape (B,) = ({B},), got "
                             f"{shape}")
    return got


def check_2(module, seed: int = 0) -> None:
    import agent
    student = _need(module, "apt_reward", 2)
    g = torch.Generator().manual_seed(0)
    cases = [(5, 3, 1), (13, 4, 3), (40, 8, 12), (64, 2, 7), (256, 16, 12)]
    failures = []
    for B, D, k in cases:
        x = torch.randn(B, D, generator=g, dtype=torch.float64) * 3  # (B, D)
        got, want = _rewards(student, x, k, B), agent.apt_reward(x, k)
        if not _close(got, want, rtol=1e-5, atol=1e-6):
            failures.append((f"for B = {B} points in D = {D}, k = {k}: your first rewards "
                             f"{_fmt(got[:3])}, agent.py's {_fmt(want[:3])}. ",
                             _apt_mistakes(x, k), got))
    if failures:
        _name_mistake(failures, "r_i = log(1 + mean of the k smallest distances ||f_i - f_j||, "
                                "j != i).", rtol=1e-5, atol=1e-6)
    say(f"1. apt_reward matches agent.apt_reward on {len(cases)} random batches (B = 5..256, "
        f"k = 1..12)")

    dup = torch.randn(5, 3, generator=g, dtype=torch.float64).repeat(2, 1)  # (10, 3): all twice
    got, want = _rewards(student, dup, 2, 10), agent.apt_reward(dup, 2)
    if not _close(got, want, rtol=1e-5, atol=1e-6):
        raise ExerciseFailed(f"with duplicate points (each point appears twice) your rewards "
                             f"{_fmt(got[:3])} differ from agent.py's {_fmt(want[:3])}. A copy at "
                             f"distance 0 IS a neighbour: exclude the point itself by its index "
                             f"(the diagonal), not every zero distance")
    say("2. duplicates: a copy at distance 0 counts as a neighbour, the point itself does not "
        "(agent.py)")

    enc = nn.Linear(4, 8)
    if _rewards(student, enc(torch.randn(32, 4)), 4, 32).requires_grad:
        raise ExerciseFailed("the reward carries a gradient back to the encoder: it is a number "
                             "for RL, not a loss (Fig. 1C, representation detached); use "
                             "@torch.no_grad() or .detach()")
    say("3. no gradient flows from the reward to the encoder")

    g = torch.Generator().manual_seed(seed)  # the evidence: random batches of this seed
    cluster = torch.randn(50, 16, generator=g) * 0.1  # (50, 16)
    # a far outlier as point 50: (51, 16)
    r = _rewards(student, torch.cat([cluster, torch.full((1, 16), 10.0)]), 5, 51).double()
    spread = _rewards(student, torch.randn(256, 16, generator=g) * 2, 12, 256).mean().item()
    tight = _rewards(student, torch.randn(256, 16, generator=g) * 0.1, 12, 256).mean().item()
    if r.argmax().item() != 50:
        raise ExerciseFailed("an outlier far from a tight cluster should earn the largest reward")
    if not spread > tight:
        raise ExerciseFailed(f"a spread-out batch should earn a larger mean reward than a tight "
                             f"one (got {spread:.2f} vs {tight:.2f}): the reward must grow with "
                             f"the distance to the neighbours")
    say(f"   evidence (seed {seed}): an outlier earns "
        f"{expect('ex2 outlier reward', r[50].item(), digits=2)} vs "
        f"{expect('ex2 cluster reward', r[:50].mean().item(), digits=2)} for the cluster's "
        f"points;\n   mean reward of a spread batch "
        f"{expect('ex2 spread batch', spread, digits=2)} vs a tight one "
        f"{expect('ex2 tight batch', tight, digits=2)} (exploring = spreading the features)")


# --------------------------------------------------------------------------------------------------
# Exercise 3: the world's transition
# --------------------------------------------------------------------------------------------------
def _transition_mistakes(z, a, eps, mix, ema, s) -> list:
    """Common wrong versions of z_next -> [(what is wrong, z_next (N, d))]."""
    m = mix * s * a + math.sqrt(1 - mix ** 2) * eps  # (N, d)
    vp = math.sqrt(1 - ema ** 2)
    return [
        (f"the textbook EMA gain 1 - rho. It shrinks Var(z) to (1 - rho) / (1 + rho) = "
         f"{(1 - ema) / (1 + ema):.2f}: z drifts away from the N(0, I) that G was trained on. "
         f"Which gain g keeps Var(rho z + g m) = 1 when Var(z) = Var(m) = 1?",
         ema * z + (1 - ema) * m),
        ("the gain sqrt(1 - rho) instead of sqrt(1 - rho^2)", ema * z + math.sqrt(1 - ema) * m),
        ("the action not multiplied by action_scale s",
         ema * z + vp * (mix * a + math.sqrt(1 - mix ** 2) * eps)),
        ("the noise weighted by 1 - w instead of sqrt(1 - w^2) (then Var(m) != 1)",
         ema * z + vp * (mix * s * a + (1 - mix) * eps)),
        ("w and sqrt(1 - w^2) swapped: w weighs the action, sqrt(1 - w^2) the noise",
         ema * z + vp * (math.sqrt(1 - mix ** 2) * s * a + mix * eps)),
        ("rho and the gain swapped: rho multiplies the OLD latent z", vp * z + ema * m),
        ("no noise: m mixes the action with eps, m = w s a + sqrt(1 - w^2) eps",
         ema * z + vp * mix * s * a),
        ("no EMA: the old latent z is forgotten; z' = rho z + g m keeps it", m),
    ]


def _transition(module, G, z, y, a, eps, coef: dict, shapes: tuple):
    """The student's transition on copies of its inputs -> (z_next, obs), checked to be two
    tensors of the shapes in `shapes`."""
    with torch.no_grad():
        out = call("transition(G, z, y, action, eps, mix, ema, action_scale)",
                   _need(module, "transition", 3),
                   G, z.clone(), y.clone(), a.clone(), eps.clone(), coef["mix"], coef["ema"],
                   coef["action_scale"])
    if not (isinstance(out, (tuple, list)) and len(out) == 2
            and all(isinstance(x, torch.Tensor) for x in out)):
        raise ExerciseFailed(f"transition must return a tuple (z_next, obs) of two tensors, got "
                             f"{type(out).__name__}")
    if tuple(out[0].shape) != shapes[0] or tuple(out[1].shape) != shapes[1]:
        raise ExerciseFailed(f"transition returned z_next {tuple(out[0].shape)}, obs "
                             f"{tuple(out[1].shape)}; expected {shapes[0]} and {shapes[1]}")
    return out


def check_3(module, G=None, steps: int = 10, seed: int = 0) -> None:
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
            shapes = ((N, d), tuple(info["next_obs"].shape))
            z_s, o_s = _transition(module, G, z, y, a, eps, coef, shapes)
            where = (f"step {step} of world.py's replay (mix {coef['mix']}, ema {coef['ema']}, "
                     f"action_scale {coef['action_scale']:.3f})")
            if not _close(z_s, info["z"], rtol=0, atol=1e-5):
                msg = (f"{where}: your z_next[0, :3] = {_fmt(z_s[0, :3])}, world.py's = "
                       f"{_fmt(info['z'][0, :3])}. ")
                mistakes = _transition_mistakes(z, a, eps, coef["mix"], coef["ema"],
                                                coef["action_scale"])
                _name_mistake([(msg, mistakes, z_s)], "Re-read the mix and EMA steps of the "
                                                      "docstring.", rtol=0, atol=1e-5)
            if not _close(o_s, info["next_obs"], rtol=0, atol=1e-5):
                with torch.no_grad():
                    old = G(z, y)  # (N, 3, S, S): the frame of the latent before the step
                if _close(o_s, old, rtol=0, atol=1e-5):
                    raise ExerciseFailed(f"{where}: z_next is right but you decoded the old "
                                         f"latent z: the frame shows where the step LEADS, "
                                         f"G(z_next, y)")
                raise ExerciseFailed(f"{where}: z_next is right but the image is not: decode the "
                                     f"NEW latent with the episode's class, G(z_next, y)")
    say(f"1. {2 * steps} steps of world.py replayed with the same seed (two coefficient settings, "
        f"resets every 4 steps): your z_next and frames equal world.py's")

    G_small = small_generator(d, G.num_classes)  # any decoder will do for the latent statistics
    g, line = torch.Generator().manual_seed(seed), []
    coef = dict(mix=0.5, action_scale=math.sqrt(3))
    with torch.no_grad():
        frame = tuple(G_small(torch.zeros(1, d), torch.zeros(1, dtype=torch.long)).shape[1:])
    for ema in (0.0, 0.8, 0.95):
        z = torch.randn(128, d, generator=g)  # (128, d) ~ N(0, I), the prior
        y = torch.randint(G.num_classes, (128,), generator=g)
        zs = []
        for _ in range(50):
            a = torch.rand(128, d, generator=g) * 2 - 1  # (128, d)
            eps = torch.randn(128, d, generator=g)  # (128, d)
            z, _ = _transition(module, G_small, z, y, a, eps, coef | {"ema": ema},
                               ((128, d), (128, *frame)))
            zs.append(z)
        var = torch.stack(zs[10:]).double().var().item()
        if not 0.8 <= var <= 1.2:
            raise ExerciseFailed(f"with ema = {ema} and uniform random actions Var(z) = "
                                 f"{var:.3f} after 50 steps; it must stay ~1 (the generator's "
                                 f"prior N(0, I))")
        line.append(f"rho = {ema}: {expect(f'ex3 Var(z), rho {ema}', var, digits=3)}")
    say(f"2. stationary Var(z) under uniform random actions (128 envs, 50 steps, seed {seed}), "
        f"each in [0.8, 1.2]:\n   " + "\n   ".join(line))


# --------------------------------------------------------------------------------------------------
# Exercise 4: the SAC bug
# --------------------------------------------------------------------------------------------------
def _target_mistakes(sac, f, a, f2, r, seed: int):
    """The soft Bellman target of agent.SAC.step (SAC Eq. 3) for the next action that the policy
    samples after torch.manual_seed(seed), and common wrong versions of it
    -> (target (B,), [(what is wrong, target (B,))])."""
    gamma, alpha = sac.cfg.gamma, sac.log_alpha.exp().detach()
    with torch.no_grad():
        torch.manual_seed(seed)
        a2, logp2, _ = sac.policy(f2)  # (B, A), (B,): the step's first random draw
        q1_t, q2_t = sac.q(sac.q1_target, sac.q2_target, f2, a2)  # (B,), (B,)
        q_min, bonus = torch.min(q1_t, q2_t), alpha * logp2  # (B,) each
        online = torch.min(*sac.q(sac.q1, sac.q2, f2, a2))  # (B,): the online critics
        stored = torch.min(*sac.q(sac.q1_target, sac.q2_target, f2, a))  # (B,): the batch's a
        torch.manual_seed(seed)
        a1, logp1, _ = sac.policy(f)  # (B, A), (B,): the same draw at the features of o_t
        here = torch.min(*sac.q(sac.q1_target, sac.q2_target, f, a1))  # (B,)
        return r + gamma * (q_min - bonus), [
            ("no bootstrap (target = r): the world has no terminal states, every target adds "
             "gamma times the next state's soft value", r),
            ("no discount: multiply the next state's soft value by gamma", r + q_min - bonus),
            ("gamma multiplying the reward too: only the next state's soft value is discounted",
             gamma * (r + q_min - bonus)),
            ("the entropy term outside the discount: gamma multiplies the whole soft value "
             "min Q - alpha log pi", r + gamma * q_min - bonus),
            ("the entropy bonus with the wrong sign: the soft value is min Q - alpha log pi "
             "(SAC Eq. 3)", r + gamma * (q_min + bonus)),
            ("no entropy term: the soft value is min Q - alpha log pi (SAC Eq. 3)",
             r + gamma * q_min),
            ("the larger of the two target critics (torch.max): clipped double-Q takes the "
             "smaller one, against overestimation (TD3)",
             r + gamma * (torch.max(q1_t, q2_t) - bonus)),
            ("only the first target critic: clipped double-Q takes the smaller of q1_target and "
             "q2_target", r + gamma * (q1_t - bonus)),
            ("the online critics q1, q2 in the target: bootstrap from the slowly moving target "
             "critics q1_target, q2_target", r + gamma * (online - bonus)),
            ("the batch's action a in the target: the next action is a fresh sample of the policy "
             "at the next frame's features f2", r + gamma * (stored - bonus)),
            ("the features of o_t in the target: the soft value is the NEXT frame's (f2)",
             r + gamma * (here - alpha * logp1)),
        ]


def _pair(cls, D: int, A: int, cfg):
    """agent.SAC and the student's class with the same weights -> (reference, student's)."""
    from agent import SAC
    torch.manual_seed(0)
    ref = SAC(D, A, cfg)
    mine = call("ExerciseSAC(feature_dim, action_dim, cfg)", cls, D, A, cfg)
    try:
        mine.load_state_dict(ref.state_dict())  # the same networks
    except (AttributeError, RuntimeError, TypeError, KeyError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise ExerciseFailed(f"ExerciseSAC does not hold agent.SAC's networks ({first}): the "
                             f"fix belongs in step, leave __init__ as agent.SAC's") from None
    return ref, mine


def _differ(mine, ref) -> list:
    """The networks (q1, actor, ...) whose weights differ between the student's SAC and ref."""
    ours = call("ExerciseSAC.state_dict()", mine.state_dict)
    return sorted({key.split(".")[0] for key, value in ref.state_dict().items()
                   if not _close(ours.get(key), value, rtol=1e-6, atol=1e-7)})


def _last(sac) -> dict:
    last = getattr(sac, "last", None)
    return last if isinstance(last, dict) else {}


def _compare_steps(cls, steps: int = 3) -> None:
    """The student's step against agent.SAC.step: the same weights, seed and batch (gamma > 0, an
    entropy bonus), features given directly (an identity encoder): the critic's target, both
    losses and every network after each step. Raises ExerciseFailed."""
    from agent import SACConfig
    A, D, B = 2, 6, 64
    cfg = SACConfig(hidden=32, gamma=0.9, alpha=0.2, policy_frequency=1, updates=1)
    ref, mine = _pair(cls, D, A, cfg)
    g = torch.Generator().manual_seed(3)
    for step in range(1, steps + 1):
        f, f2 = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)  # (B, D) each
        a = torch.rand(B, A, generator=g) * 2 - 1  # (B, A)
        r = torch.randn(B, generator=g)  # (B,)
        seed = 100 + step
        right, mistakes = _target_mistakes(ref, f, a, f2, r, seed)
        torch.manual_seed(seed)
        ref.step(f, a, r, f2)
        torch.manual_seed(seed)
        call("ExerciseSAC.step(encoder, obs, actions, rewards, next_obs)", mine.step,
             nn.Identity(), f.clone(), a.clone(), r.clone(), f2.clone())
        where = f"on step {step} of a batch with gamma {cfg.gamma} and alpha {cfg.alpha}"
        last = _last(mine)
        got = last.get("target")
        if isinstance(got, torch.Tensor) and got.shape == r.shape:
            if not _close(got, right, rtol=0, atol=1e-5):
                msg = (f"{where} your critic's target is {_fmt(got[:3])}..., agent.SAC.step's "
                       f"{_fmt(right[:3])}... ")
                mistakes = [(what + ". The fix should only stop gradients, never change a value",
                             value) for what, value in mistakes]
                _name_mistake([(msg, mistakes, got)], "The fix should only stop gradients, never "
                                                      "change a value: compare the target line "
                                                      "with agent.SAC.step", rtol=0, atol=1e-5)
            if got.requires_grad:
                raise ExerciseFailed(f"{where} your critic's target has the right value but "
                                     f"carries a gradient (requires_grad): the critic's loss "
                                     f"would differentiate the target too, through the policy's "
                                     f"next action. Compute it under torch.no_grad(), as "
                                     f"agent.SAC.step does: the critic regresses on a fixed "
                                     f"target (SAC Eq. 5)")
        for key, what in (("critic_loss", "critic loss (SAC Eq. 5: the MSE of BOTH critics to "
                                          "the target)"),
                          ("actor_loss", "actor loss (SAC Eq. 12: the mean of alpha log pi - "
                                         "min Q)")):
            value = last.get(key)
            if isinstance(value, torch.Tensor) and value.numel() == 1 and \
                    not _close(value.reshape(()), ref.last[key], rtol=1e-5, atol=1e-6):
                raise ExerciseFailed(f"{where} your {what} is {value.item():.5f}, "
                                     f"agent.SAC.step's {ref.last[key].item():.5f}: the fix "
                                     f"should only stop gradients, never change a value")
        differ = _differ(mine, ref)
        if differ:
            raise ExerciseFailed(f"{where}, from the same weights and random seed, your step left "
                                 f"{', '.join(differ)} different from agent.SAC.step's. The fix "
                                 f"should only stop gradients, never change what a step computes: "
                                 f"compare ExerciseSAC.step with agent.SAC.step line by line")


def _compare_update(cls, seed: int = 7) -> None:
    """One call of the student's update against agent.SAC.update, from the same weights, seed and
    batch: rewards far from standardised, cfg.updates = 3 SAC steps, a delayed actor. Raises
    ExerciseFailed."""
    import dataclasses
    from agent import SAC, SACConfig
    A, D, B = 2, 6, 64
    cfg = SACConfig(hidden=32, gamma=0.9, alpha=0.2, policy_frequency=2, updates=3,
                    reward_norm=True)
    ref, mine = _pair(cls, D, A, cfg)
    g = torch.Generator().manual_seed(4)
    f, f2 = torch.randn(B, D, generator=g), torch.randn(B, D, generator=g)  # (B, D) each
    a = torch.rand(B, A, generator=g) * 2 - 1  # (B, A)
    r = 2 + 3 * torch.randn(B, generator=g)  # (B,): mean 2, std 3
    wrong = []
    for what, change in (("rewards that are not standardised: agent.SAC.update first brings each "
                          "batch's rewards to mean 0 and std 1 (cfg.reward_norm)",
                          dict(reward_norm=False)),
                         ("one SAC step per update: agent.SAC.update runs cfg.updates steps on "
                          "the batch", dict(updates=1))):
        other = SAC(D, A, dataclasses.replace(cfg, **change))
        other.load_state_dict(ref.state_dict())
        torch.manual_seed(seed)
        other.update(f, a, r, f2)
        wrong.append((what, other))
    before = {key: value.clone() for key, value in ref.state_dict().items()}
    torch.manual_seed(seed)
    want = ref.update(f, a, r, f2)
    torch.manual_seed(seed)
    got = call("ExerciseSAC.update(encoder, obs, actions, rewards, next_obs)", mine.update,
               nn.Identity(), f.clone(), a.clone(), r.clone(), f2.clone())
    where = (f"one update (cfg.updates = {cfg.updates} SAC steps on a batch whose rewards have "
             f"mean 2 and std 3, gamma {cfg.gamma}, alpha {cfg.alpha})")
    ours = call("ExerciseSAC.state_dict()", mine.state_dict)
    if all(_close(ours.get(key), value, rtol=0, atol=0) for key, value in before.items()):
        raise ExerciseFailed(f"{where}: your update changed no network, so SAC no longer learns. "
                             f"It must run cfg.updates SAC steps on the batch, as "
                             f"agent.SAC.update does")
    keys = ("critic_loss", "actor_loss", "alpha", "entropy", "q")
    if not isinstance(got, dict) or any(not isinstance(got.get(k), torch.Tensor) for k in keys):
        raise ExerciseFailed(f"update must return what agent.SAC.update returns, a dict of the "
                             f"last step's tensors {', '.join(keys)}; got {str(got)[:80]}")
    differ = _differ(mine, ref)
    losses = [(k, got[k], want[k]) for k in ("critic_loss", "actor_loss")
              if not _close(got[k].reshape(()) if got[k].numel() == 1 else got[k], want[k],
                            rtol=1e-5, atol=1e-6)]
    if differ or losses:
        for what, other in wrong:
            if not _differ(mine, other):
                raise ExerciseFailed(f"{where}: your update matches one with {what}")
        said = "; ".join(f"your {k} {_fmt(mine_v)}, agent.SAC.update's {_fmt(ref_v)}"
                         for k, mine_v, ref_v in losses)
        raise ExerciseFailed(f"{where}: {said or 'the losses agree'}, and the networks "
                             f"{', '.join(differ) or 'agree'}. Compare ExerciseSAC.update with "
                             f"agent.SAC.update line by line")


def check_4(module, one_step_updates: int = 600, seed: int = 0) -> None:
    from agent import SACConfig
    cls = _need(module, "ExerciseSAC", 4)
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(16, 8), nn.Tanh())  # the CNN's stand-in: (B, 16) -> (B, 8)
    enc_opt = torch.optim.Adam(encoder.parameters(), 1e-3)  # its own optimiser, as in pretrain.py
    w0 = [p.detach().clone() for p in encoder.parameters()]
    sac = call("ExerciseSAC(feature_dim, action_dim, cfg)", cls, 8, 2,
               SACConfig(hidden=64, gamma=0.99, policy_frequency=1))
    leaked = 0.0
    for _ in range(20):
        obs, next_obs = torch.randn(32, 16), torch.randn(32, 16)  # (B, 16)
        actions, rewards = torch.rand(32, 2) * 2 - 1, torch.randn(32)  # (B, 2), (B,)
        enc_opt.zero_grad(set_to_none=True)
        call("ExerciseSAC.update(encoder, obs, actions, rewards, next_obs)", sac.update, encoder,
             obs, actions, rewards, next_obs)
        grads = [p.grad.abs().max().item() for p in encoder.parameters() if p.grad is not None]
        leaked = max([leaked, *grads])
        enc_opt.step()  # no loss of its own here: it moves only if RL left gradients in it
    moved = max((p.detach() - w).abs().max().item() for p, w in zip(encoder.parameters(), w0))
    if not all(p.requires_grad for p in encoder.parameters()):
        raise ExerciseFailed("update() switched off the encoder's gradients; the contrastive loss "
                             "still needs them. Stop the RL graph at the features instead")
    if not (leaked == 0 and moved == 0):
        raise ExerciseFailed(f"the RL update leaves gradients in the encoder (largest |grad| "
                             f"{leaked:.2e}) and its optimiser moved the weights by up to "
                             f"{moved:.2e} in 20 updates, though the encoder has no loss here. "
                             f"Palm-up detaches the representation from RL (Fig. 1C): which "
                             f"features in ExerciseSAC.step still carry a graph back to the "
                             f"encoder, and which part of the step should not be differentiated "
                             f"at all? Compare agent.SAC.step")
    say(f"1. 20 RL updates ({sac.cfg.updates} SAC steps each) with the encoder's optimiser "
        f"stepping after each: no gradient reached the encoder, its weights did not move")

    _compare_steps(cls)
    _compare_update(cls)
    say("2. from the same weights, seed and batch as agent.SAC (gamma 0.9, alpha 0.2): three "
        "steps give the same critic target, losses and networks, and one update (3 steps, "
        "rewards standardised) the same losses and networks")

    A, D, B = 2, 4, 128  # one-step bandit of tests/test_agent.py: reward -||a - a*||^2, gamma = 0
    a_star = torch.tensor([0.5, -0.6])
    torch.manual_seed(seed)
    sac = call("ExerciseSAC(feature_dim, action_dim, cfg)", cls, D, A,
               SACConfig(hidden=128, gamma=0.0, updates=1))  # one SAC step per update
    g = torch.Generator().manual_seed(seed)
    probe = torch.randn(256, D, generator=g)  # (256, D) held-out states
    start = call("ExerciseSAC.act", sac.act, probe, deterministic=True).mean(0)  # (A,)
    for _ in range(one_step_updates):
        f = torch.randn(B, D, generator=g)  # (B, D) features (identity encoder)
        a = (sac.act(f) + 0.3 * torch.randn(B, A, generator=g)).clamp(-1, 1)  # (B, A)
        r = -((a - a_star) ** 2).sum(-1)  # (B,)
        call("ExerciseSAC.update(encoder, obs, actions, rewards, next_obs)", sac.update,
             nn.Identity(), f, a, r, torch.randn(B, D, generator=g))
    mean_action = sac.act(probe, deterministic=True)  # (256, A)
    err = (mean_action.mean(0) - a_star).abs()  # (A,)
    worst = (mean_action - a_star).abs().max(0).values  # (A,)
    if not ((err < 0.1).all() and (worst < 0.2).all()):
        raise ExerciseFailed(f"the encoder is safe now, but SAC no longer learns the one-step "
                             f"task: after {one_step_updates} updates the policy mean is "
                             f"{_fmt(mean_action.mean(0))}, the optimal action {_fmt(a_star)}. "
                             f"Did the fix remove more than the bug?")
    say(f"3. one-step task (reward -||a - a*||^2, {one_step_updates} updates, seed {seed}): the "
        f"policy mean moved from {_fmt(start)} to {_fmt(mean_action.mean(0))}, the optimal action "
        f"a* = {_fmt(a_star)};\n   largest |error| "
        f"{expect('ex4 policy error', err.max().item(), digits=3)} (the check asks for < 0.1)")


# --------------------------------------------------------------------------------------------------
# Exercise 5: positives at t+k
# --------------------------------------------------------------------------------------------------
def _anchors(sample_pairs, t, k: int, batch: int, T: int, N: int):
    """The student's sample_pairs(t, k, batch, generator seeded 0), checked to be two integer
    tensors of shape (batch,) with every anchor inside the grid -> (s (batch,), n (batch,))."""
    out = call(f"sample_pairs(t, k={k}, batch_size={batch}, generator)", sample_pairs, t.clone(),
               k, batch, torch.Generator().manual_seed(0))
    if not (isinstance(out, (tuple, list)) and len(out) == 2
            and all(isinstance(x, torch.Tensor) for x in out)):
        raise ExerciseFailed(f"sample_pairs must return a tuple (s, n) of two index tensors, got "
                             f"{type(out).__name__}")
    s, n = out
    integer = all(not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)
                  for x in out)
    if tuple(s.shape) != (batch,) or tuple(n.shape) != (batch,) or not integer:
        raise ExerciseFailed(f"sample_pairs(t, k={k}, batch_size={batch}) must return two "
                             f"integer tensors of shape ({batch},), got {tuple(s.shape)} "
                             f"{s.dtype} and {tuple(n.shape)} {n.dtype}")
    s, n = s.long(), n.long()
    if (n < 0).any() or (n >= N).any() or (s < 0).any():
        raise ExerciseFailed(f"k = {k}: some anchors [s, n] have s < 0 or n outside the {N} envs "
                             f"(0..{N - 1}): s indexes the rows (time), n the columns (envs)")
    if (s + k >= T).any():
        hint = (": one row too far, is your offset off by one?" if (s + k - 1 < T).all() else
                "")
        raise ExerciseFailed(f"k = {k}: some anchors [s, n] have s + k beyond the last of the {T} "
                             f"rows: the positive [s + k, n] must exist{hint}")
    return s, n


def _check_pairs(sample_pairs, t, y, ep, k: int, batch: int = 2000, sigmas: float = 5.0) -> None:
    """For one offset k: every pair k apart in one episode, every valid anchor reachable, the
    anchors uniform (the share in each episode within `sigmas` binomial standard errors), the same
    pairs from the same seed. Raises ExerciseFailed."""
    T, N = t.shape
    s, n = _anchors(sample_pairs, t, k, batch, T, N)
    bad = (t[s + k, n] != t[s, n] + k) | (ep[s + k, n] != ep[s, n]) | (y[s + k, n] != y[s, n])
    if bad.any():  # bad: (B,)
        for other in (k - 1, k + 1):  # all the pairs right for a neighbouring offset?
            if other >= 1 and (s + other < T).all() and \
                    (t[s + other, n] == t[s, n] + other).all() and \
                    (ep[s + other, n] == ep[s, n]).all():
                raise ExerciseFailed(f"k = {k}: every anchor of yours has a frame {other} steps "
                                     f"later in its episode, but not always one {k} steps later: "
                                     f"your offset is {other}, not k")
        i = bad.nonzero()[0, 0].item()
        si, ni = s[i].item(), n[i].item()
        raise ExerciseFailed(f"k = {k}: {bad.sum().item()} of {batch} pairs are not k steps apart "
                             f"in one episode, e.g. anchor [s={si}, n={ni}]: t goes from "
                             f"{t[si, ni].item()} to {t[si + k, ni].item()} (episode "
                             f"{ep[si, ni].item()} -> {ep[si + k, ni].item()}, class "
                             f"{y[si, ni].item()} -> {y[si + k, ni].item()}): a reset lies "
                             f"between them")
    valid = t[k:] == t[:-k] + k  # (T - k, N): anchor [s, n] is valid
    drawn = torch.zeros_like(valid)  # (T - k, N)
    drawn[s, n] = True
    hit, total = drawn.sum().item(), valid.sum().item()
    if hit < 0.9 * total:
        missed = (valid & ~drawn).nonzero()  # (M, 2): rows s, envs n never drawn
        ms, mn = missed[:, 0], missed[:, 1]
        pos = ms + k  # (M,): the rows of their positives
        after = (pos + 1).clamp(max=T - 1)  # (M,)
        last = (pos == T - 1) | (ep[after, mn] != ep[pos, mn])  # (M,): the episode's last frame
        if (ep[ms, mn] == ep.max()).all():
            where = ("all of them in the last, unfinished episode: its frames are valid anchors "
                     "too, as far as a frame k steps later exists")
        elif last.all():
            where = ("each of them the anchor whose positive is the LAST frame of its episode "
                     "(t = H, or the last row): that pair is valid too, an off-by-one")
        else:
            where = "sample uniformly among ALL of them"
        raise ExerciseFailed(f"k = {k}: {batch} draws hit only {hit} of the {total} valid "
                             f"anchors; {len(missed)} were never drawn, {where}")
    episodes = ep[:-k][valid]  # (V,): the episode of each valid anchor
    worst = (0.0, 0, 0.0, 0.0, 1.0)  # (deviation in standard errors, episode, share, p, se)
    for e in episodes.unique().tolist():
        p = (episodes == e).double().mean().item()  # uniform anchors: this episode's share
        share = (ep[s, n] == e).double().mean().item()
        se = math.sqrt(p * (1 - p) / batch)  # binomial standard error of the share
        if se > 0 and abs(share - p) / se > worst[0]:
            worst = (abs(share - p) / se, e, share, p, se)
    if worst[0] > sigmas:
        _, e, share, p, se = worst
        raise ExerciseFailed(f"k = {k}: {100 * share:.1f} % of your anchors lie in episode {e}, "
                             f"where uniform anchors put {100 * p:.1f} % (standard error "
                             f"{100 * se:.1f} % at {batch} draws; the check allows {sigmas:g}): "
                             f"draw uniformly among ALL valid anchors at once, not an episode "
                             f"first and then a time in it")
    again = _anchors(sample_pairs, t, k, batch, T, N)
    if not (torch.equal(again[0], s) and torch.equal(again[1], n)):
        raise ExerciseFailed("sample_pairs must draw its random numbers from `generator` "
                             "(same seed, same pairs)")


def _results(path: Path) -> dict:
    """runs/exercise5/results.json, checked to hold the four offsets' numbers."""
    try:
        r = json.loads(path.read_text())
        assert list(r["offsets"]) == [1, 2, 4, 8]
        probes, losses = [float(v) for v in r["linear_probe"]], [float(v) for v in r["final_loss"]]
        assert len(probes) == len(losses) == 4
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise ExerciseFailed(f"{path} does not hold the four offsets 1, 2, 4, 8 and their "
                             f"numbers: run python exercises/ex5_offsets.py again") from None
    return r


def check_5(module, G=None, runs=Path("runs"), seed: int = 0, experiment: bool = False,
            folder=None) -> None:
    from world import LatentWorld, WorldConfig
    G = G if G is not None else small_generator()
    H, N = 9, 8
    world = LatentWorld(G, N, WorldConfig(horizon=H), seed=0)
    sample_pairs = _need(module, "sample_pairs", 5)
    traj = call("collect(world, steps)", _need(module, "collect", 5), world, 3 * H + 4)  # 3.4 eps
    keys = ("t", "y", "episode")
    if not (isinstance(traj, dict) and all(isinstance(traj.get(key), torch.Tensor)
                                           and traj[key].dim() == 2 for key in keys)):
        raise ExerciseFailed("collect() in ex5_offsets.py was changed and no longer returns the "
                             "(T, N) tensors t, y and episode; restore it")
    t, y, ep = (traj[key].long() for key in keys)  # (T, N) each
    same = ep[1:] == ep[:-1]  # (T - 1, N)
    step_ok = ((t[1:] == t[:-1] + 1) & same) | ((t[1:] == 0) & (ep[1:] == ep[:-1] + 1))
    if not step_ok.all():  # the given `collect` must record t and episode ids as the world does
        raise ExerciseFailed("collect() in ex5_offsets.py was changed and no longer records t / "
                             "episode ids as world.py reports them; restore it")
    for k in (1, 2, 4, 8):
        _check_pairs(sample_pairs, t, y, ep, k)
    try:
        sample_pairs(t.clone(), H + 1, 16, torch.Generator().manual_seed(0))
    except ValueError:
        pass
    except (NotImplementedError, ExerciseFailed):
        raise
    except Exception as e:
        raise ExerciseFailed(f"k = {H + 1} is longer than an episode of {H} steps, and your "
                             f"sample_pairs raised {type(e).__name__} ({e}): check for this case "
                             f"and raise ValueError with a message that says so") from None
    else:
        raise ExerciseFailed(f"k = {H + 1} is longer than an episode of {H} steps: no pair "
                             f"exists, raise ValueError")
    say("1. sample_pairs: for k = 1, 2, 4, 8 all pairs are k steps apart in one episode (t, "
        "class and episode id agree; never across a reset), every valid anchor is reachable, the "
        "anchors are uniform (each episode's share within 5 standard errors), and k > H raises "
        "ValueError")

    folder = Path(folder) if folder is not None else Path(runs) / "exercise5"
    results, plot = folder / "results.json", folder / "probe_vs_k.png"
    if experiment:  # the reference: ex5_offsets.py's experiment with this sampler and seed
        say(f"   running the experiment (seed {seed}) into {folder} ...")
        call("experiment of ex5_offsets.py", _need(module, "experiment", 5), seed=seed,
             out=folder, sampler=sample_pairs)
    if not (results.is_file() and plot.is_file()):
        raise ExerciseFailed(f"your sampler is right. Now run the experiment, python "
                             f"exercises/ex5_offsets.py (1-3 min), then this check again ({plot} "
                             f"does not exist yet)")
    r = _results(results)
    say(f"2. the experiment ran ({r.get('wall_time_s', '?')} s, seed {r.get('seed', 0)}); {plot}:")
    say("   | k | final InfoNCE | linear probe top-1 |\n   |---|---|---|")
    for k, loss, acc in zip(r["offsets"], r["final_loss"], r["linear_probe"]):
        say(f"   | {k} | {expect(f'ex5 final InfoNCE, k = {k}', float(loss), digits=2)} | "
            f"{expect(f'ex5 linear probe, k = {k}', 100 * float(acc), ' %')} |")
    if "random_init_probe" in r:
        say(f"   random-init encoder: "
            f"{expect('ex5 random-init probe', 100 * float(r['random_init_probe']), ' %')}; "
            f"chance 10 %. Budget {r.get('budget')}")


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


def _ex6_run(folder: Path) -> tuple:
    """A finished run folder -> (its config under pretrain.py's flag names, its result.json)."""
    from common import load_checkpoint
    again = "run python exercises/ex6_ablation.py again"
    try:
        result = json.loads((folder / "result.json").read_text())
        ckpt = load_checkpoint(folder / "encoder.pt", "encoder", ("config",))
        config = flat_config(ckpt["config"])
        assert isinstance(result, dict) and {"method", "ema"} <= config.keys()
    except (OSError, ValueError, KeyError, TypeError, AttributeError, AssertionError) as e:
        raise ExerciseFailed(f"{folder} cannot be read ({type(e).__name__}: {e}): "
                             f"{again}") from None
    if not isinstance(result.get("linear_probe"), (int, float)):
        raise ExerciseFailed(f"{folder} was run without the probe: {again}")
    return config, result


def check_6(module, runs=Path("runs"), seed: int = 0, experiment: bool = False) -> None:
    prediction = str(getattr(module, "PREDICTION", "")).strip().lower().replace(" ", "")
    if prediction not in ("random", "ema0"):
        raise ExerciseFailed("write your prediction first, before running anything: in "
                             "exercises/ex6_ablation.py set PREDICTION = 'random' (losing "
                             "exploration hurts more) or 'ema0' (losing persistence hurts more)")
    if len(str(getattr(module, "REASON", "")).strip()) < 10:
        raise ExerciseFailed("write REASON in exercises/ex6_ablation.py: one or two sentences on "
                             "why")
    if experiment:  # the reference: ex6_ablation.py's three runs with this seed, a fresh set
        say(f"   training ex6_ablation.py's three runs with --seed {seed} ...")
        call("train of ex6_ablation.py", _need(module, "train", 6), seed=seed, runs=Path(runs))

    def finished(folder: Path) -> bool:
        return (folder / "result.json").is_file() and (folder / "encoder.pt").is_file()
    sets = ex6_sets(runs)
    done = [s for s in sets if all(finished(Path(runs) / f"{name}{s}") for name in EX6_RUNS)]
    if not done:
        missing = Path(runs) / f"{EX6_RUNS[0]}{sets[-1] if sets else ''}"
        raise ExerciseFailed(f"{missing} and its two ablations are not three finished runs: run "
                             f"python exercises/ex6_ablation.py (1-2 min)")
    suffix = done[-1]  # the newest finished set
    rows = {name: _ex6_run(Path(runs) / f"{name}{suffix}") for name in EX6_RUNS}
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
        f"{base.get('updates')} updates of {base.get('batch_size')} pairs, {base.get('num_envs')} "
        f"envs, seed {base.get('seed')}, probe on {base.get('probe_images') or 'all'} train images")
    acc = {name: float(result["linear_probe"]) for name, (_, result) in rows.items()}
    say("   | run | exploration | persistence (EMA rho) | linear probe top-1 | change |\n"
        "   |---|---|---|---|---|")
    for name, (config, result) in rows.items():
        change = "–" if name == "exercise6_palmup" else \
            f"{100 * (acc[name] - acc['exercise6_palmup']):+.1f}"
        exploration = "APT + SAC" if config["method"] == "palmup" else "uniform random"
        say(f"   | {name}{suffix} | {exploration} | {config['ema']} | "
            f"{expect(f'ex6 {name}', 100 * acc[name], ' %')} | {change} |")
    worse = "random" if acc["exercise6_random"] < acc["exercise6_ema0"] else "ema0"
    gap = 100 * abs(acc["exercise6_random"] - acc["exercise6_ema0"])
    n_test = max((base.get("probe_images") or 50000) // 5, 1)  # pretrain.py: probe_images // 5
    p1, p2 = acc["exercise6_random"], acc["exercise6_ema0"]
    se = 100 * math.sqrt(max(p1 * (1 - p1) + p2 * (1 - p2), 0.0) / n_test)  # std of the gap
    noise = ": this gap is within noise at this budget." if gap < 2 * se else "."
    say(f"2. you predicted {prediction!r}; measured, {worse!r} hurts more by {gap:.1f} points. "
        f"With {n_test} test images the difference of two probes has a standard error of "
        f"~{se:.1f} points{noise}")


# --------------------------------------------------------------------------------------------------
# The reference solutions: the project's own functions (what --reference checks, and the tests)
# --------------------------------------------------------------------------------------------------
def _reference_sac():
    """Exercise 4 fixed: encode without gradient, then agent.SAC.step (which computes the target
    under torch.no_grad())."""
    from agent import SAC

    class ReferenceSAC(SAC):
        def update(self, encoder, obs, actions, rewards, next_obs) -> dict:
            r = rewards
            if self.cfg.reward_norm:
                r = (r - r.mean()) / r.std().clamp_min(1e-8)  # (B,) as agent.SAC.update
            for _ in range(self.cfg.updates):
                self.step(encoder, obs, actions, r, next_obs)
            keys = ("critic_loss", "actor_loss", "alpha", "entropy", "q")
            return {k: self.last[k] for k in keys}

        def step(self, encoder, obs, a, r, next_obs) -> None:
            with torch.no_grad():
                f, f2 = encoder(obs), encoder(next_obs)  # (B, D) each
            SAC.step(self, f, a, r, f2)
    return ReferenceSAC


def reference_sampler(t: torch.Tensor, k: int, batch_size: int, generator: torch.Generator):
    """Exercise 5: uniform over every anchor [s, n] whose frame [s + k, n] is k steps later in the
    same episode (t (T, N) -> s (B,), n (B,))."""
    if 1 <= k < len(t):
        valid = (t[k:] == t[:-k] + k).nonzero()  # (V, 2): rows s and envs n of valid anchors
    else:
        valid = torch.zeros(0, 2, dtype=torch.long)  # (0, 2)
    if len(valid) == 0:
        raise ValueError(f"no pair of frames {k} steps apart in one episode")
    i = torch.randint(len(valid), (batch_size,), generator=generator)  # (B,)
    return valid[i, 0], valid[i, 1]


def reference(n: int):
    """The project's own solution of exercise n, built from its functions: an object with the
    names the check reads."""
    if n == 1:
        import pretrain
        return SimpleNamespace(info_nce=pretrain.info_nce)
    if n == 2:
        import agent
        return SimpleNamespace(apt_reward=lambda features, k=12: agent.apt_reward(features, k))
    if n == 3:
        import world

        def transition(G, z, y, action, eps, mix, ema, action_scale):
            cfg = world.WorldConfig(mix=mix, ema=ema, action_scale=action_scale)
            z_next = world.latent_step(z, action, eps, cfg)  # (N, d)
            return z_next, G(z_next, y)
        return SimpleNamespace(transition=transition)
    if n == 4:
        return SimpleNamespace(ExerciseSAC=_reference_sac())
    if n == 5:
        stub = load_exercise(5)  # its collect and experiment, with the reference sampler
        return SimpleNamespace(collect=stub.collect, sample_pairs=reference_sampler,
                               experiment=stub.experiment)
    stub = load_exercise(6)  # its train, with a prediction written
    return SimpleNamespace(PREDICTION="random", REASON="the reference solution: either prediction "
                           "passes, the table is the point", train=stub.train)


# --------------------------------------------------------------------------------------------------
CHECKS = {1: check_1, 2: check_2, 3: check_3, 4: check_4, 5: check_5, 6: check_6}


def run_check(n: int, module, **options) -> bool:
    """Run check n on `module` (the student's exercise file or any object with the same names).
    Prints the evidence, or one message saying what is missing; -> True when the exercise is
    done. Never raises for what the module does."""
    say(f"== exercise {n}: {TITLES[n]} ==")
    try:
        CHECKS[n](module, **options)
    except NotImplementedError as e:
        say(f"NOT DONE YET: {e}.\n  Edit exercises/{FILES[n]}, then run: python exercises/check.py "
            f"{n}")
        return False
    except StudentCodeRaised as e:
        say(f"ERROR: {e}")
        return False
    except ExerciseFailed as e:
        say(f"NOT YET: {e}")
        return False
    except (Exception, SystemExit) as e:  # something the wrappers did not foresee: still one line
        tb = traceback.extract_tb(e.__traceback__)
        frames = [f for f in tb if "exercises" in f.filename
                  and not f.filename.endswith("check.py")] or tb[-1:] or [None]
        at = f"\n  at {frames[-1].filename}:{frames[-1].lineno} ({frames[-1].line})" \
            if frames[-1] is not None else ""
        first = (str(e).strip().splitlines() or [""])[0][:300]
        say(f"ERROR: your code raised {type(e).__name__}: {first}{at}")
        return False
    say(f"PASSED: exercise {n}")
    return True


def usage() -> str:
    """--help's text: the command and the six exercises."""
    lines = [f"  {n}  {TITLES[n]} (exercises/{FILES[n]})" for n in FILES]
    return ("usage: python exercises/check.py N [--seed S] [--reference]\n\n"
            "Checks exercise N of exercises/README.md: prints the evidence it measured and PASSED\n"
            "(exit status 0), or one message saying what is missing or wrong (exit status 1).\n\n"
            "N:\n" + "\n".join(lines) + "\n\n"
            "--seed S      the seed of what the check trains (1, 4; 5 and 6 with --reference) and\n"
            "              of the random data its evidence is measured on (2, 3); default 0\n"
            "--reference   check the project's own solution instead of exercises/exN_*.py (for\n"
            "              teachers: how the expected ranges were measured). For 5 and 6 it also\n"
            "              runs the experiment: runs/exercise5_reference_sS, a fresh set\n"
            "              runs/exercise6_*-N")


def parse_args(argv: list) -> tuple[int, int, bool]:
    """['N', '--seed', 'S', '--reference'] in any order -> (N, S, reference); a bad command line
    exits with one line."""
    n, seed, ref, args = None, 0, False, list(argv)
    bad = (f"error: give an exercise number 1-{len(FILES)} (usage: python exercises/check.py N; "
           f"--help lists them)")  # and the options
    while args:
        arg = args.pop(0)
        if arg == "--reference":
            ref = True
        elif arg == "--seed" or arg.startswith("--seed="):
            value = arg.split("=", 1)[1] if "=" in arg else (args.pop(0) if args else "")
            if not value.isdigit():
                sys.exit(f"error: --seed needs an integer >= 0, got {value!r}")
            seed = int(value)
        elif n is None and arg in {str(k) for k in FILES}:
            n = int(arg)
        else:
            sys.exit(bad)
    if n is None:
        sys.exit(bad)
    return n, seed, ref


@cli
def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv in (["-h"], ["--help"]):
        print(usage())
        return
    n, seed, ref = parse_args(argv)
    torch.set_num_threads(1)  # small tensors, shared 2-core machine: one thread is fastest
    options = {"seed": seed}
    with in_dir(ROOT):  # runs/ and checkpoints/ are relative to the repository root
        try:
            module = reference(n) if ref else load_exercise(n)
        except Exception as e:  # the student's file: a syntax error, a bad import, ...
            why = " ".join(f"{type(e).__name__}: {e}".split())
            sys.exit(f"error: exercises/{FILES[n]} does not import: {why}")
        if ref and n == 5:
            options |= {"experiment": True,
                        "folder": Path("runs") / f"exercise5_reference_s{seed}"}
        elif ref and n == 6:
            options["experiment"] = True
        if ref:
            say(f"(the reference solution of exercise {n}, seed {seed})")
        ok = run_check(n, module, **options)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
