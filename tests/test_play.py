"""Tests of play.py without any window: the game's rules on a tiny generator, the scripted mode
(its labelled GIF, the note on keys beyond the episode), the figure under Agg with synthetic key
events and one format for w and rho, the run's files (world, agent) and bad inputs (~10 s on a
2-core x86 CPU)."""
import dataclasses, math

import matplotlib
import pytest
import torch

import play
from agent import SAC, SACConfig
from common import CHECKPOINTS
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


def fake_run(folder, feature_dim=32, action_dim=8, world=None, **override):
    """runs/<name>/ as pretrain.py writes it: an encoder.pt (random cnn, width 4: 32 features) and
    an agent.pt from a fresh SAC, both with the nested config (config["world"], config["sac"])."""
    encoder = random_encoder(width=4, seed=1)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"method": "palmup", "world": dataclasses.asdict(world or WorldConfig())}
    torch.manual_seed(0)
    sac = SAC(feature_dim, action_dim, SACConfig(hidden=16))
    torch.save({"kind": "encoder", "encoder": "cnn", "width": 4,
                "state_dict": encoder.state_dict(), "finished": True,
                "config": {**config, **override.pop("encoder_config", {})}}, folder / "encoder.pt")
    torch.save({"kind": "agent", "feature_dim": feature_dim, "action_dim": action_dim,
                "actor": sac.actor.state_dict(),
                "config": {**config, "sac": dataclasses.asdict(sac.cfg)}, **override},
               folder / "agent.pt")
    return sac


def error_of(argv) -> str:
    with pytest.raises(SystemExit) as info:
        play.main([str(a) for a in argv])
    msg = info.value.code
    assert isinstance(msg, str) and msg.startswith("error: ") and "\n" not in msg, msg
    return msg


# ---- the rules ----------------------------------------------------------------------------------
def test_steering_directions_are_orthonormal_and_deterministic(tiny_G):
    u, share = play.steering_directions(tiny_G, 1)
    torch.testing.assert_close(u @ u.T, torch.eye(2), atol=1e-5, rtol=0)
    assert 0 < share <= 1 and torch.equal(u, play.steering_directions(tiny_G, 1)[0])


@pytest.mark.parametrize("key, i, sign", [("d", 0, 1), ("a", 0, -1), ("w", 1, 1), ("down", 1, -1)])
def test_a_push_moves_the_latent_along_its_direction_by_what_latent_step_says(tiny_G, key, i,
                                                                              sign):
    # same seed: the same start and the same noise
    pushed, still = make_game(tiny_G), make_game(tiny_G)
    a = pushed.action(key)  # (1, d)
    u = pushed.U[i] / pushed.U[i].abs().max()
    # the largest action along u inside the box (push = 1)
    torch.testing.assert_close(a[0], sign * u)
    pushed.press(key), still.press(" ")
    zero = torch.zeros_like(a)  # (1, d)
    step = latent_step(zero, a, zero, WorldConfig(mix=0.5, ema=0.8))  # gain * w * s * a
    torch.testing.assert_close(pushed.ep.z[1] - still.ep.z[1], step[0], atol=1e-5, rtol=0)
    along = (pushed.ep.z[1] - still.ep.z[1]) @ pushed.U.T  # (2,): on u1, u2
    want = sign * 0.6 * 0.5 * math.sqrt(3) * u.norm().item()
    assert along[i].item() == pytest.approx(want, rel=1e-4)
    assert abs(along[1 - i].item()) < 1e-4
    # then the noise alone: the push fades by rho per step
    press(pushed, "   "), press(still, "   ")
    torch.testing.assert_close(pushed.ep.z[4] - still.ep.z[4], 0.8 ** 3 * step[0], atol=1e-5,
                               rtol=0)


