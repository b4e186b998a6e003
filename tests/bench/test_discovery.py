"""bench.discovery: worlds build deterministically with the declared correlation; the measures are right on inputs
made by hand; the baselines find what they are built to find; the suite summary counts only learned worlds."""
import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.discovery import metrics as M
from bench.discovery import worlds as W


# --- worlds ------------------------------------------------------------------------------------------------------

def _fake_stamps(root):
    """A tuxpaint-like stamps folder: 4 tools, 4 instruments and 4 vehicles, each a disc on a clear background."""
    names = {"household/tools": ("hammer", "saw", "spade", "wrench"),
             "hobbies/music/string": ("violin", "cello", "harp", "lute"),
             "vehicles/auto": ("car", "bus", "van", "cab")}
    for i, (folder, stems) in enumerate(names.items()):
        for j, stem in enumerate(stems):
            d = root / folder
            d.mkdir(parents=True, exist_ok=True)
            im = Image.new("RGBA", (120, 120), (0, 0, 0, 0))
            colour = (40 + 50 * j, 200 - 60 * i, 90, 255)
            for x in range(20, 100):
                for y in range(20, 100):
                    if (x - 60) ** 2 + (y - 60) ** 2 < 1600:
                        im.putpixel((x, y), colour)
            im.save(d / f"{stem}.png")
            (d / f"{stem}.txt").write_text(f"A {stem}.\n")
    return root


SMALL = W.WorldSettings(train_per_class=20, correlation=0.9, val_per_group=3, test_per_group=4)


