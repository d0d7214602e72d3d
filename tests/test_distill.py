"""DisCo distillation: the recipe section, the loss, the teacher cache, reporting, errors, export."""

import json
import threading
import time

import pytest
import torch
from torch import nn

import trainer.engine as engine
import trainer.teacher as teacher_mod
from trainer import CheckpointError, ProxyData, Recipe, RecipeError, train
from trainer.backbone import create_backbone, load_encoder
from trainer.distill import Distiller, Teacher, distill_loss, load_teacher
from trainer.teacher import pretrain_teacher, teacher_dir
from trainer.recipe import Distill

TINY = dict(backbone="mobilenetv3_small_050", image_size=32, batch_size=16, queue_size=64, epochs=1,
            proj_hidden_dim=64, proj_out_dim=32, smoothing=0.1, smoothing_k=8)



@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, tiny_data):
    """A 1-epoch self-trained teacher run directory (its checkpoint.pt is the teacher)."""
    out = tmp_path_factory.mktemp("teacher")
    assert train(Recipe(**{**TINY, "seed": 7}), tiny_data, out_dir=out, device="cpu").status == "completed"
    return out


def _distilled(teacher, **distill) -> Recipe:
    return Recipe(**TINY, distill={"teacher_checkpoint": str(teacher), **distill})


# -- recipe section ----------------------------------------------------------------------

def test_distill_section_round_trips_through_json_and_dotted_keys():
    r = Recipe(**TINY, distill={"teacher_backbone": "resnet18", "teacher_recipe": {"epochs": 5, "lr": 0.1},
                                "weight": 2, "views": "first"})
    assert isinstance(r.distill, Distill) and r.distill.weight == 2.0 and isinstance(r.distill.weight, float)
    d = json.loads(json.dumps(r.to_dict()))
    assert Recipe.from_dict(d) == r and Recipe.from_json(r.to_json()) == r and hash(r) == hash(Recipe.from_dict(d))
    assert "distill" in Recipe.field_names()
    assert r.with_values({"distill.weight": 0.5}).distill.weight == 0.5
    assert Recipe.from_dict({**TINY, "distill.teacher_backbone": "resnet18", "distill.weight": 3}).distill.weight == 3
    t = r.teacher_recipe()
    assert (t.backbone, t.epochs, t.lr, t.distill, t.proj_out_dim) == ("resnet18", 5, 0.1, None, 32)
    assert Recipe(**TINY).distill is None and Recipe(**TINY).to_dict()["distill"] is None


@pytest.mark.parametrize("distill,needle", [
    ({"weight": 1.0}, "exactly one of teacher_checkpoint"),
    ({"teacher_checkpoint": "a", "teacher_backbone": "resnet18"}, "exactly one of teacher_checkpoint"),
    ({"teacher_backbone": "resnet18", "weight": 101}, "distill.weight must be in [0, 100]"),
    ({"teacher_backbone": "resnet18", "weight": "high"}, "distill.weight must be of type float"),
    ({"teacher_backbone": "resnet18", "views": "all"}, "distill.views must be one of both, first"),
    ({"teacher_backbone": "resnet81"}, "distill.teacher_backbone: backbone 'resnet81' is not a timm model"),
    ({"teacher_backbone": "resnet18", "wieght": 1}, "did you mean 'distill.weight'"),
    ({"teacher_backbone": "resnet18", "teacher_recipe": {"lr": -1}}, "distill.teacher_recipe: lr must be in"),
    ({"teacher_backbone": "resnet18", "teacher_recipe": {"backbone": "resnet50"}},
     "must equal distill.teacher_backbone"),
    ({"teacher_checkpoint": "x.pt", "teacher_recipe": {}}, "only used with distill.teacher_backbone"),
])
def test_bad_distill_fields_are_named(distill, needle):
    with pytest.raises(RecipeError) as e:
        Recipe.from_dict({**TINY, "distill": distill})
    assert needle in str(e.value)


def test_mismatched_teacher_dims_name_both_dims(teacher_run, tiny_data, tmp_path):
    with pytest.raises(RecipeError, match=r"embedding dim is 64 but the student's proj_out_dim is 32"):
        Recipe(**TINY, distill={"teacher_backbone": "resnet18", "teacher_recipe": {"proj_out_dim": 64}})
    student = Recipe(**{**TINY, "proj_out_dim": 16}, distill={"teacher_checkpoint": str(teacher_run)})
    with pytest.raises(RecipeError, match=r"embedding dim is 32 but the student's proj_out_dim is 16"):
        train(student, tiny_data, out_dir=tmp_path / "student", device="cpu")
    assert not (tmp_path / "student").exists()


