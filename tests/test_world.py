import math

import pytest
import torch

import world as world_py
from common import ConfigError, parse_config
from world import LatentWorld, WorldConfig, latent_step, persistence, rollout


def make_world(G, num_envs=4, seed=0, **kw):
    cfg = WorldConfig(**(dict(horizon=3, mix=0.5, ema=0.8) | kw))
    return LatentWorld(G, num_envs, cfg, seed=seed)


def test_same_seed_same_trajectory(tiny_G):
    a = rollout(make_world(tiny_G), 7, seed=1)
    b = rollout(make_world(tiny_G), 7, seed=1)
    c = rollout(make_world(tiny_G, seed=1), 7, seed=1)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[2], c[2])


def test_a_world_restored_from_its_state_continues_the_same_trajectory(tiny_G):
    world, copy = make_world(tiny_G), make_world(tiny_G, seed=7)  # the copy starts elsewhere
    world.reset()
    copy.reset()
    g = torch.Generator().manual_seed(0)
    actions = torch.rand(6, 4, tiny_G.latent_dim, generator=g) * 2 - 1  # (T, N, d)
    world.step(actions[0])
    copy.load(world.state())
    assert copy.steps == world.steps == 1
    # across an episode boundary (horizon 3): the same prompts and noise after the reset
    for a in actions[1:]:
        (obs, info), (obs2, info2) = world.step(a), copy.step(a)
        assert torch.equal(obs, obs2) and torch.equal(info["z"], info2["z"])
        assert torch.equal(info["y"], info2["y"]) and torch.equal(info["t"], info2["t"])
        assert torch.equal(info["done"], info2["done"])


def test_labels_constant_within_episode_and_resampled_after_done(tiny_G):
    world = make_world(tiny_G, num_envs=64, horizon=3)
    world.reset()
    labels, dones, ts = [world.y.clone()], [], []
    for _ in range(9):
        _, info = world.step(torch.zeros(64, 8))
        labels.append(info["y"]), dones.append(info["done"]), ts.append(info["t"])
    # steps 1..3 form episode 1, 4..6 episode 2, ... : t counts 1, 2, 3 and done is True exactly
    # at t == 3
    assert all(torch.equal(t, torch.full((64,), k % 3 + 1)) for k, t in enumerate(ts))
    assert all(d.all() == (k % 3 == 2) and d.any() == (k % 3 == 2) for k, d in enumerate(dones))
    for e in range(3):
        ep = torch.stack(labels[1 + 3 * e: 4 + 3 * e])  # (3, 64)
        assert (ep == ep[0]).all()
    assert (labels[3] != labels[4]).any()  # 64 envs, 3 classes: some label changes at the reset
    assert world.t.eq(0).all()  # after the done step the envs are already reset
    assert world.steps == 9


def test_next_obs_is_the_true_successor_even_on_reset(tiny_G):
    world = make_world(tiny_G, horizon=2)
    obs = world.reset()
    for k in range(4):
        new_obs, info = world.step(torch.zeros(4, 8))
        expected = tiny_G(info["z"], info["y"])  # the frame the action led to
        assert torch.allclose(info["next_obs"], expected)
        if info["done"].all():
            # already the next episode's first frame
            assert torch.allclose(new_obs, tiny_G(world.z, world.y))
            assert not torch.allclose(new_obs, info["next_obs"])
        obs = new_obs


def test_latent_step_matches_plain_reference():
    torch.manual_seed(0)
    z, a, e = torch.randn(3, 5), torch.rand(3, 5) * 2 - 1, torch.randn(3, 5)
    for kind in ("vp", "plain"):
        out = latent_step(z, a, e, WorldConfig(mix=0.3, ema=0.7, action_scale=1.5, ema_kind=kind))
        for i in range(3):
            for j in range(5):
                m = 0.3 * 1.5 * a[i, j].item() + math.sqrt(1 - 0.09) * e[i, j].item()
                gain = math.sqrt(1 - 0.49) if kind == "vp" else 0.3
                want = 0.7 * z[i, j].item() + gain * m
                assert out[i, j].item() == pytest.approx(want, abs=1e-5)


def test_world_applies_the_recursion_step_by_step(tiny_G, monkeypatch):
    world = make_world(tiny_G, horizon=100)
    world.reset()
    noises = []
    draw = world.noise
    monkeypatch.setattr(world, "noise", lambda: noises.append(draw()) or noises[-1])
    z = world.z.clone()
    for _ in range(5):
        a = torch.rand(4, 8) * 2 - 1
        _, info = world.step(a)
        z = 0.8 * z + 0.6 * (0.5 * math.sqrt(3) * a + math.sqrt(0.75) * noises[-1])
        assert torch.allclose(info["z"], z, atol=1e-5)


@pytest.mark.parametrize("ema", [0.0, 0.8, 0.95])
def test_stationary_variance_under_random_actions(tiny_G, ema):
    world = make_world(tiny_G, num_envs=256, horizon=1000, ema=ema)
    z = rollout(world, 60, seed=0)[2]
    # after a burn-in; every step is N(0, I) already, so this is the whole path
    var = z[20:].var().item()
    assert 0.8 <= var <= 1.2, var


