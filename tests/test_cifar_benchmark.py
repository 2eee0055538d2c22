"""Tests for benchmarks/cifar.py: the tables of finished runs, with differences paired by seed,
and the curves (fake result.json / metrics.csv files and tiny encoder snapshots, cnn width 4,
probed on a few random images); the launcher (finished runs skipped, interrupted ones resumed, a
failed one named); and every mode end to end on a tiny budget and a tiny image folder, in a
temporary folder (most of the file's two minutes on 2 CPU cores)."""
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import cifar  # noqa: E402
from common import parse_config  # noqa: E402
from evaluate import random_encoder  # noqa: E402
import evaluate  # noqa: E402

PROBES = {"palmup_e512": [0.50, 0.52, 0.47], "random_e512": [0.52, 0.53, 0.50],  # made up
          "genrep": [0.51, 0.55, 0.49], "genrep03": [0.56, 0.54, 0.52]}


def no_relaunch(monkeypatch) -> None:
    """Fail on any pretrain.py launch; other subprocesses (matplotlib's first font scan runs
    fc-list) still run."""
    real = cifar.subprocess.Popen

    def popen(cmd, *a, **k):
        if any("pretrain.py" in str(c) for c in cmd):
            pytest.fail("a finished run was launched again")
        return real(cmd, *a, **k)
    monkeypatch.setattr(cifar.subprocess, "Popen", popen)


@pytest.mark.parametrize("split", ["test", "val"])
def test_explore_prints_each_seed_and_the_difference_paired_by_seed(tmp_path, monkeypatch, capsys,
                                                                    split):
    monkeypatch.chdir(tmp_path)
    key = "linear_probe" if split == "test" else "linear_probe_val"
    for tag, probes in PROBES.items():
        for seed, p in enumerate(probes):
            run = tmp_path / "runs" / f"cifar_{tag}{'_test' if split == 'test' else ''}_s{seed}"
            run.mkdir(parents=True)
            (run / "result.json").write_text(json.dumps({key: p, "wall_time_s": 1.0}))
            if tag.endswith("e512"):
                (run / "metrics.csv").write_text("update,loss,spread_ratio,z_sq\n"
                                                 "10,3.0,1.0,1.0\n20,2.0,1.1,1.1\n")
    no_relaunch(monkeypatch)
    cifar.explore(parse_config(cifar.Config, ["--split", split]))
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if re.match(r"\| (Palm-up|random|GenRep)", line)}
    palmup = rows["Palm-up, exploring agent, 512 envs"]
    assert palmup[:3] == ["50.0", "52.0", "47.0"]
    assert palmup[3] == "49.7 ± 2.5"  # mean and sample std of 50, 52, 47
    assert palmup[4] == "-2.0 ± 1.0"  # differences -2, -1, -3 to the random world, seed by seed
    assert rows["random-policy world, 512 envs"][4] == "–"
    assert rows["GenRep, σ 0.3 (the sweep's best)"][4] == "2.3 ± 1.5"  # +4, +1, +2
    assert (tmp_path / "runs" / "cifar_explore_curves.png").stat().st_size > 0


# made up: test accuracy at updates 300, 600
BUDGET_ACC = {"palmup": {0: [0.40, 0.50], 1: [0.42, 0.53]},
              "random": {0: [0.41, 0.52], 1: [0.44, 0.53]},
              "genrep03": {0: [0.45, 0.55]}, "simclr": {0: [0.50, 0.60]}}


def fake_budget_runs(root: Path) -> None:
    """Finished budget runs, each with a real (tiny, untrained) encoder snapshot at updates 300
    and 600."""
    for tag, seeds in BUDGET_ACC.items():
        for seed in seeds:
            run = root / "runs" / f"cifar_budget_{tag}_s{seed}"
            run.mkdir(parents=True)
            (run / "result.json").write_text(json.dumps({"wall_time_s": 90.0 + seed * 30}))
            for update in (300, 600):
                torch.save({"kind": "encoder", "encoder": "cnn", "width": 4, "finished": True,
                            "config": {}, "state_dict": random_encoder("cnn", 4, seed).state_dict(),
                            "wall_time_s": 1.0, "update": update}, run / f"encoder_{update}.pt")