def test_w_0_makes_every_key_equivalent_to_space(tiny_G):
    keys = press(make_game(tiny_G, mix=0.0), "wasd")
    still = press(make_game(tiny_G, mix=0.0), "    ")
    assert all(torch.equal(p, q) for p, q in zip(keys.ep.z, still.ep.z)) and len(keys.ep.z) == 5
    assert all(torch.equal(p, q) for p, q in zip(keys.ep.frames, still.ep.frames))
    assert keys.ep.novelty == still.ep.novelty


def test_the_race_replays_the_same_start_and_noise(tiny_G):
    # w = 0: whatever the agent does, it sees your latents
    game = press(make_game(tiny_G, mix=0.0), "wdd")
    assert "race over 3 steps" in game.press("A") and "uniform-random" in game.press("A")
    assert all(torch.equal(p, q) for p, q in zip(game.ep.z, game.ep.rival.z))
    assert len(game.ep.rival.z) == 4
    game = press(make_game(tiny_G), "ww")
    # the sliders mid-episode: the race steps with the same w and rho at each step
    game.set_dynamics(0.0, 0.5)
    press(game, "dA")
    assert game.ep.dynamics == game.ep.rival.dynamics == [(0.5, 0.8), (0.5, 0.8), (0.0, 0.5)]
    assert torch.equal(game.ep.rival.z[0], game.ep.z[0])
    assert not torch.equal(game.ep.rival.z[1], game.ep.z[1])


def test_novelty_is_apts_statistic_against_the_frames_seen(tiny_G):
    game = press(make_game(tiny_G, apt_k=2), "dwa")
    f = torch.stack(game.ep.feats)  # (4, D)
    dist = torch.cdist(f[3:], f[:3])[0].sort().values  # distances of frame 3 to frames 0-2
    assert game.ep.novelty[2] == pytest.approx(math.log1p(dist[:2].mean().item()), rel=1e-5)
    first = math.log1p(torch.dist(f[1], f[0]).item())  # k = 1: one earlier frame
    assert game.ep.novelty[0] == pytest.approx(first, rel=1e-5)


def test_episodes_end_after_steps_and_keys_start_new_ones(tiny_G):
    game = press(make_game(tiny_G, steps=2), "ddd")
    assert len(game.ep.novelty) == 2 and "played" in game.press("w")
    game.press("2")
    assert game.ep.label == 2 and len(game.ep.frames) == 1 and len(game.episodes) == 2
    assert "no class 7" in game.press("7") and game.ep.label == 2
    game.press("r")
    assert len(game.episodes) == 3 and game.ep.label in range(3)


# ---- the run's files ----------------------------------------------------------------------------
def test_load_policy_rebuilds_the_deterministic_actor(tmp_path):
    sac = fake_run(tmp_path / "run")
    policy = play.load_policy(tmp_path / "run" / "agent.pt", "cpu", 32, 8)
    f = torch.randn(5, 32)
    torch.testing.assert_close(policy(f), sac.act(f, deterministic=True))
    with pytest.raises(ValueError, match="action_dim 8, this game needs 64"):
        play.load_policy(tmp_path / "run" / "agent.pt", "cpu", 32, 64)


@pytest.mark.parametrize("override, message", [
    ({"kind": "encoder"}, "not an? agent checkpoint"),
    ({"config": {"sac": {"hiddenn": 3}}}, "does not match agent.SAC"),
    ({"config": {"method": "palmup"}}, "does not match agent.SAC"),
    ({"actor": {}}, "does not fit its network")])
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


def test_the_runs_world_fills_the_flags_not_given(tiny_ckpt, tmp_path):
    """--run: steps, w, rho, s and the EMA's kind are the run's config["world"], except those the
    command line names."""
    world = WorldConfig(horizon=5, mix=0.3, ema=0.6, action_scale=1.5, ema_kind="plain")
    fake_run(tmp_path / "run", world=world)
    cfg = play.Config(generator=str(tiny_ckpt), run=str(tmp_path / "run"), script="w",
                      out=str(tmp_path / "x.gif"))
    game = play.setup(cfg)[0]
    assert (game.cfg.steps, game.cfg.mix, game.cfg.ema, game.cfg.action_scale,
            game.cfg.ema_kind) == (5, 0.3, 0.6, 1.5, "plain")
    assert game.world.cfg.mix == 0.3 and game.world.cfg.ema_kind == "plain"
    named = play.named_flags(["--run", tmp_path / "run", "--mix", "0.5", "--steps", "3"])
    assert named == {"run", "mix", "steps"}
    game = play.setup(cfg, named)[0]
    assert (game.cfg.steps, game.cfg.mix, game.cfg.ema) == (cfg.steps, cfg.mix, 0.6)
    game = play.setup(dataclasses.replace(cfg, run=""))[0]  # no run: world.py's defaults
    assert (game.cfg.mix, game.cfg.ema_kind) == (WorldConfig.mix, WorldConfig.ema_kind)


