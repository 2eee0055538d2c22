"""Tests for benchmarks/exploration.py: the greedy explorer climbs its objective, sees the world's own noise, keeps
its latents in the prior's ball when asked; the latent statistics are right under the prior. Seconds on 2 CPU cores."""
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import exploration  # noqa: E402
from encoder import make_encoder  # noqa: E402
from world import LatentWorld, WorldConfig, latent_step  # noqa: E402

N, K = 16, 4  # envs, neighbours


def setup(tiny_G):
    torch.manual_seed(0)
    world = LatentWorld(tiny_G, N, WorldConfig(horizon=4), seed=0)
    world.reset()
    encoder = make_encoder("cnn", 4).eval().requires_grad_(False)  # (B, 32) features
    with torch.no_grad():
        reference = encoder(world.step(torch.rand(N, tiny_G.latent_dim) * 2 - 1)[1]["next_obs"])  # (N, 32)
    start = torch.rand(N, tiny_G.latent_dim) * 2 - 1  # (N, d)
    return world, encoder, reference, start


def test_greedy_objective_rises_over_its_inner_steps(tiny_G):
    world, encoder, reference, start = setup(tiny_G)
    a, trace = exploration.greedy_actions(world, encoder, reference, start, steps=5, lr=0.5, k=K)
    assert len(trace) == 6 and trace[-1] > trace[0], trace
    assert a.shape == start.shape and a.abs().max() <= 1
    # the explorer knew the world's next noise: the step it chose lands on the objective's last value
    with torch.no_grad():
        obs = world.step(a)[1]["next_obs"]
        assert math.isclose(exploration.apt_objective(encoder(obs), reference, K).item(), trace[-1], rel_tol=1e-4)


def test_greedy_prior_keeps_its_latents_in_the_ball(tiny_G):
    world, encoder, reference, start = setup(tiny_G)
    budget = float(tiny_G.latent_dim)
    eps = world.peek_noise()  # (N, d): the noise of the next step
    step = lambda a: latent_step(world.z, a, eps, world.cfg)  # noqa: E731
    z0, gain = step(torch.zeros_like(start)), step(torch.ones_like(start)) - step(torch.zeros_like(start))
    closest = step((-z0 / gain).clamp(-1, 1)).pow(2).sum(1)  # (N,) the smallest ||z_t+1||^2 any action reaches
    a, _ = exploration.greedy_actions(world, encoder, reference, start, steps=3, lr=0.5, k=K, max_sq_norm=budget)
    sq = world.step(a)[1]["z"].pow(2).sum(1)  # (N,)
    feasible = closest <= budget
    assert feasible.any() and a.abs().max() <= 1
    assert (sq[feasible] <= budget * (1 + 1e-2)).all(), (sq, budget)  # alternating projections: approximate
    assert (sq[~feasible] <= closest[~feasible] * (1 + 1e-2)).all()  # else as close to the ball as the cube allows


def test_latent_stats_under_the_prior():
    d, n, p = 64, 20000, 0.01
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    mean_sq, outside = exploration.latent_stats(z)
    assert abs(mean_sq - 1) < 4 * math.sqrt(2 / d / n)  # ||z||^2 / d has std sqrt(2 / d) per sample
    assert abs(outside - p) < 4 * math.sqrt(p * (1 - p) / n)  # binomial share outside the 99 % shell
    lo, hi = exploration.chi2_quantile(0.005, d), exploration.chi2_quantile(0.995, d)
    assert lo < d < hi


def test_cost_times_a_greedy_step_against_a_world_update(capsys):
    exploration.main(["--cost", "--cost-envs", "8", "--greedy-steps", "1", "--greedy-reference", "16",
                      "--extra", "--batch-size 16 --warmup 2 --device cpu"])
    out = capsys.readouterr().out
    times = [float(line.split(": ")[1].split(" s")[0]) for line in out.splitlines() if line.endswith(" s")]
    assert len(times) == 2 and all(t > 0 for t in times), out
    assert "x as long" in out


def test_train_pairs_the_greedy_explorer_with_uniform_actions_and_reads_finished_runs_back(tmp_path, monkeypatch):
    """--train on the shipped embedded world, 2 updates: both explorers train and are probed, the greedy one's first
    guesses are the uniform ones (so the runs differ by the explorer only), and a finished run is not redone."""
    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[1]
    cfg = exploration.Config(generator=str(root / "checkpoints" / "embedded_gan.pt"), updates=2, seeds="0", jobs=1,
                             greedy_steps=1, extra="--batch-size 16 --num-envs 8 --warmup 2 --buffer-size 200")
    monkeypatch.setattr("pretrain.load_split", fake_split := lambda data, split, download=False: (
        torch.randint(0, 256, (60, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(len(split))),
        torch.arange(60) % 10, [str(c) for c in range(10)]))
    monkeypatch.setattr("data.load_splits", lambda data, download=False: (fake_split(data, "train"),
                                                                          fake_split(data, "test")))
    chosen = []
    real = exploration.greedy_actions
    monkeypatch.setattr(exploration, "greedy_actions", lambda *a, **k: chosen.append(a[3].clone()) or real(*a, **k))
    drawn = {}  # explorer -> every uniform action batch its run drew (warm-up, then one per update)
    uniform = exploration.pretrain.uniform_actions
    got = {}
    for e in ("random", "greedy-prior"):
        monkeypatch.setattr(exploration.pretrain, "uniform_actions",
                            lambda run, e=e: drawn.setdefault(e, []).append(uniform(run)) or drawn[e][-1])
        got[e] = exploration.train_with(cfg, e, 0)
    assert len(drawn["random"]) == len(drawn["greedy-prior"])  # filmstrips, warm-up steps, updates
    assert all(torch.equal(a, b) for a, b in zip(drawn["random"], drawn["greedy-prior"]))  # the same stream
    for r in got.values():
        assert 0 <= r["val"] <= 100 and 0 <= r["test"] <= 100 and r["wall_s"] > 0
    assert len(chosen) == 2 and all(any(torch.equal(c, u) for u in drawn["greedy-prior"]) for c in chosen)
    runs = tmp_path / "runs"
    assert (runs / "explorer_greedy-prior_s0" / "encoder.pt").is_file()
    monkeypatch.setattr(exploration.pretrain, "train", lambda *a: pytest.fail("a finished run was trained again"))
    assert exploration.train_with(cfg, "greedy-prior", 0) == got["greedy-prior"]


def test_no_jobs_at_once_is_refused():
    with pytest.raises(SystemExit) as stop:
        exploration.main(["--train", "--jobs", "0"])
    assert "error: --jobs must be >= 1" in str(stop.value.code)
