"""common.py: device choice, malloc tuning, the config parser (nested configs, rules) and its help
texts, the cli wrapper's one-line errors, the careful loaders, atomic writes, run folders, locks."""
import dataclasses, importlib, os, subprocess, sys

import pytest
import torch

import common
from common import (ConfigError, RunLock, atomic_path, cli, load_checkpoint, load_weights,
                    make_parser, parse_config, run_dir)
from encoder import make_encoder

SCRIPTS = {"generator": "Config", "world": "Config", "pretrain": "Config", "evaluate": "Config",
           "transfer": "Config", "benchmarks.speed": "Config", "benchmarks.exploration": "Config",
           "benchmarks.cifar": "Config", "benchmarks.apt_cost": "Config",
           "benchmarks.scaling": "Config"}


def flag_names(cls, prefix=""):
    """Every flag a config declares: a nested config's fields under its metadata "prefix"."""
    names = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type):
            names += flag_names(f.type, prefix + f.metadata.get("prefix", ""))
        else:
            names.append(prefix + f.name)
    return names


@pytest.mark.parametrize("module, name", SCRIPTS.items())
def test_every_flag_of_every_script_has_help_and_a_default(module, name):
    cls = getattr(importlib.import_module(module), name)
    parser = make_parser(cls)
    options = [a for a in parser._actions if a.dest != "help"]
    names = flag_names(cls)
    assert len(set(names)) == len(names), f"{module}: two nested fields share a flag"
    assert {a.dest for a in options} == set(names)  # nothing parsed on the side
    for a in options:
        assert a.help and a.help.strip(), f"{module}: --{a.dest} has no help text"
    text = parser.format_help()
    assert text.count("(default:") == len(options)


def test_nested_configs_show_their_flags_and_help_in_the_parent():
    import pretrain
    text = " ".join(make_parser(pretrain.Config).format_help().split())
    for flag in ("--mix", "--ema", "--ema-kind", "--horizon", "--action-scale", "--sac-gamma",
                 "--sac-alpha", "--sac-autotune", "--sac-updates", "--sac-reward-norm"):
        assert flag in text, flag
    # a nested field's help is its own comment in its own class (agent.SACConfig)
    assert "discount in [0, 1)" in text and "--gamma" not in text.replace("--sac-gamma", "")


def test_choices_are_enforced_with_one_error_line():
    import pretrain
    with pytest.raises(SystemExit) as e:  # sys.exit(message): printed to stderr, exit status 1
        common.parse_config(pretrain.Config, ["--method", "magic"])
    msg = e.value.code
    assert isinstance(msg, str) and msg.startswith("error:") and "\n" not in msg and "magic" in msg
    argv = ["--method", "genrep", "--no-probe", "--updates", "7"]
    cfg = common.parse_config(pretrain.Config, argv)
    assert (cfg.method, cfg.probe, cfg.updates) == ("genrep", False, 7)


def test_parse_config_fills_nested_configs_from_flat_flags():
    import pretrain
    from agent import SACConfig
    from world import WorldConfig
    argv = ["--mix", "0.3", "--sac-gamma", "0.9", "--horizon", "8", "--ema-kind", "plain",
            "--sac-autotune", "--no-sac-reward-norm", "--sac-updates", "2", "--updates", "7"]
    cfg = parse_config(pretrain.Config, argv)
    assert isinstance(cfg.world, WorldConfig) and isinstance(cfg.sac, SACConfig)
    assert (cfg.world.mix, cfg.world.horizon, cfg.world.ema_kind) == (0.3, 8, "plain")
    assert (cfg.sac.gamma, cfg.sac.autotune, cfg.sac.reward_norm) == (0.9, True, False)
    assert (cfg.sac.updates, cfg.updates) == (2, 7)  # the same field name, two configs
    assert cfg.world.ema == WorldConfig().ema and cfg.sac.alpha == SACConfig().alpha
    assert parse_config(pretrain.Config, []).sac == SACConfig()  # defaults: the nested classes'


