"""The command lines of generator.py, evaluate.py and exercises/check.py: bad input ends in one
`error:` line (no traceback, non-zero exit, nothing written), Ctrl-C in one line, and every training
command of generator.py writes into a run folder of its own. Each command runs in a subprocess from
a temporary folder (the script named by its absolute path), as a user would run it: ~1.5 min."""
import hashlib, subprocess, sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import data  # noqa: E402
import generator as gen  # noqa: E402
from encoder import make_encoder  # noqa: E402
from tests.test_evaluate import save_ckpt  # noqa: E402

SHIPPED = ROOT / "checkpoints" / "embedded_gan.pt"
TINY_GAN = ["--steps", "2", "--batch-size", "4", "--width", "4", "--latent-dim", "8",
            "--gan-test-epochs", "1", "--device", "cpu"]

# Runs a script's main in a subprocess with the data cache in the test's folder (nothing is left
# in the repository's data/) and, if asked, a real SIGINT (Ctrl-C) raised by one of its functions.
RUNNER = """
import os, signal, sys, time
from pathlib import Path
root, cache, script, interrupt, *argv = sys.argv[1:]
sys.path.insert(0, root)
import data
data.CACHE = Path(cache)
module = __import__(script)


def ctrl_c(*args, **kwargs):
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also where a shell ignores SIGINT
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(60)  # the KeyboardInterrupt arrives here


if interrupt:
    setattr(module, interrupt, ctrl_c)
module.main(argv)
"""


def run(script, *args, cwd):
    """python ROOT/<script> args, from cwd."""
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)  # a hang guard


