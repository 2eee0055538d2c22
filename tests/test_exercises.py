"""Tests for exercises/: every check passes on a reference solution built from the project's own
functions, and fails with one helpful message on the untouched stub (skipped once a student edited it).
Expensive parts get tiny budgets (ex1: 10 pretraining updates) or fake run folders (ex5, ex6): ~20 s."""
import ast
import dataclasses
import importlib.util
import inspect
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import agent
import pretrain
import world
from common import ROOT

spec = importlib.util.spec_from_file_location("exercise_check", ROOT / "exercises" / "check.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)

TINY_EX1 = ["--updates", "10", "--batch-size", "32", "--num-envs", "8", "--warmup", "4", "--probe-images", "1000"]


def run(n, module, capsys, **options):
    """-> (passed, printed text) of check n on `module`."""
    ok = check.run_check(n, module, **options)
    return ok, capsys.readouterr().out


# ---- the shipped stubs ---------------------------------------------------------------------------------------------
def untouched(n, module) -> bool:
    """Is exercise n still as shipped? (Students edit these files; the stub tests then no longer apply.)"""
    if n == 4:  # the bug: the TD target is computed outside torch.no_grad()
        return "\n        f2 = encoder(next_obs)" in inspect.getsource(module.ExerciseSAC.update)
    if n == 6:
        return module.PREDICTION == ""
    fn = {1: "info_nce", 2: "apt_reward", 3: "transition", 5: "sample_pairs"}[n]
    return "raise NotImplementedError" in inspect.getsource(getattr(module, fn))


@pytest.mark.parametrize("n, words", [
    (1, ["NOT DONE YET", "info_nce", "cross-entropy", "check.py 1"]),
    (2, ["NOT DONE YET", "apt_reward", "own neighbour", "check.py 2"]),
    (3, ["NOT DONE YET", "transition", "variance-preserving", "check.py 3"]),
    (4, ["NOT YET", "gradients in the encoder", "Fig. 1C", "agent.SAC.update"]),
    (5, ["NOT DONE YET", "sample_pairs", "SAME episode", "check.py 5"]),
    (6, ["NOT YET", "PREDICTION", "ex6_ablation.py"]),
])
def test_untouched_stub_fails_with_one_helpful_message(n, words, capsys):
    module = check.load_exercise(n)
    if not untouched(n, module):
        pytest.skip(f"exercises/{check.FILES[n]} was edited: this test is for the shipped stub")
    with pytest.raises(SystemExit) as exit_info:
        check.main([str(n)])  # the real command line; every stub fails before it writes anything
    out = capsys.readouterr().out
    assert exit_info.value.code == 1
    assert "PASSED" not in out and "Traceback" not in out and "ERROR" not in out
    assert sum(line.startswith(("NOT", "ERROR")) for line in out.splitlines()) == 1  # one message
    for word in words:
        assert word in out, (word, out)


def test_bad_command_line_prints_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        check.main(["7"])
    assert "usage" in str(exit_info.value.code)


def test_stubs_never_import_the_answer():
    forbidden = {"ex1_infonce.py": "pretrain", "ex2_apt.py": "agent", "ex3_world.py": "world"}
    for name, module in forbidden.items():
        tree = ast.parse((ROOT / "exercises" / name).read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert module not in imported, f"{name} imports {module}, which holds the answer"


# ---- exercise 1: InfoNCE -------------------------------------------------------------------------------------------
def test_ex1_passes_with_the_project_loss_and_runs_pretraining(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/exercise1 goes here
    ok, out = run(1, SimpleNamespace(info_nce=pretrain.info_nce), capsys, budget=TINY_EX1, min_probe=0.0)
    assert ok, out
    assert "matches pretrain.info_nce" in out and "YOUR info_nce: 10 updates" in out
    assert (tmp_path / "runs" / "exercise1" / "result.json").exists()
    assert pretrain.info_nce is not None and pretrain.info_nce.__name__ == "info_nce"  # restored afterwards


def test_ex1_names_a_one_directional_loss(capsys):
    def rows_only(a, b, temperature):
        a, b = nn.functional.normalize(a, dim=1), nn.functional.normalize(b, dim=1)
        return nn.functional.cross_entropy(a @ b.T / temperature, torch.arange(len(a)))
    ok, out = run(1, SimpleNamespace(info_nce=rows_only), capsys)
    assert not ok and "symmetric" in out


# ---- exercise 2: APT reward ----------------------------------------------------------------------------------------
def test_ex2_passes_with_agent_apt_reward(capsys):
    ok, out = run(2, SimpleNamespace(apt_reward=lambda f, k=12: agent.apt_reward(f, k)), capsys)
    assert ok, out
    assert "matches agent.apt_reward" in out and "outlier" in out


@torch.no_grad()
def self_included(f, k=12):  # URLB's convention: the point is one of its own k neighbours
    return torch.log1p(torch.cdist(f, f).topk(k, dim=1, largest=False).values.mean(1))


@torch.no_grad()
def drops_zero_distances(f, k=12):  # excludes the point by distance, so also drops exact duplicates
    d = (f[:, None] - f[None]).norm(dim=-1)
    d[d == 0] = float("inf")
    return torch.log1p(d.topk(k, dim=1, largest=False).values.mean(1))


@pytest.mark.parametrize("wrong, words", [(self_included, "its own nearest neighbour"),
                                          (drops_zero_distances, "duplicate")])
def test_ex2_explains_the_self_exclusion_mistakes(wrong, words, capsys):
    ok, out = run(2, SimpleNamespace(apt_reward=wrong), capsys)
    assert not ok and words in out, out


# ---- exercise 3: the world's transition ----------------------------------------------------------------------------
def reference_transition(kind="vp"):
    def transition(G, z, y, action, eps, mix, ema, action_scale):
        z_next = world.latent_step(z, action, eps, world.WorldConfig(mix=mix, ema=ema, action_scale=action_scale, ema_kind=kind))
        return z_next, G(z_next, y)
    return SimpleNamespace(transition=transition)


def test_ex3_passes_with_world_latent_step(capsys, tiny_G):
    ok, out = run(3, reference_transition(), capsys, G=tiny_G)
    assert ok, out
    assert "equal world.py's" in out and "stationary Var(z)" in out


def test_ex3_explains_the_plain_ema(capsys, tiny_G):
    ok, out = run(3, reference_transition("plain"), capsys, G=tiny_G)
    assert not ok and "1 - rho" in out and "N(0, I)" in out


# ---- exercise 4: the SAC bug ---------------------------------------------------------------------------------------
class ReferenceSAC(agent.SAC):
    """The fix, from the project's own SAC: encode without gradient, then agent.SAC.update."""

    def update(self, encoder, obs, actions, rewards, next_obs):
        with torch.no_grad():
            f, f2 = encoder(obs), encoder(next_obs)
        return agent.SAC.update(self, f, actions, rewards, f2)


class LazySAC(agent.SAC):
    """A 'fix' that removes too much: the encoder is safe, but nothing learns."""

    def update(self, encoder, obs, actions, rewards, next_obs):
        return {}


def test_ex4_passes_with_the_project_sac(capsys):
    ok, out = run(4, SimpleNamespace(ExerciseSAC=ReferenceSAC), capsys)
    assert ok, out
    assert "did not move" in out and "a* = [0.500, -0.600]" in out


def test_ex4_rejects_a_fix_that_stops_learning(capsys):
    ok, out = run(4, SimpleNamespace(ExerciseSAC=LazySAC), capsys, one_step_updates=50)
    assert not ok and "no longer learns" in out


# ---- exercise 5: offsets -------------------------------------------------------------------------------------------
def reference_sampler(t, k, batch_size, generator):
    valid = (t[k:] == t[:-k] + k).nonzero() if k < len(t) else torch.zeros(0, 2, dtype=torch.long)  # (V, 2)
    if len(valid) == 0:
        raise ValueError(f"no pair {k} steps apart")
    i = torch.randint(len(valid), (batch_size,), generator=generator)
    return valid[i, 0], valid[i, 1]


def naive_sampler(t, k, batch_size, generator):  # ignores resets
    s = torch.randint(len(t) - k, (batch_size,), generator=generator)
    return s, torch.randint(t.shape[1], (batch_size,), generator=generator)


def test_ex5_checks_the_pairs_then_asks_for_the_experiment(capsys, tiny_G, tmp_path):
    collect = check.load_exercise(5).collect  # the given rollout recorder of the exercise file
    ref = SimpleNamespace(collect=collect, sample_pairs=reference_sampler)
    ok, out = run(5, ref, capsys, G=tiny_G, runs=tmp_path)
    assert not ok and "never across a reset" in out and "python exercises/ex5_offsets.py" in out
    folder = tmp_path / "exercise5"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"offsets": [1, 2, 4, 8], "linear_probe": [.3, .3, .3, .3],
                                                     "final_loss": [1, 2, 3, 3], "random_init_probe": .2}))
    (folder / "probe_vs_k.png").write_bytes(b"png")
    ok, out = run(5, ref, capsys, G=tiny_G, runs=tmp_path)
    assert ok, out
    assert "| 8 | 3 | 30.0 % |" in out


