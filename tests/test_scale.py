"""docs/scale.md: a pretrained BigGAN-deep as the world (offline, on a tiny random-weight BigGANConfig) and
`torchrun` data parallelism (2 CPU processes with gloo)."""
import json, socket, subprocess, sys

import pytest
import torch
import torch.nn as nn

import biggan
import pretrain
from common import ROOT
from world import LatentWorld, WorldConfig, rollout

SHIPPED = str(ROOT / "checkpoints" / "embedded_gan.pt")


# ---- BigGAN-deep behind the generator interface ---------------------------------------------------------------------
def tiny_biggan(output_dim=32):
    """A random-weight BigGAN-deep with a few channels: the real code path, 4x4 -> 32x32, 1000 classes."""
    biggan = pytest.importorskip("pytorch_pretrained_biggan",
                                 reason="optional package: pip install -r requirements-biggan.txt")
    config = biggan.BigGANConfig(output_dim=output_dim, z_dim=128, class_embed_dim=128, channel_width=4,
                                 num_classes=1000, attention_layer_position=2,
                                 layers=[(False, 16, 16), (True, 16, 8), (True, 8, 4), (True, 4, 2), (False, 2, 1)])
    torch.manual_seed(0)
    G = biggan.BigGAN(config)
    for m in G.modules():  # the unconditional batch norm's affine weights are left uninitialised by the package
        if isinstance(m, biggan.model.BigGANBatchNorm) and not m.conditional:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    with torch.no_grad():  # spectral norm's power iteration runs in train mode: from random vectors to sigma_max
        for _ in range(20):
            G.train()(torch.zeros(1, 128), torch.zeros(1, 1000), 1.0)
    return G.eval()


def test_adapter_shapes_range_and_class_subset():
    G = biggan.BigGANAdapter(tiny_biggan(), classes=[5, 7, 900], truncation=0.5).requires_grad_(False)
    assert (G.latent_dim, G.num_classes, G.image_size) == (128, 3, 32)
    z, y = torch.randn(6, 128), torch.tensor([0, 1, 2, 2, 1, 0])
    x = G(z, y)
    assert x.shape == (6, 3, 32, 32) and x.min() >= -1 and x.max() <= 1 and x.std() > 0
    # y indexes the subset: label 1 is ImageNet class 7
    direct = G.biggan(G.prior(z), nn.functional.one_hot(torch.tensor([5, 7, 900, 900, 7, 5]), 1000).float(), 0.5)
    torch.testing.assert_close(x, direct.clamp(-1, 1))
    assert not torch.allclose(G(z, torch.zeros(6, dtype=torch.long)), x)  # the class changes the image


