"""Tests for agent.py: APT reward vs brute force, SAC's log-probability vs torch.distributions, SAC
learns a known optimum, temperature, Polyak, diagnostics, the replay buffer. Runs in well under a
minute on 2 CPU cores."""
import math
import os
import sys

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from agent import (SAC, ReplayBuffer, RunningMean, SACConfig, apt_reward,  # noqa: E402
                   knn_spread)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: 1 thread is ~20x faster than 2 when the 2 cores are shared with other work."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# -------------------------------------------------------------------------------------------------
# apt_reward
# -------------------------------------------------------------------------------------------------
def brute_force_apt(points, k, running=None):
    """Pure-Python reference. points: list of lists. running: dict(count, mean) updated in place
    (or None)."""
    knn = []
    for i, p in enumerate(points):
        d = sorted(math.sqrt(sum((a - b) ** 2 for a, b in zip(p, q)))
                   for j, q in enumerate(points) if j != i)
        knn.append(d[:k])
    if running is not None:
        flat = [d for row in knn for d in row]
        n, batch_mean = len(flat), sum(flat) / len(flat)
        total = running["count"] + n
        running["mean"] += (batch_mean - running["mean"]) * n / total
        running["count"] = total
        knn = [[d / running["mean"] for d in row] for row in knn]
    return [math.log(1 + sum(row) / len(row)) for row in knn]


@pytest.mark.parametrize("B,D,k", [(5, 3, 1), (13, 4, 3), (40, 8, 12), (64, 2, 7)])
def test_apt_reward_matches_brute_force(B, D, k):
    g = torch.Generator().manual_seed(B * 100 + k)
    x = torch.randn(B, D, generator=g, dtype=torch.float64) * 3
    got = apt_reward(x, k=k)
    assert got.shape == (B,)
    want = torch.tensor(brute_force_apt(x.tolist(), k), dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)
    # float32 goes through cdist's matmul path: still close
    torch.testing.assert_close(apt_reward(x.float(), k=k), want.float(), rtol=1e-4, atol=1e-4)


def test_apt_reward_with_running_mean_matches_brute_force_over_two_calls():
    g = torch.Generator().manual_seed(0)
    knn_mean, running = RunningMean(), dict(count=1e-4, mean=0.0)
    for B, k, scale in [(20, 4, 1.0), (30, 5, 4.0)]:
        x = torch.randn(B, 6, generator=g, dtype=torch.float64) * scale
        got = apt_reward(x, k=k, knn_mean=knn_mean)
        want = torch.tensor(brute_force_apt(x.tolist(), k, running), dtype=torch.float64)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)
    assert knn_mean.count == pytest.approx(running["count"])
    torch.testing.assert_close(knn_mean.mean.item(), running["mean"], rtol=1e-9, atol=0)
    # the second batch is 4x more spread out, but normalised by a running mean that lags behind:
    # reward > log 2
    assert got.mean() > math.log(2)


