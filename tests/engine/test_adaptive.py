"""Adaptive sentences per image (sentences_per_image="auto", core.engine.adaptive) on the tiny models: the
stopping rule, per-image counts in a run, counter-based first-n sentences, full sampler calls, resumption,
Ray actors and clear errors."""
import argparse

import numpy as np
import pandas as pd
import pytest
import torch

from core.data import open_dataset
from core.engine.adaptive import AdaptiveSampler, count_by_rule, next_round, sentences_needed, settled
from core.engine.config import ExplainConfig
from core.engine.pipeline import explain_dataset
from core.engine.sampling import image_key, pack_rows, sample_sentences
from core.engine.words import WordExtractor
from core.models.translator import Translator, TranslatorConfig

KEYS = {"images": ["image_id"], "words": ["image_id", "word"], "sentences": ["image_id", "idx"]}
AUTO = dict(sentences_per_image="auto", min_sentences=2, max_sentences=8, round_sentences=2, tolerance=0.15,
            max_new_tokens=5, seed=3, device="cpu")


def every_word():
    # No stop words and no WordNet: the tiny LM's few words all count, and nothing loads.
    return WordExtractor(stop_words=(), lemmatize=False, vocabulary=None)


def translator(lm, classifier, seed=0):
    cfg = TranslatorConfig(feature_dim=classifier.feature_dim, hidden_size=lm.hidden_size, prefix_length=2,
                           classifier_identity=classifier.identity, lm_identity=lm.identity)
    torch.manual_seed(seed)
    return Translator(cfg).eval()


def tables(run) -> dict[str, pd.DataFrame]:
    return {t: run.table(t).sort_values(k).reset_index(drop=True) for t, k in KEYS.items()}


# --- the rule ----------------------------------------------------------------------------------------

def test_the_rule_stops_on_precise_shares_or_a_quiet_round_and_not_before():
    # Every frequent word near 0 or 1: its standard error sqrt(p(1-p)/n) is small after 32 sentences.
    clear = {"bird": 1.0, "lake": 31 / 32, "water": 30 / 32, "odd": 1 / 32}
    assert settled(clear, 32, None, 0.1)
    # A word in half the sentences: sqrt(.25/8) = 0.18 after 8 sentences, above 0.1: go on...
    mixed = {"bird": 1.0, "lake": 0.5}
    assert not settled(mixed, 8, None, 0.1)
    # ...unless the last round moved no share by more than the tolerance,
    assert settled(mixed, 16, {"bird": 1.0, "lake": 0.45}, 0.1)
    # not when one moved by more (a word that appeared counts as moving from 0),
    assert not settled(mixed, 16, {"bird": 1.0, "lake": 0.3}, 0.1)
    assert not settled({**mixed, "forest": 0.25}, 16, mixed, 0.1)
    # and a looser tolerance accepts what a tight one does not.
    assert settled(mixed, 16, None, 0.13) and not settled(mixed, 16, None, 0.12)
    # Words in under 10% of the sentences do not hold an image back (a one-off in 32 sentences).
    assert settled({"bird": 1.0, "rare": 0.09}, 32, None, 0.05)
    assert not settled({"bird": 1.0, "rare": 0.11}, 32, None, 0.05)


def test_rounds_start_at_min_add_round_and_stop_at_max():
    cfg = ExplainConfig(sentences_per_image="auto", min_sentences=8, max_sentences=30, round_sentences=8)
    assert [next_round(cfg, n) for n in (0, 8, 16, 24, 30)] == [8, 8, 8, 6, 0]
    assert pack_rows([8, 8, 8, 8], 16) == [range(0, 2), range(2, 4)]
    assert pack_rows([8, 2, 6, 20, 1], 16) == [range(0, 3), range(3, 4), range(4, 5)]  # an image is never split
    assert pack_rows([6] * 5, 512) == [range(0, 5)] and pack_rows([], 8) == []


