"""Tests for benchmarks/cifar.py explore: the table of finished runs, with differences paired by seed, and the curves.
No training: the runs are fake result.json / metrics.csv files. Seconds on 2 CPU cores."""
import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cifar  # noqa: E402
from common import parse_config  # noqa: E402

PROBES = {"palmup_e512": [0.50, 0.52, 0.47], "random_e512": [0.52, 0.53, 0.50],  # made-up accuracies
          "genrep": [0.51, 0.55, 0.49], "genrep03": [0.56, 0.54, 0.52]}


@pytest.mark.parametrize("split", ["test", "val"])
def test_explore_prints_each_seed_and_the_difference_paired_by_seed(tmp_path, monkeypatch, capsys, split):
    monkeypatch.setattr(cifar, "ROOT", tmp_path)
    key = "linear_probe" if split == "test" else "linear_probe_val"
    for tag, probes in PROBES.items():
        for seed, p in enumerate(probes):
            run = tmp_path / "runs" / f"cifar_{tag}{'_test' if split == 'test' else ''}_s{seed}"
            run.mkdir(parents=True)
            (run / "result.json").write_text(json.dumps({key: p, "wall_time_s": 1.0}))
            if tag.endswith("e512"):
                (run / "metrics.csv").write_text("update,loss,spread_ratio,z_sq\n10,3.0,1.0,1.0\n20,2.0,1.1,1.1\n")
    monkeypatch.setattr(cifar.subprocess, "Popen", lambda *a, **k: pytest.fail("a finished run was launched again"))
    cifar.explore(parse_config(cifar.Config, ["--split", split]))
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in out.splitlines() if re.match(r"\| (Palm-up|random|GenRep)", line)}
    palmup = rows["Palm-up, exploring agent, 512 envs"]
    assert palmup[:3] == ["50.0", "52.0", "47.0"]
    assert palmup[3] == "49.7 ± 2.5"  # mean and sample std of 50, 52, 47
    assert palmup[4] == "-2.0 ± 1.0"  # differences -2, -1, -3 to the random-policy world, seed by seed
    assert rows["random-policy world, 512 envs"][4] == "–"
    assert rows["GenRep, σ 0.3 (the sweep's best)"][4] == "2.3 ± 1.5"  # +4, +1, +2
    assert (tmp_path / "runs" / "cifar_explore_curves.png").stat().st_size > 0
