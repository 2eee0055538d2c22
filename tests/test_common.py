"""common.py: device choice, malloc tuning, the config parser and its help texts, atomic writes, run folders, locks."""
import dataclasses, importlib, os, subprocess, sys

import pytest
import torch

import common
from common import ConfigError, RunLock, atomic_path, make_parser, mean_std, run_dir
from encoder import make_encoder

SCRIPTS = {"generator": "Config", "world": "Config", "pretrain": "Config", "evaluate": "Config",
           "transfer": "Config", "benchmarks.speed": "Config", "benchmarks.exploration": "Config",
           "benchmarks.cifar": "Config", "benchmarks.apt_cost": "Config",
           "benchmarks.scaling": "Config"}


@pytest.mark.parametrize("module, name", SCRIPTS.items())
def test_every_flag_of_every_script_has_help_and_a_default(module, name):
    cls = getattr(importlib.import_module(module), name)
    parser = make_parser(cls)
    options = [a for a in parser._actions if a.dest != "help"]
    assert {a.dest for a in options} == {f.name for f in dataclasses.fields(cls)}  # nothing parsed on the side
    for a in options:
        assert a.help and a.help.strip(), f"{module}: --{a.dest} has no help text"
    text = parser.format_help()
    assert text.count("(default:") == len(options)


def test_choices_are_enforced_with_one_error_line():
    import pretrain
    with pytest.raises(SystemExit) as e:  # sys.exit(message): printed to stderr, exit status 1
        common.parse_config(pretrain.Config, ["--method", "magic"])
    msg = e.value.code
    assert isinstance(msg, str) and msg.startswith("error:") and "\n" not in msg and "magic" in msg
    cfg = common.parse_config(pretrain.Config, ["--method", "genrep", "--no-probe", "--updates", "7"])
    assert (cfg.method, cfg.probe, cfg.updates) == ("genrep", False, 7)


def test_list_and_positional_fields():
    import evaluate, transfer
    assert common.parse_config(evaluate.Config, ["runs/a", "--k", "5", "runs/b"]).runs == ["runs/a", "runs/b"]
    cfg = common.parse_config(transfer.Config, ["--encoders", "oracle", "x/encoder.pt", "--seeds", "0", "2"])
    assert cfg.encoders == ["oracle", "x/encoder.pt"] and cfg.seeds == [0, 2]


def test_pick_device_checks_its_argument():
    assert common.pick_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="--device must be one of"):
        common.pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            common.pick_device("cuda")


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="mallopt is glibc's")
def test_malloc_tuning_is_accepted_by_glibc():
    assert common.keep_freed_memory() is True  # both mallopt calls returned success
    assert torch.ones(1 << 20).sum().item() == 1 << 20  # and allocations still work


def test_encoders_map_images_to_features():
    x = torch.randn(2, 3, 32, 32)
    cnn = make_encoder("cnn", 8)
    assert cnn(x).shape == (2, cnn.feature_dim) == (2, 64)
    with pytest.raises(ValueError, match="unknown encoder"):
        make_encoder("vit")
    with pytest.raises(ValueError, match="width >= 1"):
        make_encoder("cnn", 0)


def test_atomic_path_never_leaves_a_half_written_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]  # no temporary left behind
    common.save_atomic("new", target)
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("bad", ["../escape", "/tmp/abs", ".", "..", "a/b", "", "x y"])
def test_run_names_are_single_folder_names(bad):
    with pytest.raises(ConfigError, match="--name"):
        run_dir(bad)


def test_run_dir_accepts_ordinary_names():
    assert run_dir("palmup_s0-v1.2") == common.Path("runs") / "palmup_s0-v1.2"


def test_run_lock_keeps_a_second_process_out_and_takes_over_stale_locks(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(ConfigError, match="in use by process"):
            RunLock(tmp_path).__enter__()
    assert not (tmp_path / ".lock").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a PID that no longer runs
    (tmp_path / ".lock").write_text(str(dead.pid))
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())


def test_mean_std_uses_the_sample_std():
    assert mean_std([0.5]) == "0.5"
    assert mean_std([0.1, 0.3], scale=100) == "20.0 ± 14.1"
    assert mean_std([0.1, -0.18]) == "0.0 ± 0.2" and mean_std([-0.01]) == "0.0"  # never "-0.0"