@pytest.mark.parametrize("options, message", [
    (dict(min_sentences=40, max_sentences=32), r"min_sentences \(40\) must be <= max_sentences \(32\)"),
    (dict(tolerance=0), r"tolerance must be > 0"),
    (dict(tolerance=-0.1), r"tolerance must be > 0"),
    (dict(min_sentences=0), r"min_sentences must be >= 1"),
    (dict(round_sentences=0), r"round_sentences must be >= 1"),
    (dict(sentences_per_image="many"), r"sentences_per_image must be a number >= 1 or 'auto'"),
])
def test_bad_adaptive_options_are_refused_with_what_was_wrong(options, message):
    with pytest.raises(ValueError, match=message):
        ExplainConfig(**{"sentences_per_image": "auto", **options})


def test_the_command_line_names_its_options_in_those_errors():
    from core.cli.commands.explain import config_from, sentences_option

    args = argparse.Namespace(sentences="auto", min_sentences=40, max_sentences=32, round_sentences=8, tolerance=0.1,
                              top_p=0.9, temperature=0.9, max_new_tokens=20, batch_rows=None, shard_size=64,
                              image_batch=None, num_workers=None, keep_sentences=None, seed=0, device="cpu")
    with pytest.raises(ValueError, match=r"--min-sentences \(40\) must be <= --max-sentences \(32\)"):
        config_from(args)
    with pytest.raises(ValueError, match="--tolerance must be > 0"):
        config_from(argparse.Namespace(**{**vars(args), "min_sentences": 8, "tolerance": 0.0}))
    assert config_from(argparse.Namespace(**{**vars(args), "min_sentences": 8})).adaptive
    assert sentences_option("AUTO") == "auto" and sentences_option("16") == 16
    for bad in ("0", "lots"):
        with pytest.raises(argparse.ArgumentTypeError):
            sentences_option(bad)


def test_explain_refuses_bad_adaptive_options_in_one_line_before_loading_a_model(tmp_path, capsys):
    from core import cli

    base = ["explain", "--dataset", str(tmp_path / "none"), "--classifier", "efficientnet-lite0", "--out",
            str(tmp_path / "run"), "--sentences", "auto"]
    for extra, message in ((["--min-sentences", "40"], "--min-sentences (40) must be <= --max-sentences (32)"),
                           (["--tolerance", "0"], "--tolerance must be > 0")):
        assert cli.main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_a_fixed_run_records_the_settings_it_always_did():
    # Resuming a run made before auto existed compares these settings: the auto knobs stay out of fixed runs.
    assert set(ExplainConfig(sentences_per_image=16).sampling_settings()) == {
        "sentences_per_image", "top_p", "temperature", "max_new_tokens", "shard_size", "keep_sentences", "seed",
        "dtype"}
    auto = ExplainConfig(sentences_per_image="auto").sampling_settings()
    assert auto["sentences_per_image"] == "auto" and {"min_sentences", "max_sentences", "tolerance"} <= set(auto)


# --- the sampler -------------------------------------------------------------------------------------

def test_an_images_first_n_sentences_do_not_depend_on_n_or_on_its_rounds(tiny_lm):
    torch.manual_seed(1)
    prefix = torch.randn(3, 2, tiny_lm.hidden_size)
    keys = [image_key(i, 5) for i in ("a", "b", "c")]
    cfg = ExplainConfig(max_new_tokens=6, batch_rows=64)
    full = sample_sentences(tiny_lm, prefix, 12, cfg, keys)
    assert sample_sentences(tiny_lm, prefix, 4, cfg, keys) == [s[:4] for s in full]
    # Rounds: samples 4..6 of a, 4..11 of b and none of c, in another batching, are the same sentences.
    later = sample_sentences(tiny_lm, prefix, [3, 8, 0], ExplainConfig(max_new_tokens=6, batch_rows=5), keys,
                             first=[4, 4, 12])
    assert later == [full[0][4:7], full[1][4:12], []]
    assert len({t for s in full for t in s}) > 3, "the tiny LM should write varied sentences here"