def test_ex5_catches_pairs_across_a_reset(capsys, tiny_G, tmp_path):
    ref = SimpleNamespace(collect=check.load_exercise(5).collect, sample_pairs=naive_sampler)
    ok, out = run(5, ref, capsys, G=tiny_G, runs=tmp_path)
    assert not ok and "a reset lies between them" in out


# ---- exercise 6: ablation ------------------------------------------------------------------------------------------
def fake_run(runs, name, accuracy, **changes):
    budget = dict(updates=100, batch_size=64, num_envs=16, probe_images=5000, name=name, overwrite=True)
    config = dataclasses.asdict(pretrain.Config(**(budget | changes)))
    (runs / name).mkdir(parents=True)
    torch.save({"kind": "encoder", "config": config}, runs / name / "encoder.pt")
    (runs / name / "result.json").write_text(json.dumps({"method": config["method"], "linear_probe": accuracy}))


def test_ex6_prints_the_table_for_three_runs_with_one_budget(capsys, tmp_path):
    fake_run(tmp_path, "exercise6_palmup", 0.30)
    fake_run(tmp_path, "exercise6_random", 0.27, method="random")
    fake_run(tmp_path, "exercise6_ema0", 0.22, ema=0.0)
    student = SimpleNamespace(PREDICTION="random", REASON="exploration finds the frames the encoder cannot tell apart")
    ok, out = run(6, student, capsys, runs=tmp_path)
    assert ok, out
    assert "| exercise6_ema0 | APT + SAC | 0.0 | 22.0 % | -8.0 |" in out and "'ema0' hurts more by 5.0" in out


def test_ex6_refuses_runs_with_different_budgets(capsys, tmp_path):
    fake_run(tmp_path, "exercise6_palmup", 0.30)
    fake_run(tmp_path, "exercise6_random", 0.27, method="random", updates=50)
    fake_run(tmp_path, "exercise6_ema0", 0.22, ema=0.0)
    ok, out = run(6, SimpleNamespace(PREDICTION="ema0", REASON="no persistence, no objects"), capsys, runs=tmp_path)
    assert not ok and "['updates']" in out and "same budget" in out
