"""The exercises' checkers against the usual wrong answers: a table per exercise of wrong variants,
each of which must fail its check with ONE message that names the mistake (a distinctive word of
it), never a traceback of the checker; the reference solutions pass (tests/test_exercises.py).
Every variant fails before any training: ~10 s on a 2-core x86 CPU."""
import contextlib
import dataclasses
import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import agent
import pretrain
from common import ROOT

spec = importlib.util.spec_from_file_location("exercise_check", ROOT / "exercises" / "check.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def fails_with(n, module, word, capsys, **options) -> str:
    """Check n on `module` fails with exactly one message that contains `word` -> the output."""
    ok = check.run_check(n, module, **options)
    out = capsys.readouterr().out
    assert not ok, out
    assert "PASSED" not in out and "Traceback" not in out, out
    assert sum(line.startswith(("NOT", "ERROR")) for line in out.splitlines()) == 1, out
    assert word in out, (word, out)
    return out


@pytest.mark.parametrize("n", range(1, 7))
def test_a_module_without_the_exercise_names_is_one_message(n, capsys):
    fails_with(n, SimpleNamespace(), "PREDICTION" if n == 6 else "has no", capsys)


# ---- exercise 1: the temporal InfoNCE loss -------------------------------------------------------
def unit(x):
    return F.normalize(x, dim=1)


def sym(logits):
    target = torch.arange(len(logits))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def typo(a, b, temperature):
    return sym(unit(a) @ unit(bb).T / temperature)  # noqa: F821 (the student's typo)


def half_detached(a, b, temperature):  # the right value, but the columns' term has no gradient
    logits, target = unit(a) @ unit(b).T / temperature, torch.arange(len(a))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.detach().T, target)) / 2


def no_grad_loss(a, b, temperature):
    with torch.no_grad():
        return pretrain.info_nce(a, b, temperature)


EX1 = {  # what the student wrote -> (info_nce, a distinctive word of the check's message)
    "rows only": (lambda a, b, tau: F.cross_entropy(unit(a) @ unit(b).T / tau,
                                                    torch.arange(len(a))), "only the rows"),
    "columns only": (lambda a, b, tau: F.cross_entropy((unit(a) @ unit(b).T / tau).T,
                                                       torch.arange(len(a))), "only the columns"),
    "summed, not averaged": (lambda a, b, tau: 2 * sym(unit(a) @ unit(b).T / tau),
                             "divide by 2"),
    "no normalisation": (lambda a, b, tau: sym(a @ b.T / tau), "no L2-normalisation"),
    "normalised along dim 0": (lambda a, b, tau: sym(F.normalize(a, dim=0)
                                                     @ F.normalize(b, dim=0).T / tau),
                               "wrong axis"),
    "the sign flipped": (lambda a, b, tau: -sym(unit(a) @ unit(b).T / tau), "sign flipped"),
    "no temperature": (lambda a, b, tau: sym(unit(a) @ unit(b).T), "no temperature"),
    "times the temperature": (lambda a, b, tau: sym(unit(a) @ unit(b).T * tau),
                              "multiplied by the temperature"),
    "a sum over the batch": (lambda a, b, tau: len(a) * sym(unit(a) @ unit(b).T / tau),
                             "sum over the batch"),
    "target 0 for every row": (lambda a, b, tau: sum(
        F.cross_entropy(logits, torch.zeros(len(a), dtype=torch.long)) / 2
        for logits in (unit(a) @ unit(b).T / tau, unit(b) @ unit(a).T / tau)), "torch.arange"),
    "a against a": (lambda a, b, tau: sym(unit(a) @ unit(a).T / tau), "a @ a.T"),
    "b detached": (lambda a, b, tau: pretrain.info_nce(a, b.detach(), tau),
                   "no gradient reaches b"),
    "a detached": (lambda a, b, tau: pretrain.info_nce(a.detach(), b, tau),
                   "no gradient reaches a"),
    "one term detached": (half_detached, "gradient with respect to a"),
    "under torch.no_grad": (no_grad_loss, "carries no gradient"),
    ".item()": (lambda a, b, tau: pretrain.info_nce(a, b, tau).item(),
                "floating-point torch tensor"),
    "per-pair losses": (lambda a, b, tau: torch.stack([pretrain.info_nce(a, b, tau)] * len(a)),
                        "scalar"),
    "a typo (raises)": (typo, "your info_nce(a, b, 0.3) raised NameError"),
}


