"""Tests of cg2a_ext.rl.core.augmentations (the image bank's own tests: test_image_bank.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cg2a_ext.rl.core import image_bank as ib
from cg2a_ext.rl.core.augmentations import (
    AUGMENTATIONS,
    apply_conv_kernels,
    make_combination,
    random_overlays,
    overlay_s,
    random_conv,
    random_conv_kernels,
    random_overlay,
    random_shift,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]   # cuda: skipped with the reason where absent


def _batch(b=6, frames=3, h=20, w=24, device="cpu", seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3 * frames, h, w, generator=g) * 255
    x[0, 0, 0, 0], x[0, 1, 0, 0] = 0.0, 255.0  # the ends of the range
    return x.to(device)


def _gen(device, seed):
    return torch.Generator(device=device).manual_seed(seed)


@pytest.fixture(autouse=True)
def _no_overlay_env(monkeypatch):
    monkeypatch.delenv(ib.OVERLAY_ENV_VAR, raising=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_shape_range_and_determinism(name, device):
    fn = AUGMENTATIONS[name]
    x = _batch(device=device)
    before = x.clone()
    y1 = fn(x, generator=_gen(device, 1))
    y2 = fn(x, generator=_gen(device, 1))
    y3 = fn(x, generator=_gen(device, 2))
    assert y1.shape == x.shape and y1.dtype == x.dtype and y1.device == x.device
    assert y1.min() >= 0 and y1.max() <= 255
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    torch.testing.assert_close(x, before, rtol=0, atol=0)  # input untouched
    if name == "identity":
        torch.testing.assert_close(y1, x, rtol=0, atol=0)
    else:
        assert not torch.equal(y1, y3) and not torch.equal(y1, x)
    # float64 and a single frame work too
    x64 = _batch(b=2, frames=1, device=device).double()
    assert fn(x64).dtype == torch.float64


def test_bad_inputs():
    x = _batch()
    for fn in AUGMENTATIONS.values():
        with pytest.raises(ValueError, match="3 \\* frames"):
            fn(x[:, :4])
        if fn is not random_shift:   # the shift also takes uint8 frames
            with pytest.raises(ValueError, match="floating"):
                fn(x.to(torch.uint8))
        with pytest.raises(ValueError, match="floating"):
            fn(x.to(torch.int32))
        with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
            fn(x[0])
        with pytest.raises(ValueError, match="generator is on cpu"):
            fn(torch.empty(2, 3, 8, 8, device="meta"), generator=torch.Generator())


def test_random_shift_is_a_replicate_padded_crop():
    x = _batch(b=16)
    y = random_shift(x, generator=_gen("cpu", 0), pad=4)
    padded = F.pad(x, (4, 4, 4, 4), mode="replicate")
    h, w = x.shape[-2:]
    offsets = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if torch.equal(padded[i, :, dy : dy + h, dx : dx + w], y[i])  # all frames, one shift
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 4  # per-sample shifts
    torch.testing.assert_close(random_shift(x, pad=0), x)
    # uint8 frames get the same shift (the agent shifts before converting to float)
    x8 = x.round().clamp(0, 255).to(torch.uint8)
    y8 = random_shift(x8, generator=_gen("cpu", 0), pad=4)
    assert y8.dtype == torch.uint8
    assert torch.equal(y8.float(), random_shift(x8.float(), generator=_gen("cpu", 0), pad=4))
    # pads larger than the image still replicate the border
    big = random_shift(x[:, :, :3, :3], generator=_gen("cpu", 1), pad=5)
    ref = F.pad(x[:, :, :3, :3], (5, 5, 5, 5), mode="replicate")
    offs = torch.randint(0, 11, (len(x), 2), generator=_gen("cpu", 1))
    for i, (dy, dx) in enumerate(offs.tolist()):
        assert torch.equal(big[i], ref[i, :, dy : dy + 3, dx : dx + 3])


def test_random_conv_is_one_kernel_per_sample_shared_by_frames():
    x = _batch(b=5, frames=3)
    kernels = random_conv_kernels(5, generator=_gen("cpu", 3))
    y = random_conv(x, generator=_gen("cpu", 3))
    # Per-sample loop reference (SVEA / DMC-GB's implementation).
    ref = []
    for i in range(5):
        xi = F.pad(x[i].reshape(3, 3, *x.shape[-2:]) / 255.0, (1, 1, 1, 1), mode="replicate")
        ref.append((torch.sigmoid(F.conv2d(xi, kernels[i])) * 255.0).reshape(x.shape[1:]))
    torch.testing.assert_close(y, torch.stack(ref), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(apply_conv_kernels(x, kernels), y)
    # Identical frames stay identical (shared kernel); identical samples differ (fresh kernels).
    same = x[:1, :3].repeat(4, 3, 1, 1)
    out = random_conv(same, generator=_gen("cpu", 4))
    torch.testing.assert_close(out[:, :3], out[:, 3:6], rtol=0, atol=0)
    torch.testing.assert_close(out[:, :3], out[:, 6:], rtol=0, atol=0)
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="kernels must have shape"):
        apply_conv_kernels(x, kernels[:2])


@pytest.mark.parametrize("fn,alpha", [(random_overlay, 0.5), (overlay_s, 0.1)])
def test_overlay_mixes_one_fresh_image_per_sample(fn, alpha):
    bank = ib.ProceduralImageBank(pool_size=16, seed=1)
    x = _batch(b=8, frames=3)
    y = fn(x, generator=_gen("cpu", 0), image_bank=bank)
    img = (y - (1 - alpha) * x) / (alpha * 255.0)  # the overlaid image, in [0, 1]
    assert img.min() > -1e-4 and img.max() < 1 + 1e-4
    torch.testing.assert_close(img[:, :3], img[:, 3:6], atol=1e-4, rtol=0)  # same image on every frame
    assert not torch.allclose(img[0, :3], img[1, :3], atol=1e-2)
    assert (y - x).abs().max() <= alpha * 255.0 + 1e-3
    with pytest.raises(ValueError, match="alpha"):
        random_overlay(x, alpha=1.5)


def test_overlay_images_are_fresh_crops_and_flips_per_draw():
    """Every draw is a new random resized crop (and flip) of a pool image: with a one-image pool, two draws
    differ from each other and from the whole image (the old fixed pool served the same image each time)."""
    bank = ib.ProceduralImageBank(pool_size=1, seed=3)
    x = torch.zeros(16, 9, 24, 24)
    g = _gen("cpu", 0)
    a, b = random_overlay(x, generator=g, image_bank=bank), random_overlay(x, generator=g, image_bank=bank)
    assert not torch.equal(a, b)
    whole = bank.pool(24, 24).float() * 0.5
    assert not torch.allclose(a[:, :3], whole.expand(16, -1, -1, -1), atol=3)
    assert len({tuple(a[i, :3].flatten()[:50].tolist()) for i in range(16)}) == 16   # one crop per sample


def test_random_shift_reads_at_the_offsets_it_draws():
    """Sample i is the replicate-padded batch cropped at the i-th (row, column) pair of one randint draw: the
    offsets, and so a seeded run's batches, are fixed by the generator."""
    x = _batch(b=8)
    h, w = x.shape[-2:]
    for pad in (1, 4):
        y = random_shift(x, generator=_gen("cpu", 3), pad=pad)
        offsets = torch.randint(0, 2 * pad + 1, (8, 2), generator=_gen("cpu", 3))
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        for i, (dy, dx) in enumerate(offsets.tolist()):
            assert torch.equal(y[i], padded[i, :, dy:dy + h, dx:dx + w])