# ---- the command line ---------------------------------------------------------------------------
def test_script_writes_frames_and_finite_scores_and_the_same_gif_twice(tiny_ckpt, tmp_path,
                                                                       capsys):
    outs = [tmp_path / "a.gif", tmp_path / "b.gif"]
    for out in outs:
        play.main(["--generator", tiny_ckpt, "--script", "wd.s", "--steps", "4", "--label", "0",
                   "--out", out])
    text = capsys.readouterr().out
    you, agent = (float(text.split(k)[1].split()[0]) for k in ("you ", "(uniform-random) "))
    assert math.isfinite(you) and math.isfinite(agent) and f"wrote {outs[0]}" in text
    from PIL import Image
    with Image.open(outs[0]) as gif:
        assert gif.n_frames == 5  # o_0 .. o_4
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_script_gif_names_its_two_sides(tiny_ckpt, tmp_path):
    """Every GIF frame has a white band over the two frames: "you" over the left one, "agent
    (...)" over the right one; the GIF's comment says the same in words."""
    out = tmp_path / "x.gif"
    play.main(["--generator", tiny_ckpt, "--script", "wd", "--label", "0", "--out", out])
    from PIL import Image
    import numpy as np
    with Image.open(out) as gif:
        assert gif.info["comment"] == b"left: you, right: agent (uniform-random)"
        side, band = 32 * 4, play.LABEL_HEIGHT  # save_gif's scale 4
        assert gif.size == (2 * side + 2 * 4, side + band)
        pixels = np.asarray(gif.convert("L"))  # (H, W)
    left, right = pixels[:band, :side], pixels[:band, -side:]  # the band over each frame
    ink = [(part < 128).sum() for part in (left, right)]  # dark pixels: the letters
    assert all(n > 0 for n in ink) and ink[1] > 2 * ink[0], ink  # "agent (...)" is longer
    assert (pixels[:band, side:-side] == 255).all()  # nothing between the two labels


@pytest.mark.parametrize("script, ignored", [("wwwww", 2), ("www", 0), ("ww2www", 0)])
def test_script_says_when_keys_outlast_the_episode(tiny_ckpt, tmp_path, capsys, script, ignored):
    play.main(["--generator", tiny_ckpt, "--script", script, "--steps", "3", "--out",
               tmp_path / "x.gif"])
    err = capsys.readouterr().err
    note = f"note: {ignored} key(s) of --script came after the episode's 3 steps"
    assert (note in err and "not played" in err) if ignored else "not played" not in err, err


def test_script_races_the_runs_agent_or_says_it_has_none(tiny_ckpt, tmp_path, capsys):
    fake_run(tmp_path / "runs" / "x", world=WorldConfig(mix=0.3))
    argv = ["--generator", tiny_ckpt, "--run", tmp_path / "runs" / "x", "--script", "ww",
            "--out", tmp_path / "x.gif"]
    play.main(argv)
    out = capsys.readouterr()
    assert "agent (trained SAC)" in out.out and "world: 16 steps, w 0.300, rho 0.800" in out.err
    play.main(argv + ["--mix", "0.7"])
    assert "w 0.700, rho 0.800" in capsys.readouterr().err
    # a run without a policy: the race says whom you raced
    (tmp_path / "runs" / "x" / "agent.pt").unlink()
    play.main(argv)
    out = capsys.readouterr()
    assert "agent (uniform-random)" in out.out
    assert "/agent.pt: you race uniform-random actions" in out.err


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "steps >= 1"), (["--ema", "1.0"], "ema < 1"), (["--push", "2"], "push <= 1"),
    (["--script", "wxz"], "a --script of w a s d"), (["--script", "w5"], "class prompts"),
    (["--label", "-2"], "label >= -1"), (["--out", "x.png"], ".gif"),
    (["--out", CHECKPOINTS / "play_test.gif"], "checkpoints"),
    (["--generator", "nope.pt"], "not found"), (["--run", "runs/nope"], "no such run folder")])
