"""Tests for trainer.augment.MoCoViews (batched on-device MoCo-v2 views)."""

from __future__ import annotations

import io
import math
import os
import tarfile

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from trainer.augment import MoCoViews
from trainer.recipe import Recipe

CIFAR_TGZ = os.environ.get("RECIPE_SEARCH_CIFAR_TGZ", "/work/shared/data/cifar10-jpeg.tar.gz")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# every random stage off; the crop covers the whole image (identity when S == H == W)
ALL_OFF = dict(
    crop_min_scale=1.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0, solarize_p=0.0, flip_p=0.0
)


def views(**kw) -> MoCoViews:
    return MoCoViews(Recipe(**kw))


def gen(device="cpu", seed=0) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@pytest.fixture(scope="module")
def cifar() -> torch.Tensor:
    """Eight real CIFAR-10 images (uint8 [8, 3, 32, 32]); synthetic if the archive is absent."""
    imgs = []
    if os.path.exists(CIFAR_TGZ):
        from PIL import Image

        with tarfile.open(CIFAR_TGZ, "r|gz") as tar:  # stream: only the first members are read
            for m in tar:
                if m.isfile() and m.name.endswith(".jpg"):
                    data = tar.extractfile(m).read()
                    img = Image.open(io.BytesIO(data)).convert("RGB")
                    imgs.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
                    if len(imgs) == 8:
                        break
    if len(imgs) < 8:
        g = torch.Generator().manual_seed(123)
        return torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g)
    return torch.stack(imgs).contiguous()


# -- shape, dtype, range, device ---------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [32, 48])
def test_output_shape_dtype_range_device(cifar, device, size):
    v = views(image_size=size, solarize_p=0.5)
    x = cifar.to(device)
    y = v(x, gen(device))
    assert y.shape == (8, 3, size, size)
    assert y.dtype == torch.float32
    assert y.device == x.device
    assert y.is_contiguous()
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.isfinite(y).all()


def test_non_square_input_gives_square_output():
    x = torch.randint(0, 256, (4, 3, 40, 64), dtype=torch.uint8)
    y = views(image_size=32)(x, gen())
    assert y.shape == (4, 3, 32, 32)


def test_empty_batch():
    x = torch.zeros((0, 3, 32, 32), dtype=torch.uint8)
    y = views(image_size=32)(x, gen())
    assert y.shape == (0, 3, 32, 32) and y.dtype == torch.float32


# -- randomness ----------------------------------------------------------------


def test_identical_images_get_different_views(cifar):
    x = cifar[:1].expand(8, -1, -1, -1).contiguous()
    y = views(image_size=32)(x, gen())
    flat = y.flatten(1)
    dist = torch.cdist(flat, flat)
    off_diag = dist[~torch.eye(8, dtype=torch.bool)]
    assert (off_diag > 1e-3).all(), "two samples in the batch got the same view"


def test_same_seed_same_output(cifar):
    v = views(image_size=32, solarize_p=0.3)
    a = v(cifar, gen(seed=7))
    b = v(cifar, gen(seed=7))
    assert torch.equal(a, b)


def test_different_seed_different_output(cifar):
    v = views(image_size=32)
    a = v(cifar, gen(seed=1))
    b = v(cifar, gen(seed=2))
    assert not torch.allclose(a, b)


def test_consecutive_calls_differ(cifar):
    v = views(image_size=32)
    g = gen()
    assert not torch.allclose(v(cifar, g), v(cifar, g))


# -- individual stages -----------------------------------------------------------


def test_all_off_is_identity(cifar):
    y = views(image_size=32, **ALL_OFF)(cifar, gen())
    torch.testing.assert_close(y, cifar.float() / 255, atol=1e-5, rtol=0)


def test_all_off_resizes_when_sizes_differ(cifar):
    y = views(image_size=64, **ALL_OFF)(cifar, gen())
    ref = torch.nn.functional.interpolate(
        cifar.float() / 255, size=(64, 64), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)


def test_flip_p1_flips(cifar):
    y = views(image_size=32, **{**ALL_OFF, "flip_p": 1.0})(cifar, gen())
    torch.testing.assert_close(y, cifar.float().flip(-1) / 255, atol=1e-5, rtol=0)


