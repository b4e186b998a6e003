"""Tests for core.analysis: word shares, log-odds comparison, spurious flags, groups and worst-group accuracy.

The runs are tests/fake_runs.py's synthetic Waterbirds: landbirds on water are often misread as waterbirds and
their explanations then say "water"/"lake"/"sea"; waterbirds on land are misread and say "tree"/"forest"/"grass".
"""
from __future__ import annotations

import json
import statistics

import numpy as np
import pandas as pd
import pytest

from core.analysis import (CoreWordList, GroupInferrer, RunTables, SpuriousTermScorer, compare_runs, compare_word_sets,
                           concept_words, divergence, flag_examples, group_accuracy, group_agreement, image_set,
                           select_images, subset_word_shares, top_words, word_shares, worst_group_accuracy)
from core.analysis.groups import describe_group_words
from tests.fake_runs import (CLASSES, GROUP_NAMES, LAND_WORDS, WATER_WORDS, make_waterbirds_run)

@pytest.fixture(scope="module")
def erm_run(tmp_path_factory):
    return make_waterbirds_run(tmp_path_factory.mktemp("runs") / "erm")


@pytest.fixture(scope="module")
def erm_scorer(erm_run):
    return SpuriousTermScorer(core_words=CoreWordList()).fit(erm_run)


def _tiny_tables() -> RunTables:
    """Three landbirds and one waterbird with hand-countable words."""
    images = pd.DataFrame({
        "image_id": ["a", "b", "c", "d"], "split": ["test", "test", "test", "train"],
        "label": [0, 0, 0, 1], "label_name": ["landbird"] * 3 + ["waterbird"],
        "prediction": [0, 1, 0, 1], "prediction_name": ["landbird", "waterbird", "landbird", "waterbird"],
        "group": [0, 1, 0, 3], "n_sentences": [4, 2, 5, 10]})
    words = pd.DataFrame({
        "image_id": ["a", "b", "a", "d"], "word": ["water", "water", "tree", "water"],
        "count": [1, 3, 4, 10], "sentences": [1, 2, 4, 10]})
    return RunTables(images, words, {"dataset": {"class_names": CLASSES, "group_names": GROUP_NAMES}})


# --- word shares ------------------------------------------------------------------------------------

def test_word_shares_match_a_hand_computed_case():
    shares = word_shares(_tiny_tables(), by="label", min_images=1)
    water = shares[(shares["label"] == "landbird") & (shares["word"] == "water")].iloc[0]
    per_image = [1 / 4, 2 / 2, 0.0]  # image c has no "water": it counts as 0
    assert water["share"] == pytest.approx(sum(per_image) / 3)
    assert (water["images_with_word"], water["n_images"], water["total_count"]) == (2, 3, 4)
    half = 1.96 * statistics.stdev(per_image) / np.sqrt(3)
    assert water["ci_low"] == pytest.approx(max(0.0, water["share"] - half))
    assert water["ci_high"] == pytest.approx(min(1.0, water["share"] + half))
    tree = shares[(shares["label"] == "landbird") & (shares["word"] == "tree")].iloc[0]
    assert tree["share"] == pytest.approx(1.0 / 3)
    # Waterbird d uses water in all its sentences.
    assert shares[(shares["label"] == "waterbird")]["share"].tolist() == [1.0]
    assert list(shares.columns) == ["label", "word", "share", "images_with_word", "n_images", "ci_low",
                                    "ci_high", "total_count"]


def test_word_shares_by_outcome_group_split_and_min_images():
    tables = _tiny_tables()
    by_outcome = word_shares(tables, by="outcome", min_images=1)
    wrong = by_outcome[by_outcome["outcome"] == "wrong"].set_index("word")["share"]
    assert wrong.to_dict() == {"water": 1.0}  # only image b is wrong
    by_group = word_shares(tables, by="group", min_images=1)
    assert set(by_group["group"]) == {"landbird on land", "landbird on water", "waterbird on water"}
    test_only = word_shares(tables, by=None, split="test", min_images=1).set_index("word")
    assert test_only.loc["water", "n_images"] == 3 and "group" not in test_only.columns
    assert word_shares(tables, by="label", min_images=2)["word"].tolist() == ["water"]


