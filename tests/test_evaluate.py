"""Tests of evaluate.py (and the probes of probe.py it re-exports) on small synthetic tensors (no
dataset, no download): ~20 s on a 2-core x86 CPU."""
import subprocess, sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import evaluate  # noqa: E402
import probe  # noqa: E402
from common import ConfigError, parse_config  # noqa: E402
from encoder import make_encoder  # noqa: E402


def blobs(n, num_classes=4, dim=16, sep=6.0, seed=0):
    """Gaussian blobs with far-apart means: linearly separable with overwhelming probability."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    centres = sep * torch.eye(num_classes, dim)  # (C, dim)
    return centres[y] + 0.5 * torch.randn(n, dim, generator=g), y  # (n, dim), (n,)


def coloured_images(n, num_classes=4, seed=0):
    """uint8 images (n, 3, 32, 32) whose mean colour encodes the class, plus pixel noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    colour = torch.linspace(40, 215, num_classes)[y][:, None, None, None]
    x = (colour + 20 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 255).round().to(torch.uint8)
    return x, y


def save_ckpt(path, encoder, name="cnn", width=8, **config):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": "encoder", "encoder": name, "width": width,
                "state_dict": encoder.state_dict(),
                "config": {"method": "palmup", "seed": 0, "data": "embedded", **config},
                "wall_time_s": 12.5, "finished": True}, path)
    return path


# ---- linear probe --------------------------------------------------------------------------------
def test_linear_probe_separable_features_reach_100_percent():
    (ftr, ytr), (fte, yte) = blobs(400), blobs(200, seed=1)
    res = evaluate.linear_probe_features(ftr, ytr, fte, yte)
    assert res["test_acc"] >= 0.98 and res["val_acc"] >= 0.98
    assert res["weight_decay"] in probe.WEIGHT_DECAYS


def test_linear_probe_shuffled_labels_is_at_chance():
    g = torch.Generator().manual_seed(0)
    ftr, fte = torch.randn(800, 32, generator=g), torch.randn(2000, 32, generator=g)
    ytr, yte = torch.randint(4, (800,), generator=g), torch.randint(4, (2000,), generator=g)
    # Predictions are independent of the test labels, so accuracy ~ Binomial(2000, 1/4) / 2000:
    # std 0.01.
    assert abs(evaluate.linear_probe_features(ftr, ytr, fte, yte)["test_acc"] - 0.25) < 0.08


def test_linear_probe_is_deterministic():
    # overlapping: accuracy < 1
    (ftr, ytr), (fte, yte) = blobs(300, sep=1.0), blobs(200, sep=1.0, seed=1)
    first = evaluate.linear_probe_features(ftr, ytr, fte, yte)
    assert first == evaluate.linear_probe_features(ftr, ytr, fte, yte)
    assert 0.4 < first["test_acc"] < 1.0


def test_weight_decay_is_chosen_without_test_labels():
    (ftr, ytr), (fte, yte) = blobs(300, sep=1.0), blobs(200, sep=1.0, seed=1)
    res = evaluate.linear_probe_features(ftr, ytr, fte, yte)
    for bad in (torch.zeros_like(yte), yte.roll(1), (yte + 1) % 4):  # very different test scores
        other = evaluate.linear_probe_features(ftr, ytr, fte, bad)
        # ... the same choice
        assert (other["weight_decay"], other["val_acc"]) == (res["weight_decay"], res["val_acc"])
    assert other["test_acc"] < 0.5 < res["test_acc"]
    # Changing the test *features* cannot change the choice either.
    flipped = evaluate.linear_probe_features(ftr, ytr, -fte, yte)
    assert flipped["weight_decay"] == res["weight_decay"]


def test_linear_probe_on_images_with_raw_pixels_and_an_encoder():
    train, test = coloured_images(200), coloured_images(100, seed=1)
    assert evaluate.linear_probe(None, train, test) >= 0.98
    acc = evaluate.linear_probe(evaluate.random_encoder("cnn", 8), train, test, batch_size=64)
    assert acc >= 0.9  # the mean colour survives a random conv net: chance is 0.25


def test_evaluate_re_exports_the_probes_of_probe_py():
    for name in ("extract_features", "knn_probe", "linear_probe", "linear_probe_features",
                 "random_encoder", "split_probe", "val_split"):
        assert getattr(evaluate, name) is getattr(probe, name), name