def test_crop_boxes_follow_scale_and_ratio():
    """A linear ramp stays linear under bilinear resampling: its slope gives the crop size."""
    n, size, b = 128, 32, 64
    ramp = torch.arange(n, dtype=torch.float32) * 2  # 0..254
    x = torch.zeros((b, 3, n, n), dtype=torch.uint8)
    x[:, 0] = ramp.to(torch.uint8)[None, None, :]  # red encodes the column
    x[:, 1] = ramp.to(torch.uint8)[None, :, None]  # green encodes the row
    v = views(image_size=size, **{**ALL_OFF, "crop_min_scale": 0.2, "flip_p": 0.5})
    y = v(x, gen(seed=3)) * 255
    lo, hi = 4, size - 5  # stay clear of border clamping
    dx = (y[:, 0, :, hi] - y[:, 0, :, lo]).mean(1) / (hi - lo)  # red per output column
    dy = (y[:, 1, hi, :] - y[:, 1, lo, :]).mean(1) / (hi - lo)  # green per output row
    cw = dx.abs() * size / 2  # crop width in input pixels
    ch = dy * size / 2
    area = cw * ch / (n * n)
    assert (area > 0.2 - 0.01).all() and (area < 1 + 0.01).all()
    ratio = cw / ch
    assert (ratio > 0.75 - 0.01).all() and (ratio < 4 / 3 + 0.01).all()
    assert (dy > 0).all()
    flipped = dx < 0
    assert 0 < int(flipped.sum()) < b  # p = 0.5 flips some, not all
    assert area.std() > 0.05  # scales really vary per sample


def test_grayscale_p1_equal_channels(cifar):
    y = views(image_size=32, **{**ALL_OFF, "gray_p": 1.0})(cifar, gen())
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    ref = TF.rgb_to_grayscale(cifar.float() / 255, num_output_channels=3)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)


def test_solarize_p1_matches_formula(cifar):
    y = views(image_size=32, **{**ALL_OFF, "solarize_p": 1.0})(cifar, gen())
    x = cifar.float() / 255
    ref = torch.where(x >= 0.5, 1 - x, x)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)


def test_solarize_is_per_sample(cifar):
    x = cifar.repeat(4, 1, 1, 1)  # 32 samples
    y = views(image_size=32, **{**ALL_OFF, "solarize_p": 0.5})(x, gen(seed=2))
    xf = x.float() / 255
    sol = torch.where(xf >= 0.5, 1 - xf, xf)
    same = (y - xf).flatten(1).abs().amax(1) < 1e-5
    solarized = (y - sol).flatten(1).abs().amax(1) < 1e-5
    assert (same | solarized).all()
    assert 0 < int((solarized & ~same).sum()) < 32


def test_blur_p1_reduces_high_frequency_energy():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (8, 3, 224, 224), dtype=torch.uint8, generator=g)
    v = views(image_size=224, **{**ALL_OFF, "blur_p": 1.0})
    y = v(x, gen(seed=5))

    def hf(t):  # energy of horizontal + vertical first differences, per sample
        return (t.diff(dim=-1) ** 2).mean((1, 2, 3)) + (t.diff(dim=-2) ** 2).mean((1, 2, 3))

    before, after = hf(x.float() / 255), hf(y)
    assert (after <= before * (1 + 1e-6)).all()
    assert (after / before).mean() < 0.8


def test_blur_matches_torchvision_gaussian_blur(cifar):
    """Reproduce the per-sample sigma draws and compare with torchvision's (reflect-padded) blur."""
    v = views(image_size=64, **{**ALL_OFF, "blur_p": 0.5})
    x = torch.nn.functional.interpolate(cifar.float() / 255, size=64, mode="bilinear", align_corners=False)
    y = v._blur(x, gen(seed=11))
    r = torch.rand((8, 2), generator=gen(seed=11))
    lo, hi = v.blur_sigma
    assert v.blur_kernel_size == 5 and math.isclose(hi, 2.0 * 64 / 224)
    for i in range(8):
        if r[i, 0] < 0.5:
            sigma = float(lo + (hi - lo) * r[i, 1])
            ref = TF.gaussian_blur(x[i], [v.blur_kernel_size] * 2, [sigma, sigma])
        else:
            ref = x[i]
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0)


def test_blur_kernel_scales_with_size():
    sizes = {s: views(image_size=s) for s in (16, 32, 64, 96, 224, 448)}
    ks = {s: v.blur_kernel_size for s, v in sizes.items()}
    assert ks == {16: 3, 32: 3, 64: 5, 96: 7, 224: 13, 448: 25}
    assert all(k % 2 == 1 for k in ks.values())
    assert sizes[224].blur_sigma == pytest.approx((0.1, 2.0))
    assert sizes[32].blur_sigma == pytest.approx((0.1 * 32 / 224, 2.0 * 32 / 224))