@pytest.mark.parametrize("flags, rule", [
    (["--ema", "1"], "0 <= ema < 1"), (["--mix", "-0.5"], "0 <= mix <= 1"),
    (["--sac-gamma", "1"], "0 <= gamma < 1"), (["--sac-tau", "0"], "0 < tau <= 1"),
    (["--sac-updates", "0"], "updates >= 1"), (["--sac-lr-actor", "nan"], "learning rates"),
    (["--width", "0"], "1 <= width <= 1024"), (["--updates", "0"], "updates >= 1")])
def test_parse_config_checks_every_nested_rule_with_one_error(flags, rule):
    import pretrain
    with pytest.raises(ConfigError) as e:
        parse_config(pretrain.Config, flags)
    msg = str(e.value)
    assert msg.startswith("pretrain.py needs ") and rule in msg and "\n" not in msg, msg


def test_nested_rules_are_checked_for_every_script_that_nests_them():
    import world
    with pytest.raises(ConfigError, match=r"^world.py needs 0 <= ema < 1$"):
        parse_config(world.Config, ["--ema", "1"])


def test_list_and_positional_fields():
    import evaluate, transfer
    cfg = common.parse_config(evaluate.Config, ["runs/a", "--k", "5", "runs/b"])
    assert cfg.runs == ["runs/a", "runs/b"]
    argv = ["--encoders", "oracle", "x/encoder.pt", "--seeds", "0", "2"]
    cfg = common.parse_config(transfer.Config, argv)
    assert cfg.encoders == ["oracle", "x/encoder.pt"] and cfg.seeds == [0, 2]


def test_pick_device_checks_its_argument():
    assert common.pick_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="--device must be one of"):
        common.pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            common.pick_device("cuda")


GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_malloc_tuning_is_accepted_by_glibc():
    assert common.keep_freed_memory() is True  # both mallopt calls returned success
    assert torch.ones(1 << 20).sum().item() == 1 << 20  # and allocations still work


def test_encoders_map_images_to_features():
    x = torch.randn(2, 3, 32, 32)
    cnn = make_encoder("cnn", 8)
    assert cnn(x).shape == (2, cnn.feature_dim) == (2, 64)
    with pytest.raises(ValueError, match="unknown encoder"):
        make_encoder("vit")


# ---- cli: the one way out of every script -------------------------------------------------------
def exit_line(error):
    """What @cli turns `raise error` into: the SystemExit's message."""
    @cli
    def main(argv=None):
        raise error
    with pytest.raises(SystemExit) as e:
        main([])
    assert isinstance(e.value.code, str) and "\n" not in e.value.code, e.value.code
    return e.value.code


def test_cli_turns_bad_input_into_one_error_line():
    assert exit_line(ValueError("bad flag\n  on two lines")) == "error: bad flag on two lines"
    assert exit_line(ConfigError("pretrain.py needs x")) == "error: pretrain.py needs x"
    assert exit_line(FileNotFoundError("x.pt not found")) == "error: x.pt not found"
    assert exit_line(OSError("disk full")) == "error: disk full"
    assert exit_line(FloatingPointError("loss is nan")) == "error: loss is nan"
    assert exit_line(ValueError()) == "error: ValueError"  # never an empty line


def test_cli_turns_out_of_memory_into_one_error_line():
    cuda = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79 GiB total)")
    for error in (cuda, RuntimeError("DefaultCPUAllocator: can't allocate memory: 1 TB"),
                  MemoryError()):
        line = exit_line(error)
        assert line.startswith("error: out of memory (") and "smaller" in line, line
    assert "Tried to allocate 2.00 GiB" in exit_line(cuda)


def test_cli_keeps_the_traceback_of_other_runtime_errors_and_bugs():
    @cli
    def main(argv=None):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 4x3)")
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        main()

    @cli
    def buggy(argv=None):
        return {}["missing"]
    with pytest.raises(KeyError):
        buggy()


