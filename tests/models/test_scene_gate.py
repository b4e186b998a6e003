"""The scene gate (core.models.gate): its heads are the logistic probes it was fitted as, it round-trips through
its files, and a gate that does not fit its translator, or cannot be read, is refused with the reason."""
import numpy as np
import pytest
import torch

from core.models.gate import (GATE_CONFIG, GATE_WEIGHTS, GROUPED_CS, SceneGate, fit_scene_gate, linear_probe,
                              photo_folds)
from core.models.translator import Translator, TranslatorConfig

WORDS = {"water": {"water", "lake"}, "forest": {"forest", "tree"}, "snow": {"snow"}}


def features(n=240, d=6, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d))
    shown = {"water": z[:, 0] + 0.3 * rng.normal(size=n) > 0.4, "forest": z[:, 1] - z[:, 2] > 0,
             "snow": np.zeros(n, bool)}  # no image shows snow: it cannot be told apart, so it is never gated
    return z, shown


def test_the_gate_reads_features_as_its_probes_do_and_blocks_kinds_under_its_threshold():
    z, shown = features()
    gate = fit_scene_gate(z, shown, WORDS, threshold=0.2, classifier_identity="net")
    assert gate.kinds == ("water", "forest") and "skipped" in gate.fit["kinds"]["snow"]
    p = gate.probabilities(torch.tensor(z, dtype=torch.float32)).numpy()
    for j, kind in enumerate(gate.kinds):
        reference = linear_probe("roc_auc", 0).fit(z, shown[kind]).predict_proba(z)[:, 1]
        np.testing.assert_allclose(p[:, j], reference, atol=1e-4)
    blocked = gate.blocked(torch.tensor(z, dtype=torch.float32))
    assert blocked == [frozenset(k for k, q in zip(gate.kinds, row) if q < 0.2) for row in p]
    # A probe that reads its kind: water is ruled out mostly where the image does not show it.
    ruled_out = np.array(["water" in b for b in blocked])
    assert ruled_out.any() and (ruled_out & shown["water"]).mean() < 0.1 * ruled_out.mean()
    assert gate.names_blocked(["a", "calm", "lake"], frozenset({"water"}))
    assert not gate.names_blocked(["a", "calm", "lake"], frozenset({"forest"}))
    assert not gate.names_blocked(["a", "calm", "lake"], frozenset())


def test_a_gate_round_trips_through_its_files_and_loads_with_its_translator(tmp_path):
    z, shown = features()
    gate = fit_scene_gate(z, shown, WORDS, threshold=0.3, classifier_identity="net")
    cfg = TranslatorConfig(feature_dim=6, hidden_size=8, prefix_length=2, classifier_identity="net")
    Translator(cfg).save_pretrained(tmp_path / "tr")
    assert Translator.from_pretrained(tmp_path / "tr", strict_identity=False).gate is None
    gate.save(tmp_path / "tr")
    loaded = Translator.from_pretrained(tmp_path / "tr", strict_identity=False).gate
    assert loaded.digest() == gate.digest() and loaded.describe()["threshold"] == 0.3
    assert loaded.words["water"] == frozenset({"water", "lake"})
    x = torch.tensor(z, dtype=torch.float32)
    assert torch.equal(loaded.probabilities(x), gate.probabilities(x))


def test_a_gate_that_does_not_fit_its_translator_or_cannot_be_read_is_refused(tmp_path):
    z, shown = features(d=6)
    fit_scene_gate(z, shown, WORDS, threshold=0.2, classifier_identity="net").save(tmp_path / "tr")
    Translator(TranslatorConfig(feature_dim=5, hidden_size=8, prefix_length=2, classifier_identity="net")) \
        .save_pretrained(tmp_path / "tr")
    with pytest.raises(ValueError, match="scene gate reads 6 features; its translator takes 5"):
        Translator.from_pretrained(tmp_path / "tr", strict_identity=False)
    Translator(TranslatorConfig(feature_dim=6, hidden_size=8, prefix_length=2, classifier_identity="other")) \
        .save_pretrained(tmp_path / "tr")
    with pytest.raises(ValueError, match="scene gate was fitted on 'net', its translator on 'other'"):
        Translator.from_pretrained(tmp_path / "tr", strict_identity=False)
    (tmp_path / "tr" / GATE_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="could not be read as safetensors"):
        SceneGate.load(tmp_path / "tr")
    (tmp_path / "tr" / GATE_CONFIG).write_text("{")
    with pytest.raises(ValueError, match="not a readable scene gate"):
        SceneGate.load(tmp_path / "tr")
    with pytest.raises(ValueError, match="reads \\(6,\\) features per image"):
        fit_scene_gate(z, shown, WORDS, 0.2).probabilities(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="threshold is a probability"):
        fit_scene_gate(z, shown, WORDS, 1.5)
    with pytest.raises(ValueError, match="at least one kind"):
        fit_scene_gate(z, {"snow": shown["snow"]}, WORDS, 0.2)


def test_with_photos_given_each_heads_strength_is_chosen_on_photos_it_was_not_fitted_on():
    z, shown = features(n=240)
    photos = np.repeat(np.arange(24), 10)  # 24 photos, 10 images of each
    gate = fit_scene_gate(z, shown, WORDS, threshold=0.2, classifier_identity="net", groups=photos)
    assert "held-out photos (24 photos)" in gate.fit["strength"]
    p = gate.probabilities(torch.tensor(z, dtype=torch.float32)).numpy()
    for j, kind in enumerate(gate.kinds):
        folds = photo_folds(shown[kind], photos)
        for train, held in folds:  # no photo on both sides, and both classes on the held-out side
            assert not set(photos[train]) & set(photos[held]) and 0 < shown[kind][held].sum() < len(held)
        reference = linear_probe("roc_auc", 0, cv=folds, Cs=GROUPED_CS).fit(z, shown[kind])
        np.testing.assert_allclose(p[:, j], reference.predict_proba(z)[:, 1], atol=1e-4)
        assert gate.fit["kinds"][kind]["C"] in GROUPED_CS
        assert gate.fit["kinds"][kind]["photos_with"] == len(set(photos[shown[kind]]))
    with pytest.raises(ValueError, match="239 photo groups for 240 feature rows"):
        fit_scene_gate(z, shown, WORDS, 0.2, groups=photos[:-1])
    # One photo cannot be held out from itself: the images' own folds choose, and the gate says so.
    assert photo_folds(shown["water"], np.zeros(240)) == []
    one = fit_scene_gate(z, shown, WORDS, 0.2, groups=np.zeros(240))
    assert one.fit["kinds"]["water"]["strength"].startswith("AUC over 3 folds: too few photos")
    np.testing.assert_allclose(one.probabilities(torch.tensor(z, dtype=torch.float32)).numpy()[:, 0],
                               linear_probe("roc_auc", 0).fit(z, shown["water"]).predict_proba(z)[:, 1], atol=1e-4)
