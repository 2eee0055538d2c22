"""Tests for exercises/: every check passes on the project's reference solution (check.reference,
what `check.py N --reference` checks) and prints each number that a seed changes beside its
expected range; the untouched stubs fail with one helpful message (skipped once a student edited
them); the command line. The wrong answers each check must name: tests/test_exercise_mistakes.py.
Expensive parts get tiny budgets (ex1: 10 pretraining updates) or fake run folders (ex5, ex6):
~15 s."""
import ast
import importlib.util
import inspect
import json
from types import SimpleNamespace

import pytest

import agent
import pretrain
from test_exercise_mistakes import fake_run  # a finished run folder, as pretrain.py leaves it
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
    for argv in (["7"], ["1", "2"], ["1", "--seed"], ["1", "--seed", "-1"], ["--reference"],
                 ["1", "--sed", "2"]):
        with pytest.raises(SystemExit) as exit_info:
            check.main(argv)
        message = str(exit_info.value.code)
        assert message.startswith("error: ") and "\n" not in message, (argv, message)
        assert "usage" in message or "--seed needs" in message, (argv, message)


def test_help_lists_the_exercises_and_the_options(capsys):
    check.main(["--help"])
    out = capsys.readouterr().out
    assert all(check.FILES[n] in out for n in check.FILES)
    assert "--seed S" in out and "--reference" in out


def test_options_in_any_order():
    assert check.parse_args(["3"]) == (3, 0, False)
    assert check.parse_args(["--seed", "2", "5", "--reference"]) == (5, 2, True)
    assert check.parse_args(["--reference", "--seed=1", "1"]) == (1, 1, True)


