"""Tests for agent.py: APT reward vs brute force, SAC learns a known optimum, temperature, Polyak, input
validation, detached encoder, replay buffer. Runs in well under a minute on 2 CPU cores."""
import io
import math
import os
import sys

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from agent import RMS, SAC, ReplayBuffer, SACConfig, apt_reward  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: 1 thread is ~20x faster than 2 when the 2 cores are shared with other work."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------------
# apt_reward
# ----------------------------------------------------------------------------------------------------
def brute_force_apt(points, k, running=None):
    """Pure-Python reference. points: list of lists. running: dict(count, mean) updated in place (or None)."""
    knn = []
    for i, p in enumerate(points):
        d = sorted(math.sqrt(sum((a - b) ** 2 for a, b in zip(p, q))) for j, q in enumerate(points) if j != i)
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


def test_apt_reward_with_rms_matches_brute_force_over_two_calls():
    g = torch.Generator().manual_seed(0)
    rms, running = RMS(), dict(count=1e-4, mean=0.0)
    for B, k, scale in [(20, 4, 1.0), (30, 5, 4.0)]:
        x = torch.randn(B, 6, generator=g, dtype=torch.float64) * scale
        got = apt_reward(x, k=k, rms=rms)
        want = torch.tensor(brute_force_apt(x.tolist(), k, running), dtype=torch.float64)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)
    assert rms.count == pytest.approx(running["count"])
    # second batch is 4x more spread out, but normalised by a running mean that lags behind: reward > log 2
    assert got.mean() > math.log(2)