def _digest(folder):
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name != "world.json":
            h.update(f.relative_to(folder).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("world", ["colour-red-blue", "pattern-stripes-dots"])
def test_a_world_builds_the_same_twice_with_the_declared_correlation(tmp_path, world):
    from core.data import open_dataset

    stamps = _fake_stamps(tmp_path / "stamps")
    spec = W.SUITE_BY_NAME[world]
    a = W.build_world(spec, tmp_path / "a", SMALL, workers=1, stamps_dir=stamps, verbose=False)
    b = W.build_world(spec, tmp_path / "b", SMALL, workers=2, stamps_dir=stamps, verbose=False)
    assert _digest(a) == _digest(b)  # the seed decides every pixel, whatever the number of workers
    info = W.read_world(a)
    assert info["train_correlation"] == pytest.approx(0.9)
    assert info["counts"]["train"] == {"0": 18, "1": 2, "2": 2, "3": 18}
    assert info["counts"]["val"] == {str(g): 3 for g in range(4)} and info["counts"]["test"] == {str(g): 4 for g in
                                                                                                  range(4)}
    assert set(info["cue_words"]) == set(spec.cue.words[0]) | set(spec.cue.words[1]) and info["minority_groups"] == [1,
                                                                                                                      2]
    meta = pd.read_csv(a / "metadata.csv")
    by_split = {sp: set(meta.loc[meta.split == sp, "stamp"]) for sp in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    assert by_split["val"] == by_split["test"]  # held-out objects, shown in val and test alike
    ds = open_dataset(a)
    assert ds.class_names == list(spec.classes)
    frame = ds.to_frame()
    assert (frame["group"] == 2 * frame["label"] + meta["cue"]).all()
    # The planted cue is really in the pixels: the background corner differs between the two values.
    corner = [np.asarray(Image.open(a / f).convert("RGB"))[:8, :8].mean((0, 1)) for f in meta.img_filename[:60]]
    v = meta.cue[:60].to_numpy()
    if spec.cue.kind == "colour":
        assert np.mean([c[0] for c, k in zip(corner, v) if k == 0]) > 150  # red
        assert np.mean([c[2] for c, k in zip(corner, v) if k == 1]) > 150  # blue
    W.build_world(spec, tmp_path / "a", SMALL, workers=1, stamps_dir=stamps, verbose=False)  # current: kept
    assert _digest(a) == _digest(b)


def test_another_seed_or_correlation_builds_another_world(tmp_path):
    stamps = _fake_stamps(tmp_path / "stamps")
    spec = W.SUITE_BY_NAME["colour-red-blue"]
    a = W.build_world(spec, tmp_path / "a", SMALL, workers=1, stamps_dir=stamps, verbose=False)
    other = W.WorldSettings(**{**SMALL.__dict__, "correlation": 0.95})
    b = W.build_world(spec, tmp_path / "b", other, workers=1, stamps_dir=stamps, verbose=False)
    assert W.read_world(b)["train_correlation"] == pytest.approx(0.95)
    assert _digest(a) != _digest(b)
    with pytest.raises(ValueError, match="correlation"):
        W.build_world(spec, tmp_path / "c", W.WorldSettings(correlation=0.4), stamps_dir=stamps, verbose=False)


def test_photo_crops_of_train_and_evaluation_come_from_different_halves():
    rng = np.random.default_rng(0)
    for size in ((1000, 600), (600, 1000)):
        for _ in range(50):
            x0, y0, x1, y1 = W._crop(rng, size, 0)
            assert (x1 if size[0] > size[1] else y1) <= max(size) / 2 + 1
            x0, y0, x1, y1 = W._crop(rng, size, 1)
            assert (x0 if size[0] > size[1] else y0) >= max(size) / 2 - 1
            assert x1 - x0 == y1 - y0 and x1 <= size[0] and y1 <= size[1]


def test_the_suite_covers_every_cue_kind_without_birds_demo_scenes_or_reserved_packages():
    from core.demo.worlds import open_world
    from core.demo.worlds.waterbirds_mini import SCENES as DEMO_SCENES

    assert len(W.SUITE) >= 12 and {w.cue.kind for w in W.SUITE} == set(W.KINDS)
    assert len({w.name for w in W.SUITE}) == len(W.SUITE)
    catalog = {e["name"]: e for e in json.loads(open_world.SCENES_FILE.read_text())}
    demo_files = {sc.file for sc in DEMO_SCENES.values()}
    for spec in W.SUITE:
        assert all(not c.startswith("animals/birds") for name in spec.classes for c in W.CLASSES[name][0])
        assert spec.cue_words and all(w == w.lower() and " " not in w for w in spec.cue_words)
        for source in W.sources_of(spec):
            kind, _, name = source.partition(":")
            if kind == "open":
                assert catalog[name]["package"] not in W.NEVER
                assert not any(catalog[name]["path"].endswith(f) for f in demo_files), source
            else:
                assert name not in demo_files, source


def test_cue_words_are_never_words_of_the_classes_own_objects():
    from core.analysis.spurious import concept_words
    from core.data.description import load_wordnet

    if load_wordnet() is None:
        pytest.skip("WordNet is not installed (make setup)")
    for spec in W.SUITE:
        concept = set().union(*(concept_words(c) for c in spec.classes))
        assert not (set(spec.cue_words) & concept), (spec.name, set(spec.cue_words) & concept)


# --- measures ----------------------------------------------------------------------------------------------------

def test_precision_at_k_shares_ties_at_the_cut():
    assert M.precision_at_k([5, 4, 3, 2, 1, 0], [1, 1, 0, 0, 0, 0], k=2) == 1.0
    assert M.precision_at_k([0, 1, 2, 3, 4, 5], [1, 1, 0, 0, 0, 0], k=2) == 0.0
    # all tied: the base rate, not whatever order the images came in
    assert M.precision_at_k([0] * 10, [1] * 3 + [0] * 7, k=5) == pytest.approx(0.3)
    # one sure positive above the cut, 2 slots among 4 tied items of which 1 is positive
    assert M.precision_at_k([9, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 1], k=3) == pytest.approx((1 + 2 * 0.25) / 3)
    assert M.precision_at_k([1, 2], [1, 0], k=10) == 0.5  # k larger than the class: all of it
    with pytest.raises(ValueError):
        M.precision_at_k([1, 2], [1], k=1)


def test_auroc_matches_the_rank_definition():
    from sklearn.metrics import roc_auc_score

    assert M.auroc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert M.auroc([0, 1, 2, 3], [1, 1, 0, 0]) == 0.0
    assert M.auroc([1, 1, 1, 1], [1, 0, 1, 0]) == 0.5
    assert np.isnan(M.auroc([1, 2], [1, 1]))
    rng = np.random.default_rng(0)
    s, p = rng.integers(0, 5, 200).astype(float), rng.random(200) < 0.3
    assert M.auroc(s, p) == pytest.approx(roc_auc_score(p, s))


def test_ranking_metrics_average_the_classes():
    scores = [0.9, 0.8, 0.1, 0.0, 0.0, 0.1, 0.8, 0.9]
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    minority = [1, 1, 0, 0, 0, 0, 0, 1]  # class 0 ranked perfectly, class 1 one of two right at the top
    out = M.ranking_metrics(scores, labels, minority, k=2)
    assert out["per_class"][0] == {"precision_at_k": 1.0, "auroc": 1.0, "n": 4, "n_minority": 2}
    assert out["per_class"][1]["precision_at_k"] == 0.5 and out["per_class"][1]["auroc"] == 1.0
    assert out["precision_at_k"] == 0.75 and out["auroc"] == 1.0


def test_hit_at_k_looks_at_the_first_k_words_of_each_view():
    flags = {"error": ["lamp", "boat", "snow", "ice"], "association": ["table"]}
    assert M.hit_at_k(flags, ["snow"], k=3)
    assert not M.hit_at_k(flags, ["ice"], k=3)
    assert M.hit_at_k(flags, ["Table"], k=1)
    assert not M.hit_at_k({"error": [], "association": []}, ["snow"], k=3)


def test_learned_means_a_minority_group_15_points_under_the_average_and_its_majority():
    assert M.learned({0: 1.0, 1: 0.5, 2: 0.9, 3: 1.0})
    assert not M.learned({0: 1.0, 1: 0.8, 2: 0.9, 3: 0.9})  # 10 points under the average
    # class 1 misread whatever its cue: no cue was learned, though the worst group is far under the average
    assert not M.learned({0: 1.0, 1: 0.95, 2: 0.1, 3: 0.1})
    assert not M.learned({0: 0.2, 1: 0.9, 2: 1.0, 3: 1.0})  # the worst group is a majority group
    with pytest.raises(ValueError):
        M.learned({0: 1.0, 1: 0.5})


def test_summary_intervals():
    m = M.mean_interval([0.5, 0.7, float("nan"), None])
    assert m["mean"] == pytest.approx(0.6) and m["n"] == 2 and m["low"] <= 0.6 <= m["high"]
    assert M.mean_interval([])["mean"] is None
    h = M.hit_rate([True, True, False, True])
    assert h["rate"] == 0.75 and h["hits"] == 3 and 0 < h["low"] < 0.75 < h["high"] <= 1
    d = M.paired_difference([0.9, 0.8, 0.7], [0.5, 0.5, None])
    assert d["gap"] == pytest.approx(0.35) and d["n"] == 2


# --- baselines ---------------------------------------------------------------------------------------------------

def test_mixture_slices_find_a_planted_slice_of_errors():
    from bench.discovery.baselines import MixtureSlices

    rng = np.random.default_rng(0)
    n = 200
    labels = np.repeat([0, 1], n // 2)
    minority = rng.random(n) < 0.25
    z = rng.normal(size=(n, 40))
    z[:, 0] += 4 * minority  # the minority sits apart in feature space
    pred = np.where(minority, 1 - labels, labels)  # and is misread
    prob1 = np.where(pred == 1, 0.8, 0.2)
    mix = MixtureSlices(n_components=4, n_pca=8).fit(z, labels, pred, prob1)
    scores = mix.score(z, labels, prob1)
    assert M.ranking_metrics(scores, labels, minority, k=10)["auroc"] > 0.9
    groups = mix.groups(z, labels, prob1)
    assert set(np.unique(groups)) <= {0, 1, 2, 3} and (groups // 2 == labels).all()


def test_caption_lookup_returns_the_captions_of_the_nearest_images():
    from bench.discovery.baselines import CaptionLookup, first_sentences, random_words

    bank = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.9, 0.1, 0]])
    lookup = CaptionLookup().fit(bank, [["a cat on snow"], ["a dog", "a dog on grass"], ["a cup"], ["a cat"]])
    out = lookup.sentences(np.array([[1.0, 0.05, 0], [0.0, 1.0, 0.1]]), k=2)
    assert out[0] == ["a cat on snow", "a cat"] and out[1][0] == "a dog"
    sents = pd.DataFrame({"image_id": ["b", "a", "a"], "idx": [0, 1, 0], "text": ["x", "second", "first"]})
    assert first_sentences(sents) == {"a": ["first"], "b": ["x"]}
    words = pd.DataFrame({"word": ["lake", "tree", "sky", "dog"]})
    drawn = random_words(words, ["c0", "c1"], k=2, seed=1)
    assert drawn == random_words(words, ["c0", "c1"], k=2, seed=1) and all(len(v) == 2 for v in drawn.values())


# --- the suite's summary -----------------------------------------------------------------------------------------

def _result(name, kind, learned, hit, p, auroc=0.7):
    methods = {}
    for m in ("texplain", "one_sentence", "caption_lookup", "mixture", "random_words"):
        methods[m] = {"precision_at_k": p if m == "texplain" else 0.5, "auroc": auroc, "hit": hit and m == "texplain",
                      "dfr": {"worst": 0.6}}
    return {"world": name, "kind": kind, "classifier": {"learned": learned, "worst": 0.4, "average": 0.8,
                                                         "accuracy": 0.8, "per_group": {}},
            "methods": methods, "dfr_controls": {"true": {"worst": 0.7}, "class": {"worst": 0.5}}}


def test_summary_counts_hits_over_learned_worlds_only():
    from bench.discovery.run import BenchSettings, kind_table, summarize, verdict

    results = [_result("a", "scene", True, True, 0.9), _result("b", "scene", True, False, 0.7),
               _result("c", "tint", False, False, 0.5), {**_result("d", "tint", False, False, 0.5), "methods": None}]
    s = summarize(results, BenchSettings())
    assert (s["n_worlds"], s["n_scored"]) == (4, 3)  # a world not explained is reported, not scored
    hit = s["overall"]["learned"]["texplain"]["hit_at_k"]
    assert (hit["hits"], hit["n"]) == (1, 2) and s["n_learned"] == 2
    assert s["kinds"]["tint"]["learned"]["n"] == 0 and s["kinds"]["tint"]["all"]["n"] == 1
    assert s["overall"]["learned"]["texplain"]["precision_at_k"]["mean"] == pytest.approx(0.8)
    assert s["targets"] == {"hit_at_3_at_least_80pct": False, "precision_at_10_at_least_best_baseline": True,
                            "best_baseline": "one_sentence"}
    assert s["texplain_minus_one_sentence"]["learned"]["precision_at_k"]["gap"] == pytest.approx(0.3)
    table = kind_table(s)
    assert "| scene | 2/2 | 1/2 |" in table and "| tint | 0/2 | — |" in table
    said = verdict({**s, "pending": ["e"]})
    assert "best baseline (one_sentence): True" in said and "minus one sentence, precision_at_k: +30" in said
    assert said.endswith("Not run: e")


def test_a_run_takes_one_world_of_every_cue_kind_before_a_second_of_any():
    from bench.discovery.run import interleave_kinds

    order = interleave_kinds(list(W.SUITE))
    assert sorted(s.name for s in order) == sorted(s.name for s in W.SUITE)
    first = [s.cue.kind for s in order[:len(W.KINDS)]]
    assert sorted(first) == sorted(W.KINDS)  # a run cut short has seen every kind once
    scenes = [s.name for s in order if s.cue.kind == "scene"]
    assert scenes == [s.name for s in W.SUITE if s.cue.kind == "scene"]  # worlds of a kind keep the suite's order


# --- one world end to end, with the real models (slow) ----------------------------------------------------------

@pytest.mark.demo
def test_one_small_world_goes_through_the_linear_tier(tmp_path, monkeypatch):
    from bench.discovery import run as R
    from core import paths
    from core.demo.worlds import general as gw

    if not ((paths.LM_DIR / "config.json").exists() and gw.STAMPS_DIR.exists()
            and (R.GENERAL_TRANSLATOR / "config.json").exists()):
        pytest.skip("needs the offline assets (make setup) and the shipped general translator")
    monkeypatch.setattr(W, "WORLDS", tmp_path / "worlds")
    for name in ("RUNS", "CACHE", "RESULTS", "BANK"):
        monkeypatch.setattr(R, name, tmp_path / name.lower())
    spec = W.SUITE_BY_NAME["colour-red-blue"]
    W.build_world(spec, W.WORLDS / spec.name, W.WorldSettings(train_per_class=30, val_per_group=4, test_per_group=4),
                  verbose=False)
    settings = R.BenchSettings(sentences=2, bank_images=60)
    res = R.world_result(spec, "linear", R.Models(), settings, explain_unlearned=True)
    assert res["run_agrees_with_head"] == 1.0  # the run's classifier is the head scored here
    assert set(res["methods"]) == set(R.METHODS) and set(res["dfr_controls"]) == {"true", "class"}
    for name, m in res["methods"].items():
        assert 0 <= m["precision_at_k"] <= 1 and (np.isnan(m["auroc"]) or 0 <= m["auroc"] <= 1), name
        assert "worst" in m["dfr"] or "error" in m["dfr"]
    assert set(res["methods"]["texplain"]["top_flags"]) == set(spec.classes)
    # kept on disk: read back, not recomputed
    again = R.world_result(spec, "linear", R.Models(), settings, explain_unlearned=True)
    assert again["key"] == res["key"] and again["seconds"] == res["seconds"]