def test_subset_shares_and_select_images_take_class_names():
    tables = _tiny_tables()
    subset = select_images(tables.images, label="landbird", prediction="waterbird")
    assert subset["image_id"].tolist() == ["b"]
    shares = subset_word_shares(tables, label="landbird", outcome="correct").set_index("word")
    assert shares.loc["water", "share"] == pytest.approx((1 / 4 + 0) / 2)
    with pytest.raises(ValueError, match="label='heron' is not a class name"):
        select_images(tables.images, label="heron", class_names=CLASSES)


def test_word_shares_reject_bad_arguments_and_missing_groups():
    tables = _tiny_tables()
    with pytest.raises(ValueError, match="by must be one of"):
        word_shares(tables, by="colour")
    with pytest.raises(ValueError, match="min_images must be an integer >= 1, got 0"):
        word_shares(tables, min_images=0)
    no_groups = RunTables(tables.images.assign(group=None), tables.words, tables.manifest)
    with pytest.raises(ValueError, match="no group"):
        word_shares(no_groups, by="group")
    with pytest.raises(ValueError, match="images is missing columns"):
        word_shares((tables.images.drop(columns="n_sentences"), tables.words))


def test_word_shares_read_from_the_store(erm_run):
    shares = word_shares(erm_run, by="label")
    top = top_words(shares, k=3, by="label")
    assert top.groupby("label").size().to_dict() == {"landbird": 3, "waterbird": 3}
    assert top["label"].tolist()[:3] == ["landbird"] * 3  # class order, then share
    assert top[top["label"] == "landbird"]["word"].iloc[0] == "bird"


# --- comparing sets ---------------------------------------------------------------------------------

def test_log_odds_z_points_to_the_set_that_uses_the_word_more(erm_run):
    misread = image_set(erm_run, label="landbird", prediction="waterbird", name="misread")
    right = image_set(erm_run, label="landbird", prediction="landbird", name="right")
    cmp = compare_word_sets(misread, right).set_index("word")
    assert cmp.loc["water", "z"] > 5 and cmp.loc["water", "delta"] > 0
    assert cmp.loc["tree", "z"] < -5
    assert abs(cmp.loc["photo", "z"]) < 3  # used alike by both sets
    assert cmp.loc["water", "share_a"] > 0.4 > 0.2 > cmp.loc["water", "share_b"]
    flipped = compare_word_sets(right, misread).set_index("word")
    assert flipped.loc["water", "z"] == pytest.approx(-cmp.loc["water", "z"])
    assert cmp.attrs == {"a": "misread", "b": "right", "unit": "sentences"}


def test_js_divergence_is_zero_for_identical_sets_and_grows_with_difference(erm_run):
    land = image_set(erm_run, group=0)
    assert divergence(land, land).jensen_shannon == pytest.approx(0.0, abs=1e-12)
    water = image_set(erm_run, group=1)
    waterbirds_on_water = image_set(erm_run, group=3)
    d_place = divergence(land, water)
    assert 0.02 < d_place.jensen_shannon < 1
    assert d_place.top_contributors["word"].iloc[0] in WATER_WORDS | LAND_WORDS
    # Same background, different bird: closer than same bird on a different background.
    assert divergence(water, waterbirds_on_water).jensen_shannon < d_place.jensen_shannon
    a = image_set(_tiny_tables(), image_ids=["a"])
    d = image_set(_tiny_tables(), image_ids=["d"])
    b = image_set(_tiny_tables(), image_ids=["b"])
    assert divergence(b, d).jensen_shannon == pytest.approx(0.0, abs=1e-12)  # both only "water"
    assert divergence(a, d).jensen_shannon > 0


def test_compare_runs_finds_the_words_that_changed(tmp_path, erm_run):
    robust = make_waterbirds_run(tmp_path / "robust", name="robust", error_rates=(0.05, 0.1, 0.1, 0.05))
    changes = compare_runs(erm_run, robust, by="label", k=5)
    assert set(changes["label"]) == {"landbird", "waterbird"}
    land = changes[changes["label"] == "landbird"]
    assert land["change"].abs().is_monotonic_decreasing
    assert land["word"].iloc[0] in {"water", "duck", "lake", "sparrow"}
    water_row = compare_runs(erm_run, robust, by="label").set_index(["label", "word"]).loc[("landbird", "water")]
    assert water_row["change"] < -0.03 and water_row["z"] < 0  # fewer landbirds called by water
    assert changes.attrs["shared_images"] == 400 and changes.attrs["a"] == "erm"


# --- spurious flags ---------------------------------------------------------------------------------

