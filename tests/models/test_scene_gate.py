"""The scene gate (core.models.gate): its heads are the logistic probes it was fitted as, it round-trips through
its files, and a gate that does not fit its translator, or cannot be read, is refused with the reason."""
import numpy as np
import pytest
import torch

from core.models.gate import GATE_CONFIG, GATE_WEIGHTS, SceneGate, fit_scene_gate, linear_probe
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
