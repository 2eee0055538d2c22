"""Tests for exercises/: every check passes on a reference solution built from the project's own
functions, and fails with one helpful message on the untouched stub (skipped once a student edited
it). Expensive parts get tiny budgets (ex1: 10 pretraining updates) or fake run folders (ex5, ex6):
~20 s."""
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

TINY_EX1 = ["--updates", "10", "--batch-size", "32", "--num-envs", "8", "--warmup", "4",
            "--probe-images", "1000"]


def run(n, module, capsys, **options):
    """-> (passed, printed text) of check n on `module`."""
    ok = check.run_check(n, module, **options)
    return ok, capsys.readouterr().out


# ---- the shipped stubs -------------------------------------------------------------------------
def untouched(n, module) -> bool:
    """Is exercise n still as shipped? (Students edit these files; the stub tests then no longer
    apply.)"""
    if n == 4:  # the bug: the TD target is computed outside torch.no_grad()
        return "\n        f2 = encoder(next_obs)" in inspect.getsource(module.ExerciseSAC.step)
    if n == 6:
        return module.PREDICTION == ""
    fn = {1: "info_nce", 2: "apt_reward", 3: "transition", 5: "sample_pairs"}[n]
    return "raise NotImplementedError" in inspect.getsource(getattr(module, fn))


