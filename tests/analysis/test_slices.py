"""Slices from words: the images whose sentences use a word, their accuracy, errors and examples; kept with a
run, reused on another run of the same data, compared across two classifiers."""
from __future__ import annotations

import json

import pytest

from core.analysis import load_tables
from core.analysis.slices import (
    SliceSpec,
    WordSlice,
    delete_slice,
    read_slices,
    save_slice,
    saved_slices,
    slice_membership,
    slice_table,
)
from tests.fake_runs import make_waterbirds_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("slices")
    erm = make_waterbirds_run(root / "erm", name="erm")
    robust = make_waterbirds_run(root / "robust", name="robust", error_rates=(0.05, 0.1, 0.1, 0.05), seed=1)
    return erm, robust


def test_the_water_slice_is_where_landbirds_are_misread(runs):
    erm, _ = runs
    s = WordSlice("water").fit(erm)
    tables = load_tables(erm)
    uses = set(tables.words[(tables.words["word"] == "water") & (tables.words["sentences"] > 0)]["image_id"])
    assert set(s.image_ids_) == uses and s.n_ == len(uses)
    assert s.ci_low_ <= s.accuracy_ <= s.ci_high_
    assert s.accuracy_ < s.accuracy_rest_  # images that say water are read worse than the others
    wrong = s.confusion_[s.confusion_["class"] != s.confusion_["predicted_as"]]
    assert ("landbird", "waterbird") in set(zip(wrong["class"], wrong["predicted_as"]))
    first = tables.images.set_index("image_id").loc[s.examples_[0]]
    assert first["label"] != first["prediction"]  # misread examples first
    assert set(s.per_class_["class"]) == {"landbird", "waterbird"}
    assert json.dumps(s.summary_)  # JSON-able, as the report exports it


def test_any_all_and_a_minimum_share(runs):
    erm, _ = runs
    any_ = WordSlice(["water", "lake"]).fit(erm)
    all_ = WordSlice(["water", "lake"], match="all").fit(erm)
    strong = WordSlice(["water"], min_share=0.4).fit(erm)
    water = WordSlice("water").fit(erm)
    assert all_.n_ <= min(water.n_, any_.n_) and any_.n_ >= water.n_
    assert strong.n_ < water.n_ and set(strong.image_ids_) <= set(water.image_ids_)
    member = slice_membership(load_tables(erm), SliceSpec(("water",), min_share=0.4))
    assert (member.loc[member["in_slice"], "share_water"] > 0.4).all()
    assert any_.spec_.name == "water or lake" and all_.spec_.name == "water and lake"
    assert list(slice_table([water, any_])["slice"]) == ["water", "water or lake"]


def test_bad_slices_say_what_is_wrong():
    with pytest.raises(ValueError, match="words must"):
        SliceSpec(())
    with pytest.raises(ValueError, match="match must be one of"):
        SliceSpec(("water",), match="some")
    with pytest.raises(ValueError, match="min_share"):
        SliceSpec(("water",), min_share=2)
    with pytest.raises(RuntimeError, match="not fitted"):
        WordSlice("water").summary_


def test_a_word_no_image_uses_is_an_empty_slice(runs):
    erm, _ = runs
    s = WordSlice("zebra").fit(erm)
    assert s.n_ == 0 and s.accuracy_ is None and s.confusion_.empty and s.examples_ == []


def test_slices_are_kept_with_the_run_and_reused_on_runs_of_the_same_data(runs):
    erm, robust = runs
    save_slice(erm, SliceSpec(("water", "lake")))
    save_slice(erm, SliceSpec(("tree",), name="trees"))
    assert [s.name for s in read_slices(erm)] == ["water or lake", "trees"]
    found = saved_slices(robust, [erm, robust])
    assert [(s.spec.name, s.source, s.own) for s in found] == [("water or lake", "erm", False), ("trees", "erm", False)]
    delete_slice(erm, "trees")
    assert [s.name for s in read_slices(erm)] == ["water or lake"]
    (erm.path / "slices.json").write_text("{ broken")
    with pytest.raises(ValueError, match="cannot be read as saved slices"):
        read_slices(erm)
    assert saved_slices(robust, [erm]) == []  # another run's broken file is skipped
    (erm.path / "slices.json").unlink()


def test_a_shipped_runs_slices_go_to_the_user_overlay(runs, tmp_path, monkeypatch):
    from core import paths
    from core.analysis.slices import slices_file

    erm, _ = runs
    monkeypatch.setattr(paths, "is_shipped", lambda p: True)
    monkeypatch.setenv("TEXPLAIN_RUNS", str(tmp_path / "mine"))
    assert slices_file(erm).is_relative_to(tmp_path / "mine")


def test_the_same_slice_under_two_classifiers(runs):
    erm, robust = runs
    s = WordSlice("water").fit(erm)
    both = s.compare(robust, names=("erm", "robust"))
    assert list(both["run"]) == ["erm", "robust"] and both["n"].iloc[0] == s.n_
    gap = both.attrs["gap"]
    assert gap["low"] <= gap["gap"] <= gap["high"] and gap["gap"] < 0  # the robust classifier does better there
