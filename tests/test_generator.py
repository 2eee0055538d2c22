import math

import pytest
import torch

import data
import gan
import generator as gen
from common import ConfigError


def test_embedded_is_deterministic_balanced_and_shaped():
    x1, y1 = data.make_embedded(200, seed=5)
    x2, y2 = data.make_embedded(200, seed=5)
    x3, _ = data.make_embedded(200, seed=6)
    assert x1.shape == (200, 3, 32, 32) and x1.dtype == torch.uint8 and y1.shape == (200,)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert torch.equal(torch.bincount(y1, minlength=10), torch.full((10,), 20))


def test_embedded_has_nuisance_variation():
    # Same class, different images: position, colour and texture vary (no two images alike).
    x, y = data.make_embedded(100, seed=0)
    same = x[y == 3].float()
    assert (same[1:] - same[:-1]).abs().mean() > 20  # mean |difference| in 0..255 pixel units
    assert x.float().std() > 40


def test_generator_output_shape_and_range(tiny_G):
    z, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    out = tiny_G(z, y)
    assert out.shape == (5, 3, 32, 32)
    assert out.min() >= -1 and out.max() <= 1


def test_generator_is_batch_independent_in_eval_mode(tiny_G):
    z, y = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(tiny_G(z, y)[:2], tiny_G(z[:2], y[:2]), atol=1e-6)


def test_checkpoint_round_trip_gives_identical_outputs(tiny_G, tmp_path):
    path = tmp_path / "g.pt"
    gen.save_generator(tiny_G, path, {"note": "test"}, ["a", "b", "c"])
    G2 = gen.load_generator(path)  # channels-last, as every loaded G
    z, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 1])
    # the same memory format, so the same kernels
    tiny_G = tiny_G.to(memory_format=torch.channels_last)
    # tolerance: kernels may reorder sums
    assert torch.allclose(tiny_G(z, y), G2(z, y), rtol=0, atol=1e-6)
    assert (G2.latent_dim, G2.num_classes, G2.image_size) == (8, 3, 32)
    assert not G2.training and G2.classes == ["a", "b", "c"]


