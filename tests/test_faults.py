"""Bad input and faults: each ends in one `error:` line (or one Ctrl-C line) and a non-zero exit
before any file is written, or is handled so that nothing is silently wrong (data cache, resume,
run folders, locks, divergence, evaluate's folders)."""
import csv, os, subprocess, sys

import pytest
import torch
from PIL import Image

import common
import data
import evaluate
import generator as gen
import pretrain
import runfiles
import world
from common import ROOT, ConfigError, parse_config, run_dir
from encoder import make_encoder
from tests.test_evaluate import coloured_images, save_ckpt

SHIPPED = str(ROOT / "checkpoints" / "embedded_gan.pt")
TINY = ["--updates", "12", "--batch-size", "16", "--num-envs", "8", "--warmup", "2",
        "--buffer-size", "2000", "--checkpoint-every", "5", "--generator", SHIPPED, "--no-probe"]
TINY_TRANSFER = ["--generator", SHIPPED, "--device", "cpu", "--encoders", "oracle", "--env-steps",
                 "64", "--num-envs", "8", "--warmup", "16", "--eval-every", "64",
                 "--eval-episodes", "4", "--stats-frames", "256", "--sac-hidden", "16"]


def image_folder(root, counts: dict, size=8, ext="png", splits=("train", "test")):
    """root/<split>/<class>/<i>.<ext>, class c filled with a colour of its own."""
    for split in splits:
        for j, (c, n) in enumerate(counts.items()):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                colour = (40 * j, 255 - 40 * j, 7 * i)
                Image.new("RGB", (size, size), colour).save(root / split / c / f"{i}.{ext}")
    return root


def cli_error(proc) -> str:
    """The single `error:` line of a failed command."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and lines and lines[-1].startswith("error:"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[-1]


def one_error_line(proc) -> str:
    """All of a failed command's stderr: one short `error:` line (no traceback, no crash)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode > 0 and len(lines) == 1 and lines[0].startswith("error:"), (
        proc.returncode, proc.stderr[-2000:])
    assert len(lines[0]) < 300, lines[0]
    return lines[0]


def run(script, *args, cwd):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=1200)  # a hang guard


def main_error(argv) -> str:
    """pretrain.main in this process -> its one-line `error:` message (sys.exit with a string)."""
    with pytest.raises(SystemExit) as e:
        pretrain.main(argv)
    msg = e.value.code
    assert isinstance(msg, str) and msg.startswith("error:") and "\n" not in msg, msg
    return msg