# -- the loss ------------------------------------------------------------------------------

def test_loss_matches_hand_computed_values():
    s1, t1 = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])  # (0.6, 0.8) vs (1, 0)
    s2, t2 = torch.tensor([[0.0, 2.0], [1.0, 1.0]]), torch.tensor([[0.0, -1.0], [5.0, 5.0]])
    # squared error summed over dims, averaged over the batch:
    # view 1: (0.6 - 1)^2 + 0.8^2 = 0.8; view 2: ((0 - 0)^2 + (1 + 1)^2 + 0 + 0) / 2 = 2.0
    assert distill_loss([s1], [t1]).item() == pytest.approx(0.8)
    assert distill_loss([s2], [t2]).item() == pytest.approx(2.0)
    assert distill_loss([s1, s2], [t1, t2], weight=0.5).item() == pytest.approx(1.4)
    assert distill_loss([s1], [t1]).item() == pytest.approx(2 - 2 * 0.6)  # = 2 - 2 cos
    with pytest.raises(ValueError, match="same shape"):
        distill_loss([s1], [s2])


class _FixedEncoder(nn.Module):
    """A stand-in teacher encoder whose embedding depends only on the first pixel of the view."""

    def __init__(self, table: dict[float, list[float]]):
        super().__init__()
        self.table = table
        self.head = nn.Sequential(nn.Linear(2, 2))

    def forward(self, x):
        key = round(float(x[0, 0, 0, 0] * 0.229 + 0.485), 3)  # undo the ImageNet normalisation
        return torch.tensor([self.table[key]] * x.shape[0])


def test_distiller_weights_views_and_reports_unweighted_loss_and_cosine():
    teacher = Teacher(_FixedEncoder({0.0: [1.0, 0.0], 1.0: [0.0, -1.0]}), Recipe(**TINY), "test")
    v1, v2 = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    q1, q2 = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0]])
    both = Distiller(teacher, weight=0.5, views="both", device=torch.device("cpu"))
    # view 1: 0.8 (cos 0.6); view 2: (0-0)^2 + (1+1)^2 = 4.0 (cos -1)
    assert both((v1, v2), (q1, q2)).item() == pytest.approx(0.5 * 4.8)
    report = both.epoch_report()
    assert report["distill_loss"] == pytest.approx(4.8) and report["teacher_cosine"] == pytest.approx(-0.2)
    first = Distiller(teacher, weight=2.0, views="first", device=torch.device("cpu"))
    assert not first.needs_second_query
    assert first((v1, v2), (q1, None)).item() == pytest.approx(2.0 * 0.8)
    assert first.epoch_report()["teacher_cosine"] == pytest.approx(0.6)


@pytest.mark.parametrize("symmetric", [True, False])
def test_training_loss_is_contrastive_plus_weighted_distill_term(teacher_run, tiny_data, symmetric):
    # one step per epoch: epoch loss == step loss; at step 1 the student is the same for every weight
    one_step = {**TINY, "batch_size": 64, "queue_size": 128, "symmetric": symmetric}
    plain = train(Recipe(**one_step), tiny_data, device="cpu").history[0]
    zero = train(Recipe(**one_step, distill={"teacher_checkpoint": str(teacher_run), "weight": 0.0}),
                 tiny_data, device="cpu").history[0]
    three = train(Recipe(**one_step, distill={"teacher_checkpoint": str(teacher_run), "weight": 3.0}),
                  tiny_data, device="cpu").history[0]
    assert "distill_loss" not in plain and "teacher_cosine" not in plain
    assert zero["loss"] == pytest.approx(plain["loss"], rel=1e-6)  # the teacher changes nothing else
    assert three["distill_loss"] == pytest.approx(zero["distill_loss"], rel=1e-5)
    assert three["loss"] == pytest.approx(plain["loss"] + 3.0 * three["distill_loss"], rel=1e-5)
    assert 0.0 < three["distill_loss"] <= 2 * 4  # two views, ||a - b||^2 <= 4 for unit vectors