def run_main(script, *args, cwd, interrupt=""):
    """<script>.main(args) in a subprocess from cwd, its data cache under cwd/cache; `interrupt`
    names a function of the script that presses Ctrl-C when called."""
    runner = Path(cwd) / "runner.py"
    runner.write_text(RUNNER)
    cmd = [sys.executable, str(runner), str(ROOT), str(Path(cwd) / "cache"), script, interrupt]
    return subprocess.run([*cmd, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def error_line(proc) -> str:
    """The last line of a failed command's stderr: one `error:` line, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode not in (0, None), proc.stderr[-2000:]
    assert lines and lines[-1].startswith("error:"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert sum(line.startswith("error:") for line in lines) == 1, proc.stderr[-2000:]
    return lines[-1]


def files_under(folder: Path) -> set:
    return {p.relative_to(folder) for p in Path(folder).rglob("*")}


def image_folder(root: Path, classes=("a", "b", "c"), n=4) -> Path:
    """root/{train,test}/<class>/<i>.png: tiny single-colour images, one colour per class."""
    for split in ("train", "test"):
        for j, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                colour = (80 * j, 255 - 80 * j, 9 * i)
                Image.new("RGB", (8, 8), colour).save(root / split / c / f"{i}.png")
    return root


def sha(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


# ---- generator.py: flags checked before anything is loaded or allocated --------------------------
@pytest.mark.parametrize("args, words", [
    (["--width", "100000"], ["generator.py needs 1 <= width <= 256"]),
    (["--latent-dim", "1000000000"], ["generator.py needs 1 <= latent_dim <= 4096"]),
    (["--batch-size", "1000000000"], ["generator.py needs 2 <= batch_size <= 32768"]),
    (["--latent-dim", "1e9"], ["1 <= latent_dim <= 4096"]),  # 1e9 is a whole number
    (["--batch-size", "1.5"], ["--batch-size", "invalid integer value: '1.5'"]),
    (["--batch-size", "4096", "--width", "64"], ["batch_size x width <= 32768"]),
    (["--lr", "nan"], ["0 < lr <= 1"]),
    (["--steps", "0"], ["steps >= 1"]),
    (["--seed", "-1"], ["0 <= seed < 2**32"]),
    (["--overwrite"], ["--overwrite only with --out"]),
    (["--name", "a", "--out", "g.pt"], ["--name or --out, not both"]),
    (["--eval", SHIPPED, "--name", "a"], ["--eval without --name or --out"]),
    (["--name", "../escape"], ["--name must be one folder name"]),
])
def test_generator_flags_give_one_error_line_before_any_work(tmp_path, args, words):
    # data that does not exist: had the flags passed, the run would stop on the data instead
    line = error_line(run("generator.py", *args, "--data", tmp_path / "no_data", cwd=tmp_path))
    for word in words:
        assert word in line, line
    assert files_under(tmp_path) == set()  # no runs/ folder, no file


def test_generator_refuses_an_existing_run_folder_and_keeps_it(tmp_path):
    folder = image_folder(tmp_path / "d")
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    (tmp_path / "runs" / "mine" / "generator.pt").write_bytes(b"an earlier run")
    before = files_under(tmp_path)
    line = error_line(run("generator.py", "--data", folder, *TINY_GAN, "--name", "mine",
                          cwd=tmp_path))
    assert "runs/mine exists" in line and "another --name" in line and "runs/gan_d_s0" in line
    assert files_under(tmp_path) == before
    assert (tmp_path / "runs" / "mine" / "generator.pt").read_bytes() == b"an earlier run"


def test_generator_writes_into_checkpoints_only_with_out_and_overwrite(tmp_path):
    before = sha(SHIPPED)
    line = error_line(run("generator.py", "--out", SHIPPED, *TINY_GAN,
                          "--data", tmp_path / "no_data", cwd=tmp_path))
    assert f"pass --out {SHIPPED} --overwrite" in line and "the shipped generators" in line
    assert sha(SHIPPED) == before and files_under(tmp_path) == set()


def test_generator_bad_data_leaves_no_run_folder(tmp_path):
    (tmp_path / "d" / "train" / "a").mkdir(parents=True)  # no test/: GAN-test needs it
    Image.new("RGB", (8, 8)).save(tmp_path / "d" / "train" / "a" / "0.png")
    line = error_line(run_main("generator", "--data", tmp_path / "d", *TINY_GAN, cwd=tmp_path))
    assert "test/" in line
    assert not (tmp_path / "runs").exists()


def test_every_generator_command_trains_in_a_folder_of_its_own(tmp_path):
    folder = image_folder(tmp_path / "d")
    first = run_main("generator", "--data", folder, *TINY_GAN, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "GAN-test accuracy" in first.stdout
    run1 = tmp_path / "runs" / "gan_d_s0"
    assert {p.name for p in run1.iterdir()} == {"generator.pt", "generator.png"}
    assert gen.load_generator(run1 / "generator.pt").config["steps"] == 2
    # the same command again, with Ctrl-C during the GAN-test: a second folder, complete
    second = run_main("generator", "--data", folder, *TINY_GAN, cwd=tmp_path,
                      interrupt="gan_test")
    run2 = tmp_path / "runs" / "gan_d_s0-2"
    assert second.returncode not in (0, None) and "Traceback" not in second.stderr
    last = second.stderr.strip().splitlines()[-1]
    kept = "runs/gan_d_s0-2/generator.pt"
    assert last.startswith(f"interrupted during the GAN-test: {kept} is complete (python "
                           f"generator.py --eval {kept}"), last
    assert {p.name for p in run2.iterdir()} == {"generator.pt", "generator.png"}
    assert gen.load_generator(run2 / "generator.pt").classes == ["a", "b", "c"]
    assert {p.name for p in run1.iterdir()} == {"generator.pt", "generator.png"}  # kept as it was


def test_generator_chooses_the_next_free_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = gen.Config(data=str(tmp_path / "my data"), seed=3)
    assert gen.output_path(cfg) == Path("runs/gan_my_data_s3/generator.pt")
    for name in ("gan_my_data_s3", "gan_my_data_s3-2"):
        (tmp_path / "runs" / name).mkdir(parents=True)
    assert gen.output_path(cfg) == Path("runs/gan_my_data_s3-3/generator.pt")
    assert not (tmp_path / "runs" / "gan_my_data_s3-3").exists()  # chosen, not created


def test_ctrl_c_before_the_first_step_removes_the_new_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    folder = image_folder(tmp_path / "d", classes=("a", "b"))

    def ctrl_c(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(gen, "d_loss", ctrl_c)
    cfg = gen.Config(data=str(folder), steps=5, batch_size=4, width=4, latent_dim=8)
    out = gen.output_path(cfg)
    with pytest.raises(KeyboardInterrupt):
        gen.train(cfg, out, fresh=True)
    assert not out.parent.exists()  # nothing was trained: no empty run folder stays behind


# ---- evaluate.py ---------------------------------------------------------------------------------
@pytest.mark.parametrize("second", ["runs/r", "runs/r/encoder.pt", "runs/../runs/r/"])
def test_evaluate_refuses_the_same_run_given_twice(tmp_path, second):
    save_ckpt(tmp_path / "runs" / "r" / "encoder.pt", make_encoder("cnn", 8))
    before = files_under(tmp_path)
    line = error_line(run("evaluate.py", tmp_path / "runs" / "r", second, "--device", "cpu",
                          cwd=tmp_path))
    assert "the same run" in line and "give each run once" in line, line
    assert files_under(tmp_path) == before  # no chart, no probe cache


def test_evaluate_bad_flags_give_one_error_line(tmp_path):
    for args, words in [(["--k", "0"], "evaluate.py needs k >= 1"),
                        (["--out", "chart.jpg"], "--out ending in .png"),
                        (["--threads", "100000"], "0 <= threads")]:
        assert words in error_line(run("evaluate.py", *args, cwd=tmp_path))
    assert files_under(tmp_path) == set()


def test_ctrl_c_in_evaluate_is_one_line(tmp_path):
    save_ckpt(tmp_path / "runs" / "r" / "encoder.pt", make_encoder("cnn", 8))
    proc = run_main("evaluate", "runs/r", "--device", "cpu", cwd=tmp_path, interrupt="load_data")
    assert proc.returncode not in (0, None)
    assert proc.stderr.strip().splitlines() == [
        "interrupted: every file already written is complete (writes are atomic)"], proc.stderr


# ---- exercises/check.py --------------------------------------------------------------------------
def test_check_help_exits_zero_with_a_usage_text(tmp_path):
    proc = run("exercises/check.py", "--help", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: python exercises/check.py N")
    assert "ex5_offsets.py" in proc.stdout


@pytest.mark.parametrize("args", [[], ["7"], ["0"], ["x"], ["1", "2"], ["--verbose"]])
def test_check_without_a_good_number_gives_one_error_line(tmp_path, args):
    proc = run("exercises/check.py", *args, cwd=tmp_path)
    line = error_line(proc)
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    assert line == "error: give an exercise number 1-6 (usage: python exercises/check.py N; " \
                   "--help lists them)"
    assert files_under(tmp_path) == set()


def test_check_names_an_exercise_file_that_does_not_import(tmp_path, monkeypatch, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("check_cli", ROOT / "exercises" / "check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    broken = tmp_path / "exercises" / "ex2_apt.py"
    broken.parent.mkdir()
    broken.write_text("def apt_reward(features, k)\n    pass\n")  # a missing colon
    monkeypatch.setattr(check, "ROOT", tmp_path)
    with pytest.raises(SystemExit) as info:
        check.main(["2"])
    message = str(info.value.code)
    assert message.startswith("error: exercises/ex2_apt.py does not import: SyntaxError")
    assert "\n" not in message