def files(root) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def contents(root) -> dict:
    """Every file under root with its bytes: what a refused command must leave as it was. A run's
    .lock is left out: it only carries the lock, whoever held it last."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.name != ".lock"}


# ---- 1. the ImageFolder cache ------------------------------------------------------------------
def test_folders_whose_paths_flatten_alike_never_share_a_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    a = image_folder(tmp_path / "col" / "x_y", {"a": 5, "b": 5})
    b = image_folder(tmp_path / "col" / "x" / "y", {"a": 1, "b": 1})
    assert len(data.load_split(str(a), "train")[0]) == 10
    assert len(data.load_split(str(b), "train")[0]) == 2


def test_an_edited_folder_is_read_anew(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    root = image_folder(tmp_path / "d", {"a": 2, "b": 2})
    assert data.load_split(str(root), "train")[2] == ["a", "b"]
    image_folder(root, {"c": 3}, splits=("train",))  # a new class folder
    x, y, classes = data.load_split(str(root), "train")
    assert classes == ["a", "b", "c"] and len(x) == 7


@pytest.mark.parametrize("ext", ["bmp", "tif", "ppm", "jpg"])
def test_every_format_pil_reads_loads(tmp_path, monkeypatch, ext):
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    root = image_folder(tmp_path / "d", {"a": 2, "b": 1}, size=40, ext=ext)
    x, y, classes = data.load_split(str(root), "test")
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [0, 0, 1] and classes == ["a", "b"]


def test_an_unreadable_image_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    root = image_folder(tmp_path / "d", {"a": 2})
    (root / "train" / "a" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        data.load_split(str(root), "train")


# ---- 2. a folder with train/ only --------------------------------------------------------------
def test_a_folder_without_test_split_is_an_error_before_any_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    root = image_folder(tmp_path / "only_train", {"a": 10, "b": 10}, splits=("train",))
    msg = main_error(["--method", "none", "--data", str(root), "--name", "x"])
    assert "no test/" in msg and not (tmp_path / "runs").exists()
    result = pretrain.main(["--method", "none", "--data", str(root), "--name", "v",
                            "--probe-split", "val"])
    assert 0 <= result["linear_probe_val"] <= 1  # the validation split stays available


# ---- 3. resume ---------------------------------------------------------------------------------
def crash_at(monkeypatch, step):
    """Ctrl-C as update `step` starts, whichever method runs; -> a function that undoes it."""
    real = {k: getattr(pretrain, k) for k in ("palmup_update", "baseline_update")}
    for k, fn in real.items():
        def update(run, logged, fn=fn):
            if run.step == step:
                raise KeyboardInterrupt
            return fn(run, logged)
        monkeypatch.setattr(pretrain, k, update)
    return lambda: [monkeypatch.setattr(pretrain, k, fn) for k, fn in real.items()]


def interrupted_run(monkeypatch, args, step=8) -> str:
    """Run pretrain.py with args, Ctrl-C at update `step`; -> its one Ctrl-C line."""
    restore = crash_at(monkeypatch, step)
    with pytest.raises(SystemExit) as stop:
        pretrain.main(args)
    restore()
    assert isinstance(stop.value.code, str) and "\n" not in stop.value.code, stop.value.code
    return stop.value.code


def metrics_rows(folder) -> list:
    """metrics.csv without its wall-clock column (the only one a resume may change)."""
    with open(folder / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "time_s"} for row in csv.DictReader(fh)]


def test_a_resumed_run_ends_with_the_same_weights_and_log_as_an_uninterrupted_one(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pretrain.main([*TINY, "--name", "whole"])
    line = interrupted_run(monkeypatch, [*TINY, "--name", "cut"])  # after the checkpoint at 5
    assert line.startswith("interrupted at update 8; continue from update 5 with: python "
                           "pretrain.py ")
    pretrain.main([*TINY, "--resume", "runs/cut"])  # --resume alone names the folder
    a, b = (torch.load(tmp_path / "runs" / n / "encoder.pt", weights_only=True)["state_dict"]
            for n in ("whole", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit: same process, same kernels
    whole, cut = (metrics_rows(tmp_path / "runs" / n) for n in ("whole", "cut"))
    assert whole and whole == cut  # the logged update of the first process survives the resume


def test_resume_refuses_what_would_not_continue_the_same_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    world_file = tmp_path / "g.pt"
    world_file.write_bytes((ROOT / "checkpoints" / "embedded_gan.pt").read_bytes())
    args = [*TINY, "--generator", world_file]
    interrupted_run(monkeypatch, [*args, "--name", "r"])
    assert (tmp_path / "runs" / "r" / "ckpt.pt").exists()
    kept = contents(tmp_path / "runs")
    msg = main_error([*args, "--name", "r"])  # the same command again: never resumed silently
    assert "runs/r exists: pass --resume runs/r to continue it, or another --name" in msg
    msg = main_error([*args, "--resume", "runs/r", "--method", "genrep"])
    assert "belongs to another experiment" in msg
    assert "--method 'palmup' there, 'genrep' here" in msg
    msg = main_error([*args, "--resume", "runs/r", "--width", "16"])
    assert "(--width 32 there, 16 here)" in msg
    msg = main_error([*args, "--resume", "runs/r", "--updates", "3"])
    assert "at update 5, past --updates 3" in msg
    msg = main_error([*args, "--resume", "runs/nowhere"])
    assert "runs/nowhere holds no checkpoint to resume (ckpt.pt)" in msg
    assert not (tmp_path / "runs" / "nowhere").exists()
    assert contents(tmp_path / "runs") == kept  # each refused before any file was written
    G = gen.load_generator(world_file)
    with torch.no_grad():
        G.out.bias.add_(0.1)  # another generator at the same path
    gen.save_generator(G, world_file, G.config, G.classes)
    assert "another generator file" in main_error([*args, "--resume", "runs/r"])
    ckpt = tmp_path / "runs" / "r" / "ckpt.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:5000])  # truncated
    assert "corrupt" in main_error([*args, "--resume", "runs/r"])


def test_an_interrupted_run_waits_for_resume_while_the_next_command_starts_anew(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    line = interrupted_run(monkeypatch, TINY)
    assert line.startswith("interrupted at update 8; continue from update 5 with: python "
                           "pretrain.py ")
    assert line.endswith(" --resume runs/palmup_s0")
    kept = contents(runs / "palmup_s0")
    assert pretrain.main(TINY)["updates"] == 12  # the same command: a new run beside it
    assert (runs / "palmup_s0-2" / "result.json").is_file()
    assert contents(runs / "palmup_s0") == kept  # the interrupted run untouched
    line = interrupted_run(monkeypatch, TINY, step=3)
    assert line == ("interrupted at update 3, before the first checkpoint (every 5 updates): "
                    "nothing to resume in runs/palmup_s0-3")
    assert "holds no checkpoint to resume" in main_error([*TINY, "--resume", "runs/palmup_s0-3"])
    assert pretrain.main([*TINY, "--resume", "runs/palmup_s0"])["updates"] == 12
    assert (runs / "palmup_s0" / "result.json").is_file()


# ---- 4, 5. run names and locks -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../escape", "/tmp/palmup_abs", ".", "a/b"])
def test_run_names_outside_runs_are_refused_before_any_file(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    assert "--name" in main_error([*TINY, "--name", name])
    assert list(tmp_path.iterdir()) == []


LOCK_HOLDER = """import fcntl, sys, time
fh = open(sys.argv[1], "a+")
fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RunLock locks with fcntl")
def test_a_second_process_on_the_same_run_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    interrupted_run(monkeypatch, [*TINY, "--name", "busy"])
    lock = tmp_path / "runs" / "busy" / ".lock"
    other = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(lock)],
                             stdout=subprocess.PIPE, text=True)
    try:  # another process holds the run's lock, as a second pretrain.py on it would
        assert other.stdout.readline().strip() == "locked"
        kept = contents(tmp_path / "runs")
        msg = main_error([*TINY, "--resume", "runs/busy"])
        assert "runs/busy is in use by" in msg and "lock file runs/busy/.lock" in msg
        assert contents(tmp_path / "runs") == kept
    finally:
        other.kill()
        other.wait()
    result = pretrain.main([*TINY, "--resume", "runs/busy"])  # a killed owner leaves no stale lock
    assert result["updates"] == 12