def test_distillation_raises_student_teacher_similarity_at_equal_steps(teacher_run, tiny_data):
    runs = {w: train(_distilled(teacher_run, weight=w).replace(epochs=2), tiny_data, device="cpu")
            for w in (0.0, 10.0)}
    cos = {w: r.history[-1]["teacher_cosine"] for w, r in runs.items()}
    assert runs[0.0].metrics["epochs_completed"] == runs[10.0].metrics["epochs_completed"] == 2
    assert cos[10.0] > cos[0.0] + 0.1, cos
    assert runs[10.0].history[-1]["distill_loss"] < runs[0.0].history[-1]["distill_loss"]
    assert runs[10.0].metrics["teacher_cosine"] == cos[10.0]


# -- export and errors ---------------------------------------------------------------------

def test_exported_student_encoder_has_no_extra_parameters(teacher_run, tiny_data, tmp_path):
    result = train(_distilled(teacher_run), tiny_data, out_dir=tmp_path, device="cpu")
    assert result.status == "completed" and 0 <= result.metrics["test_probe_top1"] <= 1
    plain, _ = create_backbone(TINY["backbone"], 32)
    encoder, payload = load_encoder(str(tmp_path / "encoder.pt"))
    assert payload["state_dict"].keys() == plain.state_dict().keys()
    assert sum(p.numel() for p in encoder.parameters()) == sum(p.numel() for p in plain.parameters())
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert not any("teacher" in k for k in ckpt["model"])  # the teacher is never saved with the student
    assert Recipe.from_json((tmp_path / "recipe.json").read_text()) == _distilled(teacher_run)


def test_missing_or_corrupt_teacher_checkpoint_is_a_clear_error_and_loses_nothing(teacher_run, tiny_data,
                                                                                   tmp_path):
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes((teacher_run / "checkpoint.pt").read_bytes())
    recipe = _distilled(teacher).replace(epochs=2)
    out = tmp_path / "student"
    assert train(recipe, tiny_data, out_dir=out, device="cpu", stop_after=1).status == "stopped"
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    teacher.write_bytes(teacher.read_bytes()[:1000])  # truncated
    with pytest.raises(CheckpointError, match=r"teacher checkpoint .*teacher.pt' is corrupt or unreadable"):
        train(recipe, tiny_data, out_dir=out, device="cpu")
    assert teacher.exists() and len(teacher.read_bytes()) == 1000  # the bad file is left for the user
    teacher.unlink()
    with pytest.raises(CheckpointError, match=r"teacher checkpoint .*teacher.pt' does not exist"):
        train(recipe, tiny_data, out_dir=out, device="cpu")
    torch.save({"format": "something else"}, teacher)
    with pytest.raises(CheckpointError, match="is not a trainer checkpoint"):
        train(recipe, tiny_data, out_dir=out, device="cpu")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the student's run is untouched

    teacher.write_bytes((teacher_run / "checkpoint.pt").read_bytes())  # fixed: the student resumes
    resumed = train(recipe, tiny_data, out_dir=out, device="cpu")
    assert resumed.status == "completed" and [h["epoch"] for h in resumed.history] == [1, 2]


# -- the teacher cache ---------------------------------------------------------------------