def test_reference_from_the_command_line_passes_and_prints_the_ranges(capsys):
    with pytest.raises(SystemExit) as exit_info:
        check.main(["2", "--reference", "--seed", "1"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "PASSED: exercise 2" in out, out
    assert "reference solution of exercise 2, seed 1" in out and "evidence (seed 1)" in out
    assert out.count("(expected ") == 4 or out.count("no expected range measured yet") == 4, out


def test_expect_prints_the_value_beside_the_range(monkeypatch):
    monkeypatch.setitem(check.EXPECTED, "ex1 linear probe", (33.0, 41.0))
    text = check.expect("ex1 linear probe", 37.04, " %")
    assert text == f"37.0 % (expected 33–41 %, {len(check.SEEDS)} seeds)"
    assert "outside it" in check.expect("ex1 linear probe", 45.0, " %")
    monkeypatch.setitem(check.EXPECTED, "ex1 linear probe", None)
    assert "no expected range measured yet" in check.expect("ex1 linear probe", 37.0, " %")


def test_every_expected_range_is_ordered_and_is_what_a_check_prints():
    printed = {"ex1 first InfoNCE", "ex1 last InfoNCE", "ex1 linear probe", "ex2 outlier reward",
               "ex2 cluster reward", "ex2 spread batch", "ex2 tight batch", "ex4 policy error",
               "ex5 random-init probe"}
    printed |= {f"ex3 Var(z), rho {ema}" for ema in (0.0, 0.8, 0.95)}
    printed |= {f"ex5 {what}, k = {k}" for what in ("final InfoNCE", "linear probe")
                for k in (1, 2, 4, 8)}
    printed |= {f"ex6 {name}" for name in check.EX6_RUNS}
    assert set(check.EXPECTED) == printed
    for key, span in check.EXPECTED.items():
        assert span is None or (len(span) == 2 and span[0] <= span[1]), (key, span)


def test_stubs_never_import_the_answer():
    forbidden = {"ex1_infonce.py": "pretrain", "ex2_apt.py": "agent", "ex3_world.py": "world"}
    for name, module in forbidden.items():
        tree = ast.parse((ROOT / "exercises" / name).read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert module not in imported, f"{name} imports {module}, which holds the answer"


def test_exercise_files_keep_lines_within_100_characters():
    tests = [ROOT / "tests" / name for name in ("test_exercises.py", "test_exercise_mistakes.py")]
    for path in sorted((ROOT / "exercises").glob("*")) + tests:
        if path.suffix in (".py", ".md"):
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                assert len(line) <= 100, f"{path.name}:{i} has {len(line)} characters"


# ---- exercise 1: InfoNCE -----------------------------------------------------------------------
def test_ex1_passes_with_the_project_loss_and_runs_pretraining(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/exercise1 goes here
    ok, out = run(1, check.reference(1), capsys, budget=TINY_EX1, min_probe=0.0, seed=3)
    assert ok, out
    assert "matches pretrain.info_nce" in out and "YOUR info_nce: 10 updates" in out
    assert "seed 3" in out and out.count("(expected") + out.count("measured yet") == 3, out
    config = json.loads((tmp_path / "runs" / "exercise1" / "result.json").read_text())["config"]
    assert config["seed"] == 3  # --seed reaches the run
    assert pretrain.info_nce is not None and pretrain.info_nce.__name__ == "info_nce"  # restored


def test_ex1_takes_a_fresh_run_folder_when_the_last_one_exists(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert check.fresh_name("exercise1") == "exercise1"
    (tmp_path / "runs" / "exercise1").mkdir(parents=True)
    (tmp_path / "runs" / "exercise1-2").mkdir()
    assert check.fresh_name("exercise1") == "exercise1-3"


# ---- exercise 2: APT reward --------------------------------------------------------------------
def test_ex2_passes_with_agent_apt_reward(capsys):
    ok, out = run(2, check.reference(2), capsys)
    assert ok, out
    assert "matches agent.apt_reward" in out and "outlier" in out


def test_ex2_evidence_follows_the_seed(capsys):
    outs = [run(2, check.reference(2), capsys, seed=seed)[1] for seed in (0, 1)]
    evidence = [out.split("evidence")[1] for out in outs]
    assert evidence[0] != evidence[1]  # other random batches, other numbers


# ---- exercise 3: the world's transition --------------------------------------------------------
def test_ex3_passes_with_world_latent_step(capsys, tiny_G):
    ok, out = run(3, check.reference(3), capsys, G=tiny_G)
    assert ok, out
    assert "equal world.py's" in out and "stationary Var(z)" in out
    assert out.count("rho = ") == 3


# ---- exercise 4: the SAC bug -------------------------------------------------------------------
def test_ex4_passes_with_the_project_sac(capsys):
    ok, out = run(4, check.reference(4), capsys)
    assert ok, out
    assert "did not move" in out and "same critic target" in out and "one update" in out
    assert "a* = [0.500, -0.600]" in out and "largest |error|" in out


def test_ex4_reference_fix_is_what_the_stub_needs():
    """The reference differs from agent.SAC only in encoding the frames without gradient."""
    cls = check.reference(4).ExerciseSAC
    assert issubclass(cls, agent.SAC) and "torch.no_grad()" in inspect.getsource(cls.step)


# ---- exercise 5: offsets -----------------------------------------------------------------------
def test_ex5_checks_the_pairs_then_asks_for_the_experiment(capsys, tiny_G, tmp_path):
    ref = check.reference(5)
    ok, out = run(5, ref, capsys, G=tiny_G, runs=tmp_path)
    assert not ok and "never across a reset" in out and "python exercises/ex5_offsets.py" in out
    assert "anchors are uniform" in out
    folder = tmp_path / "exercise5"
    folder.mkdir()
    results = {"offsets": [1, 2, 4, 8], "linear_probe": [.3, .3, .3, .3],
               "final_loss": [1, 2, 3, 3], "random_init_probe": .2, "seed": 2}
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "probe_vs_k.png").write_bytes(b"png")
    ok, out = run(5, ref, capsys, G=tiny_G, runs=tmp_path)
    assert ok, out
    assert "| 8 | 3.00 (" in out and "| 30.0 % (" in out and "seed 2" in out
    assert "random-init encoder: 20.0 % (" in out


def test_ex5_reference_runs_the_experiment_with_its_seed(capsys, tiny_G, tmp_path):
    calls = []

    def experiment(seed, out, sampler):  # what ex5_offsets.experiment does, without training
        calls.append((seed, sampler))
        out.mkdir(parents=True)
        results = {"offsets": [1, 2, 4, 8], "linear_probe": [.3] * 4, "final_loss": [2.0] * 4,
                   "seed": seed}
        (out / "results.json").write_text(json.dumps(results))
        (out / "probe_vs_k.png").write_bytes(b"png")
    ref = check.reference(5)
    ref.experiment = experiment
    ok, out = run(5, ref, capsys, G=tiny_G, runs=tmp_path, seed=2, experiment=True,
                  folder=tmp_path / "ref")
    assert ok, out
    assert calls == [(2, check.reference_sampler)] and "seed 2" in out


def test_ex5_script_takes_a_seed_and_refuses_other_arguments():
    script = check.load_exercise(5)
    for argv in (["--seed"], ["--seed", "x"], ["7"]):
        with pytest.raises(SystemExit) as exit_info:
            script.main(argv)
        assert "usage" in str(exit_info.value.code)
    assert "seed" in inspect.signature(script.experiment).parameters


# ---- exercise 6: ablation ----------------------------------------------------------------------
def three_runs(runs, suffix="", accuracies=(0.30, 0.27, 0.22), **changes):
    fake_run(runs, f"exercise6_palmup{suffix}", accuracies[0], **changes)
    fake_run(runs, f"exercise6_random{suffix}", accuracies[1], method="random", **changes)
    fake_run(runs, f"exercise6_ema0{suffix}", accuracies[2], ema=0.0, **changes)


STUDENT = SimpleNamespace(PREDICTION="random",
                          REASON="exploration finds the frames the encoder cannot tell apart")


def test_ex6_prints_the_table_for_three_runs_with_one_budget(capsys, tmp_path):
    three_runs(tmp_path)
    ok, out = run(6, STUDENT, capsys, runs=tmp_path)
    assert ok, out
    assert "| exercise6_ema0 | APT + SAC | 0.0 | 22.0 % (" in out and "| -8.0 |" in out
    assert "'ema0' hurts more by 5.0" in out


def test_ex6_reads_the_newest_finished_set(capsys, tmp_path):
    three_runs(tmp_path)
    three_runs(tmp_path, "-2", (0.40, 0.30, 0.35), seed=1)
    fake_run(tmp_path, "exercise6_palmup-3", 0.5)  # a third set, interrupted after one run
    ok, out = run(6, STUDENT, capsys, runs=tmp_path)
    assert ok, out
    assert "exercise6_*-2" in out and "| exercise6_random-2 | uniform random" in out
    assert "'random' hurts more by 5.0" in out and "seed 1" in out


def test_ex6_reference_trains_a_set_with_its_seed(capsys, tmp_path):
    def train(seed, runs):  # what ex6_ablation.train does, without training
        three_runs(runs, check.load_exercise(6).fresh_suffix(runs), seed=seed)
    ref = check.reference(6)
    ref.train = train
    ok, out = run(6, ref, capsys, runs=tmp_path, seed=2, experiment=True)
    assert ok, out
    assert "seed 2" in out and (tmp_path / "exercise6_ema0").is_dir()


def test_ex6_script_picks_a_fresh_set_of_run_names_and_takes_a_seed(tmp_path):
    script = check.load_exercise(6)
    assert script.fresh_suffix(tmp_path) == ""
    (tmp_path / "exercise6_ema0").mkdir()
    assert script.fresh_suffix(tmp_path) == "-2"
    assert "--seed" not in script.BUDGET  # train(seed) adds it
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--seed", "x"])
    assert "usage" in str(exit_info.value.code)