def test_the_adaptive_sampler_keeps_its_calls_full_and_follows_the_rule(tiny_lm):
    torch.manual_seed(2)
    prefixes = torch.randn(24, 2, tiny_lm.hidden_size) * 3
    keys = [image_key(i, 0) for i in range(24)]
    cfg = ExplainConfig(**{**AUTO, "batch_rows": 12})
    count = every_word().count
    sampler = AdaptiveSampler(tiny_lm, cfg, count, batch_rows=12)
    for i in range(24):
        sampler.add(i, prefixes[i], keys[i])
    done, rows = {}, []
    while sampler.pending_rows >= 12:  # what the pipeline does while images keep coming
        before = sampler.rows
        done.update(sampler.step())
        rows.append(sampler.rows - before)
    assert rows and all(r == 12 for r in rows)  # rounds of 2 fill 12 rows exactly: no call ran short
    done.update(sampler.run())
    assert sorted(done) == list(range(24)) and not sampler.waiting
    counts = [len(done[i]) for i in range(24)]
    assert all(2 <= c <= 8 and c % 2 == 0 for c in counts)
    assert len(set(counts)) > 1, f"every image got {counts[0]} sentences: the rule never told images apart"
    with pytest.raises(ValueError, match="first 8 sentences"):
        sentences_needed(["a bird"] * 4, cfg, count)
    # Each image got exactly its fixed-N sentences' first n, and n is what the rule says of them.
    full = sample_sentences(tiny_lm, prefixes, 8, cfg, keys)
    for i in range(24):
        assert done[i] == full[i][:counts[i]]
        assert sentences_needed(full[i], cfg, count) == counts[i]  # what bench_adaptive reads off a fixed run


# --- runs --------------------------------------------------------------------------------------------

def test_an_auto_run_records_per_image_counts_within_bounds_and_the_rules_own(tmp_path, tiny_lm, tiny_classifier,
                                                                             tiny_waterbirds):
    ds = open_dataset(tiny_waterbirds)
    tr = translator(tiny_lm, tiny_classifier)
    cfg = ExplainConfig(**AUTO, shard_size=5, batch_rows=8)
    run = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "auto", cfg, split="test",
                          show_progress=False, extractor=every_word())
    assert run.status == "complete"
    images, sentences = run.images(), run.sentences()
    n = images.set_index("image_id")["n_sentences"]
    assert n.between(2, 8).all() and n.nunique() > 1, n.tolist()
    count = every_word().count
    for image_id, texts in sentences.sort_values("idx").groupby("image_id")["text"]:
        assert len(texts) == n[image_id]
        assert count_by_rule(list(texts), cfg, count) == n[image_id]
    m = run.manifest
    assert m["settings"]["sentences_per_image"] == "auto" and m["settings"]["max_sentences"] == 8
    assert m["sentences"] == {"images": 16, "total": int(n.sum()), "mean": round(float(n.mean()), 2),
                              "min": int(n.min()), "max": int(n.max())}
    assert m["throughput"]["sentences_per_s"] > 0
    # Rows stay in dataset order whatever order images settled in.
    assert images["image_id"].tolist() == [r.image_id for r in ds.split("test").records]

    # A fixed run of max_sentences has every auto image's sentences as its first n.
    fixed = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "fixed",
                            ExplainConfig(sentences_per_image=8, max_new_tokens=5, seed=3, device="cpu",
                                          shard_size=16, batch_rows=64),
                            split="test", show_progress=False, extractor=every_word())
    f = fixed.sentences().merge(sentences, on=["image_id", "idx"], how="right", suffixes=("_fixed", "_auto"))
    assert len(f) == n.sum() and (f["text_fixed"] == f["text_auto"]).all()
    assert (fixed.images()["n_sentences"] == 8).all() and fixed.manifest["sentences"]["mean"] == 8