@pytest.mark.parametrize("n, words", [
    (1, ["NOT DONE YET", "info_nce", "cross-entropy", "check.py 1"]),
    (2, ["NOT DONE YET", "apt_reward", "own neighbour", "check.py 2"]),
    (3, ["NOT DONE YET", "transition", "variance-preserving", "check.py 3"]),
    (4, ["NOT YET", "gradients in the encoder", "Fig. 1C", "agent.SAC.step"]),
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
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert module not in imported, f"{name} imports {module}, which holds the answer"


def test_exercise_files_keep_lines_within_100_characters():
    for path in sorted((ROOT / "exercises").glob("*")) + [ROOT / "tests" / "test_exercises.py"]:
        if path.suffix in (".py", ".md"):
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                assert len(line) <= 100, f"{path.name}:{i} has {len(line)} characters"


# ---- exercise 1: InfoNCE -----------------------------------------------------------------------
def test_ex1_passes_with_the_project_loss_and_runs_pretraining(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/exercise1 goes here
    ok, out = run(1, SimpleNamespace(info_nce=pretrain.info_nce), capsys, budget=TINY_EX1,
                  min_probe=0.0)
    assert ok, out
    assert "matches pretrain.info_nce" in out and "YOUR info_nce: 10 updates" in out
    assert (tmp_path / "runs" / "exercise1" / "result.json").exists()
    assert pretrain.info_nce is not None and pretrain.info_nce.__name__ == "info_nce"  # restored


def test_ex1_takes_a_fresh_run_folder_when_the_last_one_exists(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert check.fresh_name("exercise1") == "exercise1"
    (tmp_path / "runs" / "exercise1").mkdir(parents=True)
    (tmp_path / "runs" / "exercise1-2").mkdir()
    assert check.fresh_name("exercise1") == "exercise1-3"


def test_ex1_names_a_one_directional_loss(capsys):
    def rows_only(a, b, temperature):
        a, b = nn.functional.normalize(a, dim=1), nn.functional.normalize(b, dim=1)
        return nn.functional.cross_entropy(a @ b.T / temperature, torch.arange(len(a)))
    ok, out = run(1, SimpleNamespace(info_nce=rows_only), capsys)
    assert not ok and "symmetric" in out


def test_ex1_names_a_detached_input_without_crashing(capsys):
    def detached_a(a, b, temperature):  # the right value, but a never gets a gradient
        return pretrain.info_nce(a.detach(), b, temperature)
    ok, out = run(1, SimpleNamespace(info_nce=detached_a), capsys)
    assert not ok and "no gradient reaches a" in out and "ERROR" not in out, out
    assert sum(line.startswith(("NOT", "ERROR")) for line in out.splitlines()) == 1


# ---- exercise 2: APT reward --------------------------------------------------------------------
def test_ex2_passes_with_agent_apt_reward(capsys):
    ok, out = run(2, SimpleNamespace(apt_reward=lambda f, k=12: agent.apt_reward(f, k)), capsys)
    assert ok, out
    assert "matches agent.apt_reward" in out and "outlier" in out


@torch.no_grad()
def self_included(f, k=12):  # URLB's convention: the point is one of its own k neighbours
    return torch.log1p(torch.cdist(f, f).topk(k, dim=1, largest=False).values.mean(1))


@torch.no_grad()
def drops_zero_distances(f, k=12):  # excludes the point by distance, so also drops duplicates
    d = (f[:, None] - f[None]).norm(dim=-1)
    d[d == 0] = float("inf")
    return torch.log1p(d.topk(k, dim=1, largest=False).values.mean(1))


@pytest.mark.parametrize("wrong, words", [(self_included, "its own nearest neighbour"),
                                          (drops_zero_distances, "duplicate")])
def test_ex2_explains_the_self_exclusion_mistakes(wrong, words, capsys):
    ok, out = run(2, SimpleNamespace(apt_reward=wrong), capsys)
    assert not ok and words in out, out


# ---- exercise 3: the world's transition --------------------------------------------------------
def reference_transition(kind="vp"):
    def transition(G, z, y, action, eps, mix, ema, action_scale):
        cfg = world.WorldConfig(mix=mix, ema=ema, action_scale=action_scale, ema_kind=kind)
        z_next = world.latent_step(z, action, eps, cfg)
        return z_next, G(z_next, y)
    return SimpleNamespace(transition=transition)


def test_ex3_passes_with_world_latent_step(capsys, tiny_G):
    ok, out = run(3, reference_transition(), capsys, G=tiny_G)
    assert ok, out
    assert "equal world.py's" in out and "stationary Var(z)" in out


def test_ex3_explains_the_plain_ema(capsys, tiny_G):
    ok, out = run(3, reference_transition("plain"), capsys, G=tiny_G)
    assert not ok and "1 - rho" in out and "N(0, I)" in out


# ---- exercise 4: the SAC bug -------------------------------------------------------------------
class ReferenceSAC(agent.SAC):
    """The fix, from the project's own SAC: encode without gradient, then agent.SAC.step."""

    def update(self, encoder, obs, actions, rewards, next_obs):
        r = rewards
        if self.cfg.reward_norm:
            r = (r - r.mean()) / r.std().clamp_min(1e-8)  # (B,) as agent.SAC.update
        for _ in range(self.cfg.updates):
            self.step(encoder, obs, actions, r, next_obs)
        return {k: self.last[k] for k in ("critic_loss", "actor_loss", "alpha", "entropy", "q")}

    def step(self, encoder, obs, a, r, next_obs):
        with torch.no_grad():
            f, f2 = encoder(obs), encoder(next_obs)  # (B, D) each
        agent.SAC.step(self, f, a, r, f2)


class LazySAC(ReferenceSAC):
    """A 'fix' that removes too much: the encoder is safe, but nothing learns."""

    def update(self, encoder, obs, actions, rewards, next_obs):
        return {}


def wrong_target_sac(change):
    """ReferenceSAC whose critic target is changed: change(r, gamma, q1_t, q2_t, alpha, logp2)."""
    class WrongTarget(ReferenceSAC):
        def update(self, encoder, obs, actions, rewards, next_obs):
            self.step(encoder, obs, actions, rewards, next_obs)
            return {}

        def step(self, encoder, obs, a, r, next_obs):
            cfg, alpha = self.cfg, self.log_alpha.exp().detach()
            with torch.no_grad():
                f, f2 = encoder(obs), encoder(next_obs)  # (B, D) each
                a2, logp2, _ = self.policy(f2)  # (B, A), (B,)
                q1_t, q2_t = self.q(self.q1_target, self.q2_target, f2, a2)  # (B,), (B,)
                target = change(r, cfg.gamma, q1_t, q2_t, alpha, logp2)  # (B,)
            q1, q2 = self.q(self.q1, self.q2, f, a)  # (B,), (B,)
            critic_loss = nn.functional.mse_loss(q1, target) + nn.functional.mse_loss(q2, target)
            self.critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_opt.step()
            self.num_steps += 1
            self.last.update(critic_loss=critic_loss.detach(), target=target)
    return WrongTarget


def test_ex4_passes_with_the_project_sac(capsys):
    ok, out = run(4, SimpleNamespace(ExerciseSAC=ReferenceSAC), capsys)
    assert ok, out
    assert "did not move" in out and "same critic target" in out
    assert "a* = [0.500, -0.600]" in out


def test_ex4_rejects_a_fix_that_stops_learning(capsys):
    ok, out = run(4, SimpleNamespace(ExerciseSAC=LazySAC), capsys, one_step_updates=50)
    assert not ok and "no longer learns" in out


@pytest.mark.parametrize("change, words", [
    (lambda r, gamma, q1, q2, alpha, logp: r, "no bootstrap"),
    (lambda r, gamma, q1, q2, alpha, logp: r + gamma * (torch.min(q1, q2) + alpha * logp),
     "wrong sign"),
    (lambda r, gamma, q1, q2, alpha, logp: r + gamma * (torch.max(q1, q2) - alpha * logp),
     "torch.max"),
])
def test_ex4_names_a_changed_critic_target(change, words, capsys):
    ok, out = run(4, SimpleNamespace(ExerciseSAC=wrong_target_sac(change)), capsys,
                  one_step_updates=1)
    assert not ok and "critic's target" in out and words in out, out


def test_ex4_rejects_a_step_that_changes_the_networks_differently(capsys):
    class NoPolyak(ReferenceSAC):  # the right target, but the target critics never follow
        def step(self, encoder, obs, a, r, next_obs):
            saved = [p.clone() for p in (*self.q1_target.parameters(),
                                         *self.q2_target.parameters())]
            super().step(encoder, obs, a, r, next_obs)
            with torch.no_grad():
                targets = (*self.q1_target.parameters(), *self.q2_target.parameters())
                for p, old in zip(targets, saved):
                    p.copy_(old)
    ok, out = run(4, SimpleNamespace(ExerciseSAC=NoPolyak), capsys, one_step_updates=1)
    assert not ok and "q1_target" in out and "agent.SAC.step" in out, out


# ---- exercise 5: offsets -----------------------------------------------------------------------
def reference_sampler(t, k, batch_size, generator):
    if k < len(t):
        valid = (t[k:] == t[:-k] + k).nonzero()  # (V, 2)
    else:
        valid = torch.zeros(0, 2, dtype=torch.long)  # (0, 2)
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
    results = {"offsets": [1, 2, 4, 8], "linear_probe": [.3, .3, .3, .3],
               "final_loss": [1, 2, 3, 3], "random_init_probe": .2}
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "probe_vs_k.png").write_bytes(b"png")
    ok, out = run(5, ref, capsys, G=tiny_G, runs=tmp_path)
    assert ok, out
    assert "| 8 | 3 | 30.0 % |" in out


def test_ex5_catches_pairs_across_a_reset(capsys, tiny_G, tmp_path):
    ref = SimpleNamespace(collect=check.load_exercise(5).collect, sample_pairs=naive_sampler)
    ok, out = run(5, ref, capsys, G=tiny_G, runs=tmp_path)
    assert not ok and "a reset lies between them" in out


# ---- exercise 6: ablation ----------------------------------------------------------------------
def fake_run(runs, name, accuracy, ema=None, **changes):
    """A finished run folder as pretrain.py leaves it: encoder.pt with the nested config, and
    result.json."""
    budget = dict(updates=100, batch_size=64, num_envs=16, probe_images=5000, name=name)
    cfg = pretrain.Config(**(budget | changes))
    if ema is not None:
        cfg = dataclasses.replace(cfg, world=dataclasses.replace(cfg.world, ema=ema))
    config = dataclasses.asdict(cfg)
    (runs / name).mkdir(parents=True)
    torch.save({"kind": "encoder", "config": config}, runs / name / "encoder.pt")
    result = {"method": config["method"], "linear_probe": accuracy, "config": config}
    (runs / name / "result.json").write_text(json.dumps(result))


def three_runs(runs, suffix="", accuracies=(0.30, 0.27, 0.22), **changes):
    fake_run(runs, f"exercise6_palmup{suffix}", accuracies[0])
    fake_run(runs, f"exercise6_random{suffix}", accuracies[1], method="random", **changes)
    fake_run(runs, f"exercise6_ema0{suffix}", accuracies[2], ema=0.0)


STUDENT = SimpleNamespace(PREDICTION="random",
                          REASON="exploration finds the frames the encoder cannot tell apart")


def test_ex6_prints_the_table_for_three_runs_with_one_budget(capsys, tmp_path):
    three_runs(tmp_path)
    ok, out = run(6, STUDENT, capsys, runs=tmp_path)
    assert ok, out
    assert "| exercise6_ema0 | APT + SAC | 0.0 | 22.0 % | -8.0 |" in out
    assert "'ema0' hurts more by 5.0" in out


def test_ex6_reads_the_newest_finished_set(capsys, tmp_path):
    three_runs(tmp_path)
    three_runs(tmp_path, "-2", (0.40, 0.30, 0.35))
    fake_run(tmp_path, "exercise6_palmup-3", 0.5)  # a third set, interrupted after one run
    ok, out = run(6, STUDENT, capsys, runs=tmp_path)
    assert ok, out
    assert "exercise6_*-2" in out and "| exercise6_random-2 | uniform random" in out
    assert "'random' hurts more by 5.0" in out


def test_ex6_refuses_runs_with_different_budgets(capsys, tmp_path):
    three_runs(tmp_path, updates=50)
    student = SimpleNamespace(PREDICTION="ema0", REASON="no persistence, no objects")
    ok, out = run(6, student, capsys, runs=tmp_path)
    assert not ok and "['updates']" in out and "same budget" in out


def test_ex6_refuses_runs_with_different_agents(capsys, tmp_path):
    three_runs(tmp_path, sac=agent.SACConfig(gamma=0.9))
    ok, out = run(6, STUDENT, capsys, runs=tmp_path)
    assert not ok and "['sac_gamma']" in out and "same budget" in out


def test_ex6_script_picks_a_fresh_set_of_run_names(tmp_path):
    script = check.load_exercise(6)
    assert script.fresh_suffix(tmp_path) == ""
    (tmp_path / "exercise6_ema0").mkdir()
    assert script.fresh_suffix(tmp_path) == "-2"