@pytest.mark.parametrize("device", DEVICES)
def test_overlay_draws_are_seeded_by_the_generator_on_the_device(device):
    bank = ib.ProceduralImageBank(pool_size=8, seed=0)
    x = _batch(b=5, device=device)
    a = random_overlay(x, generator=_gen(device, 4), image_bank=bank)
    b = random_overlay(x, generator=_gen(device, 4), image_bank=bank)
    c = random_overlay(x, generator=_gen(device, 5), image_bank=bank)
    assert a.device == x.device and torch.equal(a, b) and not torch.equal(a, c)
    assert bank.source(48, device).device.type == torch.device(device).type


def test_overlay_s_mu_is_an_option_and_checked():
    from cg2a_ext.rl.config import ConfigError, TrainConfig

    x = torch.full((6, 9, 16, 16), 255.0)
    (y,) = make_combination("overlay_s", overlay_s_mu=0.05)(x, generator=_gen("cpu", 0))
    assert y.min() >= 0.95 * 255 - 1e-3 and y.min() < 0.97 * 255
    for bad in (0.0, 0.2, 0.5):
        with pytest.raises(ValueError, match="overlay_s_mu"):
            make_combination("overlay_s", overlay_s_mu=bad)
    cfg = TrainConfig(task="cartpole_balance", algorithm="cg2a", preset="cpu")
    assert cfg.overlay_s_mu == 0.1 and cfg.overlay_pool_size == 2048
    for name, bad in (("overlay_s_mu", 0.25), ("overlay_s_mu", 0.0), ("overlay_pool_size", 0)):
        with pytest.raises(ConfigError, match=f"--{name}"):
            TrainConfig(task="cartpole_balance", algorithm="cg2a", preset="cpu", **{name: bad}).validate()
    TrainConfig(task="cartpole_balance", algorithm="cg2a", preset="cpu", overlay_s_mu=0.15,
                overlay_pool_size=64).validate()