def test_concept_words_know_birds_but_not_backgrounds():
    for name in ("waterbird", "landbird"):
        words = concept_words(name)
        assert {"bird", "duck", "gull", "penguin", "feather", "wing", "beak"} <= words, name
        assert not words & (WATER_WORDS | LAND_WORDS | {"land", "photo", "background"}), name
    assert "waterfowl" in concept_words("waterbird")
    assert concept_words("tabby, tabby cat") >= {"tabby", "cat"}


def test_a_datasets_wordnet_synset_settles_a_class_names_sense():
    """"primate" is first an archbishop in WordNet: a tamarin is no concept word of it unless the dataset
    says which primate it means, and then a tamarin in misread primates' sentences is not a flag."""
    assert "tamarin" not in concept_words("primate")
    assert {"primate", "tamarin", "chimpanzee", "gorilla"} <= concept_words("primate", synset="n02469914")
    assert "guitar" in concept_words("instrument", synset="n03800933")  # the musical one
    with pytest.raises(ValueError, match="WordNet noun id"):
        concept_words("primate", synset="primate.n.02")
    with pytest.raises(ValueError, match="n99999999 is no WordNet noun synset"):
        concept_words("primate", synset="n99999999")
    rng = np.random.default_rng(0)
    images, words = [], []
    for i in range(300):
        label = i % 2
        pred = label if rng.random() < 0.7 else 1 - label
        images.append({"image_id": f"i{i}", "label": label, "prediction": pred, "n_sentences": 10})
        said = {"tamarin": 8} if label == 0 and pred != label else {"fish": 6}
        words += [{"image_id": f"i{i}", "word": w, "count": k, "sentences": k} for w, k in said.items()]
    names = ["primate", "fish"]
    for synsets, flagged in ((None, True), (["n02469914", "n02512053"], False)):
        dataset = {"class_names": names, **({"class_synsets": synsets} if synsets else {})}
        tables = RunTables(pd.DataFrame(images), pd.DataFrame(words), {"dataset": dataset})
        assert tables.class_synsets == (dict(zip(names, synsets)) if synsets else {})
        scorer = SpuriousTermScorer(core_words=CoreWordList()).fit(tables)
        assert ("tamarin" in set(scorer.flags_for("primate")["word"])) is flagged, synsets


def test_water_words_are_the_top_flags_for_landbird(erm_scorer):
    landbird = erm_scorer.flags_for("landbird")
    assert set(landbird["word"].head(3)) == WATER_WORDS
    assert set(landbird["predicted_as"]) == {"waterbird"}
    assert landbird["rank"].tolist()[:3] == [1, 2, 3]
    waterbird = erm_scorer.flags_for("waterbird")
    assert set(waterbird["word"].head(3)) == LAND_WORDS
    # Read from the other side: the words that pull images toward "waterbird" are the water words.
    assert set(erm_scorer.flags_for("waterbird", side="toward")["word"].head(3)) == WATER_WORDS
    top = landbird.iloc[0]
    assert top["share_wrong"] > 0.3 > 0.15 > top["share_right"] and top["n_wrong"] > 40
    assert top["evidence"].startswith(f"'{top['word']}' is in ")
    assert "for landbird images predicted as waterbird" in top["evidence"]
    assert "predicted correctly" in top["evidence"]
    assert len(top["example_image_ids"]) == 3
    assert all(i.startswith("g1-") or i.startswith("g0-") for i in top["example_image_ids"])
    pair = erm_scorer.pair_flags_
    assert set(pair[pair["class"] == "landbird"]["word"].head(3)) == WATER_WORDS


def test_bird_words_and_one_off_words_are_never_flagged(erm_scorer):
    flagged = set(erm_scorer.flags_["word"])
    assert not flagged & {"bird", "duck", "gull", "sparrow", "robin", "quyvian", "photo", "background"}
    scores = erm_scorer.scores_.set_index(["class", "word"])
    # "duck" is as strong a signal as the water words: only the concept check keeps it out.
    assert scores.loc[("landbird", "duck"), "z"] > 5
    assert "concept word" in scores.loc[("landbird", "duck"), "reason"]
    assert scores.loc[("landbird", "quyvian"), "reason"].startswith("used by fewer than")


