"""Tests of play.py without any window: the game's rules on a tiny generator, the scripted mode, the figure under Agg
with synthetic key events, the agent file and bad inputs (~10 s on a 2-core x86 CPU)."""
import dataclasses, math

import matplotlib
import pytest
import torch

import play
from agent import SAC, SACConfig
from evaluate import random_encoder
from generator import save_generator
from world import WorldConfig, latent_step

matplotlib.use("Agg")


def make_game(G, policy=None, **kw) -> play.Game:
    cfg = play.Config(**{"steps": 6, "label": 1, **kw})
    return play.Game(G, random_encoder(width=4), policy, cfg)


def press(game, keys):
    for k in keys:
        game.press(k)
    return game


@pytest.fixture
def tiny_ckpt(tiny_G, tmp_path):
    path = tmp_path / "tiny_gan.pt"
    save_generator(tiny_G, path, {}, ["zero", "one", "two"])
    return path


def fake_run(folder, feature_dim=32, action_dim=8, **override):
    """runs/<name>/ with an encoder.pt (random cnn, width 4: 32 features) and an agent.pt from a fresh SAC."""
    encoder = random_encoder(width=4, seed=1)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": "encoder", "encoder": "cnn", "width": 4, "state_dict": encoder.state_dict(),
                "config": {"method": "palmup"}, "finished": True}, folder / "encoder.pt")
    torch.manual_seed(0)
    sac = SAC(feature_dim, action_dim, SACConfig(hidden=16))
    torch.save({"kind": "agent", "feature_dim": feature_dim, "action_dim": action_dim,
                "sac_config": dataclasses.asdict(sac.cfg), "actor": sac.actor.state_dict(),
                "config": {"method": "palmup"}, **override}, folder / "agent.pt")
    return sac


def error_of(argv) -> str:
    with pytest.raises(SystemExit) as info:
        play.main([str(a) for a in argv])
    msg = info.value.code
    assert isinstance(msg, str) and msg.startswith("error: ") and "\n" not in msg, msg
    return msg


# ---- the rules ------------------------------------------------------------------------------------------------------
def test_steering_directions_are_orthonormal_and_deterministic(tiny_G):
    u, share = play.steering_directions(tiny_G, 1)
    torch.testing.assert_close(u @ u.T, torch.eye(2), atol=1e-5, rtol=0)
    assert 0 < share <= 1 and torch.equal(u, play.steering_directions(tiny_G, 1)[0])


@pytest.mark.parametrize("key, i, sign", [("d", 0, 1), ("a", 0, -1), ("w", 1, 1), ("down", 1, -1)])
def test_a_push_moves_the_latent_along_its_direction_by_what_latent_step_says(tiny_G, key, i, sign):
    pushed, still = make_game(tiny_G), make_game(tiny_G)  # same seed: the same start and the same noise
    a = pushed.action(key)  # (1, d)
    u = pushed.U[i] / pushed.U[i].abs().max()
    torch.testing.assert_close(a[0], sign * u)  # the largest action along u inside the box (push = 1)
    pushed.press(key), still.press(" ")
    step = latent_step(torch.zeros_like(a), a, torch.zeros_like(a), WorldConfig(mix=0.5, ema=0.8))  # gain * w * s * a
    torch.testing.assert_close(pushed.ep.z[1] - still.ep.z[1], step[0], atol=1e-5, rtol=0)
    along = (pushed.ep.z[1] - still.ep.z[1]) @ pushed.U.T  # (2,): on u1, u2
    assert along[i].item() == pytest.approx(sign * 0.6 * 0.5 * math.sqrt(3) * u.norm().item(), rel=1e-4)
    assert abs(along[1 - i].item()) < 1e-4
    press(pushed, "   "), press(still, "   ")  # then the noise alone: the push fades by rho per step
    torch.testing.assert_close(pushed.ep.z[4] - still.ep.z[4], 0.8 ** 3 * step[0], atol=1e-5, rtol=0)