def test_trunk_scales_pixels_as_dmcgb():
    """DMC-GB's SharedCNN reads x / 255 (no - 0.5 centring)."""
    from cg2a_ext.rl.core.agent.networks import SharedCNN

    trunk = SharedCNN((9, 20, 20), num_layers=2, num_filters=4, num_stride2=1).double()
    x = torch.randint(0, 256, (3, 9, 20, 20)).double()
    torch.testing.assert_close(trunk(x), trunk.layers(x / 255.0), rtol=1e-12, atol=1e-12)


def test_start_up_plan_says_when_the_overlays_are_procedural():
    from cg2a_ext.rl.training import describe

    p = {"task": "cartpole_balance", "algorithm": "cg2a", "K": 4, "preset": "cpu", "device": "cpu",
         "cuda_available": False, "run_dir": "runs/x", "start_step": 0, "train_steps": 10, "seed_steps": 2,
         "evaluation": {"every_steps": 0, "episodes": 1, "modes": ["train"]},
         "checkpoints": {"every_steps": 0, "every_minutes": 0, "at_episode_end": False},
         "measured": {"seed_steps_per_s": 1.0, "train_steps_per_s": 1.0, "eval_episode_s": 1.0},
         "overlay_images": "procedural", "estimated_seconds": 5.0}
    assert "overlay images: PROCEDURAL" in describe(p) and "not Places365" in describe(p)
    assert "overlay images: the folder /data/places" in describe({**p, "overlay_images": "/data/places"})
    assert "overlay images" not in describe({**p, "algorithm": "drq", "draws_overlay_images": False})


def test_make_combination():
    combo = make_combination("conv,overlay,overlay_s")
    assert combo.names == ["conv", "overlay", "overlay_s"] and len(combo) == 3
    assert "procedural" in repr(combo)
    x = _batch(b=4)
    copies = combo(x, generator=_gen("cpu", 5))
    again = combo(x, generator=_gen("cpu", 5))
    assert len(copies) == 3
    for c, d in zip(copies, again):
        assert c.shape == x.shape and torch.equal(c, d) and not torch.equal(c, x)
    # The same copies as the functions under the same stream: conv, then both overlays drawn together.
    g = _gen("cpu", 5)
    torch.testing.assert_close(copies[0], random_conv(x, generator=g))
    overlays = random_overlays(x, (0.5, 0.1), generator=g, image_bank=combo.image_bank)
    assert torch.equal(copies[1], overlays[0]) and torch.equal(copies[2], overlays[1])
    assert (copies[2] - x).abs().max() <= 0.1 * 255 + 1e-3  # overlay_s: mu = 0.1
    # A lone overlay is random_overlay itself.
    (alone,) = make_combination("overlay", image_bank=combo.image_bank)(x, generator=_gen("cpu", 6))
    assert torch.equal(alone, random_overlay(x, generator=_gen("cpu", 6), image_bank=combo.image_bank))
    aliases = make_combination(["random_shift", " Identity "])
    assert aliases.names == ["shift", "identity"] and aliases.image_bank is None
    with pytest.raises(ValueError, match="unknown augmentation 'blur'.*conv.*overlay_s"):
        make_combination("conv,blur")
    with pytest.raises(ValueError, match="empty"):
        make_combination("conv,,overlay")


@pytest.mark.parametrize("channels_last", [False, True])
def test_overlays_drawn_together_blend_as_the_formula(channels_last):
    """random_overlays: copy i is (1 - alpha_i) x + alpha_i img over every stacked frame, with images i*B ..
    (i+1)*B of one draw of N*B, in float64 (the reference) as in float32."""
    from cg2a_ext.rl.core import image_bank as ib

    bank = ib.ProceduralImageBank(pool_size=8, seed=0)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-4)):
        x = _batch(b=5).to(dtype)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        b, c, h, w = x.shape
        alphas = (0.5, 0.1, 0.1)
        out = random_overlays(x, alphas, generator=_gen("cpu", 3), image_bank=bank)
        imgs = bank.draw(3 * b, h, w, generator=_gen("cpu", 3), dtype=dtype)
        assert out.shape == (3, b, c, h, w) and out.dtype == dtype
        for i, a in enumerate(alphas):
            ref = (1 - a) * x.reshape(b, c // 3, 3, h, w) + a * imgs[i * b:(i + 1) * b, None]
            torch.testing.assert_close(out[i], ref.reshape(b, c, h, w), rtol=0, atol=tol)
    with pytest.raises(ValueError, match="alpha"):
        random_overlays(x, (0.5, 1.5), image_bank=bank)
    with pytest.raises(ValueError, match="alpha"):
        random_overlays(x, (), image_bank=bank)
