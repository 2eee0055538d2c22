"""A seeded command trains the same weights bit for bit every time it runs on one machine at the
default thread count: right after rendering the embedded dataset or reading it from the cache, with
malloc tuned (common.keep_freed_memory). The thread count is part of the experiment: the encoder's
weight gradients and its training-mode BatchNorm reduce over per-thread partial sums, so another
count gives other bits (docs/performance.md, "Reproducibility")."""
import os
import subprocess
import sys

import torch

from common import ROOT

SHIPPED = str(ROOT / "checkpoints" / "embedded_gan.pt")
ARGS = ["--updates", "20", "--num-envs", "8", "--batch-size", "32", "--probe-images", "100",
        "--generator", SHIPPED]
# pretrain.main with data/ moved to `cache` and the embedded set rendered at 1/25 of its size
# (2,000 train / 400 test images, about a second): the same code path as a first run, smaller.
LAUNCH = """
import sys
from pathlib import Path
sys.path.insert(0, {root!r})
import data, pretrain
data.CACHE = Path({cache!r})
render = data.make_embedded
data.make_embedded = lambda n, seed: render(n // 25, seed)
pretrain.main(sys.argv[1:])
"""


def train(tmp_path, threads=None):
    """One `python pretrain.py ARGS` in a fresh process, at torch's default thread count (no
    OMP_NUM_THREADS or MKL_NUM_THREADS) unless `threads` is given -> the run folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    code = LAUNCH.format(root=str(ROOT), cache=str(tmp_path / "data"))
    r = subprocess.run([sys.executable, "-c", code, *ARGS], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)  # a hang guard
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp_path / r.stdout.splitlines()[0].split()[1]  # "run runs/palmup_s0 | ..."


def weights(folder):
    encoder = torch.load(folder / "encoder.pt", weights_only=True)["state_dict"]
    actor = torch.load(folder / "agent.pt", weights_only=True)["actor"]
    return {**{"encoder." + k: v for k, v in encoder.items()},
            **{"actor." + k: v for k, v in actor.items()}}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_seeded_run_gives_the_same_weights_first_run_or_not(tmp_path):
    first = train(tmp_path)  # renders the dataset into the empty cache, then trains
    cached = sorted(p.name for p in (tmp_path / "data").glob("embedded_*.pt"))
    assert len(cached) == 2, cached  # train and test splits: this run rendered them
    stamps = [p.stat().st_mtime_ns for p in sorted((tmp_path / "data").glob("embedded_*.pt"))]
    later = train(tmp_path)  # reads them back: another heap, the same command
    assert stamps == [p.stat().st_mtime_ns
                      for p in sorted((tmp_path / "data").glob("embedded_*.pt"))]
    assert (first.name, later.name) == ("palmup_s0", "palmup_s0-2")
    assert same(weights(first), weights(later))


def test_the_thread_count_is_part_of_the_experiment(tmp_path):
    """The comparison above is sensitive: the same command with another thread count differs."""
    one, two = train(tmp_path, threads=1), train(tmp_path, threads=2)
    assert not same(weights(one), weights(two))