def test_user_marks_persist_and_change_the_flags(tmp_path, erm_run):
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps({"notes": "kept"}))
    marks = CoreWordList.load(path)
    marks.mark_core("landbird", "Water")
    marks.mark_spurious("landbird", "photo")
    marks.mark_spurious("landbird", "helicopter")  # used by no image
    reloaded = CoreWordList.load(path)
    assert reloaded.core("landbird") == {"water"} and reloaded.spurious("landbird") == {"photo", "helicopter"}
    assert json.loads(path.read_text())["notes"] == "kept"

    flags = SpuriousTermScorer(core_words=path).fit(erm_run).flags_for("landbird")
    assert "water" not in set(flags["word"])
    assert {"photo", "helicopter", "lake", "sea"} <= set(flags["word"])
    photo = flags.set_index("word").loc["photo"]
    assert photo["source"] == "user" and "marked spurious by the user" in photo["evidence"]
    assert np.isnan(flags.set_index("word").loc["helicopter", "score"])

    reloaded.mark_spurious("landbird", "water")  # marking spurious lifts the core mark
    assert CoreWordList.load(path).status("landbird", "water") == "spurious"


def test_run_annotations_are_used_by_default(tmp_path):
    run = make_waterbirds_run(tmp_path / "run", per_group=60)
    CoreWordList.for_run(run).mark_core("*", "lake")
    assert (run.path / "annotations.json").exists()
    flags = SpuriousTermScorer().fit(run).flags_
    assert "lake" not in set(flags["word"]) and "water" in set(flags["word"])


def test_flag_examples_return_sentences_with_the_word(erm_run):
    examples = flag_examples(erm_run, "landbird", "water", k=4)
    assert len(examples) == 4 and examples["image_id"].is_unique
    assert examples["text"].str.contains("water").all()
    assert (examples["label_name"] == "landbird").all() and (examples["outcome"] == "wrong").all()
    assert flag_examples(erm_run, "landbird", "helicopter").empty
    with pytest.raises(ValueError, match="class_name 'heron' is not a class"):
        flag_examples(erm_run, "heron", "water")


def test_scorer_rejects_bad_parameters_and_unfitted_use(erm_run):
    with pytest.raises(ValueError, match="min_images must be an integer >= 1, got 0"):
        SpuriousTermScorer(min_images=0).fit(erm_run)
    with pytest.raises(RuntimeError, match="not fitted"):
        SpuriousTermScorer().flags_for("landbird")


# --- groups -----------------------------------------------------------------------------------------