def test_bad_inputs_stop_with_one_error_line_before_writing(tiny_ckpt, tmp_path, argv, message):
    out = tmp_path / "out.gif"
    base = ["--generator", tiny_ckpt, "--script", "ww"]
    argv = base + argv if "--out" in argv else base + ["--out", out] + argv
    assert message in error_of(argv)
    assert not out.exists() and not (CHECKPOINTS / "play_test.gif").exists()


@pytest.mark.parametrize("what, message", [
    ("agent", "action_dim 5, this game needs 8"), ("world", "no world settings"),
    ("bad world", "needs 0 <= mix <= 1")])
def test_a_foreign_run_is_one_error_line(tiny_ckpt, tmp_path, what, message):
    override = {"agent": {"action_dim": 5}, "world": {"encoder_config": {"world": None}},
                "bad world": {"encoder_config": {"world": {"mix": 2.0}}}}[what]
    fake_run(tmp_path / "run", **override)
    msg = error_of(["--generator", tiny_ckpt, "--run", tmp_path / "run", "--script", "w",
                    "--out", tmp_path / "x.gif"])
    assert message in msg and not (tmp_path / "x.gif").exists()


def test_no_display_says_how_to_get_a_window(tiny_ckpt):
    msg = error_of(["--generator", tiny_ckpt])  # Agg here
    assert "xvfb-run" in msg and "--script" in msg


# ---- the window, under Agg ----------------------------------------------------------------------
def test_the_figure_handles_key_events_and_sliders(tiny_G, tmp_path):
    from matplotlib.backend_bases import KeyEvent
    import matplotlib.pyplot as plt
    game = make_game(tiny_G)
    window = play.Window(game, str(tmp_path / "s.gif"))
    canvas = window.fig.canvas
    for key in ["d", "right", " ", "w", "A"]:
        canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", canvas, key))
    assert len(game.ep.novelty) == 4 and game.ep.rival is not None
    assert "race over 4 steps" in window.message
    trail = window.axes[1].get_lines()[0].get_xydata()  # (5, 2): your latents on u1, u2
    assert trail.shape == (5, 2)
    window.sliders[0].set_val(0.0)
    assert game.mix == 0.0
    window.sliders[0].set_val(0.9964)  # one format for w and rho: slider and status line
    window.sliders[1].set_val(0.8)
    assert [s.valtext.get_text() for s in window.sliders] == ["0.996", "0.800"]
    assert "w 0.996, rho 0.800" in window.status.get_text()
    canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", canvas, "g"))
    assert (tmp_path / "s.gif").is_file() and "wrote" in window.message
    canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", canvas, "2"))
    assert game.ep.label == 2 and len(game.episodes) == 2
    window.fig.canvas.draw()
    plt.close(window.fig)


def test_a_run_of_another_world_is_refused(tmp_path, tiny_ckpt):
    """An agent that explored another generator's world would race in a world it never saw."""
    fake_run(tmp_path / "run", encoder_config={"generator": "checkpoints/cifar10_gan.pt"})
    msg = error_of(["--run", tmp_path / "run", "--generator", tiny_ckpt, "--script", "ww",
                    "--out", tmp_path / "x.gif"])
    assert "explored the world of checkpoints/cifar10_gan.pt" in msg
    assert not (tmp_path / "x.gif").exists()
