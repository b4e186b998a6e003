"""Analysis at scale: a run's cells (core.analysis.aggregates) give the numbers of per-image arithmetic, are cached
per run fingerprint, and the counts forms of Otsu, agreement and the adjusted Rand index equal the per-image ones."""
import json

import numpy as np
import pandas as pd
import pytest

from core.analysis import SpuriousTermScorer, word_shares
from core.analysis.aggregates import frame_stats, run_stats, totals
from core.analysis.groups import adjusted_rand, group_agreement, otsu_threshold
from core.analysis.tables import RunTables, load_tables
from core.report import build_report
from core.store import Run
from core.store.cache import cache_folder, clear_memory
from tests.analysis.scale_runs import make_generated_run


@pytest.fixture(scope="module", params=["waterbirds", "adaptive", "multiclass"])
def generated(request, tmp_path_factory):
    return make_generated_run(tmp_path_factory.mktemp(request.param) / "run", request.param, n_images=1200, shard=300)


def in_memory(run: Run) -> RunTables:
    return RunTables(run.images(), run.words(), run.manifest, run)


def per_image_shares(run: Run, by: str) -> pd.DataFrame:
    """Mean sentence share per (by, word) the plain way: one row per (image, word)."""
    images = run.images()
    images = images[images["n_sentences"].fillna(0) > 0]
    rows = run.words().merge(images[["image_id", "n_sentences", by]], on="image_id")
    rows["share"] = rows["sentences"].clip(lower=0, upper=rows["n_sentences"]) / rows["n_sentences"]
    n = images.groupby(by).size()
    out = rows.groupby([by, "word"])["share"].sum().reset_index()
    out["share"] = out["share"] / out[by].map(n)
    return out


def test_word_shares_from_cells_equal_per_image_means(generated):
    expected = per_image_shares(generated, "label").set_index(["label", "word"])["share"]
    got = word_shares(generated, by="label")
    names = load_tables(generated).class_names
    got = got.assign(label=got["label"].map(names.index)).set_index(["label", "word"])["share"]
    got = got.sort_index()
    expected = expected.reindex(got.index)
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-12)
    if generated.manifest["settings"]["sentences_per_image"] in (16, 32) and "adaptive" not in str(generated.path):
        assert (got.to_numpy() == expected.to_numpy()).all()  # power-of-two sentences: exact to the last digit


def test_store_and_in_memory_tables_give_the_same_report(generated):
    store = SpuriousTermScorer(split=None).fit(load_tables(generated))
    memory = SpuriousTermScorer(split=None).fit(in_memory(generated))
    pd.testing.assert_frame_equal(store.scores_.reset_index(drop=True), memory.scores_.reset_index(drop=True))
    pd.testing.assert_frame_equal(store.flags_.reset_index(drop=True), memory.flags_.reset_index(drop=True))
    report = build_report(generated)
    assert report["run"]["n_images"] == 1200 and report["accuracy"]["n_images"] <= report["run"]["n_evaluated"]


def test_cells_are_cached_per_fingerprint_and_recomputed_when_the_run_changes(tmp_path):
    run = make_generated_run(tmp_path / "run", "waterbirds", n_images=600, shard=300)
    first = run_stats(run)
    files = sorted(p.name for p in cache_folder(run.path).glob("*.parquet"))
    assert [f.split("-")[0] for f in files] == ["image", "word"]
    clear_memory()
    again = run_stats(run)  # read back from disk
    pd.testing.assert_frame_equal(first.words.reset_index(drop=True), again.words.reset_index(drop=True),
                                  check_categorical=False)
    before = run.fingerprint()
    images = run.images().iloc[:300].assign(prediction=1 - run.images()["label"].iloc[:300])
    words = run.words()[run.words()["image_id"].isin(images["image_id"])]
    run.write_shard(0, images, words, pd.DataFrame({"image_id": images["image_id"], "idx": 0, "text": "a"}))
    run = Run.open(run.path)
    assert run.fingerprint() != before
    changed = run_stats(run)
    assert changed.n_images == 600
    right = changed.images[changed.images["label"] == changed.images["prediction"]]["n_images"].sum()
    assert right < first.images[first.images["label"] == first.images["prediction"]]["n_images"].sum()
    assert len(list(cache_folder(run.path).glob("word-cells-*.parquet"))) == 1  # the stale file is gone


def test_cells_of_in_memory_tables_count_every_image_once(generated):
    stats = frame_stats(generated.images(), generated.words())
    assert stats.n_images == 1200
    t = totals(stats.words, stats.n_images)
    assert int(t["images"].sum()) == len(generated.words())


def test_counted_otsu_agreement_and_rand_equal_the_per_image_ones():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    values = np.round(rng.beta(2, 5, 500), 2)
    u, counts = np.unique(values, return_counts=True)
    assert otsu_threshold(u, counts) == otsu_threshold(values)
    true, inferred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    pairs = pd.DataFrame({"t": true, "i": inferred}).value_counts().reset_index(name="n")
    a, b = group_agreement(true, inferred), group_agreement(pairs["t"], pairs["i"], pairs["n"])
    assert (a.accuracy, a.n, a.mapping) == (b.accuracy, b.n, b.mapping)
    assert b.adjusted_rand == pytest.approx(adjusted_rand_score(true, inferred), rel=1e-12)
    assert adjusted_rand(pd.crosstab(inferred, true).to_numpy().T) == pytest.approx(a.adjusted_rand, rel=1e-12)
    assert json.dumps(b.to_dict())  # plain numbers
