"""Batched, on-device MoCo-v2 augmentation with per-sample random parameters.

:class:`MoCoViews` turns a uint8 batch ``[B, 3, H, W]`` into one float32 view
``[B, 3, S, S]`` in ``[0, 1]`` (``S = recipe.image_size``). Call it twice on the
same batch to get the query and key views. Every random parameter is drawn per
sample from the ``torch.Generator`` you pass, on the input's device, and the
whole batch is processed with a fixed number of kernel launches (no Python loop
over images), so it runs on the GPU next to the model.

The pipeline is the MoCo-v2 one (plus the optional BYOL / MoCo-v3 solarize):

1. ``RandomResizedCrop(S, scale=(crop_min_scale, 1), ratio=(3/4, 4/3))`` and
   ``RandomHorizontalFlip(flip_p)``, fused into one ``F.affine_grid`` +
   ``F.grid_sample`` (bilinear, ``align_corners=False``, border padding) with a
   per-sample affine matrix. Crop boxes follow torchvision's sampler (10 tries,
   then the centred whole-image crop with the ratio clamped) but keep sub-pixel
   sizes and offsets instead of rounding to whole pixels. The flip is folded into the crop
   (MoCo-v2 flips last; a flip commutes with every later op). Downscaling is
   plain bilinear (no antialias), as in kornia.
2. ``RandomApply(ColorJitter(s, s, s, s / 4), p=jitter_p)`` with
   ``s = jitter_strength``. As in torchvision, the four ops run in a random order
   (drawn per sample) and the image is clamped to ``[0, 1]`` after each one.
   Brightness, contrast and saturation are torchvision's blends; hue is a
   rotation of the chroma plane in YIQ space by ``2 * pi * hue_factor`` (a
   linear stand-in for torchvision's HSV hue shift: it keeps luma instead of
   HSV value). Each op is a per-sample 3x3 colour matrix (plus an offset for
   contrast), so one op over the whole batch is a single ``torch.baddbmm``.
3. ``RandomGrayscale(gray_p)`` (ITU-R 601 luma, the weights torchvision uses).
4. ``RandomApply(GaussianBlur, p=blur_p)``. MoCo-v2 draws ``sigma ~ U[0.1, 2.0]``
   for 224 px images. Here **sigma is scaled by S / 224**, so a view of size S
   is blurred as much, relative to its size, as a 224 px MoCo-v2 view:
   ``sigma ~ U[0.1, 2.0] * S / 224``. The kernel is cut at 3 sigma of the
   largest sigma, which scales it with S too:
   ``kernel_size = 2 * ceil(3 * 2.0 * S / 224) + 1`` (odd, at least 3; 3 at
   32 px, 5 at 64 px, 13 at 224 px). At 32 px sigma is at most 0.29 px, so the
   blur is nearly a no-op there, which matches the usual CIFAR practice of
   dropping it; set ``blur_p=0`` to skip its cost. The blur is separable
   (two depthwise ``conv2d`` with ``groups = B * 3`` and per-sample kernels,
   reflect padding as in torchvision); samples that are not blurred get a
   delta kernel, which leaves them exactly unchanged.
5. ``RandomSolarize(threshold=0.5, p=solarize_p)``: ``x -> 1 - x`` where
   ``x >= 0.5``.

A probability of 0 (or ``jitter_strength == 0``) skips that stage entirely: no
random draws and no kernels. Normalisation (ImageNet mean/std) is the model's
job, not this module's.

Randomness comes only from ``generator``: on CPU the same generator state gives
bit-identical views. The generator must live on the same device as ``x``.

>>> import torch
>>> from trainer.recipe import Recipe
>>> views = MoCoViews(Recipe(image_size=32))
>>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
>>> g = torch.Generator().manual_seed(0)
>>> q, k = views(x, g), views(x, g)  # two differently augmented views
>>> q.shape, q.dtype
(torch.Size([8, 3, 32, 32]), torch.float32)
>>> bool(q.min() >= 0) and bool(q.max() <= 1) and not torch.equal(q, k)
True
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["MoCoViews"]

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
_GRAY = (0.2989, 0.587, 0.114)
# RGB -> YIQ (FCC NTSC); the inverse is computed once in float64.
_YIQ = (
    (0.299, 0.587, 0.114),
    (0.595716, -0.274453, -0.321263),
    (0.211456, -0.522591, 0.311135),
)
_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_CROP_TRIES = 10
_SIGMA_224 = (0.1, 2.0)  # MoCo-v2 blur sigma range for 224 px images
_SOLARIZE_THRESHOLD = 0.5


def _blur_kernel_size(image_size: int) -> int:
    """Odd kernel size covering 3 sigma of the largest (scaled) sigma; at least 3."""
    sigma_max = _SIGMA_224[1] * image_size / 224.0
    return max(3, 2 * math.ceil(3.0 * sigma_max) + 1)


class MoCoViews:
    """MoCo-v2 views of a uint8 batch, computed batched on the batch's device.

    Reads ``image_size``, ``crop_min_scale``, ``jitter_strength``, ``jitter_p``,
    ``gray_p``, ``blur_p``, ``solarize_p`` and ``flip_p`` from ``recipe``.
    See the module docstring for the exact pipeline.
    """

    def __init__(self, recipe: Any):  # a trainer.recipe.Recipe, read without importing it (methods build views)
        self.size = int(recipe.image_size)
        self.crop_scale = (float(recipe.crop_min_scale), 1.0)
        self.jitter_strength = float(recipe.jitter_strength)
        self.jitter_p = float(recipe.jitter_p)
        self.gray_p = float(recipe.gray_p)
        self.blur_p = float(recipe.blur_p)
        self.solarize_p = float(recipe.solarize_p)
        self.flip_p = float(recipe.flip_p)
        scale = self.size / 224.0
        self.blur_sigma = (_SIGMA_224[0] * scale, _SIGMA_224[1] * scale)
        self.blur_kernel_size = _blur_kernel_size(self.size)
        # Constant colour matrices, built in float64; float32 copies are cached per device.
        yiq = torch.tensor(_YIQ, dtype=torch.float64)
        self._yiq = yiq
        self._yiq_inv = torch.linalg.inv(yiq)
        self._gray = torch.tensor(_GRAY, dtype=torch.float64)
        self._consts: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(size={self.size}, crop_scale={self.crop_scale}, "
            f"jitter_strength={self.jitter_strength}, jitter_p={self.jitter_p}, "
            f"gray_p={self.gray_p}, blur_p={self.blur_p}, "
            f"blur_sigma=({self.blur_sigma[0]:.4g}, {self.blur_sigma[1]:.4g}), "
            f"blur_kernel_size={self.blur_kernel_size}, solarize_p={self.solarize_p}, "
            f"flip_p={self.flip_p})"
        )

    # -- public --------------------------------------------------------------
    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return one augmented float32 view ``[B, 3, S, S]`` in ``[0, 1]`` of uint8 ``x``."""
        self._check_inputs(x, generator)
        b = x.shape[0]
        s = self.size
        if b == 0:
            return torch.empty((0, 3, s, s), dtype=torch.float32, device=x.device)
        out = self._crop_flip(x, generator)  # [B, 3, S, S] float32 in [0, 1]
        if self.jitter_p > 0 and self.jitter_strength > 0:
            out = self._color_jitter(out, generator)
        if self.gray_p > 0:
            out = self._grayscale(out, generator)
        if self.blur_p > 0:
            out = self._blur(out, generator)
        if self.solarize_p > 0:
            out = self._solarize(out, generator)
        return out.contiguous()

    # -- checks ----------------------------------------------------------------
    @staticmethod
    def _check_inputs(x: torch.Tensor, generator: torch.Generator) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"MoCoViews expects a uint8 torch.Tensor [B, 3, H, W], got {type(x).__name__}")
        if x.dtype != torch.uint8:
            raise TypeError(
                f"MoCoViews expects a uint8 image batch [B, 3, H, W] (values 0..255), got dtype {x.dtype}; "
                "pass the uint8 cache, not normalised floats"
            )
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"MoCoViews expects shape [B, 3, H, W], got {list(x.shape)}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        gd, xd = generator.device, x.device
        if gd.type != xd.type or (gd.index is not None and xd.index is not None and gd.index != xd.index):
            raise ValueError(
                f"generator is on {gd} but the images are on {xd}; "
                f"create it with torch.Generator(device={str(xd)!r})"
            )

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        c = self._consts.get(device)
        if c is None:
            c = tuple(
                t.to(device=device, dtype=torch.float32) for t in (self._yiq, self._yiq_inv, self._gray)
            )
            self._consts[device] = c
        return c

    # -- stages ------------------------------------------------------------------
    def _crop_flip(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """RandomResizedCrop + horizontal flip + resize to S, as one grid_sample."""
        b, _, h, w = x.shape
        dev = x.device
        area = float(h * w)
        lo, hi = self.crop_scale
        log_lo, log_hi = math.log(_CROP_RATIO[0]), math.log(_CROP_RATIO[1])
        # torchvision's sampler, all tries at once: [B, tries]
        r = torch.rand((b, 2, _CROP_TRIES), generator=g, device=dev)
        target = area * (lo + (hi - lo) * r[:, 0])
        ratio = torch.exp(log_lo + (log_hi - log_lo) * r[:, 1])
        cw = torch.sqrt(target * ratio)
        ch = torch.sqrt(target / ratio)
        ok = (cw <= w) & (ch <= h)
        tries = torch.arange(_CROP_TRIES, device=dev).expand(b, _CROP_TRIES)
        first = torch.where(ok, tries, _CROP_TRIES - 1).amin(dim=1, keepdim=True)  # first valid try
        cw = cw.gather(1, first).squeeze(1)
        ch = ch.gather(1, first).squeeze(1)
        # Fallback (no valid try): whole image, ratio clamped into the allowed range.
        in_ratio = w / h
        if in_ratio < _CROP_RATIO[0]:
            fw, fh = float(w), w / _CROP_RATIO[0]
        elif in_ratio > _CROP_RATIO[1]:
            fw, fh = h * _CROP_RATIO[1], float(h)
        else:
            fw, fh = float(w), float(h)
        any_ok = ok.any(dim=1)
        cw = torch.where(any_ok, cw, torch.full_like(cw, fw))
        ch = torch.where(any_ok, ch, torch.full_like(ch, fh))
        # offsets (uniform; the fallback crop is centred, as in torchvision) and flips
        u = torch.rand((b, 3), generator=g, device=dev)
        u_xy = torch.where(any_ok[:, None], u[:, :2], torch.full_like(u[:, :2], 0.5))
        x0 = u_xy[:, 0] * (w - cw)
        y0 = u_xy[:, 1] * (h - ch)
        if self.flip_p > 0:
            sign = 1.0 - 2.0 * (u[:, 2] < self.flip_p).to(torch.float32)
        else:
            sign = torch.ones_like(x0)
        theta = torch.zeros((b, 2, 3), dtype=torch.float32, device=dev)
        theta[:, 0, 0] = sign * cw / w
        theta[:, 0, 2] = (2.0 * x0 + cw) / w - 1.0
        theta[:, 1, 1] = ch / h
        theta[:, 1, 2] = (2.0 * y0 + ch) / h - 1.0
        s = self.size
        grid = F.affine_grid(theta, [b, 3, s, s], align_corners=False)
        out = F.grid_sample(
            x.to(torch.float32), grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return out.div_(255.0).clamp_(0.0, 1.0)

    def _color_jitter(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """ColorJitter(s, s, s, s/4) applied with p=jitter_p, per-sample random op order."""
        b = x.shape[0]
        dev = x.device
        yiq, yiq_inv, gray = self._constants(dev)
        st = self.jitter_strength
        lo, hi = max(0.0, 1.0 - st), 1.0 + st
        hue = min(st / 4.0, 0.5)
        r = torch.rand((b, 9), generator=g, device=dev)
        apply = r[:, 0] < self.jitter_p
        bright = lo + (hi - lo) * r[:, 1]
        contrast = lo + (hi - lo) * r[:, 2]
        sat = lo + (hi - lo) * r[:, 3]
        angle = (2.0 * math.pi) * (-hue + 2.0 * hue * r[:, 4])
        order = r[:, 5:9].argsort(dim=1)  # per-sample permutation of the 4 ops

        eye = torch.eye(3, device=dev, dtype=torch.float32).expand(b, 3, 3)
        m_bright = bright[:, None, None] * eye
        m_contrast = contrast[:, None, None] * eye
        gray_rows = gray.expand(3, 3)  # every output channel = luma
        m_sat = sat[:, None, None] * eye + (1.0 - sat)[:, None, None] * gray_rows
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.zeros((b, 3, 3), device=dev, dtype=torch.float32)
        rot[:, 0, 0] = 1.0
        rot[:, 1, 1] = cos
        rot[:, 1, 2] = -sin
        rot[:, 2, 1] = sin
        rot[:, 2, 2] = cos
        m_hue = yiq_inv @ rot @ yiq
        mats = torch.stack([m_bright, m_contrast, m_sat, m_hue])  # [4, B, 3, 3]
        mats = torch.where(apply[None, :, None, None], mats, eye)
        c_off = torch.where(apply, 1.0 - contrast, torch.zeros_like(contrast))  # contrast offset weight
        idx = torch.arange(b, device=dev)

        flat = x.reshape(b, 3, -1)
        for k in range(4):
            op = order[:, k]
            m = mats[op, idx]  # [B, 3, 3]
            # contrast blends towards the mean luma of the *current* image
            mean_luma = flat.mean(dim=2) @ gray  # [B]
            off = torch.where(op == 1, c_off * mean_luma, torch.zeros_like(mean_luma))
            flat = torch.baddbmm(off[:, None, None].expand(b, 3, 1), m, flat).clamp_(0.0, 1.0)
        return flat.reshape(x.shape)

    def _grayscale(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        dev = x.device
        _, _, gray = self._constants(dev)
        apply = torch.rand((b,), generator=g, device=dev) < self.gray_p
        eye = torch.eye(3, device=dev, dtype=torch.float32)
        m = torch.where(apply[:, None, None], gray.expand(3, 3), eye)  # [B, 3, 3]
        return torch.bmm(m, x.reshape(b, 3, -1)).reshape(x.shape)

    def _blur(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Per-sample separable Gaussian blur; non-blurred samples get a delta kernel."""
        b, c, h, w = x.shape
        dev = x.device
        k = self.blur_kernel_size
        rad = k // 2
        r = torch.rand((b, 2), generator=g, device=dev)
        apply = r[:, 0] < self.blur_p
        lo, hi = self.blur_sigma
        sigma = lo + (hi - lo) * r[:, 1]
        pos = torch.arange(-rad, rad + 1, device=dev, dtype=torch.float32)
        kern = torch.exp(-(pos[None, :] ** 2) / (2.0 * sigma[:, None] ** 2))
        kern = kern / kern.sum(dim=1, keepdim=True)
        delta = (pos == 0).to(torch.float32).expand(b, k)
        kern = torch.where(apply[:, None], kern, delta)  # [B, k]
        kern = kern.repeat_interleave(c, dim=0)  # [B*3, k]
        # reflect padding needs pad < size; clip for tiny images
        ph, pw = min(rad, h - 1), min(rad, w - 1)
        y = x.reshape(1, b * c, h, w)
        y = F.pad(y, (pw, pw, ph, ph), mode="reflect")
        if pw < rad or ph < rad:  # image smaller than the kernel: zero-pad the rest
            y = F.pad(y, (rad - pw, rad - pw, rad - ph, rad - ph))
        y = F.conv2d(y, kern.view(b * c, 1, 1, k), groups=b * c)
        y = F.conv2d(y, kern.view(b * c, 1, k, 1), groups=b * c)
        return y.reshape(b, c, h, w).clamp_(0.0, 1.0)  # rounding can overshoot 1 by an ulp

    def _solarize(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        apply = torch.rand((b,), generator=g, device=x.device) < self.solarize_p
        # per-sample threshold; 2.0 is never reached, so unselected samples stay as they are
        thr = torch.where(apply, _SOLARIZE_THRESHOLD, 2.0).to(x.dtype)
        return torch.where(x >= thr[:, None, None, None], 1.0 - x, x)