def test_bad_checkpoints_raise_clear_errors(tiny_G, tmp_path):
    with pytest.raises(FileNotFoundError, match="^generator checkpoint .*missing.pt not found"):
        gen.load_generator(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        gen.load_generator(junk)
    good = tmp_path / "g.pt"
    gen.save_generator(tiny_G, good, {}, ["a", "b", "c"])
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt"):
        gen.load_generator(truncated)
    other = tmp_path / "other.pt"
    torch.save({"kind": "encoder"}, other)
    with pytest.raises(ValueError, match="is not a generator checkpoint"):
        gen.load_generator(other)
    mismatched = tmp_path / "mismatched.pt"
    ckpt = torch.load(good, weights_only=True)
    ckpt["width"] = 8  # the state dict was saved for width 4
    torch.save(ckpt, mismatched)
    with pytest.raises(ValueError, match="mismatched.pt does not fit its network") as e:
        gen.load_generator(mismatched)
    assert "\n" not in str(e.value)  # one line for the CLI's `error: ...`


def damaged(good, tmp_path, name, **changes):
    """A copy of the checkpoint `good` with some entries changed."""
    ckpt = torch.load(good, weights_only=True)
    ckpt.update(changes)
    torch.save(ckpt, tmp_path / name)
    return tmp_path / name


def test_damaged_checkpoints_raise_one_line_errors(tiny_G, tmp_path):
    good = tmp_path / "g.pt"
    gen.save_generator(tiny_G, good, {}, ["a", "b", "c"])
    state = torch.load(good, weights_only=True)["state_dict"]
    nan = {k: v.clone() for k, v in state.items()}
    nan["out.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(ConfigError, match=r"holds non-finite values \(NaN or inf\) in out.weight"):
        gen.load_generator(damaged(good, tmp_path, "nan.pt", state_dict=nan))
    huge = {"latent_dim": 4097, "num_classes": 100001, "width": 1025}  # above the most allowed
    for key, value in huge.items():  # refused before any network of that size is built
        with pytest.raises(ValueError, match=f"malformed: {key} {value}") as e:
            gen.load_generator(damaged(good, tmp_path, f"{key}.pt", **{key: value}))
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="malformed: latent_dim '8'"):
        gen.load_generator(damaged(good, tmp_path, "text.pt", latent_dim="8"))
    with pytest.raises(ValueError, match="malformed: 2 class names"):
        gen.load_generator(damaged(good, tmp_path, "names.pt", classes=["a", "b"]))
    ckpt = torch.load(good, weights_only=True)
    del ckpt["state_dict"]
    torch.save(ckpt, tmp_path / "no_weights.pt")
    with pytest.raises(ValueError, match="no_weights.pt lacks state_dict"):
        gen.load_generator(tmp_path / "no_weights.pt")


def test_generator_module_re_exports_the_generator_of_gan_py():
    assert gen.Generator is gan.Generator
    assert (gen.load_generator, gen.save_generator) == (gan.load_generator, gan.save_generator)


def test_a_few_training_steps_stay_finite_and_move_the_weights():
    torch.manual_seed(0)
    G, D = gen.Generator(8, 10, 4), gen.Discriminator(10, 4)
    before = [p.clone() for p in G.parameters()]
    opt_g, opt_d = torch.optim.Adam(G.parameters(), 2e-4), torch.optim.Adam(D.parameters(), 2e-4)
    x, y = data.make_embedded(40, seed=0)
    for _ in range(3):
        fake = G(torch.randn(40, 8), y)
        loss_d = gen.d_loss(D, data.to_float(x), fake.detach(), y, 0.2)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = gen.g_loss(D, fake, y, 0.2)
        opt_g.zero_grad()
        loss_g.backward(inputs=list(G.parameters()))
        opt_g.step()
        assert math.isfinite(loss_d.item()) and math.isfinite(loss_g.item())
    assert any(not torch.equal(a, b) for a, b in zip(before, G.parameters()))


def test_shipped_generators_load_and_sample():
    for path, classes in [("checkpoints/embedded_gan.pt", 10), ("checkpoints/cifar10_gan.pt", 10)]:
        G = gen.load_generator(data.ROOT / path)
        out = G(torch.randn(4, G.latent_dim), torch.arange(4))
        assert out.shape == (4, 3, 32, 32) and G.num_classes == classes
        assert torch.isfinite(out).all()


def test_image_folder_loading(tmp_path, monkeypatch):
    from PIL import Image
    monkeypatch.setattr(data, "CACHE", tmp_path / "cache")
    for split in ("train", "test"):
        for c, colour in [("cat", (255, 0, 0)), ("dog", (0, 0, 255))]:
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 40), colour).save(tmp_path / split / c / f"{i}.png")
    x, y, classes = data.load_split(str(tmp_path), "train")
    assert x.shape == (6, 3, 32, 32) and classes == ["cat", "dog"]
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    assert x[0, 0].float().mean() > 250 and x[-1, 2].float().mean() > 250  # red cat, blue dog
    with pytest.raises(FileNotFoundError):
        data.load_split(str(tmp_path / "nowhere"), "train")


def test_conditional_batchnorm_matches_its_formula():
    torch.manual_seed(0)
    cbn = gan.ConditionalBatchNorm(5, 3)
    torch.nn.init.normal_(cbn.class_gain.weight), torch.nn.init.normal_(cbn.class_bias.weight)
    cbn.running_mean.normal_(), cbn.running_var.uniform_(0.5, 2.0)
    cbn.eval()
    x, y = torch.randn(4, 5, 6, 6), torch.tensor([0, 2, 1, 2])
    mean, var = cbn.running_mean[:, None, None], cbn.running_var[:, None, None]  # (C, 1, 1)
    bn = (x - mean) / torch.sqrt(var + cbn.eps)  # (B, C, H, W)
    gain = cbn.class_gain.weight[y][:, :, None, None]  # (B, C, 1, 1)
    bias = cbn.class_bias.weight[y][:, :, None, None]  # (B, C, 1, 1)
    expected = bn * gain + bias
    assert torch.allclose(cbn(x, y), expected, atol=1e-5)


