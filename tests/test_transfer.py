"""Tests for transfer.py on the tiny untrained generator: the reward's formula, a frozen encoder,
determinism, the oracle learning, the flags, the cache and bad inputs. ~20 s on one CPU thread."""
import dataclasses
import json
import math

import pytest
import torch

import transfer
from encoder import make_encoder
from generator import save_generator
from common import CHECKPOINTS, parse_config
from world import WorldConfig, latent_step


def tiny_cfg(**kw):
    """A budget of seconds: 2,048 env steps, ~450 SAC updates of a small network."""
    sac = dataclasses.replace(transfer.Config().sac, hidden=64)
    base = dict(env_steps=2048, num_envs=32, warmup=256, updates_per_step=0.25, sac=sac,
                eval_every=1024, eval_episodes=64, stats_frames=256)
    return transfer.Config(**{**base, **kw})


def tiny_encoder():
    torch.manual_seed(1)
    return make_encoder("cnn", 4)  # (B, 32) features; left in train mode with grads on, on purpose


def save_tiny_encoder(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": "encoder", "encoder": "cnn", "width": 4,
                "state_dict": tiny_encoder().state_dict(),
                "config": {"method": "palmup", "seed": 0,
                           "world": dataclasses.asdict(WorldConfig())},
                "finished": True, "wall_time_s": 1.0}, path)
    return path


def test_metric_weights_are_the_pixel_metric_pulled_back(tiny_G):
    """W W^T = M / tr M with M = mean_n J_n^T J_n / P, J_n the Jacobian of G at (z_n, y_n)
    (autograd's Jacobian-vector products here, finite differences in transfer.py: float32
    round-off bounds the agreement to ~1e-3 of the diagonal's ~1/8)."""
    W = transfer.distance_weights(tiny_G, "metric", samples=8, h=1e-3, seed=3)
    g = torch.Generator().manual_seed(3)  # the same draws as distance_weights
    z, y = torch.randn(8, 8, generator=g), torch.randint(3, (8,), generator=g)
    M = torch.zeros(8, 8)
    for n in range(8):
        f = lambda v: tiny_G(v[None], y[n:n + 1]).flatten()  # noqa: E731
        J = torch.stack([torch.autograd.functional.jvp(f, z[n], e)[1]
                         for e in torch.eye(8)], 1)  # (P, d)
        M += J.T @ J / (8 * J.shape[0])
    torch.testing.assert_close(W @ W.T, M / M.trace(), rtol=2e-2, atol=1e-3)
    torch.testing.assert_close(transfer.distance_weights(tiny_G, "euclid"),
                               torch.eye(8) / math.sqrt(8))


@pytest.mark.parametrize("kind", ["metric", "euclid"])
def test_reward_is_minus_the_distance_after_the_world_step(tiny_G, kind):
    W = transfer.distance_weights(tiny_G, kind, samples=8)
    env = transfer.GoalReaching(tiny_G, 5, WorldConfig(horizon=4), W, seed=0)
    M = W @ W.T  # M / tr M
    for _ in range(4):
        z, rng = env.z.clone(), env.rng.get_state()
        a = torch.rand(5, 8) * 2 - 1
        r = env.step(a)
        # the noise the step drew
        eps = torch.randn(5, 8, generator=torch.Generator().set_state(rng))
        # world.py's transition
        torch.testing.assert_close(env.z, latent_step(z, a, eps, WorldConfig()))
        for i in range(5):
            dz = (env.z[i] - env.z_goal[i]).tolist()
            want = -math.sqrt(sum(dz[j] * M[j, k].item() * dz[k]
                                  for j in range(8) for k in range(8)))
            if kind == "euclid":
                assert want == pytest.approx(-math.sqrt(sum(v * v for v in dz) / 8), rel=1e-5)
            assert r[i].item() == pytest.approx(want, rel=1e-4)
    assert env.done


def test_oracle_beats_uniform_random_on_a_tiny_budget(tiny_G):
    cfg = tiny_cfg()
    W = transfer.distance_weights(tiny_G)
    refs = transfer.references(cfg, tiny_G, W)
    lo, hi = refs["uniform-random policy"]["return"], refs["greedy controller (knows z)"]["return"]
    assert hi > lo + 5  # the task leaves room to learn
    res = transfer.train_agent(cfg, tiny_G, W, None, seed=0)
    # from the world step that completes the warmup on
    assert res["sac_updates"] == (2048 - 256 + 32) // 4
    assert res["final"]["return"] > lo + 0.25 * (hi - lo), (res["curve"], refs)


def test_encoder_stays_frozen_and_same_seed_gives_same_returns(tiny_G):
    cfg = tiny_cfg(env_steps=512, eval_every=256, eval_episodes=16)
    W = transfer.distance_weights(tiny_G, samples=8)
    # train mode, requires_grad: BatchNorm would drift if transfer let it
    encoder = tiny_encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    first = transfer.train_agent(cfg, tiny_G, W, encoder, seed=0)
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in encoder.parameters())
    again = transfer.train_agent(cfg, tiny_G, W, encoder, seed=0)
    other = transfer.train_agent(cfg, tiny_G, W, encoder, seed=1)
    assert first["curve"] == again["curve"]
    assert first["curve"][-1]["return"] != other["curve"][-1]["return"]