@pytest.mark.parametrize("what", EX1)
def test_ex1_rejects_and_names_each_mistake(what, capsys):
    info_nce, word = EX1[what]
    fails_with(1, SimpleNamespace(info_nce=info_nce), word, capsys)


# ---- exercise 2: the APT reward ------------------------------------------------------------------
def distances(f, self_too=False):
    d = torch.cdist(f, f)  # (B, B)
    return d if self_too else d.fill_diagonal_(float("inf"))


def knn(f, k, self_too=False):
    return distances(f, self_too).topk(k, dim=1, largest=False).values  # (B, k)


@torch.no_grad()
def drops_zero_distances(f, k=12):  # excludes the point by distance, so also drops duplicates
    d = (f[:, None] - f[None]).norm(dim=-1)  # (B, B), exactly 0 on the diagonal
    d[d == 0] = float("inf")
    return torch.log1p(d.topk(k, dim=1, largest=False).values.mean(1))


def with_gradient(f, k=12):  # the right value, but no torch.no_grad()
    d = torch.cdist(f, f) + torch.diag(torch.full((len(f),), float("inf")))
    return torch.log1p(d.topk(k, dim=1, largest=False).values.mean(1))


def raises(f, k=12):
    raise IndexError("index 12 is out of bounds for dimension 1 with size 12")


EX2 = {  # what the student wrote -> (apt_reward, a distinctive word of the check's message)
    "self counted": (lambda f, k: torch.log1p(knn(f, k, self_too=True).mean(1)),
                     "its own nearest neighbour"),
    "k - 1 neighbours": (lambda f, k: torch.log1p(knn(f, k)[:, :-1].mean(1)), "k - 1"),
    "k + 1 neighbours": (lambda f, k: torch.log1p(knn(f, k + 1).mean(1)), "k + 1"),
    "only the k-th": (lambda f, k: torch.log1p(knn(f, k)[:, -1]), "only the k-th"),
    "no log": (lambda f, k: knn(f, k).mean(1), "no log"),
    "log, not log1p": (lambda f, k: torch.log(knn(f, k).mean(1)), "log instead of log(1 + .)"),
    "a sum": (lambda f, k: torch.log1p(knn(f, k).sum(1)), "a sum over the k neighbours"),
    "squared distances": (lambda f, k: torch.log1p((knn(f, k) ** 2).mean(1)),
                          "squared distances"),
    "the farthest": (lambda f, k: torch.log1p(distances(f).topk(k, dim=1).values.mean(1)),
                     "largest=False"),
    "zero distances dropped": (drops_zero_distances, "duplicate"),
    "a gradient": (with_gradient, "carries a gradient"),
    "shape (B, 1)": (lambda f, k: torch.log1p(knn(f, k).mean(1, keepdim=True)), "shape (B,)"),
    "a list": (lambda f, k: torch.log1p(knn(f, k).mean(1)).tolist(), "got list"),
    "raises": (raises, "raised IndexError"),
}


@pytest.mark.parametrize("what", EX2)
def test_ex2_rejects_and_names_each_mistake(what, capsys):
    apt_reward, word = EX2[what]
    fails_with(2, SimpleNamespace(apt_reward=apt_reward), word, capsys)


# ---- exercise 3: the world's transition ----------------------------------------------------------
def transition_with(z_next, decode=lambda G, z, z2, y: G(z2, y)):
    """A transition(G, z, y, action, eps, mix, ema, s) from z_next(z, a, eps, w, rho, s)."""
    def transition(G, z, y, action, eps, mix, ema, action_scale):
        z2 = z_next(z, action, eps, mix, ema, action_scale)  # (N, d)
        return z2, decode(G, z, z2, y)
    return SimpleNamespace(transition=transition)


def mixed(a, eps, w, s):
    return w * s * a + (1 - w ** 2) ** 0.5 * eps  # (N, d)


def right(z, a, eps, w, rho, s):
    return rho * z + (1 - rho ** 2) ** 0.5 * mixed(a, eps, w, s)