def test_prior_is_biggans_truncated_normal():
    ppb = pytest.importorskip("pytorch_pretrained_biggan", reason="optional: pip install -r requirements-biggan.txt")
    G = biggan.BigGANAdapter(tiny_biggan(), truncation=0.4)
    ours = G.prior(torch.randn(40000, 1, generator=torch.Generator().manual_seed(0))).flatten()
    theirs = torch.from_numpy(ppb.truncated_noise_sample(40000, 1, truncation=0.4, seed=0)).flatten()
    assert ours.abs().max() <= 0.8 + 1e-6  # t * 2
    q = torch.tensor([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
    torch.testing.assert_close(ours.quantile(q), theirs.quantile(q), atol=0.02, rtol=0)
    z = torch.linspace(-3, 3, 101)[:, None]
    assert (G.prior(z).diff(dim=0) >= 0).all()  # monotone: nearby world latents stay nearby


def test_resize_to_the_encoders_frame_size():
    G = biggan.BigGANAdapter(tiny_biggan(), image_size=16).requires_grad_(False)
    z, y = torch.randn(4, 128), torch.arange(4)
    small, full = G(z, y), biggan.BigGANAdapter(G.biggan).requires_grad_(False)(z, y)
    assert small.shape == (4, 3, 16, 16) and small.min() >= -1 and small.max() <= 1
    # antialiased: each output pixel averages its 2x2 block and neighbours, so the image mean is kept
    torch.testing.assert_close(small.mean((2, 3)), full.mean((2, 3)), atol=0.02, rtol=0)
    assert not torch.allclose(small, full[:, :, ::2, ::2], atol=1e-3)  # not a plain subsampling


def test_the_world_keeps_its_stationary_law_on_biggan():
    G = biggan.BigGANAdapter(tiny_biggan(), classes=biggan.BIGGAN_PRESETS["imagenette"]).requires_grad_(False)
    world = LatentWorld(G, 32, WorldConfig(horizon=8), seed=0)
    frames, labels, latents, _ = rollout(world, 16, seed=0)
    assert frames.shape == (17, 32, 3, 32, 32) and labels.max() < 10
    assert abs(latents[1:].var().item() - 1) < 0.1  # VP-EMA: z stays N(0, I) under random actions
    assert abs(G.prior(latents).var().item() - 0.774) < 0.08  # what BigGAN receives: truncnorm(-2, 2), var 0.774


@pytest.mark.parametrize("spec, expected", [("", list(range(1000))), ("3,1,999", [3, 1, 999]),
                                            ("imagewoof", biggan.BIGGAN_PRESETS["imagewoof"])])
def test_class_specs(spec, expected):
    assert biggan.parse_classes(spec) == expected


def test_presets_name_the_classes_they_claim():
    import torchvision
    names = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # ImageNet's 1000, in index order
    assert [names[i] for i in biggan.BIGGAN_PRESETS["imagenette"]][:3] == ["tench", "English springer", "cassette player"]
    assert {names[i] for i in biggan.BIGGAN_PRESETS["imagewoof"]} >= {"beagle", "Samoyed", "dingo", "golden retriever"}
    in100 = biggan.BIGGAN_PRESETS["imagenet100"]
    assert len(set(in100)) == 100 and max(in100) < 1000
    assert {names[i] for i in in100} >= {"bonnet", "lampshade", "Chihuahua", "carbonara", "stinkhorn"}  # CMC's list


@pytest.mark.parametrize("spec", ["1000", "2,2", "dogs", "1,,2"])
def test_bad_class_specs_are_refused(spec):
    with pytest.raises(ValueError, match="--classes"):
        biggan.parse_classes(spec)


def test_five_updates_on_biggan(tmp_path, monkeypatch):
    pytest.importorskip("pytorch_pretrained_biggan", reason="optional: pip install -r requirements-biggan.txt")
    import pytorch_pretrained_biggan
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pytorch_pretrained_biggan.BigGAN, "from_pretrained", lambda name: tiny_biggan())
    args = ["--generator", "biggan-deep-128", "--classes", "imagenette", "--image-size", "16", "--truncation", "0.7",
            "--updates", "5", "--batch-size", "16", "--num-envs", "4", "--warmup", "2", "--apt-k", "3",
            "--checkpoint-every", "2", "--horizon", "4", "--no-probe", "--name", "bg"]
    result = pretrain.main(args)
    assert result["updates"] == 5 and (tmp_path / "runs" / "bg" / "encoder.pt").is_file()
    run = pretrain.Run(pretrain.parse_config(pretrain.Config, [*args, "--name", "bg2"]), tmp_path)
    assert run.world.num_classes == 10 and run.obs.shape == (4, 3, 16, 16) and run.buffer.obs.shape[1:] == (3, 16, 16)


def cli(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "pretrain.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1200)  # a hang guard


@pytest.mark.parametrize("args, message", [
    (["--generator", SHIPPED, "--classes", "1,2"], "only with a biggan-deep generator"),
    (["--generator", "biggan-deep-128", "--classes", "1000"], "--classes needs distinct indices"),
    (["--generator", "biggan-deep-128", "--truncation", "0"], "0 < truncation <= 1"),
    (["--generator", "biggan-deep-128", "--image-size", "4"], "8 <= image_size <= 512"),
])
def test_biggan_flags_are_checked_before_any_file(tmp_path, args, message):
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode != 0 and message in proc.stderr.strip().splitlines()[-1], proc.stderr[-1000:]
    assert list(tmp_path.iterdir()) == []


def test_missing_package_or_weights_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "pytorch_pretrained_biggan", None)  # as if not installed
    with pytest.raises(SystemExit, match=r"^error: .*pip install -r requirements-biggan.txt$"):
        pretrain.main(["--generator", "biggan-deep-256", "--no-probe"])
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    pytest.importorskip("pytorch_pretrained_biggan", reason="optional: pip install -r requirements-biggan.txt")
    monkeypatch.chdir(tmp_path)
    import pytorch_pretrained_biggan

    def offline(name):
        raise OSError("Failed to resolve 's3.amazonaws.com'")  # what requests raises without a network

    monkeypatch.setattr(pytorch_pretrained_biggan.BigGAN, "from_pretrained", offline)
    with pytest.raises(SystemExit, match=r"^error: could not load the biggan-deep-128 weights .*PRETRAINED_BIGGAN"):
        pretrain.main(["--generator", "biggan-deep-128", "--no-probe"])
    assert list(tmp_path.iterdir()) == []


# ---- torchrun: 2 CPU processes with gloo ----------------------------------------------------------------------------
WORKER = """
import os, sys
import torch
sys.path.insert(0, {root!r})
import pretrain
train, stop = pretrain.train, int(os.environ.get("STOP_AT", "0"))

def update(run, logged, _real=pretrain.palmup_update):
    if run.step == stop:
        raise KeyboardInterrupt
    return _real(run, logged)

def record(run):  # after training: what each rank holds
    train(run)
    torch.save({{"model": run.model.state_dict(), "sac": run.sac.state_dict(), "frames": run.buffer.obs[:64],
                "in_group": torch.distributed.is_initialized()}}, f"rank{{run.rank}}.pt")

pretrain.train = record
if stop:
    pretrain.palmup_update = update
pretrain.main(sys.argv[1:])
"""
DDP_ARGS = ["--generator", SHIPPED, "--updates", "10", "--batch-size", "16", "--num-envs", "4", "--warmup", "2",
            "--apt-k", "3", "--checkpoint-every", "4", "--buffer-size", "256", "--horizon", "4", "--no-probe"]


def torchrun(cwd, *args, stop=0):
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (cwd / "worker.py").write_text(WORKER.format(root=str(ROOT)))
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "STOP_AT": str(stop)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(port), "worker.py", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # a hang guard


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ddp")
    proc = torchrun(cwd, *DDP_ARGS, "--name", "ddp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd, proc


def test_two_gloo_processes_hold_the_same_weights_and_play_different_worlds(two_ranks):
    cwd, proc = two_ranks
    r0, r1 = (torch.load(cwd / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for part in ("model", "sac"):  # encoder + head, actor + critics + targets + alpha: weights and BN statistics
        assert r0[part].keys() == r1[part].keys()
        assert all(torch.equal(r0[part][k], r1[part][k]) for k in r0[part]), part
    saved = torch.load(cwd / "runs" / "ddp" / "encoder.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], r0["model"]["encoder." + k]) for k in saved)
    assert not torch.equal(r0["frames"], r1["frames"])  # each rank its own world seed
    assert not r0["in_group"] and not r1["in_group"]  # both left the process group before exiting
    assert any(not torch.equal(v, pretrain.Model("cnn", 32, 128, 1).state_dict()[k])
               for k, v in r0["model"].items() if v.is_floating_point())  # it trained


def test_only_rank_0_writes_one_run_folder_and_prints(two_ranks):
    cwd, proc = two_ranks
    assert [p.name for p in (cwd / "runs").iterdir()] == ["ddp"]
    files = sorted(p.name for p in (cwd / "runs" / "ddp").iterdir())
    assert files == ["agent.pt", "curves.png", "encoder.pt", "filmstrip_end.png", "filmstrip_start.png", "metrics.csv",
                     "result.json"], files  # no ckpt.pt, no lock, nothing from rank 1
    result = json.loads((cwd / "runs" / "ddp" / "result.json").read_text())
    assert (result["processes"], result["pairs_per_update"], result["envs"]) == (2, 32, 8)
    assert proc.stdout.count("torchrun: 2 processes") == 1 and proc.stdout.count("ddp: {") == 1, proc.stdout


def test_an_interrupted_two_process_run_resumes(two_ranks, tmp_path):
    cut = torchrun(tmp_path, *DDP_ARGS, "--name", "ddp", stop=5)  # stopped after the checkpoint at update 4
    assert cut.returncode != 0 and (tmp_path / "runs" / "ddp" / "ckpt.pt").is_file()
    assert "interrupted at update 5" in cut.stderr
    ckpt = torch.load(tmp_path / "runs" / "ddp" / "ckpt.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 2
    assert not torch.equal(ckpt["ranks"][0]["buffer"]["obs"], ckpt["ranks"][1]["buffer"]["obs"])
    assert "--resume runs/ddp" in cut.stderr  # the command that continues it
    done = torchrun(tmp_path, *DDP_ARGS, "--name", "ddp", "--resume", "runs/ddp")
    assert done.returncode == 0 and "resuming runs/ddp from update 4" in done.stdout, done.stderr[-3000:]
    whole, resumed = (torch.load(d / "runs" / "ddp" / "encoder.pt", weights_only=True)["state_dict"]
                      for d in (two_ranks[0], tmp_path))
    for k in whole:  # the same run: every rank's envs, buffer and RNG came back (same kernels: equal up to rounding)
        torch.testing.assert_close(resumed[k], whole[k], rtol=1e-4, atol=1e-5)


def test_a_single_process_checkpoint_is_not_resumed_by_two():
    import ddp
    with pytest.raises(ValueError, match="written by 1 process"):
        ddp.own_part({"step": 3}, rank=0, world_size=2)