# ---- 6. divergence -----------------------------------------------------------------------------
def test_a_diverging_run_stops_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    msg = main_error(["--method", "genrep", "--lr", "1", "--max-weight", "3", "--updates", "40",
                      "--batch-size", "16", "--generator", SHIPPED, "--no-probe", "--name", "d"])
    assert "diverged" in msg and not (tmp_path / "runs" / "d" / "result.json").exists()


def test_a_nan_loss_or_a_loss_pinned_at_chance_is_caught(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = pretrain.Config(method="genrep", name="c", batch_size=16, generator=SHIPPED, probe=False)
    run = pretrain.Run(cfg, tmp_path / "runs" / "c")
    run.step = 200
    chance = float(torch.log(torch.tensor(16.0)))  # ln B: InfoNCE that tells no pair apart
    run.metrics = [{"update": u, "loss": chance} for u in range(110, 210, 10)]
    with pytest.raises(FloatingPointError, match="chance value"):
        runfiles.check_divergence(run, run.metrics[-1], 1.0)
    run.metrics[-1]["loss"] = 2.0  # one step that learns: not stuck
    runfiles.check_divergence(run, run.metrics[-1], 1.0)
    with pytest.raises(FloatingPointError, match="loss is nan at update 200"):
        runfiles.check_divergence(run, {"update": 200, "loss": float("nan")}, 1.0)
    with pytest.raises(FloatingPointError, match="an encoder weight reached inf"):
        runfiles.check_divergence(run, run.metrics[-1], float("inf"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("method", ["palmup", "genrep"])
def test_diverging_features_stop_with_one_short_line(tmp_path, monkeypatch, method):
    """Weights gone to inf make NaN features: the next logged update (10) stops on a NaN loss."""
    monkeypatch.chdir(tmp_path)
    real = pretrain.encoder_step

    def blow_up(run, *a, **k):  # what a far too large step does to the weights
        out = real(run, *a, **k)
        with torch.no_grad():
            next(run.model.encoder.parameters()).fill_(float("inf"))
        return out
    monkeypatch.setattr(pretrain, "encoder_step", blow_up)
    msg = main_error([*TINY, "--method", method, "--name", "x"])
    assert "loss is nan at update 10" in msg and len(msg) < 200 and "tensor" not in msg.lower()
    assert not (tmp_path / "runs" / "x" / "encoder.pt").exists()


# ---- 7. generator.py --eval on data with another class count -----------------------------------
def test_gan_test_checks_the_class_count(tmp_path, tiny_G, monkeypatch):
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    root = image_folder(tmp_path / "two", {"a": 2, "b": 2})  # tiny_G has 3 classes
    with pytest.raises(ValueError, match="class lists differ"):
        gen.gan_test(tiny_G, str(root), n=6, epochs=1)


# ---- 8. one line instead of a traceback, before any file ---------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--width", "0"], "needs 1 <= width <= 1024"),
    (["--checkpoint-every", "0"], "needs checkpoint_every >= 1"),
    (["--apt-k", "0"], "needs 1 <= apt_k < batch_size"),
    (["--lr", "inf"], "needs 0 < lr <= 1"),
    (["--name", "../up"], "--name"),
    (["--sac-gamma", "1"], "needs 0 <= gamma < 1"),
    (["--overwrite"], "unrecognized arguments: --overwrite"),
])
def test_bad_flags_fail_before_any_file(tmp_path, args, message):
    line = one_error_line(run("pretrain.py", *args, cwd=tmp_path))
    assert message in line and list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_one_line(tmp_path):
    assert "no CUDA GPU" in cli_error(run("pretrain.py", "--device", "cuda", cwd=tmp_path))


def test_a_generator_checkpoint_missing_a_field_is_named(tmp_path, tiny_G):
    path = tmp_path / "g.pt"
    gen.save_generator(tiny_G, path, {}, ["a", "b", "c"])
    ckpt = torch.load(path, weights_only=True)
    del ckpt["latent_dim"]
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="lacks latent_dim"):
        gen.load_generator(path)


