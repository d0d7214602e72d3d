"""The peer of bench/bench_peers.py: MoCo-v2 built from lightly's blocks, trained for a given wall time.

lightly is a dependency of this benchmark only (``pip install -e '.[peers]'``); the product never
imports it. Its blocks, used as its MoCo example uses them:

* ``lightly.transforms.MoCoV2Transform`` applied per image (PIL) in a torch ``DataLoader``;
* ``lightly.models.modules.MoCoProjectionHead`` (2-layer MLP, no BN: MoCo-v2's head);
* ``lightly.loss.NTXentLoss(memory_bank_size=(queue, dim))``: InfoNCE against a memory bank;
* ``lightly.models.utils.update_momentum`` / ``deactivate_requires_grad`` for the key encoder.

What is not lightly's is the recipe's, so that both sides train the same thing: the backbone
(``trainer.backbone.create_backbone``: the same timm model with the same small-input stem), plain SGD
with the recipe's scaled lr, momentum and weight decay on every parameter (as the trainer's ``sgd``),
the temperature, bank size, key momentum, head widths and the augmentation probabilities. The lr
follows the recipe's cosine over *progress*, which the caller sets per time slice
(:meth:`LightlyMoCo.train_until`) so that it matches the trainer's progress at the same wall time.
"""

from __future__ import annotations

import copy
import itertools
import time

import torch
from torch import nn

INSTALL = "pip install -e '.[peers]'  (lightly, with torch kept at the project's pin)"


def require_lightly():
    """The ``lightly`` module, or a one-line ``SystemExit`` (non-zero) saying how to install it."""
    try:
        import lightly
        from lightly.loss import NTXentLoss  # noqa: F401
        from lightly.models.modules import MoCoProjectionHead  # noqa: F401
        from lightly.transforms import MoCoV2Transform  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"bench_peers: lightly is not installed ({e}); it is a benchmark-only dependency: "
                         f"{INSTALL}") from None
    return lightly


class _Images(torch.utils.data.Dataset):
    """uint8 images ``[N, 3, H, W]`` as PIL images through a per-image transform (lightly's way)."""

    def __init__(self, images: torch.Tensor, transform):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        from torchvision.transforms.functional import to_pil_image

        return self.transform(to_pil_image(self.images[i]))


def _cycle(loader):
    """Batches forever, epoch after epoch (the loader reshuffles each pass)."""
    for _ in itertools.count():
        yield from loader


class LightlyMoCo:
    """MoCo-v2 (lightly's blocks) for ``recipe`` on the uint8 ``train_x``, seeded by ``seed``."""

    def __init__(self, recipe, train_x: torch.Tensor, seed: int, *, workers: int = 0,
                 channels_last: bool = False):
        require_lightly()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        from lightly.transforms import MoCoV2Transform

        from trainer.backbone import create_backbone

        self.recipe, self.channels_last = recipe, channels_last
        torch.manual_seed(seed)
        backbone, dim = create_backbone(recipe.backbone, recipe.image_size)
        head = MoCoProjectionHead(dim, recipe.proj_hidden_dim, recipe.proj_out_dim)
        self.query = nn.Sequential(backbone, head)
        self.key = copy.deepcopy(self.query)
        deactivate_requires_grad(self.key)
        if channels_last:
            self.query = self.query.to(memory_format=torch.channels_last)
            self.key = self.key.to(memory_format=torch.channels_last)
        self.criterion = NTXentLoss(temperature=recipe.temperature,
                                    memory_bank_size=(recipe.queue_size, recipe.proj_out_dim))
        self.optimizer = torch.optim.SGD(self.query.parameters(), lr=recipe.scaled_lr, momentum=recipe.momentum,
                                         weight_decay=recipe.weight_decay)
        transform = MoCoV2Transform(input_size=recipe.image_size, cj_prob=recipe.jitter_p,
                                    min_scale=recipe.crop_min_scale, random_gray_scale=recipe.gray_p,
                                    gaussian_blur=recipe.blur_p, hf_prob=recipe.flip_p)
        loader = torch.utils.data.DataLoader(_Images(train_x, transform), batch_size=recipe.batch_size,
                                             shuffle=True, drop_last=True, num_workers=workers,
                                             generator=torch.Generator().manual_seed(seed + 1),
                                             persistent_workers=workers > 0)
        self.batches = _cycle(loader)
        self.seconds, self.images, self.steps, self.losses = 0.0, 0, 0, []

    @property
    def backbone(self) -> nn.Module:
        return self.query[0]

    def step(self, views, progress: float) -> float:
        """One step on a batch of two views at training progress ``progress`` (in [0, 1]); returns the loss."""
        from lightly.models.utils import update_momentum

        from trainer import schedules

        r = self.recipe
        lr = schedules.LR_SCHEDULES[r.lr_schedule](r.scaled_lr, min(1.0, progress))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x_q, x_k = views
        if self.channels_last:
            x_q = x_q.contiguous(memory_format=torch.channels_last)
            x_k = x_k.contiguous(memory_format=torch.channels_last)
        update_momentum(self.query, self.key, m=r.key_momentum)
        q = self.query(x_q)
        with torch.no_grad():
            k = self.key(x_k)
        loss = self.criterion(q, k)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def train_until(self, total_seconds: float, progress_from: float, progress_to: float) -> dict:
        """Train until this run's training time reaches ``total_seconds`` (data loading and the per-image
        transforms included), the progress going from ``progress_from`` to ``progress_to`` over the slice.
        The overshoot of the last step is paid back by the next slice (the target is cumulative).
        Returns the slice's images, steps, seconds and mean loss."""
        start_s, start_img, start_steps, losses = self.seconds, self.images, self.steps, []
        span = max(1e-9, total_seconds - start_s)
        self.query.train()
        while self.seconds < total_seconds:
            t0 = time.perf_counter()
            views = next(self.batches)  # [query views, key views], transformed image by image
            frac = (self.seconds - start_s) / span
            losses.append(self.step(views, progress_from + (progress_to - progress_from) * frac))
            self.seconds += time.perf_counter() - t0
            self.images += views[0].shape[0]
            self.steps += 1
        self.losses += losses
        seconds = self.seconds - start_s
        return {"images": self.images - start_img, "steps": self.steps - start_steps, "seconds": seconds,
                "loss": sum(losses) / len(losses) if losses else float("nan")}
