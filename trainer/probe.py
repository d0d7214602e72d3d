"""Linear probe on frozen features, extracted once without augmentation.

Features are standardised with the train statistics; a multinomial logistic
regression is fitted full-batch with L-BFGS for each L2 strength of a small
grid, the strength is chosen on the held-out validation split, and top-1 on the
test split is reported (when a test split is given: without one, nothing about the
test split is computed). On cached features this takes seconds, not a 90-epoch
pass over augmented images.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

L2_GRID = (1e-2, 1e-3, 1e-4)  # strongest first: each fit warm-starts the next


@dataclass
class ProbeResult:
    test_top1: float | None  # None when no test split was given
    val_top1: float
    train_top1: float
    l2: float
    test_correct: torch.Tensor | None = None  # per test image: did the probe get it right (bool, on the CPU)


def _fit(clf: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor, l2: float, max_iter: int) -> torch.nn.Linear:
    opt = torch.optim.LBFGS(clf.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(clf(x), y) + l2 * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return clf


def _correct(clf: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return clf(x).argmax(dim=1) == y


def _top1(clf: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    return _correct(clf, x, y).float().mean().item()


def linear_probe(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor] | None, num_classes: int,
                 l2_grid: tuple[float, ...] = L2_GRID, max_iter: int = 100) -> ProbeResult:
    """Fit on ``train``, pick the L2 strength on ``val``, report top-1 on ``test`` (all in [0, 1]).

    ``test=None``: no test split; ``test_top1`` and ``test_correct`` are None. ``test_correct``
    says which test images the probe got right (what a paired comparison of two encoders needs).
    """
    xtr, ytr = train
    mean, std = xtr.float().mean(0, keepdim=True), xtr.float().std(0, keepdim=True) + 1e-6
    norm = lambda x: (x.float() - mean) / std  # noqa: E731
    xtr, xval = norm(xtr), norm(val[0])
    best = None
    clf = torch.nn.Linear(xtr.shape[1], num_classes).to(xtr.device)
    torch.nn.init.zeros_(clf.weight)
    torch.nn.init.zeros_(clf.bias)
    with torch.enable_grad():
        for l2 in l2_grid:
            clf = _fit(clf, xtr, ytr, l2, max_iter)
            score = _top1(clf, xval, val[1]) if len(xval) else 0.0
            if best is None or score > best[0]:
                best = (score, l2, copy.deepcopy(clf))
    val_top1, l2, clf = best
    correct = _correct(clf, norm(test[0]), test[1]).cpu() if test is not None else None
    return ProbeResult(test_top1=correct.float().mean().item() if correct is not None else None, val_top1=val_top1,
                       train_top1=_top1(clf, xtr, ytr), l2=l2, test_correct=correct)