def test_the_frozen_encoder_guard_fires_when_bn_statistics_drift(tiny_G, monkeypatch):
    """The guard is not decoration: an encoder that stayed in train mode would update its BN
    statistics."""
    cfg = tiny_cfg(env_steps=64, warmup=32, eval_every=64, eval_episodes=4)
    encoder = tiny_encoder()
    # a regression: Observer's encoder.eval() does nothing
    monkeypatch.setattr(encoder, "eval", lambda: encoder)
    with pytest.raises(RuntimeError, match="frozen encoder changed"):
        transfer.train_agent(cfg, tiny_G, transfer.distance_weights(tiny_G, samples=8), encoder,
                             seed=0)


def test_cli_writes_table_plot_and_reuses_its_cache(tiny_G, tmp_path, monkeypatch, capsys):
    gen = tmp_path / "tiny_gan.pt"
    save_generator(tiny_G, gen, {}, ["a", "b", "c"])
    enc = save_tiny_encoder(tmp_path / "runs" / "tiny_palmup" / "encoder.pt")
    args = ["--generator", str(gen), "--out", str(tmp_path / "transfer"),
            "--encoders", "oracle", str(enc.parent), "--seeds", "0", "1", "--env-steps", "256",
            "--warmup", "64", "--eval-every", "128", "--eval-episodes", "8",
            "--stats-frames", "64", "--sac-hidden", "16"]
    out = transfer.main(args)
    assert set(out["rows"]) == {"oracle", "tiny_palmup"} and len(out["rows"]["tiny_palmup"][1]) == 2
    for f in ("oracle_s0.json", "oracle_s1.json", "tiny_palmup_s0.json", "tiny_palmup_s1.json",
              "references.json", "results.md", "curves.png"):
        assert (tmp_path / "transfer" / f).is_file(), f
    assert not list((tmp_path / "transfer").glob("*.tmp"))
    table = (tmp_path / "transfer" / "results.md").read_text()
    assert "| tiny_palmup (palmup) | 2 |" in table and "uniform-random policy" in table
    cached = json.loads((tmp_path / "transfer" / "oracle_s1.json").read_text())

    def no_training(*a, **k):
        raise AssertionError("a cached row was recomputed")
    monkeypatch.setattr(transfer, "train_agent", no_training)
    again = transfer.main(args)
    assert again["rows"]["oracle"][1][1]["curve"] == cached["curve"]
    # a changed setting is not served from the cache
    with pytest.raises(AssertionError, match="recomputed"):
        transfer.main(args + ["--sac-gamma", "0.7"])


@pytest.mark.parametrize("what, message", [
    ("missing", "not found"), ("corrupt", "corrupt"), ("flag", "transfer.py needs 0 <= mix <= 1"),
    ("sac", "transfer.py needs 0 <= gamma < 1"), ("rule", "transfer.py needs warmup >= 0"),
    ("clash", "same label"), ("checkpoints", "checkpoints")])
def test_bad_inputs_give_one_clear_error(tiny_G, tmp_path, what, message):
    gen = tmp_path / "tiny_gan.pt"
    save_generator(tiny_G, gen, {}, ["a", "b", "c"])
    bad = tmp_path / "runs" / "broken" / "encoder.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a torch file")
    out = tmp_path / "t"
    args = {"missing": ["--encoders", tmp_path / "nowhere.pt"], "corrupt": ["--encoders", bad],
            "flag": ["--mix", "1.5"], "sac": ["--sac-gamma", "1"], "rule": ["--warmup", "-1"],
            "clash": ["--encoders", bad, bad.parent],
            "checkpoints": ["--out", CHECKPOINTS / "transfer_test"]}[what]
    with pytest.raises(SystemExit) as e:
        transfer.main(["--generator", gen, "--out", out] + args)
    text = str(e.value.code)
    assert text.startswith("error:") and message in text and "\n" not in text
    assert not out.exists() and not (CHECKPOINTS / "transfer_test").exists()  # nothing written


def test_flags_default_to_transfers_own_sac_settings():
    """--sac-* default to transfer.Config's SAC settings, not to agent.SACConfig's; the world's
    flags keep their names."""
    cfg = parse_config(transfer.Config, [])
    assert cfg == transfer.Config()
    assert (cfg.sac.hidden, cfg.sac.gamma, cfg.sac.alpha, cfg.sac.lr_actor, cfg.sac.lr_critic,
            cfg.sac.autotune, cfg.sac.reward_norm, cfg.sac.updates) == (
        128, 0.5, 1e-3, 1e-3, 3e-3, True, False, 1)
    cfg = parse_config(transfer.Config, ["--sac-hidden", "16", "--sac-gamma", "0.7", "--no-sac-autotune",
                          "--mix", "0.3", "--horizon", "8"])
    assert (cfg.sac.hidden, cfg.sac.gamma, cfg.sac.autotune, cfg.sac.lr_actor) == (
        16, 0.7, False, 1e-3)
    assert cfg.world == WorldConfig(horizon=8, mix=0.3)


@pytest.mark.parametrize("ema_kind", ["vp", "plain"])
def test_greedy_action_puts_the_mean_of_the_next_latent_on_the_goal(tiny_G, ema_kind):
    wc = WorldConfig(ema_kind=ema_kind)
    env = transfer.GoalReaching(tiny_G, 64, wc, transfer.distance_weights(tiny_G, "euclid"), 0)
    # a start and a goal near 0: mostly reachable inside the action box, for both gains
    env.z, env.z_goal = 0.1 * env.z, 0.1 * env.z_goal
    a = env.greedy_action()  # (N, d)
    inside = a.abs() < 1  # (N, d): where the clip did not bind
    assert inside.float().mean() > 0.5
    mean_next = latent_step(env.z, a, torch.zeros_like(a), wc)  # (N, d): the noise's mean is 0
    torch.testing.assert_close(mean_next[inside], env.z_goal[inside])