def test_named_teacher_is_pretrained_once_resumed_after_a_crash_and_then_reused(tiny_data, tmp_cache, monkeypatch):
    student = Recipe(**TINY, distill={"teacher_backbone": "mobilenetv3_small_050",
                                      "teacher_recipe": {"epochs": 2, "seed": 3}})
    run_dir = teacher_dir(student.teacher_recipe(), tiny_data, tmp_cache)
    assert run_dir.parent == tmp_cache / "teachers"
    # a teacher run that died after its first epoch
    crashed = train(student.teacher_recipe(), tiny_data, out_dir=run_dir, device="cpu", stop_after=1)
    assert crashed.status == "stopped"

    calls = []
    real_fit = teacher_mod.fit

    def counting_fit(recipe, *args, **kwargs):
        calls.append(recipe.backbone)
        return real_fit(recipe, *args, **kwargs)

    monkeypatch.setattr(teacher_mod, "fit", counting_fit)  # what pretrain_teacher calls
    seen = []
    first = train(student, tiny_data, device="cpu", on_teacher_epoch=seen.append)
    assert first.status == "completed" and calls == ["mobilenetv3_small_050"]
    assert [r["epoch"] for r in seen] == [2]  # resumed: only the missing epoch was trained
    history = json.loads((run_dir / "history.json").read_text())
    assert history[0]["loss"] == crashed.history[0]["loss"] and len(history) == 2
    record = json.loads((run_dir / "teacher.json").read_text())
    assert record["teacher_recipe"]["epochs"] == 2
    assert {"val_knn_top1", "val_probe_top1", "test_probe_top1", "test_knn_top1"} <= set(record["metrics"])
    stamp = (run_dir / "checkpoint.pt").stat().st_mtime_ns

    again = train(student.with_values({"distill.weight": 0.25}), tiny_data, device="cpu")
    assert again.status == "completed" and calls == ["mobilenetv3_small_050"]  # reused, not retrained
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert load_teacher(run_dir, student).recipe == student.teacher_recipe()

    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")  # a damaged cache entry is reported, kept
    with pytest.raises(CheckpointError, match="cached teacher: delete .* to pretrain it again"):
        train(student, tiny_data, device="cpu")
    assert (run_dir / "history.json").exists() and calls == ["mobilenetv3_small_050"]


class _TestSplitIsOffLimits(ProxyData):
    def __getattribute__(self, name):
        if name in ("test_x", "test_y"):
            raise AssertionError(f"{name} was read")
        return super().__getattribute__(name)


def test_teacher_cache_key_covers_train_and_val_and_never_reads_the_test_split(tiny_data, tmp_path):
    teacher = Recipe(**TINY)
    fields = {f: getattr(tiny_data, f) for f in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
    sealed = _TestSplitIsOffLimits(**fields, class_names=list(tiny_data.class_names))
    key = teacher_dir(teacher, sealed, tmp_path)
    assert key == teacher_dir(teacher, tiny_data, tmp_path)
    other_test = ProxyData(**{**fields, "test_x": fields["test_x"].flip(0)}, class_names=list(tiny_data.class_names))
    assert teacher_dir(teacher, other_test, tmp_path) == key  # the teacher never sees the test split
    other_train = ProxyData(**{**fields, "train_x": fields["train_x"].flip(0)},
                            class_names=list(tiny_data.class_names))
    assert teacher_dir(teacher, other_train, tmp_path) != key


def test_concurrent_runs_wait_for_one_teacher_pretraining(tiny_data, tmp_path, monkeypatch):
    student = Recipe(**TINY, distill={"teacher_backbone": "resnet18", "teacher_recipe": {"proj_hidden_dim": 32}})
    calls = []

    def slow_fake_train(recipe, proxy, *, out_dir, **kwargs):
        calls.append(recipe.backbone)
        time.sleep(0.5)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "checkpoint.pt").write_bytes(b"x")
        (out_dir / "metrics.json").write_text(json.dumps({"status": "completed"}))
        return engine.TrainResult("completed", {}, [], None, str(out_dir))

    monkeypatch.setattr(teacher_mod, "fit", slow_fake_train)
    dirs, errors = [], []

    def worker():
        try:
            dirs.append(pretrain_teacher(student, tiny_data, tmp_path, device="cpu"))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and calls == ["resnet18"] and len(set(dirs)) == 1 and len(dirs) == 3


# -- command line --------------------------------------------------------------------------

def test_cli_runs_a_distill_recipe_with_dotted_overrides(teacher_run, tmp_path, capsys):
    from trainer.__main__ import main

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({**TINY, "distill": {"teacher_checkpoint": str(teacher_run)}}))
    code = main(["--recipe", str(recipe), "--set", "distill.weight=0.5", "--set", "distill.views=first",
                 "--dataset", "synthetic", "--classes", "4", "--train-per-class", "16", "--val-per-class", "4",
                 "--test-per-class", "8", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
                 "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "distilling from teacher" in captured.err and "cos(t)" in captured.err
    saved = Recipe.from_json((tmp_path / "out" / "recipe.json").read_text())
    assert (saved.distill.weight, saved.distill.views) == (0.5, "first")
    assert "teacher_cosine" in json.loads(captured.out)["metrics"]
    code = main(["--recipe", str(recipe), "--set", "distill.weight=500", "--dataset", "synthetic"])
    assert code == 2 and "distill.weight must be in [0, 100]" in capsys.readouterr().err