def test_rms_matches_full_data_statistics():
    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(n, 3, generator=g, dtype=torch.float64) * 2 + 5 for n in (7, 50, 13)]
    rms = RMS(shape=(3,), eps=1e-12)
    for x in xs:
        mean, std = rms.update(x)
    allx = torch.cat(xs)
    torch.testing.assert_close(mean, allx.mean(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(std, allx.std(0, unbiased=False), rtol=1e-5, atol=1e-5)


def test_apt_reward_spread_beats_clustered():
    g = torch.Generator().manual_seed(2)
    clustered = torch.randn(256, 16, generator=g) * 0.1
    spread = torch.randn(256, 16, generator=g) * 2.0
    assert apt_reward(spread).mean() > apt_reward(clustered).mean() + 1.0
    # per-point: an outlier far from a tight cluster gets the largest reward
    pts = torch.cat([clustered[:50], torch.full((1, 16), 10.0)])
    r = apt_reward(pts, k=5)
    assert r.argmax().item() == 50


def test_apt_reward_rejects_bad_inputs():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError):
        apt_reward(x, k=10)  # k >= B
    with pytest.raises(ValueError):
        apt_reward(x, k=0)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        apt_reward(x, k=3)
    x[3, 1] = float("inf")
    with pytest.raises(ValueError):
        apt_reward(x, k=3)


def test_apt_reward_needs_no_grad():
    enc = nn.Linear(4, 8)
    r = apt_reward(enc(torch.randn(32, 4)), k=4)
    assert not r.requires_grad


# ----------------------------------------------------------------------------------------------------
# SAC
# ----------------------------------------------------------------------------------------------------
def small_sac(feature_dim=8, action_dim=2, seed=0, **cfg):
    torch.manual_seed(seed)
    return SAC(feature_dim, action_dim, SACConfig(hidden=64, **cfg))


def test_sac_learns_known_optimal_action():
    """One-step bandit: reward = -||a - a*||^2 whatever the (random, irrelevant) features; gamma = 0.
    The deterministic policy tanh(mean) must move from ~0 to a*. SAC's entropy bonus pulls it slightly toward 0
    (the tanh Jacobian favours small |u|), hence tolerances of 0.1 on the state-average and 0.2 per state."""
    A, D, B = 2, 4, 128
    a_star = torch.tensor([0.5, -0.6])
    torch.manual_seed(0)
    sac = SAC(D, A, SACConfig(hidden=128, gamma=0.0))
    g = torch.Generator().manual_seed(0)
    probe = torch.randn(256, D, generator=g)  # (256, D) held-out states
    err0 = (sac.act(probe, deterministic=True).mean(0) - a_star).abs()  # (A,)
    for _ in range(600):
        f = torch.randn(B, D, generator=g)  # (B, D)
        a = (sac.act(f) + 0.3 * torch.randn(B, A, generator=g)).clamp(-1, 1)  # (B, A) policy + exploration
        r = -((a - a_star) ** 2).sum(-1)  # (B,)
        m = sac.update(f, a, r, torch.randn(B, D, generator=g))
    assert all(math.isfinite(v) for v in m.values())
    mean_action = sac.act(probe, deterministic=True)  # (256, A)
    err = (mean_action.mean(0) - a_star).abs()  # (A,)
    worst = (mean_action - a_star).abs().max(0).values  # (A,) worst state
    assert (err0 > 0.3).any()  # it really had to move
    assert (err < 0.1).all() and (worst < 0.2).all(), f"policy mean {mean_action.mean(0)} vs a* {a_star}, {worst}"


def test_act_shapes_bounds_and_determinism():
    sac = small_sac(8, 3)
    f = torch.randn(50, 8)
    a = sac.act(f)
    assert a.shape == (50, 3) and a.abs().max() <= 1 and not a.requires_grad
    torch.testing.assert_close(sac.act(f, deterministic=True), sac.act(f, deterministic=True))
    assert not torch.equal(sac.act(f), sac.act(f))


@pytest.mark.parametrize("scale,direction", [(5.0, -1), (-5.0, +1)])
def test_alpha_moves_toward_target_entropy(scale, direction):
    """target -5|A| is below the initial entropy -> alpha must fall; +5|A| is above any tanh-Gaussian's -> rise."""
    A, D, B = 2, 8, 64
    sac = small_sac(D, A, target_entropy_scale=scale, policy_frequency=1)
    alphas = [sac.alpha.item()]
    for _ in range(30):
        f = torch.randn(B, D)
        m = sac.update(f, torch.rand(B, A) * 2 - 1, torch.randn(B), torch.randn(B, D))
        alphas.append(m["alpha"])
    diffs = [b - a for a, b in zip(alphas, alphas[1:])]
    assert all(d * direction > 0 for d in diffs), alphas
    assert sac.target_entropy == -scale * A
    if direction < 0:
        assert m["entropy"] > sac.target_entropy


def test_target_networks_move_by_tau():
    sac = small_sac(8, 2, tau=0.1)
    B = 32
    with torch.no_grad():  # make online and target differ so the Polyak step is visible
        for p in sac.q1_target.parameters():
            p.add_(0.5)
    for _ in range(3):
        old = [p.clone() for p in [*sac.q1_target.parameters(), *sac.q2_target.parameters()]]
        sac.update(torch.randn(B, 8), torch.rand(B, 2) * 2 - 1, torch.randn(B), torch.randn(B, 8))
        online = [*sac.q1.parameters(), *sac.q2.parameters()]
        target = [*sac.q1_target.parameters(), *sac.q2_target.parameters()]
        for o, p, t in zip(old, online, target):
            torch.testing.assert_close(t, 0.9 * o + 0.1 * p, rtol=0, atol=1e-6)
        assert not torch.allclose(target[0], online[0])


def snapshot(sac):
    return {k: v.clone() for k, v in sac.state_dict().items()}


@pytest.mark.parametrize("which", ["features", "actions", "rewards", "next_features"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_inputs_raise_and_leave_weights_untouched(which, bad):
    sac = small_sac(8, 2)
    B = 16
    batch = dict(features=torch.randn(B, 8), actions=torch.rand(B, 2) * 2 - 1, rewards=torch.randn(B),
                 next_features=torch.randn(B, 8))
    sac.update(**batch)  # populate optimiser state
    before, opt_before = snapshot(sac), sac.critic_opt.state_dict()["state"][0]["exp_avg"].clone()
    batch[which] = batch[which].clone()
    batch[which].view(-1)[3] = bad
    with pytest.raises(ValueError, match=which):
        sac.update(**batch)
    after = sac.state_dict()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert torch.equal(opt_before, sac.critic_opt.state_dict()["state"][0]["exp_avg"])
    assert sac.num_updates == 1


def test_bad_shapes_raise():
    sac = small_sac(8, 2)
    with pytest.raises(ValueError):
        sac.update(torch.randn(4, 8), torch.randn(4, 3), torch.randn(4), torch.randn(4, 8))
    with pytest.raises(ValueError):
        sac.update(torch.randn(4, 8), torch.randn(4, 2), torch.randn(4, 1), torch.randn(4, 8))


@pytest.mark.parametrize("cfg", [{}, {"reward_norm": True, "updates_per_call": 3}])
def test_update_never_touches_the_encoder(cfg):
    encoder = nn.Linear(16, 8)
    w0, b0 = encoder.weight.detach().clone(), encoder.bias.detach().clone()
    sac = small_sac(8, 2, policy_frequency=1, **cfg)
    for _ in range(3):
        f, f2 = encoder(torch.randn(32, 16)), encoder(torch.randn(32, 16))  # (32, 8), requires grad
        assert f.requires_grad
        rewards = apt_reward(f2, k=4)
        m = sac.update(f, sac.act(f), rewards, f2)
    assert encoder.weight.grad is None and encoder.bias.grad is None
    assert torch.equal(encoder.weight, w0) and torch.equal(encoder.bias, b0)
    assert set(m) == {"critic_loss", "actor_loss", "alpha", "entropy", "q", "entropy_gap", "abs_action", "critic_r2",
                      "reward_action_r2"}
    assert all(isinstance(v, float) for v in m.values())


def test_updates_per_call_takes_that_many_steps():
    sac = small_sac(8, 2, updates_per_call=3)
    sac.update(torch.randn(32, 8), torch.rand(32, 2) * 2 - 1, torch.randn(32), torch.randn(32, 8))
    assert sac.num_updates == 3


def test_diagnostics_see_whether_the_action_explains_the_reward():
    """reward_action_r2 is high when the reward is a function of the action, about 0 when it is noise."""
    B, A = 256, 4
    g = torch.Generator().manual_seed(0)
    a = torch.rand(B, A, generator=g) * 2 - 1  # (B, A)
    f = torch.randn(B, 8, generator=g)
    sac = small_sac(8, A)
    explained = sac.update(f, a, a.sum(1), f)["reward_action_r2"]
    noise = sac.update(f, a, torch.randn(B, generator=g), f)["reward_action_r2"]
    assert explained > 0.9 and abs(noise) < 0.1, (explained, noise)
    uniform = sac.update(f, a, a.sum(1), f)["entropy_gap"]
    assert uniform < 0  # a tanh-Gaussian has less entropy than the uniform distribution on [-1, 1]^A


# ----------------------------------------------------------------------------------------------------
# ReplayBuffer
# ----------------------------------------------------------------------------------------------------
def fake_transitions(n, A, start):
    """Frames whose every pixel is (label + step) % 256 so obs, next_obs and label can be cross-checked."""
    label = torch.arange(start, start + n) % 10  # (n,)
    step = torch.arange(start, start + n)  # (n,)
    obs = ((label * 20 + step) % 256).to(torch.uint8)[:, None, None, None].expand(n, 3, 32, 32).clone()
    next_obs = ((label * 20 + step + 1) % 256).to(torch.uint8)[:, None, None, None].expand(n, 3, 32, 32).clone()
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
    assert s["next_obs"].dtype == torch.uint8 and s["action"].dtype == torch.float32 and s["action"].shape == (64, 3)
    assert s["label"].dtype == torch.int64 and s["label"].shape == (64,)
    s2 = buf.sample(64, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(s[k], s2[k]) for k in s)  # reproducible with a generator


def test_buffer_circular_overwrite():
    buf = ReplayBuffer(10, action_dim=2)
    for start in (0, 6, 12):  # 18 transitions in chunks of 6 into 10 slots: the last chunk wraps around
        buf.add(*fake_transitions(6, 2, start))
    assert len(buf) == 10 and buf.ptr == 8
    steps = (buf.action[:, 0] * 1000).round().long()  # (10,)
    assert steps.tolist() == [10, 11, 12, 13, 14, 15, 16, 17, 8, 9]  # oldest (0..7) overwritten
    with pytest.raises(ValueError):
        buf.add(*fake_transitions(11, 2, 0))  # more than capacity at once


def test_buffer_restored_from_its_state_holds_and_samples_the_same():
    buf, copy = ReplayBuffer(10, action_dim=2), ReplayBuffer(10, action_dim=2)
    for start in (0, 6):
        buf.add(*fake_transitions(6, 2, start))  # wrapped: ptr 2, size 10
    copy.load(buf.state())
    assert (copy.ptr, copy.size) == (buf.ptr, buf.size) == (2, 10)
    s, s2 = (b.sample(32, generator=torch.Generator().manual_seed(0)) for b in (buf, copy))
    assert all(torch.equal(s[k], s2[k]) for k in s)
    half = ReplayBuffer(10, action_dim=2)
    half.add(*fake_transitions(3, 2, 0))
    assert half.state()["obs"].shape == (3, 3, 32, 32)  # only the filled part is saved


def test_sac_restored_from_its_state_takes_the_same_next_step():
    sac, copy = small_sac(seed=0), small_sac(seed=1)
    g = torch.Generator().manual_seed(0)
    batch = lambda: (torch.randn(16, 8, generator=g), torch.rand(16, 2, generator=g) * 2 - 1,  # noqa: E731
                     torch.randn(16, generator=g), torch.randn(16, 8, generator=g))
    sac.update(*batch())
    saved = io.BytesIO()  # through torch.save / load as in a checkpoint (in memory, load_state_dict would alias
    torch.save(sac.state(), saved)  # the optimisers' moment tensors of the two agents)
    saved.seek(0)
    copy.load(torch.load(saved, weights_only=True))
    b = batch()
    torch.manual_seed(3)
    sac.update(*b)
    torch.manual_seed(3)
    copy.update(*b)
    assert copy.num_updates == sac.num_updates == 2
    for (k, v), (_, w) in zip(sac.state_dict().items(), copy.state_dict().items()):
        torch.testing.assert_close(v, w, msg=k)  # the optimisers' moments came along too


def test_rms_restored_from_its_state_folds_in_the_same_way():
    rms, copy = RMS(), RMS()
    rms.update(torch.randn(50))
    copy.load(rms.state())
    x = torch.randn(30)
    torch.testing.assert_close(rms.update(x), copy.update(x))


def test_buffer_rejects_float_obs_and_bad_shapes():
    buf = ReplayBuffer(10, action_dim=2)
    obs, action, next_obs, label = fake_transitions(4, 2, 0)
    with pytest.raises(ValueError, match="uint8"):
        buf.add(obs.float() / 255, action, next_obs, label)
    with pytest.raises(ValueError, match="uint8"):
        buf.add(obs, action, next_obs.float(), label)
    with pytest.raises(ValueError):
        buf.add(obs, action[:3], next_obs, label)
    with pytest.raises(ValueError):
        buf.add(obs[:, :, :16], action, next_obs[:, :, :16], label)
    with pytest.raises(ValueError):
        ReplayBuffer(5, 2).sample(3)  # empty
    assert len(buf) == 0


def test_buffer_samples_keep_label_obs_correspondence():
    buf = ReplayBuffer(50, action_dim=2)
    for start in range(0, 120, 8):
        buf.add(*fake_transitions(8, 2, start))
    s = buf.sample(500, generator=torch.Generator().manual_seed(3))
    step = (s["action"][:, 0] * 1000).round().long()  # (500,)
    expect_obs = ((s["label"] * 20 + step) % 256).to(torch.uint8)
    assert torch.equal(s["obs"][:, 0, 0, 0], expect_obs)
    assert torch.equal(s["next_obs"][:, 2, 31, 31], ((expect_obs.long() + 1) % 256).to(torch.uint8))
    assert torch.equal(s["label"], step % 10)
    assert step.min() >= 120 - 50  # only the newest 50 transitions remain
