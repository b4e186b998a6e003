"""Sentences screened by a scene gate (core.models.gate) on the tiny models: an image keeps the first n of its own
sample stream that pass the screen, whatever the rounds that drew them; a gated run never writes a ruled-out
word, records its gate, and the same run without the gate does write it."""
import torch

from core.data import open_dataset
from core.engine.config import ExplainConfig
from core.engine.explainer import Explainer
from core.engine.pipeline import explain_dataset
from core.engine.sampling import MAX_DRAWS, sample_accepted, sample_sentences
from core.models.gate import SceneGate
from tests.engine.test_adaptive import AUTO, every_word, translator

CFG = dict(max_new_tokens=5, seed=3, device="cpu")
WATER = {"water", "lake"}


def names_water(sentence: str) -> bool:
    return bool(WATER & set(sentence.split()))


def water_gate(dim: int, p_water: float) -> SceneGate:
    """A gate that gives every image the same probability of water (and of forest, 0.99)."""
    logit = torch.logit(torch.tensor([p_water, 0.99]))
    return SceneGate(("water", "forest"), {"water": frozenset(WATER), "forest": frozenset({"forest", "tree"})},
                     torch.zeros(dim), torch.ones(dim), torch.zeros(2, dim), logit, threshold=0.5,
                     classifier_identity="tinynet")


def test_an_image_keeps_the_first_n_of_its_stream_that_pass_its_screen(tiny_lm, tiny_classifier):
    torch.manual_seed(1)
    prefix = translator(tiny_lm, tiny_classifier)(torch.randn(3, tiny_classifier.feature_dim))
    cfg, keys = ExplainConfig(**CFG), [11, 12, 13]
    stream = sample_sentences(tiny_lm, prefix, 4 * MAX_DRAWS, cfg, keys)
    assert sum(map(names_water, stream[0][:4])) > 0  # the screen has something to do in the first round
    kept, drawn = sample_accepted(tiny_lm, prefix, 4, cfg, keys, [names_water, None, names_water])
    for i, screen in enumerate((names_water, None, names_water)):
        assert kept[i] == [s for s in stream[i] if screen is None or not screen(s)][:4]
    assert drawn[1] == 4 and drawn[0] > 4
    # A screen nothing passes: the image gives up after MAX_DRAWS times n draws, with what it found (nothing).
    kept, drawn = sample_accepted(tiny_lm, prefix[:1], 3, cfg, keys[:1], [lambda s: True])
    assert kept == [[]] and drawn == [3 * MAX_DRAWS]


def test_a_gated_run_never_writes_a_ruled_out_word_and_records_its_gate(tmp_path, tiny_lm, tiny_classifier,
                                                                        tiny_waterbirds):
    ds, tr = open_dataset(tiny_waterbirds), translator(tiny_lm, tiny_classifier)
    cfg = ExplainConfig(sentences_per_image=6, shard_size=8, batch_rows=24, **CFG)
    words = lambda run: set(run.words()["word"])  # noqa: E731
    plain = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "plain", cfg, split="test",
                            show_progress=False, extractor=every_word())
    assert words(plain) & WATER and plain.manifest["models"]["scene_gate"] is None
    tr.gate = water_gate(tiny_classifier.feature_dim, p_water=0.01)
    gated = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "gated", cfg, split="test",
                            show_progress=False, extractor=every_word())
    assert not words(gated) & WATER and "forest" in words(gated) | {"forest"}
    assert (gated.images()["n_sentences"] <= 6).all() and gated.images()["n_sentences"].gt(0).all()
    assert gated.manifest["models"]["scene_gate"] == tr.gate.describe()
    assert "scene_gate" not in gated.manifest["settings"]
    # Sentences without a water word are the plain run's, in stream order: the gate takes, it never adds.
    kept = plain.sentences().sort_values(["image_id", "idx"])
    first = gated.sentences().sort_values(["image_id", "idx"])
    for image_id, texts in first.groupby("image_id")["text"]:
        plain_ok = [t for t in kept.loc[kept["image_id"] == image_id, "text"] if not names_water(t)]
        assert list(texts)[:len(plain_ok)] == plain_ok[:len(texts)]
    # A gate whose kinds the features back changes nothing; scene_gate=False switches a gate off.
    tr.gate = water_gate(tiny_classifier.feature_dim, p_water=0.9)
    backed = explain_dataset(ds, tiny_classifier, tr, tiny_lm, tmp_path / "backed", cfg, split="test",
                             show_progress=False, extractor=every_word())
    assert backed.sentences()["text"].tolist() == plain.sentences()["text"].tolist()
    tr.gate = water_gate(tiny_classifier.feature_dim, p_water=0.01)
    off = Explainer(tiny_classifier, tr, tiny_lm, ExplainConfig(scene_gate=False, **CFG), extractor=every_word())
    assert off.gate is None


def test_an_auto_run_screens_its_rounds_too(tiny_lm, tiny_classifier, tiny_waterbirds):
    ds, tr = open_dataset(tiny_waterbirds), translator(tiny_lm, tiny_classifier)
    tr.gate = water_gate(tiny_classifier.feature_dim, p_water=0.01)
    explainer = Explainer(tiny_classifier, tr, tiny_lm, ExplainConfig(**AUTO), extractor=every_word())
    images = [ds.load_image(r) for r in ds.split("test").records[:6]]
    out = explainer.explain(images, list(range(6)))
    assert all(2 <= len(e.sentences) <= 8 for e in out)
    assert not any(names_water(s) for e in out for s in e.sentences)
    assert all(e.ruled_out == ("water",) for e in out)  # what the page says was left out, and why
