"""SimCLR (trainer/methods/simclr.py): NT-Xent with 2N-2 in-batch negatives, SInfoNCE smoothing,
no key encoder and no queue; its recipe, its baseline and its place in a search space."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recipe_search.baselines import baselines_for, by_name
from recipe_search.compose import compose
from recipe_search.space import load_space
from trainer import Recipe, RecipeError, TrainingRun, train
from trainer.losses import smoothed_cross_entropy
from trainer.methods import METHODS
from trainer.methods.simclr import SimCLR, nt_xent_logits
from trainer.moco import MoCo

TINY = dict(method="simclr", backbone="mobilenetv3_small_050", image_size=32, batch_size=16, epochs=2,
            proj_hidden_dim=64, proj_out_dim=32, seed=3, temperature=0.5)


def test_nt_xent_by_hand():
    # two images, each view the same unit vector: every row has positive cosine 1, two negatives at 0
    z = torch.eye(2)
    logits = nt_xent_logits(z, z, 1.0)
    assert logits.shape == (4, 3)  # 2N rows, 1 positive + 2N-2 negatives
    e = math.e
    # eps = 0: -log(e / (e + 2)) = log(e + 2) - 1
    assert smoothed_cross_entropy(logits, 0.0).item() == pytest.approx(math.log(e + 2) - 1, abs=1e-6)
    # eps = 0.2 uniform: -(0.8 log p_pos + 0.1 log p_neg * 2) = log(e + 2) - 0.8
    assert smoothed_cross_entropy(logits, 0.2).item() == pytest.approx(math.log(e + 2) - 0.8, abs=1e-6)
    # temperature 0.5 doubles the logits: log(e^2 + 2) - 2
    assert smoothed_cross_entropy(nt_xent_logits(z, z, 0.5), 0.0).item() == pytest.approx(
        math.log(e ** 2 + 2) - 2, abs=1e-6)


def test_nt_xent_matches_a_loop_over_the_2n_rows():
    g = torch.Generator().manual_seed(0)
    z1, z2 = (F.normalize(torch.randn(5, 8, generator=g), dim=1) for _ in range(2))
    logits = nt_xent_logits(z1, z2, 0.2)
    z = torch.cat([z1, z2])
    for r in range(10):
        partner = (r + 5) % 10
        negatives = [z[r] @ z[j] / 0.2 for j in range(10) if j not in (r, partner)]
        want = torch.stack([z[r] @ z[partner] / 0.2, *negatives])
        assert torch.allclose(logits[r], want, atol=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        nt_xent_logits(z1[:1], z2[:1], 0.2)


def test_simclr_is_registered_and_checks_its_negatives():
    assert METHODS["simclr"] is SimCLR and Recipe(**TINY).to_dict()["method"] == "simclr"
    r = Recipe(**{**TINY, "queue_size": 8, "smoothing_k": 30})  # no queue: queue_size is not checked
    assert Recipe.from_json(r.to_json()) == r
    with pytest.raises(RecipeError, match=r"smoothing_k must be in \[0, 2\*batch_size-2=30\], got 31"):
        Recipe(**{**TINY, "smoothing_k": 31})


def test_a_simclr_run_has_no_key_encoder_nor_queue_and_learns_end_to_end(tiny_data, tmp_path):
    run = TrainingRun(Recipe(**{**TINY, "smoothing": 0.1, "smoothing_k": 8}), tiny_data, torch.device("cpu"))
    assert not isinstance(run.model, MoCo) and not hasattr(run.model, "encoder_k")
    assert "queue" not in run.model.state_dict()
    before = [p.detach().clone() for p in run.model.encoder_q.parameters()]
    loss = run.step(run.train_x[:16], 0)
    assert math.isfinite(loss.item())
    assert any(not torch.equal(a, b) for a, b in zip(before, run.model.encoder_q.parameters()))
    res = train(Recipe(**TINY), tiny_data, device="cpu", out_dir=tmp_path, evaluate_test=False)
    assert res.status == "completed" and len(res.history) == 2 and "key_momentum" not in res.history[0]
    assert 0.0 <= res.metrics["val_probe_top1"] <= 1.0 and (tmp_path / "encoder.pt").is_file()


def test_the_simclr_baseline_runs_only_where_the_space_can_choose_simclr():
    assert [b.name for b in baselines_for(load_space("default"))] == ["mocov2", "sinfonce-light"]
    space = load_space("methods")
    assert [b.name for b in baselines_for(space)] == ["mocov2", "sinfonce-light", "simclr"]
    recipe, _ = compose(by_name("simclr").values, backbone="mobilenetv3_small_050", image_size=16, epochs=2,
                        seed=0, fixed=space.fixed_for({"method": "simclr"}), budget_fixed={"batch_size": 16,
                                                                                          "queue_size": 64})
    assert recipe.method == "simclr" and recipe.temperature == 0.5
    moco, _ = compose(by_name("mocov2").values, backbone="mobilenetv3_small_050", image_size=16, epochs=2,
                      seed=0, fixed={"method": "simclr"})
    assert moco.method == "mocov2"  # a baseline names its method: a space's fixed one never overrides it