def test_an_auto_run_resumes_and_rebatches_to_the_same_tables(tmp_path, tiny_lm, tiny_classifier, tiny_waterbirds):
    ds = open_dataset(tiny_waterbirds)
    tr = translator(tiny_lm, tiny_classifier)
    cfg = ExplainConfig(**AUTO, shard_size=5, batch_rows=8)
    full = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "full", cfg, split="test",
                           show_progress=False, extractor=every_word())
    part = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "part", cfg, split="test", max_shards=1,
                           show_progress=False, extractor=every_word())
    assert part.status == "partial" and part.manifest["progress"]["done_images"] == 5
    resumed = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "part", cfg, split="test",
                              show_progress=False, extractor=every_word())
    assert resumed.status == "complete"
    other = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "other",
                            ExplainConfig(**AUTO, shard_size=3, batch_rows=30, image_batch=4), split="test",
                            show_progress=False, extractor=every_word())
    a, b, c = tables(full), tables(resumed), tables(other)
    # Floats to 1e-6: a float32 sum can differ in its last bit with the memory layout of its batch.
    for t in KEYS:
        pd.testing.assert_frame_equal(a[t], b[t], check_exact=False, rtol=1e-6)
        pd.testing.assert_frame_equal(a[t], c[t], check_exact=False, rtol=1e-6)
    assert resumed.manifest["sentences"] == full.manifest["sentences"]
    # Another tolerance is other settings: resuming with it is refused, not mixed into the run.
    with pytest.raises(Exception, match="settings|--force"):
        explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "part", ExplainConfig(**{**AUTO, "tolerance": 0.3},
                        shard_size=5, batch_rows=8), split="test", show_progress=False, extractor=every_word())


def test_explain_in_memory_and_a_ray_actor_sample_an_image_as_a_run_does(tiny_lm, tiny_classifier, tiny_waterbirds,
                                                                          tmp_path):
    from PIL import Image

    from core.engine.explainer import Explainer
    from core.engine.ray import ExplainActor, LoadedModels

    ds = open_dataset(tiny_waterbirds).split("test")
    tr = translator(tiny_lm, tiny_classifier)
    cfg = ExplainConfig(**AUTO, batch_rows=8)
    records = ds.records[:6]
    ids = [r.image_id for r in records]
    out = Explainer(tiny_classifier, tr, tiny_lm, cfg, every_word()).explain(
        [Image.open(r.path).convert("RGB") for r in records], image_ids=ids)
    assert all(2 <= len(e.sentences) <= 8 for e in out)
    x = np.stack([tiny_classifier.preprocess(Image.open(r.path).convert("RGB")).numpy() for r in records])
    actor = ExplainActor(LoadedModels(tiny_classifier, tr, tiny_lm), cfg, every_word())
    got = actor({"index": np.arange(6), "image_id": np.array(ids, dtype=object), "x": x,
                 "error": np.array([""] * 6, dtype=object)})
    assert [list(s) for s in got["sentences"]] == [e.sentences for e in out]


@pytest.mark.ray
def test_an_auto_run_on_ray_writes_the_single_process_tables(tmp_path, tiny_lm_dir, tiny_waterbirds):
    ray = pytest.importorskip("ray")
    from core.engine.ray import RayPlacement
    from tests.engine.test_ray import ROOT, tiny_models

    ds = open_dataset(tiny_waterbirds)
    clf, tr, lm = tiny_models(tiny_lm_dir)
    cfg = ExplainConfig(**AUTO, shard_size=5, batch_rows=8, image_batch=4)
    single = explain_dataset(ds, clf, tr, lm, tmp_path / "single", cfg, split="test", show_progress=False,
                             extractor=every_word())
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}})
    try:
        on_ray = explain_dataset(ds, clf, tr, lm, tmp_path / "ray", cfg, split="test", show_progress=False,
                                 extractor=every_word(), placement=RayPlacement(workers=1, cpus_per_worker=0.5))
    finally:
        ray.shutdown()
    assert on_ray.status == "complete" and single.images()["n_sentences"].nunique() > 1
    a, b = tables(single), tables(on_ray)
    for t in KEYS:
        pd.testing.assert_frame_equal(a[t], b[t], check_exact=False, rtol=1e-6)
    assert on_ray.manifest["sentences"] == single.manifest["sentences"]