def _yiq_hue(img: torch.Tensor, factor: float) -> torch.Tensor:
    """Reference hue shift: rotate the chroma (I, Q) plane of YIQ by 2*pi*factor."""
    m = np.array(
        [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
    )
    yiq = np.einsum("ij,jhw->ihw", m, img.double().numpy())
    a = 2 * math.pi * factor
    i, q = yiq[1].copy(), yiq[2].copy()
    yiq[1] = math.cos(a) * i - math.sin(a) * q
    yiq[2] = math.sin(a) * i + math.cos(a) * q
    rgb = np.einsum("ij,jhw->ihw", np.linalg.inv(m), yiq)
    return torch.from_numpy(rgb).float().clamp(0, 1)


def test_color_jitter_matches_per_image_reference(cifar):
    """Vectorised jitter == torchvision's brightness/contrast/saturation (+ YIQ hue) per image,
    in the per-sample random order."""
    s = 0.4
    v = views(image_size=32, **{**ALL_OFF, "jitter_strength": s, "jitter_p": 0.8})
    x = cifar.float() / 255
    y = v._color_jitter(x, gen(seed=4))
    r = torch.rand((8, 9), generator=gen(seed=4))
    order = r[:, 5:9].argsort(dim=1)
    assert len({tuple(o.tolist()) for o in order}) > 1  # orders differ between samples
    for i in range(8):
        img = x[i]
        if r[i, 0] < 0.8:
            b, c, sat = (1 - s + 2 * s * float(r[i, k]) for k in (1, 2, 3))
            hue = -s / 4 + 2 * (s / 4) * float(r[i, 4])
            for op in order[i].tolist():
                if op == 0:
                    img = TF.adjust_brightness(img, b)
                elif op == 1:
                    img = TF.adjust_contrast(img, c)
                elif op == 2:
                    img = TF.adjust_saturation(img, sat)
                else:
                    img = _yiq_hue(img, hue)
        torch.testing.assert_close(y[i], img, atol=1e-4, rtol=0)


def test_color_jitter_keeps_gray_images_gray(cifar):
    gray = cifar[:, :1].expand(-1, 3, -1, -1).contiguous()
    y = views(image_size=32, **{**ALL_OFF, "jitter_strength": 0.8, "jitter_p": 1.0})(gray, gen())
    torch.testing.assert_close(y[:, 0], y[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(y[:, 1], y[:, 2], atol=1e-5, rtol=0)
    assert not torch.allclose(y, gray.float() / 255, atol=1e-3)


@pytest.mark.parametrize("stage,field", [
    ("_color_jitter", "jitter_p"), ("_grayscale", "gray_p"), ("_blur", "blur_p"), ("_solarize", "solarize_p"),
])
def test_zero_probability_skips_stage(cifar, monkeypatch, stage, field):
    def boom(*a, **k):
        raise AssertionError(f"{stage} ran with {field}=0")

    monkeypatch.setattr(MoCoViews, stage, boom)
    v = views(image_size=32, **{"jitter_p": 0.8, "gray_p": 0.2, "blur_p": 0.5, "solarize_p": 0.2, field: 0.0})
    v(cifar, gen())


def test_zero_jitter_strength_skips_jitter(cifar, monkeypatch):
    monkeypatch.setattr(MoCoViews, "_color_jitter", lambda *a: pytest.fail("jitter ran"))
    views(image_size=32, jitter_strength=0.0, jitter_p=1.0)(cifar, gen())


# -- bad input -------------------------------------------------------------------


def test_float_input_rejected(cifar):
    with pytest.raises(TypeError, match="uint8"):
        views(image_size=32)(cifar.float() / 255, gen())


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 1, 32, 32), (2, 4, 32, 32)])
def test_bad_shape_rejected(shape):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        views(image_size=32)(torch.zeros(shape, dtype=torch.uint8), gen())


def test_generator_required(cifar):
    with pytest.raises(TypeError, match="Generator"):
        views(image_size=32)(cifar, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_generator_device_mismatch_rejected(cifar):
    with pytest.raises(ValueError, match="generator is on"):
        views(image_size=32)(cifar.cuda(), gen("cpu"))


def test_wide_image_falls_back_to_centred_crop():
    """No try fits a 24x72 image at scale 1: torchvision's fallback is the centred 24x32 crop."""
    x = torch.randint(0, 256, (4, 3, 24, 72), dtype=torch.uint8, generator=gen(seed=9))
    y = views(image_size=32, **ALL_OFF)(x, gen())
    ref = torch.nn.functional.interpolate(
        x[..., 20:52].float() / 255, size=(32, 32), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)


def test_op_count_independent_of_batch_size():
    """No per-image Python loop: the same ops run for a batch of 2 and a batch of 64."""
    from torch.profiler import ProfilerActivity, profile

    v = views(image_size=32, solarize_p=0.5)

    def n_ops(b):
        x = torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8)
        v(x, gen())  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            v(x, gen())
        return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))

    assert n_ops(2) == n_ops(64)