def test_running_mean_matches_the_mean_of_all_data():
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(n, generator=g, dtype=torch.float64) * 2 + 5 for n in (7, 50, 13)]
    running = RunningMean(eps=1e-12)
    for x in xs:
        mean = running.update(x)
    assert mean.shape == () and running.count == pytest.approx(70)
    torch.testing.assert_close(mean, torch.cat(xs).mean(), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(running.mean, mean)
    # the default pseudo-count is tiny: the first batch sets the mean (to within 1e-4 / 7)
    first = RunningMean().update(xs[0])
    torch.testing.assert_close(first.double(), xs[0].mean(), rtol=1e-4, atol=0)


def test_apt_reward_spread_beats_clustered():
    g = torch.Generator().manual_seed(2)
    clustered = torch.randn(256, 16, generator=g) * 0.1
    spread = torch.randn(256, 16, generator=g) * 2.0
    assert apt_reward(spread, k=12).mean() > apt_reward(clustered, k=12).mean() + 1.0
    # per-point: an outlier far from a tight cluster gets the largest reward
    pts = torch.cat([clustered[:50], torch.full((1, 16), 10.0)])
    r = apt_reward(pts, k=5)
    assert r.argmax().item() == 50


def test_knn_spread_is_the_mean_knn_distance_as_a_tensor():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    spread = knn_spread(x, 5)
    assert isinstance(spread, torch.Tensor) and spread.shape == ()
    # APT's reward is log(1 + that mean) per row: exp(r) - 1 averages to the same statistic
    torch.testing.assert_close(spread, torch.expm1(apt_reward(x, k=5)).mean())
    assert knn_spread(3 * x, 5) == pytest.approx(3 * spread.item())  # a distance: scales with x


def test_apt_reward_and_act_need_no_grad():
    enc = nn.Linear(4, 8)
    f = enc(torch.randn(32, 4))  # (32, 8), requires grad
    assert f.requires_grad
    assert not apt_reward(f, k=4).requires_grad
    assert not small_sac(8, 2).act(f).requires_grad
    assert enc.weight.grad is None


# -------------------------------------------------------------------------------------------------
# SAC
# -------------------------------------------------------------------------------------------------
def small_sac(feature_dim=8, action_dim=2, seed=0, **cfg):
    torch.manual_seed(seed)
    return SAC(feature_dim, action_dim, SACConfig(hidden=64, **cfg))


def batch(B=32, D=8, A=2, g=None):
    """Detached float32 (features, actions in [-1, 1], rewards, next features)."""
    return (torch.randn(B, D, generator=g), torch.rand(B, A, generator=g) * 2 - 1,
            torch.randn(B, generator=g), torch.randn(B, D, generator=g))


def test_policy_log_prob_is_the_normal_log_prob_minus_the_tanh_correction():
    """SAC (Haarnoja et al. 2018) Eq. 26 on the sample the policy drew: log pi(a) = log N(u; mu,
    sigma) - sum log(1 - tanh(u)^2), a = tanh(u); the reference uses torch.distributions."""
    A, D, B = 3, 8, 256
    sac = small_sac(D, A, log_std_min=-3.0, log_std_max=1.0).double()
    with torch.no_grad():  # means up to ~ +-2 and wide stds: the tanh correction really matters
        bias = torch.tensor([2.0, -1.0, 0.0, 0.5, 0.0, -0.5], dtype=torch.float64)  # (2A,)
        sac.actor[-1].bias.copy_(bias)  # means, then pre-clamp log stds
    f = torch.randn(B, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    action, logp, mean_action = sac.policy(f)
    assert action.shape == (B, A) and logp.shape == (B,) and mean_action.shape == (B, A)

    with torch.no_grad():
        mean, pre = sac.actor(f).chunk(2, dim=-1)  # (B, A), (B, A)
        lo, hi = -3.0, 1.0
        log_std = lo + 0.5 * (hi - lo) * (torch.tanh(pre) + 1)  # (B, A) CleanRL's soft clamp
        torch.manual_seed(7)
        u = mean + log_std.exp() * torch.randn_like(mean)  # (B, A): the same draw
        normal = torch.distributions.Normal(mean, log_std.exp())
        want = normal.log_prob(u).sum(-1) - torch.log(1 - torch.tanh(u) ** 2).sum(-1)  # (B,)
        squashed = torch.distributions.TransformedDistribution(
            normal, [torch.distributions.TanhTransform()])
        torch.testing.assert_close(action, torch.tanh(u), rtol=0, atol=1e-12)
        torch.testing.assert_close(mean_action, torch.tanh(mean), rtol=0, atol=1e-12)
        torch.testing.assert_close(logp.detach(), want, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(logp.detach(), squashed.log_prob(action).sum(-1), rtol=1e-6,
                                   atol=1e-6)
        correction = torch.log(1 - torch.tanh(u) ** 2).sum(-1)  # (B,)
    assert correction.abs().mean() > 1.0  # the test would notice a missing correction
    assert logp.requires_grad  # reparameterised: the actor's loss differentiates through it


@pytest.mark.parametrize("cfg", [{}, {"autotune": True, "reward_norm": False}],
                         ids=["palmup-defaults", "autotune-raw-rewards"])
def test_sac_learns_known_optimal_action(cfg):
    """One-step bandit: reward = -||a - a*||^2 whatever the (random, irrelevant) features;
    gamma = 0. The deterministic policy tanh(mean) must move from ~0 to a*. SAC's entropy bonus
    pulls it slightly toward 0 (the tanh Jacobian favours small |u|), hence tolerances of 0.1 on
    the state-average and 0.2 per state. One step per batch keeps it fast."""
    A, D, B = 2, 4, 128
    a_star = torch.tensor([0.5, -0.6])
    torch.manual_seed(0)
    sac = SAC(D, A, SACConfig(hidden=128, gamma=0.0, updates=1, **cfg))
    g = torch.Generator().manual_seed(0)
    probe = torch.randn(256, D, generator=g)  # (256, D) held-out states
    err0 = (sac.act(probe, deterministic=True).mean(0) - a_star).abs()  # (A,)
    for _ in range(600):
        f = torch.randn(B, D, generator=g)  # (B, D)
        noise = 0.3 * torch.randn(B, A, generator=g)  # (B, A) exploration
        a = (sac.act(f) + noise).clamp(-1, 1)  # (B, A) policy + exploration
        r = -((a - a_star) ** 2).sum(-1)  # (B,)
        m = sac.update(f, a, r, torch.randn(B, D, generator=g))
    assert all(v.shape == () and torch.isfinite(v) for v in m.values())
    mean_action = sac.act(probe, deterministic=True)  # (256, A)
    err = (mean_action.mean(0) - a_star).abs()  # (A,)
    worst = (mean_action - a_star).abs().max(0).values  # (A,) worst state
    assert (err0 > 0.3).any()  # it really had to move
    assert (err < 0.1).all() and (worst < 0.2).all(), (mean_action.mean(0), a_star, worst)


def test_act_shapes_bounds_and_determinism():
    sac = small_sac(8, 3)
    f = torch.randn(50, 8)
    a = sac.act(f)
    assert a.shape == (50, 3) and a.abs().max() <= 1 and not a.requires_grad
    torch.testing.assert_close(sac.act(f, deterministic=True), sac.act(f, deterministic=True))
    assert not torch.equal(sac.act(f), sac.act(f))


@pytest.mark.parametrize("scale,direction", [(5.0, -1), (-5.0, +1)])
def test_alpha_moves_toward_target_entropy(scale, direction):
    """target -5|A| is below the initial entropy -> alpha must fall; +5|A| is above any
    tanh-Gaussian's -> rise."""
    A, D, B = 2, 8, 64
    sac = small_sac(D, A, target_entropy_scale=scale, policy_frequency=1, autotune=True,
                    updates=1)
    alphas = [sac.log_alpha.exp().item()]
    for _ in range(30):
        m = sac.update(*batch(B, D, A))
        alphas.append(m["alpha"].item())
    diffs = [b - a for a, b in zip(alphas, alphas[1:])]
    assert all(d * direction > 0 for d in diffs), alphas
    assert sac.target_entropy == -scale * A
    assert alphas[-1] == pytest.approx(sac.log_alpha.exp().item())
    if direction < 0:
        assert m["entropy"] > sac.target_entropy


def test_alpha_stays_fixed_without_autotune():
    sac = small_sac(8, 2, alpha=0.3, policy_frequency=1)  # Palm-up's default: autotune off
    for _ in range(3):
        m = sac.update(*batch())
    assert m["alpha"].item() == pytest.approx(0.3)
    assert sac.log_alpha.exp().item() == pytest.approx(0.3)


def test_target_networks_move_by_tau():
    sac = small_sac(8, 2, tau=0.1, updates=1)
    with torch.no_grad():  # make online and target differ so the Polyak step is visible
        for p in sac.q1_target.parameters():
            p.add_(0.5)
    for _ in range(3):
        old = [p.clone() for p in [*sac.q1_target.parameters(), *sac.q2_target.parameters()]]
        sac.update(*batch())
        online = [*sac.q1.parameters(), *sac.q2.parameters()]
        target = [*sac.q1_target.parameters(), *sac.q2_target.parameters()]
        for o, p, t in zip(old, online, target):
            torch.testing.assert_close(t, 0.9 * o + 0.1 * p, rtol=0, atol=1e-6)
        assert not torch.allclose(target[0], online[0])


def test_critic_step_regresses_onto_the_soft_bellman_target():
    """SAC Eq. 3 / 5 with clipped double Q: the step's target equals r + gamma (min Q'(f2, a2) -
    alpha log pi(a2 | f2)) on the next action the policy draws (same random stream)."""
    sac = small_sac(8, 2, gamma=0.7, alpha=0.2, reward_norm=False, updates=1)
    f, a, r, f2 = batch(g=torch.Generator().manual_seed(0))
    q1_t, q2_t = sac.q1_target, sac.q2_target  # the step moves them only after its critic loss
    torch.manual_seed(5)
    with torch.no_grad():
        a2, logp2, _ = sac.policy(f2)  # (B, A), (B,)
        fa2 = torch.cat([f2, a2], -1)  # (B, D + A)
        want = r + 0.7 * (torch.min(q1_t(fa2), q2_t(fa2)).squeeze(-1) - 0.2 * logp2)  # (B,)
    torch.manual_seed(5)
    sac.step(f, a, r, f2)
    torch.testing.assert_close(sac.last["target"], want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(sac.last["reward"], r)  # reward_norm off: the rewards as given


@pytest.mark.parametrize("cfg", [{}, {"reward_norm": False, "updates": 3}])
def test_update_returns_zero_dim_tensors_of_the_last_step(cfg):
    sac = small_sac(8, 2, policy_frequency=1, **cfg)
    for _ in range(2):
        m = sac.update(*batch())
    assert set(m) == {"critic_loss", "actor_loss", "alpha", "entropy", "q"}
    assert all(isinstance(v, torch.Tensor) and v.shape == () and not v.requires_grad
               for v in m.values())
    d = sac.diagnostics()
    assert set(d) == {"entropy_gap", "abs_action", "critic_r2", "reward_action_r2"}
    assert all(isinstance(v, torch.Tensor) and v.shape == () for v in d.values())
    assert d["entropy_gap"].item() == pytest.approx(m["entropy"].item() - 2 * math.log(2))


def test_reward_norm_standardises_each_batch():
    f, a, r, f2 = batch(g=torch.Generator().manual_seed(1))
    r = 5 + 3 * r  # (B,) far from mean 0, std 1
    sac = small_sac(8, 2, reward_norm=True, updates=1)
    sac.update(f, a, r, f2)
    torch.testing.assert_close(sac.last["reward"], (r - r.mean()) / r.std())
    plain = small_sac(8, 2, reward_norm=False, updates=1)
    plain.update(f, a, r, f2)
    torch.testing.assert_close(plain.last["reward"], r)


def test_updates_takes_that_many_steps():
    sac = small_sac(8, 2, updates=3)
    sac.update(*batch())
    assert sac.num_steps == 3
    sac.update(*batch())
    assert sac.num_steps == 6
    assert small_sac(8, 2).cfg.updates == 2  # Palm-up's default update-to-data ratio


def test_diagnostics_see_whether_the_action_explains_the_reward():
    """reward_action_r2 is high when the reward is a function of the action, about 0 when it is
    noise."""
    B, A = 256, 4
    g = torch.Generator().manual_seed(0)
    a = torch.rand(B, A, generator=g) * 2 - 1  # (B, A)
    f = torch.randn(B, 8, generator=g)
    sac = small_sac(8, A)
    sac.update(f, a, a.sum(1), f)
    explained = sac.diagnostics()["reward_action_r2"].item()
    sac.update(f, a, torch.randn(B, generator=g), f)
    noise = sac.diagnostics()["reward_action_r2"].item()
    assert explained > 0.9 and abs(noise) < 0.1, (explained, noise)
    sac.update(f, a, a.sum(1), f)
    # a tanh-Gaussian has less entropy than the uniform distribution on [-1, 1]^A
    assert sac.diagnostics()["entropy_gap"] < 0


# -------------------------------------------------------------------------------------------------
# ReplayBuffer
# -------------------------------------------------------------------------------------------------
def fake_transitions(n, A, start):
    """Frames whose every pixel is (label + step) % 256 so obs, next_obs and label can be
    cross-checked."""
    label = torch.arange(start, start + n) % 10  # (n,)
    step = torch.arange(start, start + n)  # (n,)
    pixel = (label * 20 + step) % 256  # (n,)
    obs = pixel.to(torch.uint8)[:, None, None, None].expand(n, 3, 32, 32).clone()  # (n, 3, 32, 32)
    next_obs = ((pixel + 1) % 256).to(torch.uint8)[:, None, None, None]  # (n, 1, 1, 1)
    next_obs = next_obs.expand(n, 3, 32, 32).clone()  # (n, 3, 32, 32)
    action = step[:, None].float().expand(n, A).clone() / 1000  # (n, A)
    return obs, action, next_obs, label


def test_buffer_round_trip():
    buf = ReplayBuffer(100, action_dim=3)
    obs, action, next_obs, label = fake_transitions(7, 3, 0)
    buf.add(obs, action, next_obs, label)
    assert len(buf) == 7
    torch.testing.assert_close(buf.obs[:7], obs)
    torch.testing.assert_close(buf.next_obs[:7], next_obs)
    torch.testing.assert_close(buf.action[:7], action)
    torch.testing.assert_close(buf.label[:7], label)
    s = buf.sample(64, generator=torch.Generator().manual_seed(0))
    assert s["obs"].dtype == torch.uint8 and s["obs"].shape == (64, 3, 32, 32)
    assert s["next_obs"].dtype == torch.uint8
    assert s["action"].dtype == torch.float32 and s["action"].shape == (64, 3)
    assert s["label"].dtype == torch.int64 and s["label"].shape == (64,)
    s2 = buf.sample(64, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(s[k], s2[k]) for k in s)  # reproducible with a generator


def test_buffer_circular_overwrite():
    buf = ReplayBuffer(10, action_dim=2)
    # 18 transitions in chunks of 6 into 10 slots: the last chunk wraps around
    for start in (0, 6, 12):
        buf.add(*fake_transitions(6, 2, start))
    assert len(buf) == 10 and buf.ptr == 8
    steps = (buf.action[:, 0] * 1000).round().long()  # (10,)
    assert steps.tolist() == [10, 11, 12, 13, 14, 15, 16, 17, 8, 9]  # oldest (0..7) overwritten


def test_buffer_holds_other_frame_sizes():
    buf = ReplayBuffer(8, action_dim=2, obs_shape=(3, 16, 16))
    obs, action, next_obs, label = fake_transitions(5, 2, 0)
    buf.add(obs[..., :16, :16], action, next_obs[..., :16, :16], label)
    s = buf.sample(4, generator=torch.Generator().manual_seed(0))
    assert s["obs"].shape == s["next_obs"].shape == (4, 3, 16, 16)


def test_buffer_samples_keep_label_obs_correspondence():
    buf = ReplayBuffer(50, action_dim=2)
    for start in range(0, 120, 8):
        buf.add(*fake_transitions(8, 2, start))
    s = buf.sample(500, generator=torch.Generator().manual_seed(3))
    step = (s["action"][:, 0] * 1000).round().long()  # (500,)
    expect_obs = ((s["label"] * 20 + step) % 256).to(torch.uint8)
    assert torch.equal(s["obs"][:, 0, 0, 0], expect_obs)
    expect_next = ((expect_obs.long() + 1) % 256).to(torch.uint8)
    assert torch.equal(s["next_obs"][:, 2, 31, 31], expect_next)
    assert torch.equal(s["label"], step % 10)
    assert step.min() >= 120 - 50  # only the newest 50 transitions remain