def test_ctrl_c_during_the_probe_is_one_line_and_writes_no_result(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(pretrain, "split_probe", interrupted)
    args = ["--method", "genrep", "--updates", "2", "--batch-size", "16", "--generator", SHIPPED,
            "--probe-images", "100", "--checkpoint-every", "1", "--name", "p"]
    with pytest.raises(SystemExit) as stop:
        pretrain.main(args)
    assert stop.value.code == ("interrupted during the linear probe (runs/p/encoder.pt is complete: "
                               "python evaluate.py runs/p scores it); continue from update 1 with: "
                               f"python pretrain.py {' '.join(args)} --resume runs/p")
    out = tmp_path / "runs" / "p"
    assert (out / "encoder.pt").exists() and not (out / "result.json").exists()


def test_an_unwritable_runs_folder_is_one_line(tmp_path):
    (tmp_path / "runs").write_text("a file where the runs folder should be")
    line = cli_error(run("pretrain.py", "--method", "genrep", "--updates", "2", "--batch-size",
                         "16", "--no-probe", "--generator", SHIPPED, cwd=tmp_path))
    assert "runs" in line


# ---- 9. evaluate.py runs/* with a folder that holds no encoder ---------------------------------
def test_evaluate_skips_folders_without_an_encoder(tmp_path, monkeypatch, capsys):
    splits = (coloured_images(80), coloured_images(40, seed=1))
    monkeypatch.setattr(evaluate, "load_data", lambda data, download=False: splits)
    monkeypatch.setattr(evaluate, "CACHE", tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    (tmp_path / "runs" / "world").mkdir(parents=True)  # what `python world.py` leaves
    (tmp_path / "runs" / "world" / "filmstrip.png").write_bytes(b"png")
    good = save_ckpt(tmp_path / "runs" / "palmup_s0" / "encoder.pt", make_encoder("cnn", 8)).parent
    evaluate.main([tmp_path / "runs" / "world", good, "--device", "cpu", "--max-iter", "20"])
    out = capsys.readouterr()
    assert "skipping" in out.err and "world" in out.err and "| palmup | 1 |" in out.out


# ---- evaluate, transfer, world and agent: flags and outputs checked before any work ------------
def tiny_evaluation(tmp_path):
    """An encoder file outside any run folder and a 2-class image folder: evaluate.py's inputs, in
    seconds."""
    enc = save_ckpt(tmp_path / "enc" / "encoder.pt", make_encoder("cnn", 8))
    return enc, image_folder(tmp_path / "data", {"a": 6, "b": 6})


# ---- 10. --threads
@pytest.mark.parametrize("script", ["evaluate.py", "transfer.py"])
def test_too_many_threads_is_one_line_not_a_segfault(tmp_path, script):
    line = one_error_line(run(script, "--threads", "100000", "--device", "cpu", cwd=tmp_path))
    assert "threads" in line and list(tmp_path.iterdir()) == []
    common.check_threads(0, "x")  # the default
    common.check_threads(4 * (os.cpu_count() or 1), "x")  # the most
    with pytest.raises(ConfigError, match="threads"):
        common.check_threads(-1, "x")


# ---- 11. SAC's settings: refused by parse_config (SACConfig's rules), before any file
@pytest.mark.parametrize("flag, value, rule", [
    ("--sac-updates", "0", "updates >= 1"), ("--sac-gamma", "1.5", "0 <= gamma < 1"),
    ("--sac-gamma", "nan", "0 <= gamma < 1"), ("--sac-alpha", "-1", "0 <= alpha < inf"),
    ("--sac-alpha", "inf", "0 <= alpha < inf"),
    ("--sac-lr-actor", "nan", "learning rates in (0, inf)"),
    ("--sac-lr-critic", "0", "learning rates in (0, inf)"),
    ("--sac-lr-alpha", "-1", "learning rates in (0, inf)"), ("--sac-hidden", "0", "hidden >= 1"),
    ("--sac-tau", "0", "0 < tau <= 1"), ("--sac-policy-frequency", "0", "policy_frequency >= 1"),
    ("--sac-log-std-min", "3", "-inf < log_std_min < log_std_max < inf"),
    ("--sac-target-entropy-scale", "nan", "finite target_entropy_scale"),
])
def test_sac_refuses_settings_out_of_range(tmp_path, monkeypatch, flag, value, rule):
    monkeypatch.chdir(tmp_path)
    assert main_error([*TINY, "--name", "s", flag, value]) == (f"error: pretrain.py needs {rule} "
                                                              "(the --sac-* flags)")
    assert list(tmp_path.iterdir()) == []


def test_sac_accepts_the_edges_of_its_ranges():
    edges = ["--sac-alpha", "0", "--sac-gamma", "0", "--sac-tau", "1"]  # no entropy bonus,
    sac = parse_config(pretrain.Config, edges).sac  # one-step bandits, hard target copies
    assert (sac.alpha, sac.gamma, sac.tau) == (0, 0, 1)


def test_a_sac_rule_names_the_sac_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main_error([*TINY, "--sac-updates", "0"]).endswith("updates >= 1 (the --sac-* flags)")


def test_a_300_character_name_is_one_line(tmp_path):
    line = one_error_line(run("pretrain.py", *TINY, "--name", "a" * 300, cwd=tmp_path))
    assert "100 characters" in line
    assert list(tmp_path.iterdir()) == [] and run_dir("a" * 100).name == "a" * 100


@pytest.mark.parametrize("how", ["file", "read-only"])
@pytest.mark.parametrize("script", ["evaluate.py", "world.py", "transfer.py"])
def test_an_unwritable_runs_folder_stops_before_the_work(tmp_path, script, how):
    if how == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    enc, data = tiny_evaluation(tmp_path)
    if how == "file":  # root-proof: a file where the runs folder should be
        (tmp_path / "runs").write_text("not a folder")
        enc_args = [enc, "--out", "runs/chart.png"]
    else:
        enc = save_ckpt(tmp_path / "runs" / "r" / "encoder.pt", make_encoder("cnn", 8))
        enc_args = [enc]
    args = {"evaluate.py": [*enc_args, "--data", data, "--device", "cpu", "--max-iter", "5"],
            "world.py": ["--generator", SHIPPED, "--steps", "2", "--device", "cpu"],
            "transfer.py": TINY_TRANSFER}
    before = files(tmp_path)
    if how == "read-only":
        (tmp_path / "runs").chmod(0o555)
    try:
        line = one_error_line(run(script, *args[script], cwd=tmp_path))
    finally:
        (tmp_path / "runs").chmod(0o755)
    assert "runs" in line and ("not a folder" in line or "read-only" in line)
    assert files(tmp_path) == before


@pytest.mark.parametrize("script, kind", [("world.py", "file"), ("transfer.py", "file"),
                                          ("evaluate.py", "dir"), ("evaluate.py", "notes.md")])
def test_an_out_of_the_wrong_kind_is_one_line_and_nothing_is_written(tmp_path, script, kind):
    enc, data = tiny_evaluation(tmp_path)
    # notes.md: not a PNG
    out = tmp_path / {"file": "out", "dir": "chart.png", "notes.md": "notes.md"}[kind]
    out.mkdir() if kind == "dir" else out.write_text("keep me")
    args = {"world.py": ["--generator", SHIPPED, "--steps", "2", "--device", "cpu"],
            "transfer.py": TINY_TRANSFER,
            "evaluate.py": [enc, "--data", data, "--device", "cpu", "--max-iter", "5"]}[script]
    before = files(tmp_path)
    line = one_error_line(run(script, *args, "--out", out, cwd=tmp_path))
    assert "--out" in line and files(tmp_path) == before
    assert kind == "dir" or out.read_text() == "keep me"


@pytest.mark.parametrize("flag, value, message", [
    ("--sac-alpha", "-1", "needs 0 <= alpha < inf"),
    ("--sac-lr-actor", "nan", "needs learning rates in (0, inf)"),
    ("--sac-lr-critic", "-1", "needs learning rates in (0, inf)"),
    ("--seeds", "-1", "needs seeds in 0 .. 2**32 - 1"),
    ("--updates-per-step", "inf", "needs 0 <= updates_per_step < inf"),
    ("--ema", "1", "needs 0 <= ema < 1"),
])
def test_transfer_flags_out_of_range_are_one_line_before_any_file(tmp_path, flag, value, message):
    line = one_error_line(run("transfer.py", *TINY_TRANSFER, flag, value, cwd=tmp_path))
    assert message in line and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script", ["evaluate.py", "transfer.py"])
def test_a_nan_encoder_is_refused_at_load_naming_the_tensor(tmp_path, script):
    enc = make_encoder("cnn", 8)
    with torch.no_grad():
        enc[0].weight[0, 0, 0, 0] = float("nan")
    path = save_ckpt(tmp_path / "enc" / "encoder.pt", enc)
    data = image_folder(tmp_path / "data", {"a": 6, "b": 6})
    args = {"evaluate.py": [path, "--data", data, "--device", "cpu", "--max-iter", "5"],
            "transfer.py": [*TINY_TRANSFER, "--encoders", path]}[script]
    before = files(tmp_path)
    line = one_error_line(run(script, *args, cwd=tmp_path))
    assert str(path) in line and "0.weight" in line and files(tmp_path) == before


def test_a_hand_edited_width_is_one_line(tmp_path):
    path = save_ckpt(tmp_path / "encoder.pt", make_encoder("cnn", 8), width="8")
    assert "width '8'" in one_error_line(run("evaluate.py", path, "--device", "cpu", cwd=tmp_path))
    assert files(tmp_path) == {"encoder.pt"}


# ---- 12. world.py's pictures
@pytest.mark.parametrize("save, name", [(world.save_filmstrip, "filmstrip.png"),
                                        (world.save_gif, "rollout.gif")])
def test_a_kill_while_world_writes_leaves_the_previous_file(tmp_path, monkeypatch, save, name):
    (tmp_path / name).write_bytes(b"previous")

    def killed(self, fp, *args, **kwargs):
        open(fp, "wb").write(b"half")  # what a process killed mid-write leaves behind
        raise KeyboardInterrupt
    monkeypatch.setattr(Image.Image, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save(torch.zeros(3, 2, 3, 32, 32), tmp_path / name)
    assert (tmp_path / name).read_bytes() == b"previous" and files(tmp_path) == {name}


# ---- 13. world.py's flags, checked before the generator is loaded
@pytest.mark.parametrize("flag, value, message", [
    ("--action-scale", "inf", "0 < action_scale < inf"), ("--steps", "-1", "steps >= 1"),
    ("--num-envs", "100000", "1 <= num_envs <= 512"), ("--ema", "1", "0 <= ema < 1"),
])
def test_world_flags_out_of_range_are_one_line_before_loading(tmp_path, flag, value, message):
    missing = tmp_path / "no_generator.pt"  # loading it would fail: the flag must be refused first
    line = one_error_line(run("world.py", flag, value, "--generator", missing, cwd=tmp_path))
    assert message in line and list(tmp_path.iterdir()) == []


# ---- 14. outputs without --out go under runs/, never into checkpoints/
def test_evaluate_without_out_writes_under_runs_only(tmp_path, monkeypatch):
    splits = (coloured_images(80), coloured_images(40, seed=1))
    monkeypatch.setattr(evaluate, "load_data", lambda data, download=False: splits)
    monkeypatch.setattr(evaluate, "CACHE", tmp_path / "cache")
    monkeypatch.chdir(tmp_path)
    enc = save_ckpt(tmp_path / "path" / "to" / "enc.pt", make_encoder("cnn", 8))
    evaluate.main([enc, "--device", "cpu", "--max-iter", "20"])
    # nothing beside the encoder or in its parent
    assert files(tmp_path / "path") == {"to", "to/enc.pt"}
    assert (tmp_path / "runs" / "probe_embedded.png").is_file()
    assert len(list(tmp_path.glob("runs/probes/*.json"))) == 1

    def no_probe(*a, **k):
        raise AssertionError("the cached result should have been reused")
    monkeypatch.setattr(evaluate, "both_probes", no_probe)
    evaluate.main([enc, "--device", "cpu", "--max-iter", "20"])  # a rerun reuses the cache


def git_status(path: str) -> str:
    return subprocess.run(["git", "status", "--porcelain", "--", path], cwd=ROOT,
                          capture_output=True, text=True).stdout


def test_world_refuses_to_write_into_checkpoints():
    assert world.Config().out == "runs/world"
    before = git_status("checkpoints")
    missing = ROOT / "runs" / "no_generator.pt"  # were --out accepted, loading would fail first
    line = one_error_line(run("world.py", "--out", "checkpoints", "--generator", missing, cwd=ROOT))
    assert "checkpoints" in line and "shipped weights" in line
    assert git_status("checkpoints") == before


# ---- 15. the shipped generator, class lists, generator.py's own --overwrite --------------------
def test_the_readmes_generator_command_leaves_the_shipped_checkpoints_alone(tmp_path):
    folder = image_folder(tmp_path / "digits", {"a": 4, "b": 4, "c": 4})
    before = git_status("checkpoints")
    try:  # from the repository's root, as the README runs it; a tiny budget
        proc = run("generator.py", "--data", folder, "--steps", "3", "--batch-size", "8",
                   "--gan-test-epochs", "1", "--name", "test_gan_readme", cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert git_status("checkpoints") == before  # nothing under checkpoints/ changed
        out = ROOT / "runs" / "test_gan_readme"
        assert (out / "generator.pt").is_file() and (out / "generator.png").is_file()
        assert gen.load_generator(out / "generator.pt").classes == ["a", "b", "c"]
        again = run("generator.py", "--data", folder, "--steps", "3", "--name", "test_gan_readme",
                    cwd=ROOT)
        # a second run never replaces the first silently
        assert "exists: every training run gets a folder of its own" in cli_error(again)
    finally:
        import shutil
        shutil.rmtree(ROOT / "runs" / "test_gan_readme", ignore_errors=True)


@pytest.mark.parametrize("args, message", [
    (["--out", "checkpoints/embedded_gan.pt"], "--out checkpoints/embedded_gan.pt --overwrite"),
    (["--out", "checkpoints/new_gan.pt"], "the shipped generators: write under runs/"),
    (["--out", "checkpoints", "--overwrite"], "is a folder"),
])
def test_generator_writes_into_checkpoints_only_when_named_with_overwrite(tmp_path, args, message):
    folder = image_folder(tmp_path / "d", {"a": 2, "b": 2})
    before = git_status("checkpoints")
    assert message in cli_error(run("generator.py", "--data", folder, "--steps", "1", *args,
                                    cwd=ROOT))
    assert git_status("checkpoints") == before
    assert not (ROOT / "checkpoints" / "new_gan.pt").exists()


def test_ctrl_c_in_generator_training_keeps_what_was_trained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    folder = image_folder(tmp_path / "d", {"a": 4, "b": 4})
    real, calls = gen.d_loss, []

    def d_loss(*a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a)
    monkeypatch.setattr(gen, "d_loss", d_loss)
    cfg = gen.Config(data=str(folder), steps=50, batch_size=4, width=4, latent_dim=8)
    gen.train(cfg, tmp_path / "g.pt")
    # the two steps that were done
    assert gen.load_generator(tmp_path / "g.pt").config["steps"] == 2


def test_a_hand_edited_generator_checkpoint_is_one_line(tmp_path, tiny_G):
    path = tmp_path / "g.pt"
    gen.save_generator(tiny_G, path, {}, ["a", "b", "c"])
    ckpt = torch.load(path, weights_only=True)
    ckpt["latent_dim"] = "8"
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="malformed: latent_dim '8'"):
        gen.load_generator(path)


def test_pretrain_refuses_train_and_test_folders_of_different_classes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    missing = image_folder(tmp_path / "missing", {"a": 10, "b": 10, "c": 10}, splits=("train",))
    # b is missing: c's images would be scored as b
    image_folder(missing, {"a": 3, "c": 3}, splits=("test",))
    extra = image_folder(tmp_path / "extra", {"a": 10, "b": 10}, splits=("train",))
    image_folder(extra, {"a": 3, "b": 3, "z": 3}, splits=("test",))
    for root in (missing, extra):
        msg = main_error(["--method", "none", "--data", str(root), "--name", "x"])
        assert "class lists differ" in msg and not (tmp_path / "runs").exists()


def test_a_world_and_data_of_different_classes_are_refused(tmp_path, monkeypatch, tiny_G):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    three = image_folder(tmp_path / "three", {"a": 10, "b": 10, "c": 10})
    # the 10-class digit generator, 3-class data
    msg = main_error([*TINY, "--data", str(three), "--probe", "--name", "x"])
    assert "class lists differ" in msg and "'0', '1'" in msg and "'a', 'b', 'c'" in msg
    small = tmp_path / "three_gan.pt"
    gen.save_generator(tiny_G, small, {}, ["a", "b", "c"])
    # a 3-class world, digit data
    msg = main_error([*TINY, "--generator", small, "--probe", "--name", "y"])
    assert "class lists differ" in msg and not (tmp_path / "runs").exists()


# ---- 16. pretrain's flags, NaN files, a full disk, Ctrl-C while loading ------------------------
@pytest.mark.parametrize("args, message", [
    (["--probe-images", "1"], "needs probe_images == 0 or >= 10"),
    (["--lr", "1e12"], "needs 0 < lr <= 1"),
    (["--temperature", "1e-30"], "needs 1e-3 <= temperature <= 10"),
    (["--snapshots", "5,99"], "needs snapshots in 1..updates"),
    (["--snapshots", "five"], "--snapshots takes comma-separated update counts"),
    (["--ema", "1"], "needs 0 <= ema < 1"),
    (["--mix", "nan"], "needs 0 <= mix <= 1"),
    (["--max-weight", "inf"], "needs 0 < max_weight < inf"),
])
def test_pretrain_flags_out_of_range_stop_before_any_file(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert message in main_error([*TINY, "--name", "x", *args])
    assert not (tmp_path / "runs").exists()


def test_a_nan_generator_or_checkpoint_is_one_short_line(tmp_path, monkeypatch, tiny_G):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "nan_gan.pt"
    G = gen.load_generator(SHIPPED)
    with torch.no_grad():
        G.fc.weight[0, 0] = float("nan")
    gen.save_generator(G, bad, G.config, G.classes)
    msg = main_error([*TINY, "--generator", bad, "--name", "x"])
    assert "non-finite" in msg and "fc.weight" in msg and len(msg) < 300
    assert not (tmp_path / "runs").exists()
    interrupted_run(monkeypatch, [*TINY, "--name", "r"])
    ckpt_path = tmp_path / "runs" / "r" / "ckpt.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    next(iter(ckpt["model"].values())).fill_(float("nan"))
    torch.save(ckpt, ckpt_path)
    msg = main_error([*TINY, "--resume", "runs/r"])
    assert "non-finite" in msg and len(msg) < 300


def test_a_decompression_bomb_or_disk_full_is_one_line(tmp_path, monkeypatch):
    from PIL import Image as PILImage
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    root = image_folder(tmp_path / "bomb", {"a": 1}, size=16)
    # 16 x 16 = 256 > 2 x 100: PIL calls it a bomb
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match=r"cannot read image .*0\.png"):
        data.load_split(str(root), "train")
    from common import save_atomic
    target = tmp_path / "ckpt.pt"
    save_atomic({"step": 1}, target)

    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed "
                           "writing file data/0")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="could not write .*ckpt.pt .* is unchanged"):
        save_atomic({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}  # the previous checkpoint survived


def test_ctrl_c_while_pretrain_loads_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(pretrain, "Run", interrupted)
    with pytest.raises(SystemExit) as stop:
        pretrain.main([*TINY, "--name", "x"])
    assert stop.value.code == ("interrupted: every file already written is complete (writes are "
                               "atomic)")
    assert not (tmp_path / "runs").exists()
