import json
import math
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

import pretrain
from common import ROOT

SHIPPED = str(ROOT / "checkpoints" / "embedded_gan.pt")


def test_info_nce_matches_reference_formula():
    torch.manual_seed(0)
    a, b, tau = torch.randn(5, 7), torch.randn(5, 7), 0.3
    na = [v / v.norm() for v in a]
    nb = [v / v.norm() for v in b]
    terms = []
    for i in range(5):  # a_i against all b_j, and b_i against all a_j; the positive is j == i
        for x, ys in ((na[i], nb), (nb[i], na)):
            logits = [float(x @ y) / tau for y in ys]
            terms.append(-logits[i] + math.log(sum(math.exp(l) for l in logits)))
    assert pretrain.info_nce(a, b, tau).item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert pretrain.info_nce(a, a, 0.05) < pretrain.info_nce(a, b, 0.05)  # aligned pairs: lower loss


def test_augment_keeps_shape_and_range_and_differs_per_sample():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32) * 2 - 1
    out = pretrain.augment(x.clone())
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    same = pretrain.augment(x[:1].repeat(8, 1, 1, 1))
    assert (same[0] - same[1:]).abs().amax((1, 2, 3)).min() > 0  # per-sample randomness


class LabelPainter(nn.Module):
    """A stand-in generator that paints the class label into every pixel: episodes differ."""
    latent_dim, num_classes, image_size = 4, 10, 32

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, z, y):
        return (y.float() / 10 - 0.5).view(-1, 1, 1, 1).expand(-1, 3, 32, 32) + 0 * z[:, :1, None, None]


def test_pairs_never_cross_an_episode_reset(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pretrain, "load_generator", lambda *args: LabelPainter())
    cfg = pretrain.Config(method="random", world=pretrain.WorldConfig(horizon=2), num_envs=32,
                          batch_size=512, probe=False)
    run = pretrain.Run(cfg, tmp_path / "t")
    for _ in range(10):  # 10 steps of 32 envs with horizon 2: 160 resets
        pretrain.explore(run, torch.rand(32, 4) * 2 - 1)
    batch = run.buffer.sample(512)
    assert torch.equal(batch["obs"][:, 0, 0, 0], batch["next_obs"][:, 0, 0, 0])  # painted label: same episode
    assert batch["obs"][:, 0, 0, 0].unique().numel() > 3  # and the check is not vacuous


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "pretrain.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=1200)  # a hang guard


def test_end_to_end_smoke_run_writes_outputs_and_beats_chance(tmp_path):
    args = ["--updates", "40", "--batch-size", "64", "--num-envs", "16", "--generator", SHIPPED,
            "--checkpoint-every", "20", "--probe-images", "5000"]
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[0].startswith("run runs/palmup_s0 |")  # the folder, printed first
    out = tmp_path / "runs" / "palmup_s0"
    files = ("encoder.pt", "metrics.csv", "curves.png", "filmstrip_start.png", "filmstrip_end.png",
             "result.json")
    for f in files:
        assert (out / f).exists(), f
    assert not (out / "ckpt.pt").exists()
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    diagnostics = {"entropy_gap", "abs_action", "critic_r2", "reward_action_r2", "spread_ratio", "z_sq"}
    assert diagnostics <= set(header)
    result = json.loads((out / "result.json").read_text())
    assert result["linear_probe"] > 0.2  # 10 classes: chance is 0.1
    stages = {"load data + generator", "explore + pairs", "encoder update", "SAC update + APT reward",
              "linear probe"}
    assert stages <= set(result["stage_s"]) and all(v >= 0 for v in result["stage_s"].values())
    ckpt = torch.load(out / "encoder.pt", weights_only=True)
    assert ckpt["config"]["seed"] == 0 and ckpt["finished"]


