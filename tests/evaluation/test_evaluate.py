"""Caption quality (core.evaluate): fluency under the plain LM, scene and object accuracy, the command."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from core import cli, paths
from core.evaluation.captions import (contrast_words, evaluate_run, mean_token_nll, read_evaluation,
                                      token_nll)
from core.store import IMAGE_COLUMNS, Run
from tests import tiny
from tests.conftest import CAPTIONS

CLASSES = ["landbird", "waterbird"]
GROUPS = {0: "landbird on land", 1: "landbird on water", 2: "waterbird on land", 3: "waterbird on water"}
BIRDS = {0: ("crow", "sparrow"), 1: ("duck", "goose")}
SCENES = {0: ("forest", "grass"), 1: ("lake", "water")}

# Kept sentences of the 4 test images of each group, and what they should score (hand-checked):
# scene right = more words of the image's true scene than of the other; object right = more words of
# its class's kind of bird. "swan" and "mallard" are in no caption: WordNet files them under the
# ducks' kinds (anseriform bird), so they count for waterbird. Ties (0 vs 0) are wrong.
SENTENCES = {
    0: ["a crow in the forest", "a crow in the forest", "a bird in the green", "a bird in the green"],
    1: ["a swan on the lake"] * 4,
    2: ["a sparrow near the lake and the water"] * 3 + ["a duck near the lake"],
    3: ["a mallard on the water"] * 4,
}
SCENE_RIGHT = {0: 2, 1: 4, 2: 0, 3: 4}    # of 4 per group -> 10 / 16
OBJECT_RIGHT = {0: 2, 1: 0, 2: 1, 3: 4}   # -> 7 / 16


def make_captioned_run(tmp_path, lm_dir) -> Run:
    """A tiny Waterbirds world with a captions.csv, and a run of its test split with hand-written sentences."""
    root = tiny.make_waterbirds(tmp_path / "wb")
    meta = pd.read_csv(root / "metadata.csv")
    rows = []
    for r in meta.itertuples():
        for k in range(2):  # two captions per image, naming the bird and the scene
            bird, scene = BIRDS[r.y][(r.img_id + k) % 2], SCENES[r.place][k]
            rows.append({"img_filename": r.img_filename, "caption": f"A {bird} near the {scene}.", "split": r.split})
    pd.DataFrame(rows).to_csv(root / "captions.csv", index=False)
    test = meta[meta["split"] == 2]
    images, sentences = [], []
    counter = {g: 0 for g in GROUPS}
    for r in test.itertuples():
        g = 2 * r.y + r.place
        text = SENTENCES[g][counter[g]]
        counter[g] += 1
        image_id = str(r.img_id)
        images.append({"image_id": image_id, "path": r.img_filename, "split": "test", "label": r.y,
                       "label_name": CLASSES[r.y], "prediction": r.y, "prediction_name": CLASSES[r.y],
                       "confidence": 0.9, "group": g, "place": r.place, "n_sentences": 2, "error": None})
        sentences += [{"image_id": image_id, "idx": i, "text": text} for i in range(2)]
    manifest = {"name": "tiny", "models": {"lm": str(lm_dir), "translator": str(tmp_path / "no-translator")},
                "dataset": {"name": "wb", "kind": "waterbirds", "root": str(root), "class_names": CLASSES,
                            "group_names": {str(k): v for k, v in GROUPS.items()}},
                "settings": {"sentences_per_image": 4, "keep_sentences": 2, "seed": 0}}
    run = Run.create(tmp_path / "run", manifest)
    images = pd.DataFrame(images)[IMAGE_COLUMNS]
    run.write_shard(0, images, pd.DataFrame(columns=["image_id", "word", "count", "sentences"]),
                    pd.DataFrame(sentences), total_images=len(images))
    run.finish()
    return run


@pytest.fixture(scope="module")
def captioned_run(tmp_path_factory):
    from tests.conftest import PROMPTED

    base = tmp_path_factory.mktemp("evaluate")
    lm_dir = tiny.save_tiny_lm(base / "lm", train_on=PROMPTED)
    return make_captioned_run(base, lm_dir)


def test_fluent_text_costs_fewer_nats_than_the_same_words_shuffled(tiny_lm):
    fluent = list(CAPTIONS.values())
    shuffled = [" ".join(reversed(t.split())) for t in fluent]
    nll_fluent, nll_shuffled = mean_token_nll(token_nll(tiny_lm, fluent)), mean_token_nll(token_nll(tiny_lm, shuffled))
    assert nll_fluent < 0.5 * nll_shuffled, (nll_fluent, nll_shuffled)
    # Padding must not change a sentence's score: batched with a longer one, or alone.
    alone = token_nll(tiny_lm, fluent[:1], batch_size=1)
    batched = token_nll(tiny_lm, fluent + ["a bird near water by the lake . a bird in the green forest"], batch_size=8)
    assert alone["n_tokens"][0] == batched["n_tokens"][0] == 7
    assert alone["nll"][0] == pytest.approx(batched["nll"][0], rel=1e-4)


def test_contrast_words_hold_the_other_attribute_fixed():
    # In this biased set "duck" is mostly on water, but among ducks it is as frequent on land as on water.
    words = [{"duck", "lake"}] * 19 + [{"duck", "forest"}] + [{"crow", "forest"}] * 19 + [{"crow", "lake"}]
    place = [1] * 19 + [0] + [0] * 19 + [1]
    label = [1] * 20 + [0] * 20
    assert contrast_words(pd.Series(words), pd.Series(place)) == {0: ["crow", "forest"], 1: ["duck", "lake"]}
    assert contrast_words(pd.Series(words), pd.Series(place), pd.Series(label)) == {0: ["forest"], 1: ["lake"]}
    with pytest.raises(ValueError, match="one entry per text"):
        contrast_words(pd.Series(words), pd.Series(place[:3]))


def test_object_kinds_without_wordnet_read_the_caption_words_alone(monkeypatch):
    """Where WordNet is not installed, object words are the caption words (with a warning), not a crash."""
    import core.data.description as description
    from core.evaluation.captions import ObjectKinds

    words = {"landbird": ["sparrow", "robin", "finch"], "waterbird": ["gull", "swan", "duck"]}
    with_wn = ObjectKinds().fit(words)
    assert with_wn.classify("goose") == "waterbird"  # not a caption word: WordNet's kinds place it
    monkeypatch.setattr(description, "load_wordnet", lambda: None)
    with pytest.warns(UserWarning, match="WordNet is not installed"):
        kinds = ObjectKinds().fit(words)
    assert kinds.root_ is None and kinds.classify("gull") == "waterbird" and kinds.classify("goose") is None


def test_scene_and_object_accuracy_on_a_hand_checked_run(captioned_run):
    ev = evaluate_run(captioned_run, max_sentences=None)
    assert ev.scene_words == {"land": ["forest", "grass"], "water": ["lake", "water"]}
    assert ev.object_words == {"landbird": ["crow", "sparrow"], "waterbird": ["duck", "goose"]}
    assert ev.object_root == "bird.n.01"
    assert ev.n_images == 16 and ev.sentences_per_image == 2
    assert ev.scene_accuracy == pytest.approx(10 / 16)
    assert ev.object_accuracy == pytest.approx(7 / 16)
    by_group = ev.by_group.set_index("group")
    for g, name in GROUPS.items():
        assert by_group.loc[name, "scene_accuracy"] == pytest.approx(SCENE_RIGHT[g] / 4), name
        assert by_group.loc[name, "object_accuracy"] == pytest.approx(OBJECT_RIGHT[g] / 4), name
    assert set(ev.examples) == set(GROUPS.values()) and all(len(v) == 4 for v in ev.examples.values())
    assert ev.val_loss is None  # the run's translator folder does not exist: no loss, no crash
    assert ev.fluency_nll > 0 and ev.reference_nll > 0


def test_evaluate_command_prints_one_json_object_per_run_and_saves_it(captioned_run, capsys):
    assert cli.main(["evaluate", str(captioned_run.path), str(captioned_run.path), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out, list) and len(out) == 2
    for d in out:
        assert {"fluency_nll", "reference_nll", "scene_accuracy", "object_accuracy", "val_loss",
                "examples", "sentences_per_image"} <= set(d)
        assert d["scene_accuracy"] == pytest.approx(10 / 16, abs=1e-4)
    saved, problem = read_evaluation(captioned_run)
    assert problem is None and saved["object_accuracy"] == pytest.approx(7 / 16, abs=1e-4)
    # The bias report picks the saved evaluation up, and renders it.
    from core.report import build_report, to_html, to_markdown

    report = build_report(captioned_run)
    assert report["evaluation"]["scene_accuracy"] == saved["scene_accuracy"]
    assert "Caption quality" in to_markdown(report) and "Caption quality" in to_html(report)
    assert cli.main(["evaluate", str(captioned_run.path), "--format", "md", "--no-save"]) == 0
    assert "scene accuracy" in capsys.readouterr().out


def test_bad_input_is_a_clear_error(captioned_run, tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "no run at" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max_sentences"):
        evaluate_run(captioned_run, max_sentences=0)
    shutil.copytree(captioned_run.path, tmp_path / "bare")
    other = Run.open(tmp_path / "bare")
    other.update_manifest(dataset={**other.manifest["dataset"], "root": str(tmp_path)})
    with pytest.raises(ValueError, match="has no captions.csv"):
        evaluate_run(other)


RUN = paths.SHIPPED_RUNS / "demo-erm-test"


@pytest.mark.demo
@pytest.mark.skipif(not (paths.DEMO_DATA / "captions.csv").exists() or not (paths.LM_DIR / "config.json").exists(),
                    reason="the demo world or the LM is missing; run `make setup`")
def test_shipped_run_is_evaluated_with_real_smollm2():
    ev = evaluate_run(RUN, max_sentences=64)  # a small fluency sample keeps this quick on a CPU
    assert ev.n_images == 200 and ev.sentences_per_image == 16
    assert "lake" in ev.scene_words["water"] and "forest" in ev.scene_words["land"]
    assert {"duck", "penguin"} <= set(ev.object_words["waterbird"]) and "crow" in ev.object_words["landbird"]
    assert ev.n_sentences_scored == ev.n_references_scored == 64
    assert 2 < ev.reference_nll < 8 and 2 < ev.fluency_nll < 8
    # The captions are English; about one in seven of the 2,000-step translator's sentences still holds a
    # word no dictionary knows (a made-up bird name, mostly).
    assert ev.reference_made_up_share < 0.05 < ev.made_up_share < 0.25
    # The scene is in the words for nearly every image (issue 12's target: 90%); the bird is for landbirds on
    # land, not for waterbirds on land, whose features ERM reads as a landbird's.
    assert 0.9 <= ev.scene_accuracy <= 1 and ev.val_loss == pytest.approx(1.826, abs=1e-3)
    by_group = ev.by_group.set_index("group")["object_accuracy"]
    assert by_group["landbird · background: land"] > 0.8 > 0.2 > by_group["waterbird · background: land"]
    assert all(len(v) == 8 and all(s.strip() for s in v) for v in ev.examples.values())
