"""Tests of cg2a_ext.rl.core.augmentations and cg2a_ext.rl.core.image_bank."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cg2a_ext.rl.core import image_bank as ib
from cg2a_ext.rl.core.augmentations import (
    AUGMENTATIONS,
    apply_conv_kernels,
    make_combination,
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
def test_overlay_mixes_one_bank_image_per_sample(fn, alpha):
    bank = ib.ProceduralImageBank(pool_size=16, seed=1)
    x = _batch(b=8, frames=3)
    y = fn(x, generator=_gen("cpu", 0), image_bank=bank)
    img = (y - (1 - alpha) * x) / (alpha * 255.0)  # the overlaid image, in [0, 1]
    assert img.min() > -1e-4 and img.max() < 1 + 1e-4
    torch.testing.assert_close(img[:, :3], img[:, 3:6], atol=1e-4, rtol=0)  # same image on every frame
    pool = bank.pool(20, 24).float() / 255.0
    dist = (img[:, None, :3] - pool[None]).abs().amax(dim=(2, 3, 4))  # [B, N]
    assert bool((dist.min(dim=1).values < 1e-3).all())  # each is a bank image
    assert len(set(dist.argmin(dim=1).tolist())) > 1
    assert (y - x).abs().max() <= alpha * 255.0 + 1e-3
    with pytest.raises(ValueError, match="alpha"):
        random_overlay(x, alpha=1.5)


def test_folder_image_bank(tmp_path, monkeypatch):
    from PIL import Image

    colours = {"beach": (250, 10, 10), "forest": (10, 250, 10), "sky": (10, 10, 250)}
    for cls, rgb in colours.items():
        (tmp_path / cls).mkdir()
        Image.new("RGB", (40, 30), rgb).save(tmp_path / cls / "00000001.jpg", quality=100)
    (tmp_path / "notes.txt").write_text("not an image")
    monkeypatch.setenv(ib.OVERLAY_ENV_VAR, str(tmp_path))
    bank = ib.resolve_image_bank(None)
    assert isinstance(bank, ib.FolderImageBank) and len(bank) == 3
    x = torch.zeros(12, 6, 10, 10)
    y = random_overlay(x, generator=_gen("cpu", 0))  # bank from the variable
    mean_rgb = (y[:, :3] / (0.5 * 255)).mean(dim=(2, 3)) * 255
    ref = torch.tensor(list(colours.values()), dtype=torch.float32)
    assert bool(((mean_rgb[:, None] - ref[None]).abs().amax(-1).min(-1).values < 6).all())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="ImageFolder"):
        ib.FolderImageBank(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ib.FolderImageBank(tmp_path / "missing")


def test_procedural_bank_is_seeded_and_varied():
    a = ib.ProceduralImageBank(pool_size=32, seed=0).pool(16, 16)
    b = ib.ProceduralImageBank(pool_size=32, seed=0).pool(16, 16)
    c = ib.ProceduralImageBank(pool_size=32, seed=1).pool(16, 16)
    assert a.dtype == torch.uint8 and a.shape == (32, 3, 16, 16)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.float().std(dim=(1, 2, 3)).min() > 5  # no flat images
    assert (a.float().mean(dim=(2, 3)).std(dim=0) > 10).all()  # colours vary between images


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
    # Individual functions under the same stream give the same copies.
    g = _gen("cpu", 5)
    torch.testing.assert_close(copies[0], random_conv(x, generator=g))
    torch.testing.assert_close(copies[1], random_overlay(x, generator=g, image_bank=combo.image_bank))
    assert (copies[2] - x).abs().max() <= 0.1 * 255 + 1e-3  # overlay_s: mu = 0.1
    aliases = make_combination(["random_shift", " Identity "])
    assert aliases.names == ["shift", "identity"] and aliases.image_bank is None
    with pytest.raises(ValueError, match="unknown augmentation 'blur'.*conv.*overlay_s"):
        make_combination("conv,blur")
    with pytest.raises(ValueError, match="empty"):
        make_combination("conv,,overlay")
