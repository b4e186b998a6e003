"""A translator for any classifier (core.demo.auto_translator): found by the classifier's features among the
shipped and the user's translators, else built by the fast path (aligned onto the general translator)."""
import pytest
import torch

from core.demo import auto_translator as auto
from core.models.translator import Translator, TranslatorConfig


def _save_translator(folder, classifier, lm):
    cfg = TranslatorConfig(feature_dim=classifier.feature_dim, hidden_size=lm.hidden_size, prefix_length=2,
                           mlp_hidden=8, classifier_identity=classifier.identity,
                           classifier_feature_identity=classifier.feature_identity, classifier_name=classifier.name,
                           lm_identity=lm.identity)
    return Translator(cfg).save_pretrained(folder)


def test_a_translator_for_the_classifiers_features_is_found_and_none_for_others(tmp_path, monkeypatch, tiny_lm,
                                                                               tiny_classifier):
    monkeypatch.setenv("TEXPLAIN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(auto, "SHIPPED_TRANSLATORS", tmp_path / "shipped")
    assert auto.find_translator(tiny_classifier, tiny_lm) is None
    with pytest.raises(ValueError, match="--fast"):
        auto.translator_for(tiny_classifier, tiny_lm, auto=False)
    mine = _save_translator(tmp_path / "runs" / "translators" / "mine" / "best", tiny_classifier, tiny_lm)
    assert auto.find_translator(tiny_classifier, tiny_lm) == mine
    assert auto.translator_for(tiny_classifier, tiny_lm) == (mine, "found")
    # A classifier with other features (another body) has none; a refit head keeps the features, and finds it.
    other = type(tiny_classifier.module)()
    from core.models.classifier import from_module

    torch.manual_seed(7)
    stranger = from_module(other, ["a", "b"], preprocessing=tiny_classifier.preprocessing, name="stranger")
    assert auto.find_translator(stranger, tiny_lm) is None
    with torch.no_grad():
        tiny_classifier.fc.weight.add_(1.0)
    tiny_classifier.refresh_identity()
    assert auto.find_translator(tiny_classifier, tiny_lm) == mine
    assert auto.fast_translator_folder(stranger).parent == tmp_path / "runs" / "translators"


@pytest.mark.demo
def test_the_fast_path_gives_lite1_a_translator_that_explains(tmp_path, monkeypatch):
    from core.data import load_rgb
    from core.engine.explainer import Explainer
    from core.models import load_classifier, load_language_model

    monkeypatch.setenv("TEXPLAIN_RUNS", str(tmp_path / "runs"))
    if not (auto.GENERAL_TRANSLATOR / "config.json").exists():
        pytest.skip("the shipped general translator is missing")
    from core import paths
    from core.demo.worlds.general import GENERAL_WORLD

    images = auto.alignment_images()
    # Both halves of the fit set: the demo photos and the general world's images (plain backgrounds among them).
    assert any(paths.DEMO_DATA in p.parents for p in images) and any(GENERAL_WORLD in p.parents for p in images)
    images = images[::25]  # ~280 images: enough to fit and check the machinery
    clf, lm = load_classifier("efficientnet-lite1"), load_language_model()
    folder = auto.build_fast_translator(clf, lm, show_progress=False, images=images)
    tr = Translator.from_pretrained(folder, clf, lm)
    assert tr.config.input_dim == 1280 and tr.config.training["r2_held_out"] > 0.3
    assert (folder / "model.safetensors").stat().st_size < 5 * 2**20  # the map alone
    assert auto.find_translator(clf, lm) == folder  # cached: the next explain finds it
    out = Explainer(clf, tr, lm).explain([load_rgb(images[0])])[0]
    assert len(out.sentences) == 32 and out.words


def test_what_is_known_of_a_translators_quality_is_said(tmp_path):
    from core.demo.lite2 import LITE2_TRANSLATOR

    assert auto.translator_quality(LITE2_TRANSLATOR) == "it names the scene for 67% of unseen objects' images"
    (tmp_path / "config.json").write_text('{"training": {"r2_held_out": 0.6626}}')
    assert auto.translator_quality(tmp_path) == "aligned; its map explains 66% of the base features' variance"
    (tmp_path / "config.json").write_text("{not json")
    assert auto.translator_quality(tmp_path) == ""