def test_every_command_trains_anew_in_a_folder_of_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--updates", "5", "--num-envs", "8", "--batch-size", "16", "--no-probe", "--generator", SHIPPED]
    first, second = pretrain.main(args), pretrain.main(args)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["palmup_s0", "palmup_s0-2"]
    a, b = (torch.load(tmp_path / "runs" / n / "encoder.pt", weights_only=True)["state_dict"]
            for n in ("palmup_s0", "palmup_s0-2"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # trained twice, the same seeded weights
    assert first["updates"] == second["updates"] == 5
    with pytest.raises(SystemExit, match="runs/palmup_s0 exists: pass --resume runs/palmup_s0"):
        pretrain.main([*args, "--name", "palmup_s0"])
    with pytest.raises(SystemExit, match="is a finished run"):
        pretrain.main([*args, "--resume", "runs/palmup_s0"])


@pytest.mark.parametrize("method", ["palmup", "genrep"])
def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch,
                                                                           method):
    """At one thread count, first run included: the resumed run ends bit for bit where the
    uninterrupted one does, and Ctrl-C prints the exact command that continues it."""
    monkeypatch.chdir(tmp_path)
    args = ["--method", method, "--updates", "12", "--batch-size", "16", "--num-envs", "8",
            "--checkpoint-every", "5", "--generator", SHIPPED, "--no-probe"]
    pretrain.main([*args, "--name", "whole"])
    update = "palmup_update" if method == "palmup" else "baseline_update"
    real_update = getattr(pretrain, update)

    def interrupt_at_8(run, logged):
        if run.step == 8:
            raise KeyboardInterrupt
        return real_update(run, logged)
    monkeypatch.setattr(pretrain, update, interrupt_at_8)
    with pytest.raises(SystemExit) as stop:
        pretrain.main([*args, "--name", "cut"])
    assert stop.value.code == ("interrupted at update 8; continue from update 5 with: python "
                               f"pretrain.py {' '.join(args)} --name cut --resume runs/cut")
    assert torch.load(tmp_path / "runs/cut/ckpt.pt", weights_only=True)["step"] == 5
    monkeypatch.setattr(pretrain, update, real_update)
    with pytest.raises(SystemExit, match="another experiment .*--lr 0.001 there, 0.01 here"):
        pretrain.main([*args, "--lr", "0.01", "--resume", "runs/cut"])
    result = pretrain.main([*args, "--name", "cut", "--resume", "runs/cut"])
    assert result["updates"] == 12 and not (tmp_path / "runs/cut/ckpt.pt").exists()
    whole, resumed = (torch.load(tmp_path / "runs" / n / "encoder.pt", weights_only=True)["state_dict"]
                      for n in ("whole", "cut"))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_an_unlogged_update_reads_nothing_back_from_the_device(tmp_path, monkeypatch):
    """Host reads (item, tolist, bool, float, cpu, numpy) outside torch.optim, counted over a run:
    at most 1.5 per update on average, logged updates included (on CUDA each one is a sync)."""
    monkeypatch.chdir(tmp_path)
    run = pretrain.Run(pretrain.Config(num_envs=8, batch_size=32, warmup=2, probe=False,
                                       generator=SHIPPED, updates=40), tmp_path / "r")
    run.dir.mkdir()
    run.generator_id = ""
    reads = []

    def counting(name):
        real = getattr(torch.Tensor, name)

        def read(self, *a, **k):
            caller = sys._getframe(1).f_code.co_filename  # the file that asked for the read
            if "torch/optim" not in caller:
                reads.append((name, caller))
            return real(self, *a, **k)
        return read
    for name in ("item", "tolist", "__bool__", "__float__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    monkeypatch.setattr(pretrain.runfiles, "save_finished", lambda run: None)
    pretrain.train(run)
    assert run.step == 40 and len(run.metrics) == 4
    assert len(reads) / run.step <= 1.5, reads[:20]


@pytest.mark.parametrize("args, message", [
    (["--method", "magic"], "invalid choice: 'magic'"),
    (["--temperature", "0"], "1e-3 <= temperature <= 10"),
    (["--probe-split", "train"], "invalid choice: 'train'"),
    (["--generator", "nowhere.pt", "--no-probe"], "not found"),
])
def test_bad_flags_give_one_clear_error(tmp_path, args, message):
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith("error:") and message in r.stderr
    assert "Traceback" not in r.stderr


def test_validation_probe_never_reads_the_test_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real, reads = pretrain.load_split, []

    def train_only(data, split, download=False):
        assert split == "train", "the validation probe read the test split"
        reads.append(split)
        return real(data, split, download)
    for module in (pretrain, pretrain.runfiles):  # the run's class check and the closing probe
        monkeypatch.setattr(module, "load_split", train_only)
    result = pretrain.main(["--updates", "3", "--batch-size", "32", "--num-envs", "8", "--generator",
                            SHIPPED, "--probe-split", "val", "--probe-images", "2000", "--name", "v"])
    assert 0 <= result["linear_probe_val"] <= 1 and "linear_probe" not in result
    assert reads == ["train", "train"]  # palmup holds no images while it trains: read again


def test_augment_flag_augments_the_pairs_of_world_and_generator_methods(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(pretrain, "augment", lambda x: calls.append(len(x)) or x)
    for augment in (False, True):
        cfg = pretrain.Config(method="genrep", batch_size=8, generator=SHIPPED, probe=False,
                              augment=augment)
        pretrain.baseline_update(pretrain.Run(cfg, tmp_path / "a"), logged=False)
    assert calls == [8, 8]  # both views, only with --augment


# ---- every --method end to end, a few updates each ----------------------------------------------
SMOKE = ["--updates", "6", "--batch-size", "16", "--num-envs", "8", "--warmup", "2", "--buffer-size",
         "500", "--checkpoint-every", "3", "--generator", SHIPPED, "--probe-images", "200",
         "--snapshots", "3,6"]


@pytest.mark.parametrize("method", pretrain.METHODS)
def test_every_method_runs_end_to_end(tmp_path, monkeypatch, method):
    monkeypatch.chdir(tmp_path)
    result = pretrain.main([*SMOKE, "--method", method, "--name", method])
    out = tmp_path / "runs" / method
    assert 0 <= result["linear_probe"] <= 1 and result["method"] == method
    assert (out / "encoder.pt").is_file() and not (out / "ckpt.pt").exists()
    assert (out / "agent.pt").is_file() == (method == "palmup")  # only Palm-up has an agent to keep
    if method != "none":
        snap = torch.load(out / "encoder_6.pt", weights_only=True)
        final = torch.load(out / "encoder.pt", weights_only=True)
        assert snap["update"] == 6
        assert all(torch.equal(snap["state_dict"][k], v) for k, v in final["state_dict"].items())
        assert torch.load(out / "encoder_3.pt", weights_only=True)["update"] == 3


@pytest.mark.parametrize("method", ["random", "palmup"])
def test_a_snapshot_is_the_shorter_run_whether_or_not_it_probes(tmp_path, monkeypatch, method):
    """The budget curve's premise: the snapshot at update 3 of a 6-update run without a probe is the
    encoder of a 3-update run with one (the probe loads labels; it must not change a single draw)."""
    monkeypatch.chdir(tmp_path)
    tiny = [*SMOKE[:SMOKE.index("--snapshots")], "--method", method]
    pretrain.main([*tiny, "--updates", "6", "--snapshots", "3", "--no-probe", "--name", "long"])
    pretrain.main([*tiny, "--updates", "3", "--name", "short"])
    snap = torch.load(tmp_path / "runs" / "long" / "encoder_3.pt", weights_only=True)["state_dict"]
    short = torch.load(tmp_path / "runs" / "short" / "encoder.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(snap[k], v) for k, v in short.items())


def test_the_policy_file_rebuilds_the_actor(tmp_path, monkeypatch):
    from agent import SAC, SACConfig
    monkeypatch.chdir(tmp_path)
    pretrain.main([*SMOKE, "--no-probe", "--name", "p"])
    a = torch.load(tmp_path / "runs" / "p" / "agent.pt", weights_only=True)
    sac = SAC(a["feature_dim"], a["action_dim"], SACConfig(**a["config"]["sac"]))
    sac.actor.load_state_dict(a["actor"])
    assert a["kind"] == "agent" and a["config"]["method"] == "palmup"
    act = sac.act(torch.randn(5, a["feature_dim"]), deterministic=True)  # (5, d)
    assert act.shape == (5, a["action_dim"]) and act.abs().max() <= 1


def test_the_supervised_batch_labels_each_image_with_its_own_class(tmp_path, monkeypatch):
    """Each class a flat colour of its own: every image's label must be its colour's class."""
    monkeypatch.chdir(tmp_path)
    x = torch.arange(10).repeat_interleave(20).mul(25).to(torch.uint8)[:, None, None, None]
    x = x.expand(200, 3, 32, 32)  # (200, 3, 32, 32)
    y = torch.arange(10).repeat_interleave(20)
    monkeypatch.setattr(pretrain, "load_split", lambda data, split, download=False: (
        x.clone(), y.clone(), [str(c) for c in range(10)]))
    run = pretrain.Run(pretrain.Config(method="supervised", batch_size=64, probe=False), tmp_path / "s")
    for _ in range(3):
        v1, v2, labels = pretrain.PAIRS["supervised"](run)
        colour = torch.cat([v1, v2])[:, 0, 0, 0]  # (2B,) in [-1, 1]
        assert torch.equal(((colour + 1) * 127.5).round().long() // 25, labels)


def test_a_resume_at_another_thread_count_is_refused(tmp_path, monkeypatch):
    """Another torch thread count sums the gradients in another order: it would not continue the
    same run (docs/performance.md, "Reproducibility")."""
    monkeypatch.chdir(tmp_path)
    args = ["--method", "genrep", "--updates", "6", "--batch-size", "16", "--checkpoint-every", "3",
            "--generator", SHIPPED, "--no-probe", "--name", "r"]
    real_update = pretrain.baseline_update

    def interrupt_at_4(run, logged):
        if run.step == 4:
            raise KeyboardInterrupt
        return real_update(run, logged)
    monkeypatch.setattr(pretrain, "baseline_update", interrupt_at_4)
    with pytest.raises(SystemExit):
        pretrain.main(args)
    monkeypatch.setattr(pretrain, "baseline_update", real_update)
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 1)
    with pytest.raises(SystemExit, match=f"trained with {threads} torch threads, not {threads + 1}"):
        pretrain.main([*args, "--resume", "runs/r"])