def test_cli_turns_ctrl_c_into_one_line_and_passes_results_through():
    line = exit_line(KeyboardInterrupt())
    assert line.startswith("interrupted") and not line.startswith("error")

    @cli
    def main(argv=None):
        """The docstring."""
        return {"argv": argv}
    assert main(["--x"]) == {"argv": ["--x"]}
    assert (main.__name__, main.__doc__) == ("main", "The docstring.")


def test_a_script_under_cli_prints_one_error_line(tmp_path):
    proc = subprocess.run([sys.executable, str(common.ROOT / "world.py"), "--generator",
                           str(tmp_path / "missing.pt"), "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: generator checkpoint"), proc.stderr
    assert "missing.pt not found" in lines[0]


# ---- the careful loaders ------------------------------------------------------------------------
def test_load_checkpoint_gives_one_clear_error_per_kind_of_bad_file(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"kind": "encoder", "config": {"seed": 0}, "state_dict": {}}, good)
    ckpt = load_checkpoint(good, "encoder", ("state_dict", "config"))
    assert ckpt["config"] == {"seed": 0}
    with pytest.raises(FileNotFoundError, match="^encoder checkpoint .*nope.pt not found$"):
        load_checkpoint(tmp_path / "nope.pt", "encoder")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="text.pt is corrupt or not a torch file"):
        load_checkpoint(tmp_path / "text.pt", "encoder")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match="cut.pt is corrupt"):
        load_checkpoint(tmp_path / "cut.pt", "encoder")
    with pytest.raises(ValueError, match="good.pt is not a generator checkpoint"):
        load_checkpoint(good, "generator")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list.pt is not an? encoder checkpoint"):
        load_checkpoint(tmp_path / "list.pt", "encoder")
    with pytest.raises(ValueError, match="good.pt lacks actor, width$"):
        load_checkpoint(good, "encoder", ("state_dict", "actor", "width"))
    torch.save({"kind": "encoder", "config": "seed 0"}, tmp_path / "config.pt")
    with pytest.raises(ValueError, match="config.pt lacks a config dict"):
        load_checkpoint(tmp_path / "config.pt", "encoder")
    torch.save({"kind": "encoder", "obj": common.Path("x")}, tmp_path / "unsafe.pt")
    with pytest.raises(ValueError, match="unsafe.pt is corrupt or not a torch file") as e:
        load_checkpoint(tmp_path / "unsafe.pt", "encoder")  # weights_only: no arbitrary objects
    assert "\n" not in str(e.value)


def test_load_weights_names_a_misfit_or_non_finite_weight_in_one_line():
    net = torch.nn.Linear(3, 2)
    other = torch.nn.Linear(3, 2).state_dict()
    assert load_weights(net, other, "agent checkpoint a.pt") is net
    assert torch.equal(net.weight, other["weight"])
    with pytest.raises(ValueError, match="^agent checkpoint a.pt does not fit its network: ") as e:
        load_weights(net, torch.nn.Linear(4, 2).state_dict(), "agent checkpoint a.pt")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="does not fit its network"):
        load_weights(net, {"weight": other["weight"]}, "agent checkpoint a.pt")  # no bias
    bad = {k: v.clone() for k, v in other.items()}
    bad["bias"][1] = float("nan")
    with pytest.raises(ConfigError, match=r"^w.pt holds non-finite values \(NaN or inf\) in bias$"):
        load_weights(torch.nn.Linear(3, 2), bad, "w.pt")


def test_atomic_path_never_leaves_a_half_written_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    # no temporary left behind
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
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
    from evaluate import mean_std
    assert mean_std([0.5]) == "0.5"
    assert mean_std([0.1, 0.3], scale=100) == "20.0 ± 14.1"
    assert mean_std([0.1, -0.18]) == "0.0 ± 0.2" and mean_std([-0.01]) == "0.0"  # never "-0.0"
