"""Tests of cg2a_ext.rl.core.image_bank: the crops and flips of a draw, the pool's seeding, the folder and the
procedural banks."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cg2a_ext.rl.core import image_bank as ib
from cg2a_ext.rl.core.augmentations import make_combination, random_overlay


def _gen(device, seed):
    return torch.Generator(device=device).manual_seed(seed)


@pytest.fixture(autouse=True)
def _no_overlay_env(monkeypatch):
    monkeypatch.delenv(ib.OVERLAY_ENV_VAR, raising=False)


class _GradientBank(ib.ImageBank):
    """One image whose red channel is the column, green the row, blue constant: crops and flips readable."""

    def _build(self, side):
        cols = torch.arange(side).float().expand(side, side)
        img = torch.stack([cols, cols.t(), torch.full((side, side), 7.0)])
        return img.mul(255.0 / (side - 1)).round().to(torch.uint8)[None]

    def __len__(self):
        return 1


def test_random_resized_crops_match_a_crop_resize_flip_reference():
    bank = _GradientBank()
    src = bank.source(40)
    n, h, w = 64, 20, 20
    out = ib.random_resized_crops(src, n, h, w, generator=_gen("cpu", 1))
    g = _gen("cpu", 1)                                  # the same draws, in the same order
    torch.randint(1, (n,), generator=g)
    boxes = ib.random_resized_crop_boxes(n, 40, generator=g)
    flips = torch.rand(n, generator=g) < 0.5
    assert 0.3 < flips.float().mean() < 0.7
    for i in range(n):
        t, l, bh, bw = (int(v) for v in boxes[i])
        ref = F.interpolate(src[:, :, t:t + bh, l:l + bw].float(), size=(h, w), mode="bilinear",
                            align_corners=False)[0]
        ref = ref.flip(-1) if flips[i] else ref
        # inside the box's one-pixel rim the resampling is the same (up to the whole-level rounding)
        assert (out[i, :, 1:-1, 1:-1] - ref[:, 1:-1, 1:-1]).abs().max() <= 0.5 + 1e-3
    assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= 255


def test_random_resized_crop_boxes_follow_torchvision_defaults():
    side = 100
    boxes = ib.random_resized_crop_boxes(4000, side, generator=_gen("cpu", 2))
    top, left, h, w = boxes.unbind(1)
    assert bool(((top >= 0) & (left >= 0) & (top + h <= side) & (left + w <= side)).all())
    area = h * w / side**2
    assert area.min() > 0.08 - 0.02 and area.max() <= 1.0 and 0.3 < area.mean() < 0.6
    ratio = w / h
    assert ratio.min() > 0.75 - 0.03 and ratio.max() < 4 / 3 + 0.03 and ratio.std() > 0.1
    assert ib.CROP_SCALE == (0.08, 1.0) and ib.CROP_RATIO == (3 / 4, 4 / 3)


def test_pool_subset_and_procedural_images_come_from_the_run_seed(tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    from cg2a_ext.rl.core.augmentations import overlay_options
    from cg2a_ext.rl.run.seeding import SeedStreams

    for i in range(12):
        (tmp_path / "c").mkdir(exist_ok=True)
        Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(tmp_path / "c" / f"{i:02d}.png")
    picks = {tuple(p.name for p in ib.FolderImageBank(tmp_path, pool_size=4, seed=s).files) for s in range(6)}
    assert len(picks) > 1 and all(len(p) == 4 for p in picks)
    cfg = SimpleNamespace(image_bank=str(tmp_path), overlay_pool_size=4, overlay_s_mu=0.05)
    opts = [ib.bank_options(cfg, SeedStreams(seed)) for seed in (0, 1)]
    assert opts[0]["pool_size"] == 4 and opts[0]["seed"] != 0 and opts[0]["seed"] != opts[1]["seed"]
    assert ib.bank_options(cfg, SeedStreams(0)) == opts[0]                       # a stream, not a counter
    banks = [ib.resolve_image_bank(**o) for o in opts]
    assert len(banks[0]) == 4 and banks[0] is not banks[1]
    assert banks[0] is ib.resolve_image_bank(**opts[0])                           # shared in the process
    combo = make_combination("overlay_s", **overlay_options(cfg, SeedStreams(0)))
    assert combo.image_bank is banks[0] and combo.overlay_s_mu == 0.05
    proc = SimpleNamespace(image_bank="", overlay_pool_size=3, overlay_s_mu=0.1)
    a, b = (ib.resolve_image_bank(**ib.bank_options(proc, SeedStreams(s))) for s in (0, 1))
    assert isinstance(a, ib.ProceduralImageBank) and len(a) == 3 and not torch.equal(a.source(8), b.source(8))


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


# The crop sampling as it was before its ops were merged (fewer launches per overlay): the new one must draw the
# same numbers and return the same values, bit for bit.
def _boxes_before(
    n: int,
    side: int,
    *,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    scale: tuple[float, float] = ib.CROP_SCALE,
    ratio: tuple[float, float] = ib.CROP_RATIO,
) -> torch.Tensor:
    device = torch.device(device)
    area = float(side * side)
    target = torch.empty(n, ib._CROP_TRIES, device=device).uniform_(scale[0], scale[1], generator=generator) * area
    log_r = torch.empty(n, ib._CROP_TRIES, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                                 generator=generator)
    aspect = log_r.exp()
    w = (target * aspect).sqrt().round()
    h = (target / aspect).sqrt().round()
    ok = (w >= 1) & (w <= side) & (h >= 1) & (h <= side)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)          # the first try that fits (0 when none)
    found = ok.any(dim=1)
    full = torch.full((n,), float(side), device=device)
    h = torch.where(found, h.gather(1, first)[:, 0], full)
    w = torch.where(found, w.gather(1, first)[:, 0], full)
    u = torch.rand(n, 2, device=device, generator=generator)
    top = (u[:, 0] * (side - h + 1)).floor().clamp_max(side - h)
    left = (u[:, 1] * (side - w + 1)).floor().clamp_max(side - w)
    return torch.stack([top, left, h, w], dim=1)


def _crops_before(
    source: torch.Tensor,
    n: int,
    height: int,
    width: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    scale: tuple[float, float] = ib.CROP_SCALE,
    ratio: tuple[float, float] = ib.CROP_RATIO,
    flip: bool = True,
) -> torch.Tensor:
    num, _, side, side_w = source.shape
    if side != side_w:
        raise ValueError(f"the pool images must be square, got {side} x {side_w}")
    device = source.device
    idx = torch.randint(num, (n,), device=device, generator=generator)
    boxes = _boxes_before(n, side, device=device, generator=generator, scale=scale, ratio=ratio)
    top, left, h, w = boxes.unbind(1)
    mirror = torch.ones(n, device=device)
    if flip:
        mirror = 1.0 - 2.0 * (torch.rand(n, device=device, generator=generator) < 0.5).float()
    # the affine map of the output's normalised coordinates into the box, in the source's (align_corners=False)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = w / side * mirror
    theta[:, 0, 2] = (2.0 * left + w) / side - 1.0
    theta[:, 1, 1] = h / side
    theta[:, 1, 2] = (2.0 * top + h) / side - 1.0
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    grid = F.affine_grid(theta.to(compute), [n, 3, height, width], align_corners=False)
    out = F.grid_sample(source[idx].to(compute), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round_().to(dtype)    # whole levels, as the loader's uint8 crops


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_resized_crops_equal_the_unmerged_version(dtype):
    src = _GradientBank().source(40)
    for seed in range(3):
        assert torch.equal(ib.random_resized_crop_boxes(500, 40, generator=_gen("cpu", seed)),
                           _boxes_before(500, 40, generator=_gen("cpu", seed)))
        for flip in (True, False):
            g_new, g_old = _gen("cpu", seed), _gen("cpu", seed)
            new = ib.random_resized_crops(src, 64, 20, 24, generator=g_new, dtype=dtype, flip=flip)
            assert torch.equal(new, _crops_before(src, 64, 20, 24, generator=g_old, dtype=dtype, flip=flip))
            assert torch.equal(g_new.get_state(), g_old.get_state())