def test_budget_launches_each_run_once_to_the_largest_budget(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    seen = []
    monkeypatch.setattr(cifar, "launch", lambda jobs, cfg: seen.append((jobs, cfg.updates)))
    cifar.budget(parse_config(cifar.Config, ["--plot", str(tmp_path / "b.png")]))
    (jobs, updates), = seen
    assert updates == 4800
    flags = dict(jobs)
    runs = [("palmup", 0), ("palmup", 1), ("random", 0), ("random", 1), ("genrep03", 0),
            ("simclr", 0)]
    assert sorted(flags) == sorted(f"cifar_budget_{t}_s{s}" for t, s in runs)
    assert flags["cifar_budget_random_s1"] == ["--method", "random", "--ema", "0.9", "--mix", "0.8",
                                               "--seed", "1", "--snapshots",
                                               "300,600,1200,2400,4800", "--no-probe"]
    assert flags["cifar_budget_genrep03_s0"][:4] == ["--method", "genrep", "--genrep-sigma", "0.3"]


def test_budget_tables_pair_by_seed_cache_the_probes_and_draw_the_curve(tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.chdir(tmp_path)
    fake_budget_runs(tmp_path)
    no_relaunch(monkeypatch)
    loads, probes = [], []
    monkeypatch.setattr(cifar, "load_data", lambda data: loads.append(data) or "splits")

    def fake_probe(path, data, device):  # the made-up accuracy of the run and update; val: -0.1
        assert data == "splits"
        probes.append(path)
        tag, seed = path.parent.name.removeprefix("cifar_budget_").rsplit("_s", 1)
        test = BUDGET_ACC[tag][int(seed)][[300, 600].index(int(path.stem.split("_")[1]))]
        return {"val": test - 0.1, "test": test}
    monkeypatch.setattr(cifar, "probe_snapshot", fake_probe)
    cfg = parse_config(cifar.Config, ["--budgets", "300,600"])
    cifar.budget(cfg)
    assert len(probes) == 12 and loads == ["cifar10"]  # 6 runs x 2 snapshots; the data loaded once
    first = capsys.readouterr().out
    cifar.budget(cfg)
    # the second call reads every probe from its cache
    assert len(probes) == 12 and loads == ["cifar10"]
    out = capsys.readouterr().out
    assert out == first
    cache = tmp_path / "runs" / "cifar_budget_simclr_s0" / "probe_600.json"
    assert json.loads(cache.read_text())["test"] == 0.60
    val, test = out.split("test linear probe")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in test.splitlines() if line.startswith("| ")}
    # mean and sample std of 40, 42 and of 50, 53
    assert rows["Palm-up"] == ["0,1", "41.0 ± 1.4", "51.5 ± 2.1"]
    assert rows["random-policy world"] == ["0,1", "42.5 ± 2.1", "52.5 ± 0.7"]
    assert rows["GenRep, σ 0.3"] == ["0", "45.0", "55.0"]
    # differences -1, -2 and -2, 0
    assert rows["Palm-up − random (paired by seed)"] == ["0,1", "-1.5 ± 0.7", "-1.0 ± 1.4"]
    assert rows["cifar_budget_random_s1"] == ["2.0 min"]  # wall_time_s 120
    assert "| SimCLR, real images | 0 | 40.0 | 50.0 |" in val  # the validation table: test - 10
    assert (tmp_path / "runs" / "cifar_budget.png").stat().st_size > 0


def test_budget_curve_leaves_out_a_run_without_snapshots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_budget_runs(tmp_path)
    for snap in (tmp_path / "runs" / "cifar_budget_genrep03_s0").glob("encoder_*.pt"):
        snap.unlink()  # GenRep's run has not started
    monkeypatch.setattr(cifar, "launch", lambda jobs, cfg: None)
    monkeypatch.setattr(cifar, "load_data", lambda data: None)
    monkeypatch.setattr(cifar, "probe_snapshot", lambda path, *_: {"val": 0.5, "test": 0.5})
    figs = []
    monkeypatch.setattr(cifar, "save_png", lambda fig, path: figs.append(fig))
    cifar.budget(parse_config(cifar.Config, ["--budgets", "300,600"]))
    labels = [t.get_text() for t in figs[0].axes[0].get_legend().get_texts()]
    assert labels == ["Palm-up (2 seeds)", "random-policy world (2 seeds)",
                      "SimCLR, real images (1 seed)"]


def test_budget_recomputes_a_probe_when_its_snapshot_changes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_budget_runs(tmp_path)
    monkeypatch.setattr(cifar, "launch", lambda jobs, cfg: None)
    probes = []
    monkeypatch.setattr(cifar, "load_data", lambda data: None)
    monkeypatch.setattr(cifar, "probe_snapshot",
                        lambda path, *_: probes.append(path) or {"val": 0.5, "test": 0.5})
    cfg = parse_config(cifar.Config, ["--budgets", "300,600", "--plot", str(tmp_path / "b.png")])
    cifar.budget(cfg)
    snap = tmp_path / "runs" / "cifar_budget_palmup_s1" / "encoder_600.pt"
    snap.write_bytes(snap.read_bytes() + b"\0")  # a resumed run rewrote it
    cifar.budget(cfg)
    assert probes[12:] == [Path("runs/cifar_budget_palmup_s1/encoder_600.pt")]


def test_probe_snapshot_scores_the_fixed_validation_tenth_and_the_test_split(tmp_path, monkeypatch):
    fake_budget_runs(tmp_path)
    g = torch.Generator().manual_seed(0)
    train, test = [(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                    torch.arange(n) % 2) for n in (40, 10)]
    extracted, calls, real = [], [], cifar.linear_probe_features
    monkeypatch.setattr(cifar, "extract_features", lambda enc, x, dev: extracted.append(x)
                        or evaluate.extract_features(enc, x, dev))
    monkeypatch.setattr(cifar, "linear_probe_features",
                        lambda *a, **kw: calls.append(a) or real(*a, **kw))
    path = tmp_path / "runs" / "cifar_budget_palmup_s0" / "encoder_300.pt"
    acc = cifar.probe_snapshot(path, (train, test), "cpu")
    assert set(acc) == {"val", "test"} and all(0 <= v <= 1 for v in acc.values())
    # each image encoded once
    assert len(extracted) == 2 and extracted[0] is train[0] and extracted[1] is test[0]
    (f_fit, y_fit, f_val, y_val), (f_full, y_full, f_test, y_test) = calls
    # pretrain.py --probe-split val's tenth
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    encoder = evaluate.load_encoder(path, "cpu")[0]
    features = evaluate.extract_features(encoder, train[0][perm[:4]], "cpu")
    torch.testing.assert_close(f_val, features)  # the validation tenth: those very images' features
    assert torch.equal(y_val, train[1][perm[:4]]) and torch.equal(y_fit, train[1][perm[4:]])
    assert len(f_fit) == 36
    assert y_full is train[1] and len(f_full) == 40 and y_test is test[1] and len(f_test) == 10


def test_world_grid_launches_every_cell_and_lists_every_finished_seed(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.chdir(tmp_path)
    made_up = {("random", "0.8", 0): 0.50, ("palmup", "0.8", 0): 0.49,
               ("random", "0.95", 0): 0.52, ("palmup", "0.95", 0): 0.53,
               ("random", "0.95", 1): 0.51, ("palmup", "0.95", 1): 0.50}
    for (meth, ema, seed), p in made_up.items():
        run = tmp_path / "runs" / f"cifar_world_{meth}_ema{ema}_mix0.5_s{seed}"
        run.mkdir(parents=True)
        (run / "result.json").write_text(json.dumps({"linear_probe_val": p, "wall_time_s": 1.0}))
    launched = []
    monkeypatch.setattr(cifar, "launch", lambda jobs, cfg: launched.extend(jobs))
    cifar.world(parse_config(cifar.Config, ["--emas", "0.8,0.95", "--mixes", "0.5,0.8"]))
    assert len(launched) == 8  # 4 cells x 2 worlds
    assert all(["--probe-split", "val"] == f[-2:] for _, f in launched)
    assert dict(launched)["cifar_world_palmup_ema0.95_mix0.8_s0"][:6] == [
        "--method", "palmup", "--ema", "0.95", "--mix", "0.8"]
    lines = [line.split("|") for line in capsys.readouterr().out.splitlines()
             if re.match(r"\| 0\.", line)]
    rows = {tuple(c.strip() for c in cells[1:3]): [c.strip() for c in cells[3:-1]]
            for cells in lines}
    assert rows["0.8", "0.5"] == ["0", "50.0", "49.0", "50.0", "49.0", "-1.0"]
    assert rows["0.95", "0.5"] == ["0,1", "52.0, 51.0", "53.0, 50.0", "51.5 ± 0.7", "51.5 ± 2.1",
                                   "0.0 ± 1.4"]
    assert rows["0.8", "0.8"] == ["–"] * 6  # not run yet


@pytest.mark.parametrize("mode", ["budget", "world"])
def test_mode_help_says_what_the_mode_does_then_lists_its_flags(mode, capsys):
    with pytest.raises(SystemExit) as stop:
        cifar.main([mode, "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and f"cifar.py {mode}: " in out
    assert "--budget-seeds" in out and "--world-seeds" in out


def test_no_runs_at_once_is_refused_before_anything_starts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cifar.main(["world", "--parallel", "0"])  # launch would wait forever for a free slot
    assert str(stop.value.code) == "error: cifar.py needs parallel >= 1"
    assert not (tmp_path / "runs").exists()


# ---- the launcher --------------------------------------------------------------------------------
FAKE_PRETRAIN = '''import json, sys
from pathlib import Path
args = sys.argv[1:]
name = args[args.index("--name") + 1]
Path(f"call_{name}.json").write_text(json.dumps(args))
if name.endswith("bad"):
    sys.exit("error: the loss diverged at update 7")
(Path("runs") / name).mkdir(exist_ok=True)
(Path("runs") / name / "result.json").write_text("{}")
'''


def test_launch_skips_finished_runs_resumes_interrupted_ones_and_names_a_failed_one(
        tmp_path, monkeypatch, capsys):
    """A stand-in pretrain.py records each command: the finished run is not launched, the
    interrupted one gets --resume, one stopped before its first checkpoint is not launched, and the
    failures end the command, after the others ran, in one line naming each run (and its log)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "pretrain.py").write_text(FAKE_PRETRAIN)
    monkeypatch.setattr(cifar, "ROOT", tmp_path / "fake")
    for name, file in (("t_done", "result.json"), ("t_stopped", "ckpt.pt"), ("t_early", "")):
        (tmp_path / "runs" / name).mkdir(parents=True)
        if file:
            (tmp_path / "runs" / name / file).write_text("")
    cfg = parse_config(cifar.Config, ["--parallel", "2", "--extra", "--width 4"])
    names = ("t_done", "t_stopped", "t_early", "t_bad", "t_new")
    with pytest.raises(SystemExit) as stop:
        cifar.launch([(name, ["--seed", "0"]) for name in names], cfg)
    assert str(stop.value.code) == (
        "error: run runs/t_early failed: it stopped before its first checkpoint (no ckpt.pt, no "
        "result.json): remove runs/t_early to train it anew; run runs/t_bad failed: error: the "
        "loss diverged at update 7 (runs/t_bad.log)")
    assert not (tmp_path / "call_t_done.json").exists()
    assert not (tmp_path / "call_t_early.json").exists()
    stopped = json.loads((tmp_path / "call_t_stopped.json").read_text())
    assert stopped[-4:] == ["--width", "4", "--resume", "runs/t_stopped"]
    new = json.loads((tmp_path / "call_t_new.json").read_text())
    assert new[:2] == ["--name", "t_new"] and "--resume" not in new  # launched after the failure
    assert "t_bad: FAILED (runs/t_bad.log)" in capsys.readouterr().out


# ---- every mode, end to end on a tiny budget -----------------------------------------------------
GENERATOR = str(ROOT / "checkpoints" / "embedded_gan.pt")
TINY = "--batch-size 16 --num-envs 8 --warmup 2 --buffer-size 400 --horizon 4 --apt-k 4"


@pytest.fixture(scope="session")
def images() -> Path:
    """A tiny ImageFolder with the embedded generator's classes (0-9): 5 train and 2 test random
    images each. It lives at one fixed path with fixed file times, so that data.py's cache of it
    (keyed by path and listing, in data/) is written once and reused by every later session."""
    from PIL import Image
    root = Path(tempfile.gettempdir()) / "palmup-cifar-smoke-images"
    if (root / "done").is_file():
        return root
    g = torch.Generator().manual_seed(0)
    tmp = root.with_name(f"{root.name}.{os.getpid()}")
    for split, n in (("train", 5), ("test", 2)):
        for c in range(10):
            (tmp / split / str(c)).mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (32, 32, 3), dtype=torch.uint8, generator=g)
                path = tmp / split / str(c) / f"{i}.png"
                Image.fromarray(pixels.numpy()).save(path)
                os.utime(path, ns=(1_600_000_000 * 10 ** 9,) * 2)
    (tmp / "done").write_text("")
    try:
        tmp.rename(root)
    except OSError:  # another session made it meanwhile: use theirs
        pass
    return root


def cifar_py(*args, cwd: Path) -> subprocess.CompletedProcess:
    """`python benchmarks/cifar.py args` in the folder cwd, one torch thread per run."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "cifar.py"), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    logs = "".join(p.read_text()[-1500:] for p in (cwd / "runs").glob("*.log"))
    assert done.returncode == 0, done.stderr[-3000:] + logs
    return done


def tiny(images: Path, *args) -> list:
    """A mode's command with the tiny world, data and budget; two runs at once."""
    return [*args, "--data", images, "--generator", GENERATOR, "--updates", "2", "--device", "cpu",
            "--parallel", "2", "--extra", TINY]


def table_rows(out: str) -> dict:
    """{first cell: the other cells} of every Markdown table row in out."""
    return {cells[1].strip(): [c.strip() for c in cells[2:-1]]
            for cells in (line.split("|") for line in out.splitlines() if line.startswith("| "))}


def test_sweep_command(tmp_path, images):
    out = cifar_py(*tiny(images, "sweep", "--knobs", "width"), cwd=tmp_path).stdout
    rows = table_rows(out)
    assert re.fullmatch(r"[0-9.]+", rows["defaults"][1]) and rows["width"][0] == "64", out
    assert (tmp_path / "runs" / "cifar_sweep_width64" / "result.json").is_file()


def test_table_command(tmp_path, images):
    out = cifar_py(*tiny(images, "table", "--seeds", "0"), cwd=tmp_path).stdout
    walls, probes = out.split("test top-1")  # cifar.py's table of wall times, evaluate.py's table
    rows = table_rows(walls)
    assert all(m in table_rows(probes) for m in cifar.METHODS), out
    assert all(re.fullmatch(r"[0-9.]+ min", rows[m][0]) for m in cifar.METHODS), out
    assert (tmp_path / "runs" / "cifar_table.png").stat().st_size > 0  # evaluate.py's chart


def test_explore_command(tmp_path, images):
    out = cifar_py(*tiny(images, "explore", "--seeds", "0"), cwd=tmp_path).stdout
    rows = table_rows(out)
    assert re.fullmatch(r"[0-9.]+", rows["Palm-up, exploring agent, 512 envs"][0]), out
    assert (tmp_path / "runs" / "cifar_explore_curves.png").stat().st_size > 0


def test_budget_command(tmp_path, images):
    args = tiny(images, "budget", "--budgets", "1,2", "--budget-seeds", "0")
    out = cifar_py(*args, cwd=tmp_path).stdout
    assert all(re.fullmatch(r"[0-9.]+", v) for v in table_rows(out)["SimCLR, real images"][1:]), out
    assert (tmp_path / "runs" / "cifar_budget_palmup_s0" / "encoder_1.pt").is_file()
    assert (tmp_path / "runs" / "cifar_budget.png").stat().st_size > 0


def test_world_command(tmp_path, images):
    out = cifar_py(*tiny(images, "world", "--emas", "0.8", "--mixes", "0.5"), cwd=tmp_path).stdout
    row = table_rows(out)["0.8"]
    assert row[:2] == ["0.5", "0"] and re.fullmatch(r"-?[0-9.]+", row[-1]), out