def test_plain_ema_shrinks_the_latents(tiny_G):
    world = make_world(tiny_G, num_envs=256, horizon=1000, ema=0.8, ema_kind="plain")
    z = rollout(world, 60, seed=0)[2]
    assert z[40:].var().item() < 0.2  # (1 - rho) / (1 + rho) = 0.11


@pytest.mark.parametrize("flags, rule", [
    (["--ema", "1"], "0 <= ema < 1"), (["--ema", "-0.1"], "0 <= ema < 1"),
    (["--mix", "1.5"], "0 <= mix <= 1"), (["--horizon", "0"], "1 <= horizon <= 10**6"),
    (["--action-scale", "0"], "0 < action_scale < inf"), (["--num-envs", "0"], "num_envs"),
    (["--steps", "0"], "steps >= 1")])
def test_bad_world_flags_name_their_rule(flags, rule):
    with pytest.raises(ConfigError, match="^world.py needs ") as e:
        parse_config(world_py.Config, flags)
    assert rule in str(e.value) and "\n" not in str(e.value)


def test_world_config_rules_hold_for_the_defaults_and_fail_for_bad_values():
    assert all(WorldConfig().rules().values())
    for bad, rule in [(dict(ema=1.0), "0 <= ema < 1"), (dict(mix=-0.1), "0 <= mix <= 1"),
                      (dict(horizon=0), "1 <= horizon <= 10**6"),
                      (dict(action_scale=math.inf), "0 < action_scale < inf"),
                      (dict(ema=math.nan), "0 <= ema < 1")]:
        rules = WorldConfig(**bad).rules()
        assert [r for r, ok in rules.items() if not ok] == [rule], bad


def test_unknown_ema_kind_is_one_error_line():
    with pytest.raises(SystemExit) as e:  # argparse's choices, printed as one `error:` line
        parse_config(world_py.Config, ["--ema-kind", "fancy"])
    assert str(e.value.code).startswith("error:") and "fancy" in str(e.value.code)


def test_persistence_consecutive_frames_are_closer_than_random_same_class(tiny_G):
    world = make_world(tiny_G, num_envs=32, horizon=8, ema=0.9)
    frames, labels, _, times = rollout(world, 32, seed=0)
    consecutive, same_class = persistence(frames, labels, times)
    assert consecutive > same_class


def test_one_generator_call_per_step_and_info_is_never_mutated(tiny_G):
    calls = []
    tiny_G.register_forward_hook(lambda mod, inp, out: calls.append(len(out)))
    world = make_world(tiny_G, horizon=2)
    world.reset()
    calls.clear()
    _, first = world.step(torch.zeros(4, 8))
    kept = {k: v.clone() for k, v in first.items()}
    # done step: last frames + the new episodes' first frames
    _, second = world.step(torch.zeros(4, 8))
    assert calls == [4, 8]  # one batched decode per step, also on the reset step
    world.step(torch.zeros(4, 8))  # more steps (and a reset) must leave earlier info untouched
    assert all(torch.equal(kept[k], first[k]) for k in kept)
    assert second["t"].eq(2).all() and world.t.eq(1).all()


def test_rollout_times_mark_the_resets(tiny_G):
    frames, labels, _, times = rollout(make_world(tiny_G, num_envs=6, horizon=4), 10, seed=0)
    ok = times[1:] == times[:-1] + 1  # (T-1, N): consecutive frames of one episode
    # frames 4 and 8 end episodes
    assert ok.sum() == 6 * (10 - 2) and not ok[4].any() and not ok[8].any()
    assert (labels[1:][ok] == labels[:-1][ok]).all()  # no class change inside an episode


def test_rollout_acts_with_its_policy_on_the_frames_the_envs_show(tiny_G):
    seen = []

    def push(obs):  # always the largest action on every dimension
        seen.append(obs.clone())
        return torch.ones(len(obs), tiny_G.latent_dim)

    frames, _, z, _ = rollout(make_world(tiny_G, horizon=8), 5, policy=push)
    # no reset yet
    assert len(seen) == 5 and torch.equal(seen[0], frames[0]) and torch.equal(seen[3], frames[3])
    # the policy drives z
    assert z[-1].mean() > 0.5 > rollout(make_world(tiny_G, horizon=8), 5)[2][-1].mean().abs()


def test_a_new_world_reports_its_state_before_reset_and_peeks_the_next_noise(tiny_G):
    world = make_world(tiny_G)
    assert world.state()["steps"] == 0  # no AttributeError before the first reset
    world.reset()
    eps = world.peek_noise()  # (N, d): what the next step draws, the stream untouched
    z = world.z.clone()
    a = torch.zeros(4, tiny_G.latent_dim)
    world.step(a)
    torch.testing.assert_close(world.z, latent_step(z, a, eps, world.cfg))
