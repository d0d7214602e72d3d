import math

import pytest
import torch
import torch.nn.functional as F

from trainer.losses import InfoNCELoss, SInfoNCELoss, contrastive_logits, soft_targets


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=1)


def test_infonce_matches_a_hand_computed_value():
    # one query, 2-d embeddings: q=(1,0), k+=(0.6,0.8), queue = (0,1), (-1,0); T = 0.5
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.6, 0.8]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    z = torch.tensor([0.6, 0.0, -1.0]) / 0.5
    expected = -(z[0] - torch.logsumexp(z, 0))
    assert InfoNCELoss(0.5)(q, k, queue).item() == pytest.approx(expected.item(), abs=1e-6)
    assert expected.item() == pytest.approx(-(1.2 - math.log(math.exp(1.2) + 1 + math.exp(-2))), abs=1e-6)


def test_sinfonce_matches_a_hand_computed_value_uniform():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.6, 0.8]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    z = torch.tensor([0.6, 0.0, -1.0]) / 0.5
    logp = z - torch.logsumexp(z, 0)
    eps = 0.2
    expected = -((1 - eps) * logp[0] + eps / 2 * logp[1] + eps / 2 * logp[2])
    got = SInfoNCELoss(0.5, smoothing=eps, k=0)(q, k, queue)
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_sinfonce_topk_puts_mass_on_the_most_similar_negatives():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.6, 0.8]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [0.8, 0.6]])  # most similar to q: index 2, then 0
    z = torch.tensor([0.6, 0.0, -1.0, 0.8]) / 0.5
    logp = z - torch.logsumexp(z, 0)
    expected = -(0.7 * logp[0] + 0.15 * logp[3] + 0.15 * logp[1])
    got = SInfoNCELoss(0.5, smoothing=0.3, k=2)(q, k, queue)
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)


def test_eps_zero_is_exactly_infonce():
    q, k, queue = _unit(16, 32, seed=1), _unit(16, 32, seed=2), _unit(256, 32, seed=3)
    a = InfoNCELoss(0.2)(q, k, queue)
    for kk in (0, 5):
        assert torch.equal(SInfoNCELoss(0.2, smoothing=0.0, k=kk)(q, k, queue), a)
        assert torch.equal(SInfoNCELoss(0.2, smoothing=0.3, k=kk)(q, k, queue, smoothing=0.0), a)


def test_soft_targets_sum_to_one_and_select_topk():
    neg = torch.randn(8, 100, generator=torch.Generator().manual_seed(0))
    for k in (0, 1, 10, 100):
        t = soft_targets(neg, 0.25, k)
        assert t.shape == (8, 101)
        assert torch.allclose(t.sum(1), torch.ones(8))
        assert torch.all(t[:, 0] == 0.75)
        if k:
            chosen = t[:, 1:] > 0
            assert torch.all(chosen.sum(1) == k)
            top = neg.topk(k, dim=1).indices
            assert torch.all(chosen.gather(1, top))
        else:
            assert torch.allclose(t[:, 1:], torch.full((8, 100), 0.25 / 100))


def test_smoothing_changes_the_loss_and_gradients_flow():
    q = _unit(4, 8, seed=5).requires_grad_()
    k, queue = _unit(4, 8, seed=6), _unit(32, 8, seed=7)
    a = SInfoNCELoss(0.2, smoothing=0.0)(q, k, queue)
    b = SInfoNCELoss(0.2, smoothing=0.3)(q, k, queue)
    assert not torch.allclose(a, b)
    b.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_bad_arguments_are_rejected_early():
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss(0.0)
    with pytest.raises(ValueError, match="smoothing"):
        SInfoNCELoss(0.2, smoothing=1.0)
    with pytest.raises(ValueError, match="k must be"):
        soft_targets(torch.randn(2, 4), 0.1, k=5)
    with pytest.raises(ValueError, match="queue must be"):
        contrastive_logits(_unit(2, 8), _unit(2, 8), _unit(4, 7), 0.2)
