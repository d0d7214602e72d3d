"""The records module: one definition of every tag, records that read back what they write, and
filter strings that never match more than asked. The literal tag names here are on purpose: they
are the stored format, which existing stores are read by."""

from __future__ import annotations

import dataclasses

import pytest

from recipe_search import records


def test_the_stored_tag_names_never_change():
    assert (records.TAG_KIND, records.TAG_SEARCH, records.TAG_TRIAL, records.TAG_STAGE, records.TAG_PHASE) == (
        "rs.kind", "rs.search_id", "rs.trial_id", "rs.stage", "rs.phase")
    assert (records.TAG_STATE, records.TAG_SCHEMA, records.TAG_SCORES, records.TAG_VAL_SCORES) == (
        "rs.state", "rs.schema", "rs.scores", "rs.val_scores")
    assert records.SCHEMA == "2" and records.reused_tag("report-5") == "rs.report-5_reused"
    names = [v for k, v in vars(records.tags).items() if k.startswith("TAG_") and v.startswith("rs.")]
    assert len(names) == len(set(names)), "two constants name the same tag"


def test_search_record_round_trip_and_partial_update():
    s = records.Search(search_id="abc", backbone="resnet18", dataset="cifar10", budget="smoke",
                       fingerprint="0123456789abcdef", version="0.1", status="finished", promoted=False,
                       verdict="no_significant_lift", served="")
    tags = s.to_tags()
    assert tags["rs.kind"] == "search" and tags["rs.promoted"] == "false" and tags["rs.served"] == ""
    assert records.Search.from_tags(tags) == s and records.Search.is_kind(tags)
    update = records.Search(status="failed", error="").to_tags()
    assert update == {"rs.kind": "search", "rs.status": "failed", "rs.error": ""}  # nothing else is touched
    base = s.trial_base()
    assert (base.search_id, base.fingerprint, base.version) == ("abc", "0123456789abcdef", "0.1")
    assert base.to_tags()["rs.kind"] == "trial"


def test_trial_and_confirmation_records():
    t = records.Trial(search_id="abc", trial_id="t1", stage="search", seed=-3, recipe='{"lr": 0.1}', status="pruned")
    read = records.Trial.read(t.to_tags())
    assert type(read) is records.Trial and read == t and read.recipe_dict == {"lr": 0.1}
    c = t.confirmation(job="mocov2", phase="select", status="completed")
    assert (c.trial_id, c.status, c.stage) == ("t1", "completed", "confirmation")
    tags = c.to_tags()
    assert tags["rs.stage"] == "confirmation" and tags["rs.phase"] == "select" and tags["rs.seed"] == "-3"
    back = records.Trial.read(tags)
    assert isinstance(back, records.Confirmation) and back.is_confirmation and (back.job, back.phase) == ("mocov2", "select")
    # a confirmation run logged before phases existed read test: it reads as the report phase
    old = records.Trial.read({"rs.kind": "trial", "rs.stage": "confirmation", "rs.seed": "x"})
    assert old.phase == "report" and old.seed is None
    assert records.Trial.read({"rs.recipe": "not json"}).recipe_dict is None
    # a sampled trial names its sampler; runs recorded before the tag read as None (labelled tpe, the default)
    r = records.Trial(trial_id="t2", point='{"lr": 0.2}', sampler="random")
    assert r.to_tags()["rs.sampler"] == "random" and records.Trial.read(r.to_tags()).sampler == "random"
    assert records.Trial.read({"rs.kind": "trial", "rs.trial_id": "t3"}).sampler is None


def test_promotion_tags_round_trip_and_shrink():
    p = records.Promotion(backbone="resnet18", dataset="cifar10", fingerprint="0123456789abcdef", budget="smoke",
                          recipe={"backbone": "resnet18"}, scores=(0.3, 0.4), provenance={"verdict": {"line": "x"}},
                          state=records.PENDING, val_scores={2: 0.5, 1: 0.4}, verdict="better_than_baselines",
                          promoted_at="2026-01-01T00:00:00Z")
    tags = p.to_tags()
    assert tags["rs.kind"] == "promotion" and tags["rs.val_scores"] == '{"1": 0.4, "2": 0.5}'
    back = records.Promotion.from_tags(tags)
    assert back == dataclasses.replace(p, source_run_id=None)  # "" reads back as None
    assert records.Promotion.from_tags({**tags, "rs.scores": "[]"}) is None
    big = dataclasses.replace(p, provenance={"verdict": {"line": "x"}, "blob": "y" * 20000})
    assert not big.provenance_fits and len(big.to_tags()["rs.provenance"]) <= records.MAX_TAG
    with pytest.raises(ValueError, match="tag limit"):
        dataclasses.replace(p, recipe={"x": "y" * 9000}).to_tags()
    assert records.Promotion.state_tags(records.SUPERSEDED, superseded_by="r2", at="t") == {
        "rs.state": "superseded", "rs.superseded_by": "r2", "rs.superseded_at": "t"}


def test_filter_strings():
    assert records.filter(kind=records.TRIAL, search_id="abc-1") == (
        "tags.`rs.kind` = 'trial' and tags.`rs.search_id` = 'abc-1'")
    assert records.filter(stage="confirmation", run_status="FINISHED") == (
        "tags.`rs.stage` = 'confirmation' and attributes.status = 'FINISHED'")
    with pytest.raises(ValueError, match="cannot be expressed"):
        records.filter(backbone="x' or '1' = '1")
    with pytest.raises(TypeError, match="unknown keyword"):
        records.filter(colour="red")
    assert not records.filterable("a'b") and records.filterable("0.1.0+g1234.dirty")