EX3 = {  # what the student wrote -> (module, a distinctive word of the check's message)
    "the plain EMA gain": (transition_with(
        lambda z, a, eps, w, rho, s: rho * z + (1 - rho) * mixed(a, eps, w, s)), "1 - rho"),
    "sqrt(1 - rho)": (transition_with(
        lambda z, a, eps, w, rho, s: rho * z + (1 - rho) ** 0.5 * mixed(a, eps, w, s)),
        "sqrt(1 - rho) instead"),
    "no action scale": (transition_with(
        lambda z, a, eps, w, rho, s: right(z, a, eps, w, rho, 1.0)), "action_scale"),
    "noise weighted 1 - w": (transition_with(
        lambda z, a, eps, w, rho, s: rho * z + (1 - rho ** 2) ** 0.5 * (w * s * a
                                                                        + (1 - w) * eps)),
        "1 - w"),
    "w and sqrt(1 - w^2) swapped": (transition_with(
        lambda z, a, eps, w, rho, s: rho * z + (1 - rho ** 2) ** 0.5 * (
            (1 - w ** 2) ** 0.5 * s * a + w * eps)), "w and sqrt(1 - w^2) swapped"),
    "rho and the gain swapped": (transition_with(
        lambda z, a, eps, w, rho, s: (1 - rho ** 2) ** 0.5 * z + rho * mixed(a, eps, w, s)),
        "rho and the gain swapped"),
    "no noise": (transition_with(
        lambda z, a, eps, w, rho, s: rho * z + (1 - rho ** 2) ** 0.5 * w * s * a), "no noise"),
    "no EMA": (transition_with(lambda z, a, eps, w, rho, s: mixed(a, eps, w, s)), "no EMA"),
    "the old latent decoded": (transition_with(right, lambda G, z, z2, y: G(z, y)), "decoded"),
    "the class lost": (transition_with(right, lambda G, z, z2, y: G(z2, torch.zeros_like(y))),
                       "episode's class"),
    "z_next only": (SimpleNamespace(transition=lambda G, z, y, a, eps, w, rho, s:
                                    right(z, a, eps, w, rho, s)), "tuple (z_next, obs)"),
    "the frame flattened": (transition_with(right, lambda G, z, z2, y: G(z2, y).flatten(1)),
                            "expected"),
    "raises": (transition_with(lambda z, a, eps, w, rho, s: z @ a), "raised RuntimeError"),
}