# ---- kNN probe -----------------------------------------------------------------------------------
def knn_brute_force(ftr, ytr, fte, k, T, num_classes):
    preds = []
    for q in fte:
        sims = [F.cosine_similarity(q, t, dim=0).item() for t in ftr]
        order = sorted(range(len(ftr)), key=lambda j: -sims[j])[:k]
        votes = [0.0] * num_classes
        for j in order:
            votes[int(ytr[j])] += torch.exp(torch.tensor(sims[j] / T)).item()
        preds.append(max(range(num_classes), key=lambda c: votes[c]))
    return torch.tensor(preds)


def test_knn_probe_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    ftr, fte = torch.randn(60, 5, generator=g), torch.randn(40, 5, generator=g)
    ytr, yte = torch.randint(3, (60,), generator=g), torch.randint(3, (40,), generator=g)
    pred = knn_brute_force(ftr, ytr, fte, k=7, T=0.5, num_classes=3)
    expected = (pred == yte).float().mean().item()
    assert 0.0 < expected < 1.0  # a non-trivial case
    got = evaluate.knn_probe(ftr, ytr, fte, yte, k=7, temperature=0.5)
    assert got == pytest.approx(expected)
    chunked = evaluate.knn_probe(ftr, ytr, fte, yte, k=7, temperature=0.5, chunk_elems=1)
    assert chunked == pytest.approx(expected)
    for i in range(len(fte)):  # point by point, so that errors cannot cancel out
        acc = evaluate.knn_probe(ftr, ytr, fte[i:i + 1], yte[i:i + 1], k=7, temperature=0.5)
        assert acc == float(pred[i] == yte[i])


def test_knn_probe_separable_and_defaults():
    (ftr, ytr), (fte, yte) = blobs(400), blobs(100, seed=1)
    assert evaluate.knn_probe(ftr, ytr, fte, yte) == 1.0  # k=20, T=0.07
    # k larger than the training set
    assert evaluate.knn_probe(ftr[:5], ytr[:5], fte, yte, k=20) >= 0.0


# ---- checkpoints ---------------------------------------------------------------------------------
def test_load_encoder_round_trip(tmp_path):
    torch.manual_seed(0)
    enc = make_encoder("cnn", 8)
    enc.train()(torch.randn(64, 3, 32, 32))  # non-trivial BatchNorm running statistics
    path = save_ckpt(tmp_path / "run" / "encoder.pt", enc, seed=3)
    x = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    for where in (path, path.parent):  # the file or its run folder
        loaded, meta = evaluate.load_encoder(where)
        assert not loaded.training and "state_dict" not in meta
        assert meta["config"]["seed"] == 3 and meta["encoder"] == "cnn" and meta["width"] == 8
        want = evaluate.extract_features(enc, x)
        assert torch.equal(evaluate.extract_features(loaded, x), want)
    assert evaluate.extract_features(loaded, x).shape == (20, 64)
    assert evaluate.extract_features(None, x).shape == (20, 3072)