def _hand_images() -> pd.DataFrame:
    # group 0: 4/4 right, group 1: 1/2 right, group 2: 1/4 right, group 3: 3/3 right.
    rows = [(0, 1)] * 4 + [(1, 1), (1, 0)] + [(2, 1)] + [(2, 0)] * 3 + [(3, 1)] * 3
    return pd.DataFrame({"image_id": [f"i{k}" for k in range(len(rows))], "group": [g for g, _ in rows],
                         "label": [g // 2 for g, _ in rows],
                         "prediction": [g // 2 if ok else 1 - g // 2 for g, ok in rows]})


def test_group_accuracy_and_both_weightings_on_a_hand_computed_case():
    images = _hand_images()
    per_group = group_accuracy(images, group_names=GROUP_NAMES).set_index("group")
    assert per_group["accuracy"].tolist() == [1.0, 0.5, 0.25, 1.0]
    assert per_group["n"].tolist() == [4, 2, 4, 3]
    assert (per_group["ci_low"] <= per_group["accuracy"]).all()
    assert (per_group["ci_high"] >= per_group["accuracy"]).all()
    test = worst_group_accuracy(images, weights="test", group_names=GROUP_NAMES)
    assert (test.worst, test.worst_group, test.worst_group_name) == (0.25, 2, "waterbird on land")
    assert test.average_weighted == pytest.approx(9 / 13)  # plain accuracy: 4+1+1+3 right of 13
    assert test.average_unweighted == pytest.approx((1 + 0.5 + 0.25 + 1) / 4)
    train = worst_group_accuracy(images, weights="train", train_group_counts={0: 6, 1: 1, 2: 1, 3: 2})
    assert train.average_weighted == pytest.approx((6 * 1 + 1 * 0.5 + 1 * 0.25 + 2 * 1) / 10)
    assert train.weighting == "train" and train.worst == 0.25
    custom = worst_group_accuracy(images, weights={0: 0, 1: 0, 2: 1, 3: 0})
    assert custom.average_weighted == pytest.approx(0.25)


def test_worst_group_accuracy_explains_what_is_missing():
    images = _hand_images()
    with pytest.raises(ValueError, match="weights='train' needs train_group_counts"):
        worst_group_accuracy(images, weights="train")
    with pytest.raises(ValueError, match="also have groups"):
        worst_group_accuracy(images, weights="train", train_group_counts={0: 1, 1: 1})
    with pytest.raises(ValueError, match="no image has a group"):
        group_accuracy(images.assign(group=None))


def test_inferred_groups_agree_with_the_true_groups(erm_run, erm_scorer):
    inferrer = GroupInferrer().fit(erm_run, erm_scorer.flags_)
    assert set(inferrer.spurious_words_["landbird"][:3]) == WATER_WORDS
    images = erm_run.images()
    inferred = inferrer.predict(images)
    agreement = group_agreement(images.set_index("image_id")["group"], inferred)
    assert agreement.accuracy > 0.9 and agreement.adjusted_rand > 0.75
    assert agreement.mapping == {0: 0, 1: 1, 2: 3, 3: 2}  # a waterbird "with land words" is on land
    assert 0 < inferrer.thresholds_["landbird"] < 1
    assert inferrer.group_names_[1].startswith("landbird, with ")
    # The worst inferred group is a real minority group, as with the true groups.
    worst = worst_group_accuracy(images, groups=inferred)
    assert agreement.mapping[worst.worst_group] in (1, 2)


def test_group_inference_works_when_the_dataset_has_no_groups(tmp_path):
    run = make_waterbirds_run(tmp_path / "nogroups", with_groups=False)
    assert run.images()["group"].isna().all()
    scorer = SpuriousTermScorer(core_words=CoreWordList()).fit(run)
    inferred = GroupInferrer().fit(run, scorer).predict()
    truth = pd.Series([int(i[1]) for i in inferred.index], index=inferred.index)  # ids are g<group>-...
    assert group_agreement(truth, inferred).accuracy > 0.9


def test_a_class_without_misreads_is_split_by_its_association_words(tmp_path):
    """A held-out split where the classifier still reads waterbirds right (as the demo's val split): no error-view
    flags for waterbird, so the group inference falls back to the words its predictions go with (water), and
    waterbirds on land become a group of their own instead of staying merged with those on water."""
    run = make_waterbirds_run(tmp_path / "fewmisread", error_rates=(0.03, 0.55, 0.0, 0.0))
    scorer = SpuriousTermScorer(core_words=CoreWordList()).fit(run)
    assert scorer.flags_for("waterbird").empty and not scorer.associations_for("waterbird").empty
    words, views = scorer.group_words(5)
    assert views == {"landbird": "error", "waterbird": "association"}
    assert set(words["waterbird"]) & WATER_WORDS and not set(words["waterbird"]) & LAND_WORDS
    inferrer = GroupInferrer().fit(run, scorer)
    assert inferrer.word_views_ == views
    images = run.images().set_index("image_id")
    inferred = inferrer.predict()
    waterbirds = images["label"] == 1
    assert group_agreement(images.loc[waterbirds, "group"], inferred[waterbirds]).accuracy > 0.9
    assert "association view" in describe_group_words(inferrer.spurious_words_, inferrer.word_views_)
    # The error view alone leaves waterbirds in one group: nothing to balance them by.
    error_only = GroupInferrer().fit(run, scorer.flags_).predict()
    assert error_only[waterbirds].nunique() == 1


def test_group_agreement_ignores_label_names():
    true = [0, 0, 1, 1, 2, 2]
    agreement = group_agreement(true, [5, 5, 7, 7, 9, 9])
    assert agreement.accuracy == 1.0 and agreement.adjusted_rand == pytest.approx(1.0)
    assert group_agreement(true, [5, 7, 5, 7, 5, 7]).accuracy < 0.7


def test_multiclass_flags_are_reported_per_class_and_per_confusion():
    """Cats misread as dogs say "sofa", cats misread as foxes say "snow"."""
    rng = np.random.default_rng(3)
    names = ["cat", "dog", "fox"]
    images, words = [], []
    for i in range(600):
        label, r = i % 3, rng.random()
        pred = label if r < 0.7 else (label + 1) % 3 if r < 0.85 else (label + 2) % 3
        images.append({"image_id": f"i{i}", "label": label, "prediction": pred, "n_sentences": 10})
        probs = {names[label]: 0.6, "photo": 0.5}
        if pred != label:
            probs["snow" if pred == 2 else "sofa"] = 0.5
        for word, p in probs.items():
            k = int(rng.binomial(10, p))
            if k:
                words.append({"image_id": f"i{i}", "word": word, "count": k, "sentences": k})
    tables = RunTables(pd.DataFrame(images), pd.DataFrame(words), {"dataset": {"class_names": names}})
    scorer = SpuriousTermScorer(core_words=CoreWordList()).fit(tables)
    pairs = scorer.pair_flags_.set_index(["class", "predicted_as"])["word"]
    assert pairs.loc[("cat", "dog")] == "sofa" and pairs.loc[("cat", "fox")] == "snow"
    cat = scorer.flags_for("cat").set_index("word")
    assert set(cat.index) == {"sofa", "snow"} and cat.loc["snow", "predicted_as"] == "fox"
    assert "cat images predicted wrongly (mostly as dog)" in cat.loc["sofa", "evidence"]
    assert set(scorer.flags_for("fox", side="toward")["class"]) == {"cat", "dog"}
    per_image = scorer.transform(tables).set_index("image_id")
    misread = tables.images.set_index("image_id").eval("label != prediction")
    share = per_image["spurious_share"]
    assert share[misread].mean() > 0.3 > 0.01 > share[~misread].mean()


def test_concept_words_are_kept_on_disk_for_the_installed_wordnet(tmp_path, monkeypatch):
    from core.analysis import spurious

    cache = tmp_path / "concept_words.json"
    monkeypatch.setattr(spurious, "_concept_cache_file", lambda: cache)
    spurious.concept_words.cache_clear()
    pelican = spurious.concept_words("pelican")
    assert "bird" in pelican and "pelican" in json.loads(cache.read_text())["words"]

    def no_wordnet(*args):
        raise AssertionError("WordNet consulted although the answer is on disk")

    spurious.concept_words.cache_clear()
    with monkeypatch.context() as m:
        m.setattr(spurious, "_concept_words", no_wordnet)
        assert spurious.concept_words("pelican") == pelican  # a new process: no WordNet load
    # Another WordNet, or a damaged file, means computing afresh (and the file is repaired).
    calls = []
    monkeypatch.setattr(spurious, "_concept_words",
                        lambda name, wn, synset=None: calls.append(name) or (frozenset({name}), True))
    for damage in (lambda: monkeypatch.setattr(spurious, "_wordnet_stamp", lambda: "another wordnet"),
                   lambda: cache.write_text("{not json")):
        spurious.concept_words.cache_clear()
        damage()
        assert spurious.concept_words("pelican") == {"pelican"}
    assert calls == ["pelican", "pelican"] and json.loads(cache.read_text())["words"] == {"pelican": ["pelican"]}
    spurious.concept_words.cache_clear()


def test_load_tables_takes_a_run_folder_path(tmp_path, erm_run):
    from core.analysis.tables import load_tables
    from core.store import RunStoreError

    tables = load_tables(str(erm_run.path))
    assert len(tables.images) == len(erm_run.images()) and tables.run is not None
    with pytest.raises(RunStoreError, match="not a run folder"):
        load_tables(tmp_path / "nothing-here")


def test_flags_need_a_visual_meaning_and_fewer_images_when_few_are_misread():
    from core.analysis.spurious import visual_meaning

    verdict = visual_meaning(["lake", "forest", "wave", "misty", "wooden", "black", "swim", "striped", "dotted",
                              "checkered", "great", "close", "idea", "nice"])
    assert all(verdict[w] for w in ("lake", "forest", "wave", "misty", "wooden", "black", "swim", "striped",
                                    "dotted", "checkered"))
    assert not any(verdict[w] for w in ("great", "close", "idea", "nice"))
    scorer = SpuriousTermScorer()
    assert [scorer.needed_images(n) for n in (3, 4, 6, 10, 100)] == [2, 2, 3, 5, 10]
    with pytest.raises(ValueError, match="association_by must be 'prediction' or 'label', got 'group'"):
        SpuriousTermScorer(association_by="group").fit(([], []))


def test_association_view_by_label(erm_run):
    scorer = SpuriousTermScorer(association_by="label").fit(erm_run)
    assert set(scorer.association_scores_["class"]) == {"landbird", "waterbird"}
    if len(scorer.associations_):
        assert scorer.associations_["evidence"].str.contains("images labelled").all()
    assert set(scorer.notes_["view"]) == {"error", "association"}