@pytest.fixture
def classes_G(tiny_G):
    """tiny_G whose classes differ (an untrained G's class embeddings are all alike)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in tiny_G.named_parameters():
            if "class_" in name:
                p.add_(0.5 * torch.randn(p.shape, generator=g))
    return tiny_G


@pytest.mark.parametrize("what", EX3)
def test_ex3_rejects_and_names_each_mistake(what, capsys, classes_G):
    module, word = EX3[what]
    fails_with(3, module, word, capsys, G=classes_G)


# ---- exercise 4: the SAC bug ---------------------------------------------------------------------
def soft(sac, r, gamma, alpha, f2, a, a2, logp2, q1_t, q2_t):
    return r + gamma * (torch.min(q1_t, q2_t) - alpha * logp2)  # (B,) SAC Eq. 3


def variant_sac(target=soft, next_no_grad=True, target_no_grad=True, both_critics=True,
                polyak=True, reward_norm=True, steps=None, learns=True, freeze_encoder=False):
    """A SAC on frames like the exercise's ExerciseSAC, agent.SAC.step's rules written out, with
    one thing changed."""
    class Variant(agent.SAC):
        def update(self, encoder, obs, actions, rewards, next_obs):
            if freeze_encoder:
                encoder.requires_grad_(False)
            if not learns:
                return {}
            r = rewards
            if reward_norm and self.cfg.reward_norm:
                r = (r - r.mean()) / r.std().clamp_min(1e-8)  # (B,)
            for _ in range(self.cfg.updates if steps is None else steps):
                self.step(encoder, obs, actions, r, next_obs)
            return {k: self.last[k] for k in ("critic_loss", "actor_loss", "alpha", "entropy", "q")}

        def step(self, encoder, obs, a, r, next_obs):
            cfg, alpha = self.cfg, self.log_alpha.exp().detach()
            with torch.no_grad():
                f = encoder(obs)  # (B, D)
            with torch.no_grad() if next_no_grad else contextlib.nullcontext():
                f2 = encoder(next_obs)  # (B, D)
            with torch.no_grad() if target_no_grad else contextlib.nullcontext():
                a2, logp2, _ = self.policy(f2)  # (B, A), (B,)
                q1_t, q2_t = self.q(self.q1_target, self.q2_target, f2, a2)  # (B,), (B,)
                y = target(self, r, cfg.gamma, alpha, f2, a, a2, logp2, q1_t, q2_t)  # (B,)
            q1, q2 = self.q(self.q1, self.q2, f, a)  # (B,), (B,)
            critic_loss = F.mse_loss(q1, y) + (F.mse_loss(q2, y) if both_critics else 0)
            self.critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_opt.step()
            if self.num_steps % cfg.policy_frequency == 0:
                for _ in range(cfg.policy_frequency):
                    a_pi, logp, _ = self.policy(f)  # (B, A), (B,)
                    q_pi = torch.min(*self.q(self.q1, self.q2, f, a_pi))  # (B,)
                    actor_loss = (alpha * logp - q_pi).mean()
                    self.actor_opt.zero_grad(set_to_none=True)
                    actor_loss.backward()
                    self.actor_opt.step()
                    self.last.update(actor_loss=actor_loss.detach(), alpha=alpha,
                                     entropy=-logp.detach().mean(), policy_action=a_pi.detach())
            if polyak:
                with torch.no_grad():
                    for net, net_t in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
                        for p, p_t in zip(net.parameters(), net_t.parameters()):
                            p_t.lerp_(p, cfg.tau)
            self.num_steps += 1
            self.last.update(critic_loss=critic_loss.detach(), q=q1.detach().mean(),
                             q_all=q1.detach(), target=y, action=a, reward=r)
    return Variant


def online_critics(sac, r, gamma, alpha, f2, a, a2, logp2, q1_t, q2_t):
    return r + gamma * (torch.min(*sac.q(sac.q1, sac.q2, f2, a2)) - alpha * logp2)


def raising_target(sac, r, gamma, alpha, f2, a, a2, logp2, q1_t, q2_t):
    return r + gamma * (torch.min(q1_t, q2_t) - alpha * logp2[:-1])  # (B,) - (B - 1,): an error


EX4 = {  # what the student wrote -> (ExerciseSAC, a distinctive word of the check's message)
    "the bug left in (f2 and target outside no_grad)":
        (variant_sac(next_no_grad=False, target_no_grad=False), "gradients in the encoder"),
    "target = r": (variant_sac(target=lambda sac, r, *_: r), "no bootstrap"),
    "+ alpha log pi": (variant_sac(target=lambda sac, r, g, al, f2, a, a2, lp, q1, q2:
                                   r + g * (torch.min(q1, q2) + al * lp)), "wrong sign"),
    "torch.max": (variant_sac(target=lambda sac, r, g, al, f2, a, a2, lp, q1, q2:
                              r + g * (torch.max(q1, q2) - al * lp)), "torch.max"),
    "no entropy term": (variant_sac(target=lambda sac, r, g, al, f2, a, a2, lp, q1, q2:
                                    r + g * torch.min(q1, q2)), "no entropy term"),
    "no gamma": (variant_sac(target=lambda sac, r, g, al, f2, a, a2, lp, q1, q2:
                             r + torch.min(q1, q2) - al * lp), "no discount"),
    "gamma on the reward too": (variant_sac(target=lambda sac, r, g, al, f2, a, a2, lp, q1, q2:
                                            g * (r + torch.min(q1, q2) - al * lp)),
                                "gamma multiplying the reward"),
    "entropy outside the discount": (variant_sac(
        target=lambda sac, r, g, al, f2, a, a2, lp, q1, q2: r + g * torch.min(q1, q2) - al * lp),
        "outside the discount"),
    "one target critic": (variant_sac(target=lambda sac, r, g, al, f2, a, a2, lp, q1, q2:
                                      r + g * (q1 - al * lp)), "only the first target critic"),
    "the online critics": (variant_sac(target=online_critics), "online critics"),
    "the target keeps a graph (f2 detached)": (variant_sac(target_no_grad=False),
                                               "carries a gradient"),
    "the critic loss of q1 only": (variant_sac(both_critics=False), "critic loss"),
    "no Polyak averaging": (variant_sac(polyak=False), "q1_target"),
    "no reward standardisation": (variant_sac(reward_norm=False), "not standardised"),
    "one SAC step per update": (variant_sac(steps=1), "cfg.updates"),
    "an update that does nothing": (variant_sac(learns=False), "no longer learns"),
    "the encoder frozen": (variant_sac(freeze_encoder=True), "switched off"),
    "a step that raises": (variant_sac(target=raising_target), "raised RuntimeError"),
}


@pytest.mark.parametrize("what", EX4)
def test_ex4_rejects_and_names_each_mistake(what, capsys):
    cls, word = EX4[what]
    fails_with(4, SimpleNamespace(ExerciseSAC=cls), word, capsys, one_step_updates=1)


def test_ex4_the_written_out_step_is_right():
    """The variants above differ from a SAC that matches agent.SAC only by what they change."""
    check._compare_steps(variant_sac())  # raises ExerciseFailed if not
    check._compare_update(variant_sac())


# ---- exercise 5: positives at t+k ----------------------------------------------------------------
def valid_anchors(t, k):
    if k >= len(t):
        raise ValueError("k longer than the rollout")
    return (t[k:] == t[:len(t) - k] + k).nonzero()  # (V, 2)


def draw(valid, batch_size, generator):
    i = torch.randint(len(valid), (batch_size,), generator=generator)
    return valid[i, 0], valid[i, 1]


def across_resets(t, k, batch_size, generator):  # ignores resets
    s = torch.randint(len(t) - k, (batch_size,), generator=generator)
    return s, torch.randint(t.shape[1], (batch_size,), generator=generator)


def episode_first(t, k, batch_size, generator):
    """Uniform over episodes, then over the valid anchors of the chosen one: biased towards the
    short, unfinished last episode."""
    episode = (t == 0).long().cumsum(0) - 1  # (T, N): a row with t = 0 starts an episode
    valid = valid_anchors(t, k)  # (V, 2)
    of = episode[valid[:, 0], valid[:, 1]]  # (V,): each valid anchor's episode
    ids = of.unique()
    picks = []
    for e in ids[torch.randint(len(ids), (batch_size,), generator=generator)].tolist():
        rows = valid[of == e]  # (V_e, 2)
        picks.append(rows[torch.randint(len(rows), (1,), generator=generator)])
    out = torch.cat(picks)  # (B, 2)
    return out[:, 0], out[:, 1]


def offset_one_more(t, k, batch_size, generator):  # valid for k + 1: never the last frame
    return draw(valid_anchors(t, k + 1), batch_size, generator)


def offset_one_less(t, k, batch_size, generator):  # valid for k - 1
    valid = (t[k - 1:] == t[:len(t) - k + 1] + k - 1).nonzero()  # (V, 2)
    return draw(valid, batch_size, generator)


def finished_only(t, k, batch_size, generator):  # skips the last, unfinished episode
    valid = valid_anchors(t, k)
    last_start = int((t[:, 0] == 0).nonzero().max())  # the row where the last episode starts
    return draw(valid[valid[:, 0] < last_start], batch_size, generator)


def global_rng(t, k, batch_size, generator):
    return draw(valid_anchors(t, k), batch_size, None)


def floats(t, k, batch_size, generator):
    s, n = draw(valid_anchors(t, k), batch_size, generator)
    return s.float(), n.float()


def never_raises(t, k, batch_size, generator):
    valid = valid_anchors(t, k)
    if len(valid) == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return draw(valid, batch_size, generator)


def index_error(t, k, batch_size, generator):
    valid = valid_anchors(t, k)
    return draw(valid, batch_size, generator) if len(valid) else valid[0]  # IndexError


EX5 = {  # what the student wrote -> (sample_pairs, a distinctive word of the check's message)
    "pairs across resets": (across_resets, "a reset lies between them"),
    "episodes first, then times": (episode_first, "uniform"),
    "valid for k + 1": (offset_one_more, "LAST frame of its episode"),
    "valid for k - 1": (offset_one_less, "offset"),
    "the unfinished episode left out": (finished_only, "unfinished episode"),
    "the global random stream": (global_rng, "`generator`"),
    "float indices": (floats, "integer tensors"),
    "k > H gives empty tensors": (never_raises, "raise ValueError"),
    "k > H raises IndexError": (index_error, "raised IndexError"),
}


@pytest.mark.parametrize("what", EX5)
def test_ex5_rejects_and_names_each_mistake(what, capsys, tiny_G, tmp_path):
    sampler, word = EX5[what]
    module = SimpleNamespace(collect=check.load_exercise(5).collect, sample_pairs=sampler)
    fails_with(5, module, word, capsys, G=tiny_G, runs=tmp_path)


def test_ex5_uniformity_tolerance_comes_from_the_binomial_error(capsys, tiny_G, tmp_path):
    """The biased sampler's share of the unfinished episode is many standard errors off, the
    reference's within them: the message states both shares."""
    module = SimpleNamespace(collect=check.load_exercise(5).collect, sample_pairs=episode_first)
    out = fails_with(5, module, "standard error", capsys, G=tiny_G, runs=tmp_path)
    share, uniform = (float(out.split(key)[0].split()[-1]) for key in
                      (" % of your anchors", " % (standard error"))
    assert share > 1.5 * uniform, out


