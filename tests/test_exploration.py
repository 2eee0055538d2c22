"""Tests for benchmarks/exploration.py: the greedy explorer climbs its objective, sees the world's
own noise, keeps its latents in the prior's ball when asked; the latent statistics are right under
the prior; --train pairs its explorers by seed and reads finished runs back; and every documented
command (the comparison, --cost, --train) runs end to end on a tiny budget in a temporary folder.
About a minute on 2 CPU cores, most of it the end-to-end commands."""
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import exploration  # noqa: E402
from encoder import make_encoder  # noqa: E402
from world import LatentWorld, WorldConfig, latent_step  # noqa: E402

N, K = 16, 4  # envs, neighbours
GENERATOR = str(ROOT / "checkpoints" / "embedded_gan.pt")
TINY = ("--batch-size 16 --num-envs 8 --warmup 2 --buffer-size 400 --horizon 4 --apt-k 4 "
        "--probe-images 50")  # pretrain.py flags of a run that takes seconds


def benchmark(*args, cwd: Path) -> subprocess.CompletedProcess:
    """`python benchmarks/exploration.py args` in the folder cwd, one torch thread."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "exploration.py"), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def setup(tiny_G):
    torch.manual_seed(0)
    world = LatentWorld(tiny_G, N, WorldConfig(horizon=4), seed=0)
    world.reset()
    encoder = make_encoder("cnn", 4).eval().requires_grad_(False)  # (B, 32) features
    with torch.no_grad():
        frames = world.step(torch.rand(N, tiny_G.latent_dim) * 2 - 1)[1]["next_obs"]
        reference = encoder(frames)  # (N, 32)
    start = torch.rand(N, tiny_G.latent_dim) * 2 - 1  # (N, d)
    return world, encoder, reference, start


def test_greedy_objective_rises_over_its_inner_steps(tiny_G):
    world, encoder, reference, start = setup(tiny_G)
    a, trace = exploration.greedy_actions(world, encoder, reference, start, steps=5, lr=0.5, k=K)
    assert len(trace) == 6 and trace[-1] > trace[0], trace
    assert a.shape == start.shape and a.abs().max() <= 1
    # the explorer knew the world's next noise: the step it chose lands on the objective's last
    # value
    with torch.no_grad():
        obs = world.step(a)[1]["next_obs"]
        objective = exploration.apt_objective(encoder(obs), reference, K).item()
        assert math.isclose(objective, trace[-1], rel_tol=1e-4)


def test_greedy_prior_keeps_its_latents_in_the_ball(tiny_G):
    world, encoder, reference, start = setup(tiny_G)
    budget = float(tiny_G.latent_dim)
    eps = world.peek_noise()  # (N, d): the noise of the next step

    def step(a):
        return latent_step(world.z, a, eps, world.cfg)  # (N, d)
    z0 = step(torch.zeros_like(start))  # (N, d)
    gain = step(torch.ones_like(start)) - z0  # (N, d): dz_t+1 / da
    closest = step((-z0 / gain).clamp(-1, 1)).pow(2).sum(1)  # (N,) the least ||z_t+1||^2 reachable
    a, _ = exploration.greedy_actions(world, encoder, reference, start, steps=3, lr=0.5, k=K,
                                      max_sq_norm=budget)
    sq = world.step(a)[1]["z"].pow(2).sum(1)  # (N,)
    feasible = closest <= budget
    assert feasible.any() and a.abs().max() <= 1
    # alternating projections: approximate
    assert (sq[feasible] <= budget * (1 + 1e-2)).all(), (sq, budget)
    # else as close to the ball as the cube allows
    assert (sq[~feasible] <= closest[~feasible] * (1 + 1e-2)).all()


def test_latent_stats_under_the_prior():
    d, n, p = 64, 20000, 0.01
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    mean_sq, outside = exploration.latent_stats(z)
    assert abs(mean_sq - 1) < 4 * math.sqrt(2 / d / n)  # ||z||^2 / d has std sqrt(2 / d) a sample
    assert abs(outside - p) < 4 * math.sqrt(p * (1 - p) / n)  # binomial share outside the shell
    lo, hi = exploration.chi2_quantile(0.005, d), exploration.chi2_quantile(0.995, d)
    assert lo < d < hi


def fake_split(data, split, download=False):
    """60 random images of 10 classes in place of a real split (a different set per split)."""
    g = torch.Generator().manual_seed(len(split))
    x = torch.randint(0, 256, (60, 3, 32, 32), dtype=torch.uint8, generator=g)  # (60, 3, 32, 32)
    return x, torch.arange(60) % 10, [str(c) for c in range(10)]


def test_train_pairs_the_greedy_explorer_with_uniform_actions_and_reads_finished_runs_back(
        tmp_path, monkeypatch):
    """--train on the shipped embedded world, 2 updates: both explorers train and are probed, the
    greedy one's first guesses are the uniform ones (so the runs differ by the explorer only), and a
    finished run is not redone."""
    monkeypatch.chdir(tmp_path)
    cfg = exploration.Config(generator=GENERATOR, updates=2, seeds="0", jobs=1, greedy_steps=1,
                             extra="--batch-size 16 --num-envs 8 --warmup 2 --buffer-size 200",
                             device="cpu")
    monkeypatch.setattr("pretrain.load_split", fake_split)
    monkeypatch.setattr("runfiles.load_split", fake_split)  # the closing probe reads them again
    chosen = []
    real = exploration.greedy_actions
    monkeypatch.setattr(exploration, "greedy_actions",
                        lambda *a, **k: chosen.append(a[3].clone()) or real(*a, **k))
    drawn = {}  # explorer -> every uniform action batch its run drew (warm-up, then each update)
    uniform = exploration.pretrain.uniform_actions
    got = {}
    for e in ("random", "greedy-prior"):
        monkeypatch.setattr(exploration.pretrain, "uniform_actions",
                            lambda run, e=e: drawn.setdefault(e, []).append(uniform(run))
                            or drawn[e][-1])
        got[e] = exploration.train_with(cfg, e, 0)
    assert len(drawn["random"]) == len(drawn["greedy-prior"])  # warm-up steps, updates
    # the same stream
    assert all(torch.equal(a, b) for a, b in zip(drawn["random"], drawn["greedy-prior"]))
    for r in got.values():
        assert 0 <= r["val"] <= 100 and 0 <= r["test"] <= 100 and r["wall_s"] > 0
    assert len(chosen) == 2
    assert all(any(torch.equal(c, u) for u in drawn["greedy-prior"]) for c in chosen)
    runs = tmp_path / "runs"
    assert (runs / "explorer_greedy-prior_s0" / "encoder.pt").is_file()
    monkeypatch.setattr(exploration.pretrain, "train",
                        lambda *a: pytest.fail("a finished run was trained again"))
    assert exploration.train_with(cfg, "greedy-prior", 0) == got["greedy-prior"]


def test_a_failed_run_ends_the_benchmark_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "explorer_random_s0").mkdir(parents=True)  # interrupted, no checkpoint
    with pytest.raises(SystemExit) as stop:
        exploration.main(["--train", "--train-explorers", "random", "--seeds", "0", "--jobs", "1",
                          "--generator", GENERATOR, "--updates", "2", "--extra", TINY])
    message = str(stop.value.code)
    assert message.startswith("error: run runs/explorer_random_s0 failed: "), message
    assert "without a checkpoint" in message


def test_no_jobs_at_once_is_refused():
    with pytest.raises(SystemExit) as stop:
        exploration.main(["--train", "--jobs", "0"])
    assert str(stop.value.code) == "error: exploration.py needs jobs >= 1"


def test_more_neighbours_than_an_episode_has_frames_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        exploration.main(["--k", "40", "--extra", TINY, "--generator", GENERATOR])  # 8 x 4 frames
    assert "needs k < num_envs x horizon" in str(stop.value.code)
    assert not (tmp_path / "runs").exists()  # refused before any run started


# ---- the documented commands, end to end on a tiny budget ----------------------------------------
TABLE_ROW = re.compile(r"\| (\S+) \| ([0-9.]+) ± [0-9.]+ \|")  # explorer, pixels ratio (2 seeds)


def test_the_comparison_runs_each_seed_in_a_fresh_folder(tmp_path):
    """`python benchmarks/exploration.py` with two seeds in two processes and every explorer; run
    again, it trains anew in a new folder."""
    args = ["--seeds", "0,1", "--jobs", "2", "--updates", "10", "--episodes", "1", "--k", "4",
            "--curve-every", "10", "--greedy-steps", "1", "--greedy-reference", "16",
            "--explorers", ",".join(exploration.EXPLORERS), "--generator", GENERATOR,
            "--device", "cpu", "--extra", TINY]
    done = benchmark(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = dict(TABLE_ROW.findall(done.stdout))
    assert list(rows) == list(exploration.EXPLORERS), done.stdout
    assert rows["random"] == "1.000"  # the reference of every ratio
    runs = tmp_path / "runs"
    for seed in (0, 1):
        assert (runs / f"exploration_s{seed}" / "result.json").is_file()
        assert (runs / f"exploration_s{seed}" / "agent.pt").is_file()
    assert (runs / "exploration_curves.png").stat().st_size > 0
    # one seed in this process (the last flag wins)
    again = benchmark(*args, "--seeds", "0", "--jobs", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in runs.glob("exploration_s*")) == [
        "exploration_s0", "exploration_s0-2", "exploration_s1"]


def test_cost_times_a_greedy_step_against_a_world_update(tmp_path):
    done = benchmark("--cost", "--cost-envs", "8", "--greedy-steps", "1", "--greedy-reference",
                     "16", "--generator", GENERATOR, "--device", "cpu", "--extra", TINY,
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    times = [float(t) for t in re.findall(r"threads\): ([0-9.]+) s$", done.stdout, re.M)]
    assert len(times) == 2 and all(t > 0 for t in times), done.stdout
    assert "x as long" in done.stdout
    assert not (tmp_path / "runs").exists()  # it only times


def test_train_table_and_its_rerun_from_the_finished_runs(tmp_path):
    """--train with both explorers in two processes; the same command again reads both runs back
    and prints the same table."""
    args = ["--train", "--seeds", "0", "--updates", "3", "--greedy-steps", "1",
            "--greedy-reference", "16", "--k", "4", "--generator", GENERATOR, "--data", "embedded",
            "--device", "cpu", "--extra", TINY]
    done = benchmark(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout[done.stdout.index("| explorer |"):]
    for explorer in ("random", "greedy-prior"):
        assert f"| {explorer} | val |" in table and f"| {explorer} | test |" in table
        assert (tmp_path / "runs" / f"explorer_{explorer}_s0" / "result.json").is_file()
    again = benchmark(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout[again.stdout.index("| explorer |"):] == table
    assert sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir()) == [
        "explorer_greedy-prior_s0", "explorer_random_s0"]