def test_w_0_makes_every_key_equivalent_to_space(tiny_G):
    keys, still = press(make_game(tiny_G, mix=0.0), "wasd"), press(make_game(tiny_G, mix=0.0), "    ")
    assert all(torch.equal(p, q) for p, q in zip(keys.ep.z, still.ep.z)) and len(keys.ep.z) == 5
    assert all(torch.equal(p, q) for p, q in zip(keys.ep.frames, still.ep.frames))
    assert keys.ep.novelty == still.ep.novelty


def test_the_race_replays_the_same_start_and_noise(tiny_G):
    game = press(make_game(tiny_G, mix=0.0), "wdd")  # w = 0: whatever the agent does, it sees your latents
    assert "race over 3 steps" in game.press("A") and "uniform-random" in game.press("A")
    assert all(torch.equal(p, q) for p, q in zip(game.ep.z, game.ep.rival.z)) and len(game.ep.rival.z) == 4
    game = press(make_game(tiny_G), "ww")
    game.set_dynamics(0.0, 0.5)  # the sliders mid-episode: the race steps with the same w and rho at each step
    press(game, "dA")
    assert game.ep.dynamics == game.ep.rival.dynamics == [(0.5, 0.8), (0.5, 0.8), (0.0, 0.5)]
    assert torch.equal(game.ep.rival.z[0], game.ep.z[0]) and not torch.equal(game.ep.rival.z[1], game.ep.z[1])


def test_novelty_is_apts_statistic_against_the_frames_seen(tiny_G):
    game = press(make_game(tiny_G, apt_k=2), "dwa")
    f = torch.stack(game.ep.feats)  # (4, D)
    dist = torch.cdist(f[3:], f[:3])[0].sort().values  # distances of frame 3 to frames 0-2
    assert game.ep.novelty[2] == pytest.approx(math.log1p(dist[:2].mean().item()), rel=1e-5)
    assert game.ep.novelty[0] == pytest.approx(math.log1p(torch.dist(f[1], f[0]).item()), rel=1e-5)  # k = 1


def test_episodes_end_after_steps_and_keys_start_new_ones(tiny_G):
    game = press(make_game(tiny_G, steps=2), "ddd")
    assert len(game.ep.novelty) == 2 and "played" in game.press("w")
    game.press("2")
    assert game.ep.label == 2 and len(game.ep.frames) == 1 and len(game.episodes) == 2
    assert "no class 7" in game.press("7") and game.ep.label == 2
    game.press("r")
    assert len(game.episodes) == 3 and game.ep.label in range(3)


# ---- the agent file -------------------------------------------------------------------------------------------------
def test_load_policy_rebuilds_the_deterministic_actor(tmp_path):
    sac = fake_run(tmp_path / "run")
    policy = play.load_policy(tmp_path / "run" / "agent.pt", "cpu", 32, 8)
    f = torch.randn(5, 32)
    torch.testing.assert_close(policy(f), sac.act(f, deterministic=True))
    with pytest.raises(ValueError, match="action_dim 8, this game needs 64"):
        play.load_policy(tmp_path / "run" / "agent.pt", "cpu", 32, 64)


@pytest.mark.parametrize("override, message", [
    ({"kind": "encoder"}, "not an agent checkpoint"), ({"sac_config": {"hiddenn": 3}}, "does not match agent.SAC"),
    ({"actor": {}}, "does not match agent.SAC")])
def test_load_policy_refuses_foreign_files(tmp_path, override, message):
    fake_run(tmp_path / "run", **override)
    with pytest.raises(ValueError, match=message):
        play.load_policy(tmp_path / "run" / "agent.pt")