# ---- exercise 6: the ablation --------------------------------------------------------------------
def fake_run(runs, name, accuracy=0.3, ema=None, probe=True, **changes):
    """A finished run folder as pretrain.py leaves it: encoder.pt with the nested config, and
    result.json."""
    budget = dict(updates=100, batch_size=64, num_envs=16, probe_images=5000, name=name)
    cfg = pretrain.Config(**(budget | changes))
    if ema is not None:
        cfg = dataclasses.replace(cfg, world=dataclasses.replace(cfg.world, ema=ema))
    config = dataclasses.asdict(cfg)
    (runs / name).mkdir(parents=True)
    torch.save({"kind": "encoder", "config": config}, runs / name / "encoder.pt")
    result = {"method": config["method"], "config": config}
    if probe:
        result["linear_probe"] = accuracy
    (runs / name / "result.json").write_text(json.dumps(result))


def three(runs, palmup=None, random=None, ema0=None):
    fake_run(runs, "exercise6_palmup", **(palmup or {}))
    fake_run(runs, "exercise6_random", **({"method": "random"} | (random or {})))
    fake_run(runs, "exercise6_ema0", **({"ema": 0.0} | (ema0 or {})))


WROTE = dict(PREDICTION="random", REASON="exploration finds the frames the encoder confuses")
EX6 = {  # what the student did -> (answers, the runs it left, a distinctive word of the message)
    "no prediction": (dict(WROTE, PREDICTION=""), three, "PREDICTION"),
    "a prediction of neither": (dict(WROTE, PREDICTION="exploration"), three, "PREDICTION"),
    "no reason": (dict(WROTE, REASON=" "), three, "REASON"),
    "no runs yet": (WROTE, lambda runs: None, "ex6_ablation.py"),
    "one run interrupted": (WROTE, lambda runs: fake_run(runs, "exercise6_palmup"),
                            "not three finished runs"),
    "different budgets": (WROTE, lambda runs: three(runs, random={"updates": 50}),
                          "same budget"),
    "different agents": (WROTE, lambda runs: three(runs, ema0={"sac": agent.SACConfig(gamma=.9)}),
                         "same budget"),
    "the ema0 run with ema 0.5": (WROTE, lambda runs: three(runs, ema0={"ema": 0.5}),
                                  "should be --method palmup with ema 0.0"),
    "the random run exploring": (WROTE, lambda runs: three(runs, random={"method": "palmup"}),
                                 "should be --method random"),
    "a run without the probe": (WROTE, lambda runs: three(runs, palmup={"probe": False}),
                                "without the probe"),
}


@pytest.mark.parametrize("what", EX6)
def test_ex6_rejects_and_names_each_mistake(what, capsys, tmp_path):
    answers, runs, word = EX6[what]
    runs(tmp_path)
    fails_with(6, SimpleNamespace(**answers), word, capsys, runs=tmp_path)


def test_a_corrupt_run_file_is_one_message(capsys, tmp_path):
    three(tmp_path)
    (tmp_path / "exercise6_random" / "result.json").write_text("{not json")
    fails_with(6, SimpleNamespace(**WROTE), "cannot be read", capsys, runs=tmp_path)


def test_a_student_function_that_exits_is_one_message(capsys):
    def exits(a, b, temperature):
        raise SystemExit("bye")
    fails_with(1, SimpleNamespace(info_nce=exits), "raised SystemExit: bye", capsys)


def test_the_tables_hold_the_required_number_of_mistakes():
    sizes = {1: len(EX1), 2: len(EX2), 3: len(EX3), 4: len(EX4), 5: len(EX5), 6: len(EX6)}
    assert all(sizes[n] >= 8 for n in (1, 2, 3, 4)) and sizes[5] >= 4 and sizes[6] >= 4, sizes