def test_load_encoder_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="^encoder checkpoint .* not found"):
        evaluate.load_encoder(tmp_path / "nope" / "encoder.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        evaluate.load_encoder(tmp_path / "text.pt")
    good = save_ckpt(tmp_path / "good.pt", make_encoder("cnn", 8))
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt"):
        evaluate.load_encoder(tmp_path / "cut.pt")
    # claims width 16, holds width 8
    save_ckpt(tmp_path / "wide.pt", make_encoder("cnn", 8), width=16)
    with pytest.raises(ValueError, match="wide.pt does not fit its network"):
        evaluate.load_encoder(tmp_path / "wide.pt")
    torch.save({"kind": "generator", "state_dict": {}}, tmp_path / "gen.pt")
    with pytest.raises(ValueError, match="gen.pt is not an? encoder checkpoint"):
        evaluate.load_encoder(tmp_path / "gen.pt")
    enc = make_encoder("cnn", 8)
    with torch.no_grad():
        enc[0].weight[0, 0, 0, 0] = float("inf")
    save_ckpt(tmp_path / "inf.pt", enc)
    with pytest.raises(ConfigError, match=r"holds non-finite values \(NaN or inf\) in 0.weight"):
        evaluate.load_encoder(tmp_path / "inf.pt")
    save_ckpt(tmp_path / "text_width.pt", make_encoder("cnn", 8), width="8")
    with pytest.raises(ValueError, match="has width '8', not int"):
        evaluate.load_encoder(tmp_path / "text_width.pt")
    save_ckpt(tmp_path / "vit.pt", make_encoder("cnn", 8), name="vit")
    with pytest.raises(ValueError, match="names no encoder of make_encoder: 'vit'"):
        evaluate.load_encoder(tmp_path / "vit.pt")
    with pytest.raises(ValueError) as info:
        evaluate.load_encoder(tmp_path / "wide.pt")
    assert "\n" not in str(info.value)  # one line for the CLI's `error: ...`


# ---- CLI -----------------------------------------------------------------------------------------
def test_command_line_mixes_run_folders_and_flags():
    argv = ["--data", "embedded", "runs/a", "runs/b", "--k", "5", "--recompute", "runs/c"]
    cfg = parse_config(evaluate.Config, argv)
    assert cfg.runs == ["runs/a", "runs/b", "runs/c"]
    assert (cfg.data, cfg.k, cfg.recompute, cfg.device) == ("embedded", 5, True, "auto")


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # a hang guard


def assert_one_error_line(proc):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr


def test_cli_bad_input_gives_one_error_line(tmp_path):
    out = tmp_path / "chart.png"
    proc = run_cli(tmp_path / "missing_run", "--out", out)
    assert_one_error_line(proc)
    assert "encoder checkpoint" in proc.stderr
    proc = run_cli("--data", tmp_path, "--out", out)  # a folder without train/ and test/
    assert_one_error_line(proc)
    assert "train/ and test/" in proc.stderr
    for split, classes in (("train", "ab"), ("test", "ac")):
        for c in classes:
            (tmp_path / "mismatch" / split / c).mkdir(parents=True)
    proc = run_cli("--data", tmp_path / "mismatch", "--out", out)
    assert_one_error_line(proc)
    assert "class lists differ" in proc.stderr
    (tmp_path / "bad_run").mkdir()
    (tmp_path / "bad_run" / "encoder.pt").write_bytes(b"\x00" * 10)
    assert_one_error_line(run_cli(tmp_path / "bad_run", "--out", out))
    assert not out.exists() and not list(tmp_path.rglob("*.tmp"))
    assert not list(tmp_path.rglob("*.json"))


def test_cli_table_chart_and_cache(tmp_path, monkeypatch, capsys):
    """End to end on a tiny in-memory dataset: grouping by method, reference rows, cached results,
    chart."""
    splits = (coloured_images(120), coloured_images(60, seed=1))
    monkeypatch.setattr(evaluate, "load_data", lambda data, download=False: splits)
    monkeypatch.setattr(evaluate, "CACHE", tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    runs = []
    for i, (method, seed) in enumerate([("random", 0), ("random", 1), ("palmup", 0)]):
        torch.manual_seed(i)
        path = tmp_path / "runs" / f"{method}_{seed}" / "encoder.pt"
        runs.append(save_ckpt(path, make_encoder("cnn", 8), method=method, seed=seed).parent)
    evaluate.main([*runs, "--device", "cpu", "--max-iter", "50"])
    table = capsys.readouterr().out
    rows = ("| random | 2 |", "| palmup | 1 |", "| raw pixels | 1 |", "| random-init cnn-8 | 1 |")
    for row in (*rows, "12 s"):
        assert row in table, table
    chart = tmp_path / "runs" / "probe_embedded.png"
    assert chart.read_bytes()[:4] == b"\x89PNG"
    assert all((r / "probe_embedded.json").is_file() for r in runs)

    def no_probe(*a, **k):
        raise AssertionError("cached results should have been reused")
    monkeypatch.setattr(evaluate, "both_probes", no_probe)
    # `runs/*` also lists the chart
    evaluate.main([*runs, chart, "--device", "cpu", "--max-iter", "50"])
    assert capsys.readouterr().out == table
    # changed probe settings invalidate the cache
    with pytest.raises(AssertionError, match="cached"):
        evaluate.main([*runs, "--device", "cpu", "--max-iter", "50", "--k", "5"])
    monkeypatch.setattr(evaluate, "load_data",
                        lambda data, download=False: (coloured_images(120, seed=2), splits[1]))
    # so do changed images (e.g. a regenerated dataset)
    with pytest.raises(AssertionError, match="cached"):
        evaluate.main([*runs, "--device", "cpu", "--max-iter", "50"])