def test_load_policy_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        play.load_policy(tmp_path / "agent.pt")
    (tmp_path / "agent.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="corrupt"):
        play.load_policy(tmp_path / "agent.pt")


# ---- the command line -----------------------------------------------------------------------------------------------
def test_script_writes_frames_and_finite_scores_and_the_same_gif_twice(tiny_ckpt, tmp_path, capsys):
    outs = [tmp_path / "a.gif", tmp_path / "b.gif"]
    for out in outs:
        play.main(["--generator", tiny_ckpt, "--script", "wd.s", "--steps", "4", "--label", "0", "--out", out])
    text = capsys.readouterr().out
    you, agent = (float(text.split(k)[1].split()[0]) for k in ("you ", "(uniform-random) "))
    assert math.isfinite(you) and math.isfinite(agent) and f"wrote {outs[0]}" in text
    from PIL import Image
    with Image.open(outs[0]) as gif:
        assert gif.n_frames == 5  # o_0 .. o_4
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_script_races_the_runs_agent_or_says_it_has_none(tiny_ckpt, tmp_path, capsys):
    fake_run(tmp_path / "runs" / "x")
    play.main(["--generator", tiny_ckpt, "--run", tmp_path / "runs" / "x", "--script", "ww", "--out",
               tmp_path / "x.gif"])
    assert "agent (trained SAC)" in capsys.readouterr().out
    (tmp_path / "runs" / "x" / "agent.pt").unlink()  # a run without a policy: the race says whom you raced
    play.main(["--generator", tiny_ckpt, "--run", tmp_path / "runs" / "x", "--script", "ww", "--out",
               tmp_path / "x.gif"])
    out = capsys.readouterr()
    assert "agent (uniform-random)" in out.out and "/agent.pt: you race uniform-random actions" in out.err


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "steps >= 1"), (["--ema", "1.0"], "ema < 1"), (["--push", "2"], "push <= 1"),
    (["--script", "wxz"], "--script takes"), (["--script", "w5"], "class prompts"), (["--out", "x.png"], ".gif"),
    (["--generator", "nope.pt"], "not found"), (["--run", "runs/nope"], "no such run folder")])
def test_bad_inputs_stop_with_one_error_line_before_writing(tiny_ckpt, tmp_path, argv, message):
    out = tmp_path / "out.gif"
    argv = ["--generator", tiny_ckpt, "--script", "ww", "--out", out] + argv if "--out" not in argv else \
        ["--generator", tiny_ckpt, "--script", "ww"] + argv
    assert message in error_of(argv) and not out.exists()


def test_a_foreign_agent_file_is_one_error_line(tiny_ckpt, tmp_path):
    fake_run(tmp_path / "run", action_dim=5)
    msg = error_of(["--generator", tiny_ckpt, "--run", tmp_path / "run", "--script", "w", "--out", tmp_path / "x.gif"])
    assert "action_dim 5, this game needs 8" in msg and not (tmp_path / "x.gif").exists()


def test_no_display_says_how_to_get_a_window(tiny_ckpt):
    msg = error_of(["--generator", tiny_ckpt])  # Agg here
    assert "xvfb-run" in msg and "--script" in msg


# ---- the window, under Agg ------------------------------------------------------------------------------------------
def test_the_figure_handles_key_events_and_sliders(tiny_G, tmp_path):
    from matplotlib.backend_bases import KeyEvent
    import matplotlib.pyplot as plt
    game = make_game(tiny_G)
    window = play.Window(game, str(tmp_path / "s.gif"))
    canvas = window.fig.canvas
    for key in ["d", "right", " ", "w", "A"]:
        canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", canvas, key))
    assert len(game.ep.novelty) == 4 and game.ep.rival is not None and "race over 4 steps" in window.message
    trail = window.axes[1].get_lines()[0].get_xydata()  # (5, 2): your latents on u1, u2
    assert trail.shape == (5, 2)
    window.sliders[0].set_val(0.0)
    assert game.mix == 0.0
    canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", canvas, "g"))
    assert (tmp_path / "s.gif").is_file() and "wrote" in window.message
    canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", canvas, "2"))
    assert game.ep.label == 2 and len(game.episodes) == 2
    window.fig.canvas.draw()
    plt.close(window.fig)
