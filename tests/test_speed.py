"""Tests of benchmarks/speed.py, apt_cost.py and scaling.py: each documented command runs end to
end on a tiny budget in a temporary folder (about 30 s on 2 CPU cores, most of it scaling.py's
torchrun launch); and wall-clock tests of speed.py's paired timer, not in the default suite
(they need an idle CPU): python -m pytest -m timing"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agent import SACConfig
from benchmarks.scaling import root_cause
from benchmarks.speed import paired

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = str(ROOT / "checkpoints" / "embedded_gan.pt")
ROW = re.compile(r"^\| (.+?) \| ([0-9,.]+) ([^|]+?) \|", re.M)  # a measured row: name, rate, unit


def benchmark(script: str, *args, cwd: Path) -> str:
    """`python benchmarks/<script> args` in the folder cwd, one torch thread -> its stdout."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_speed_command(tmp_path):
    out = benchmark("speed.py", "--generator", GENERATOR, "--device", "cpu", "--min-time", "0.01",
                    "--breakdown-updates", "3", "--envs", "1", "8", "--batches", "64", "128",
                    "--extra", "--batch-size 32 --num-envs 16 --warmup 2 --buffer-size 1000 "
                    "--probe-images 100", cwd=tmp_path)
    rows = {name: float(rate.replace(",", "")) for name, rate, _ in ROW.findall(out)}
    for name in ("world.step, 8 envs", "encoder update (InfoNCE, head, Adam)",
                 "whole Palm-up iteration (acting, world, SAC, ...)",
                 f"SAC update ({SACConfig().updates} steps), batch 128"):
        assert rows[name] > 0, out
    stages = re.findall(r"^\| ([a-zA-Z +,]+) \| (\d+) \| \d+% \|$", out, re.M)
    assert {"encoder update", "linear probe", "load data + generator"} <= dict(stages).keys(), out
    assert not any(tmp_path.iterdir())  # it writes nothing


def test_speed_world_only_command(tmp_path):
    out = benchmark("speed.py", "--generator", GENERATOR, "--device", "cpu", "--min-time", "0.01",
                    "--world-only", "--repeats", "2", "--envs", "1", "4", cwd=tmp_path)
    assert re.search(r"\| world\.step, 4 envs \(ratio [0-9.]+-[0-9.]+ over 2 repeats\) \|", out)
    assert "encoder" not in out  # it stops after the world rows


def test_apt_cost_command(tmp_path):
    out = benchmark("apt_cost.py", "--buffer", "2000", "--threads", "1", cwd=tmp_path)
    assert len(re.findall(r"^\| (256|512|1024|2048|4096) \|", out, re.M)) == 5, out
    assert re.search(r"storing frames is \d+x faster", out), out


def test_scaling_command(tmp_path):
    out = benchmark("scaling.py", "--nprocs", "2", "--updates", "20", "--batch-size", "16",
                    "--num-envs", "4", cwd=tmp_path)  # torchrun, 2 gloo processes
    rows = re.findall(r"^\| (\d) \| ([0-9.]+) \| (\d+) \| ([0-9.]+)x \|$", out, re.M)
    assert [r[0] for r in rows] == ["2"], out  # one row per process count
    assert all(float(r[1]) > 0 for r in rows)
    assert not any(tmp_path.iterdir())  # each launch ran in a temporary folder of its own


def test_a_failed_torchrun_job_is_reported_by_its_cause():
    summary = ("=" * 60 + "\npretrain.py FAILED\n" + "-" * 60 + "\nRoot Cause:\n"
               "  exitcode  : -9 (pid: 12)\n" + "=" * 60 + "\n")
    raised = ("Traceback (most recent call last):\n  File \"pretrain.py\", line 1\n"
              "[rank1]: RuntimeError: Connection closed by peer [127.0.0.1]:29500\n")
    launcher = "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
    assert root_cause("error: --lr must be > 0\n" + raised + launcher + summary) == \
        "error: --lr must be > 0"
    assert root_cause(raised + launcher + summary).endswith("Connection closed by peer "
                                                            "[127.0.0.1]:29500")
    aborted = "terminate called without an active exception\n"  # C++ std::terminate: SIGABRT
    assert root_cause(aborted + launcher + summary) == aborted.strip()
    assert root_cause(launcher + summary) == "exitcode  : -9 (pid: 12)"  # killed: its signal


def spin(seconds: float) -> None:
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        pass


@pytest.mark.timing
def test_paired_measures_the_ratio_of_two_costs():
    bare, target, ratio = paired(lambda: spin(1e-3), lambda: spin(2e-3), 0.2, torch.device("cpu"),
                                 block=4)
    assert 0.4 < ratio < 0.6, ratio  # target costs twice as much
    assert 0.4 < target / bare < 0.6  # the rates agree when nothing stalls


@pytest.mark.timing
def test_paired_ratio_ignores_a_stall_in_one_block():
    calls = [0]

    def stalls_once():
        calls[0] += 1
        spin(0.1 if calls[0] == 3 else 1e-3)  # one 100 ms stall (another tenant), in block one

    bare, target, ratio = paired(lambda: spin(1e-3), stalls_once, 0.2, torch.device("cpu"),
                                 block=4)
    assert 0.9 < ratio < 1.1, ratio  # the median over blocks does not see it
    assert target / bare < 0.8  # the total-time rates do
