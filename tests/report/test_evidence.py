"""The evidence behind a flag in reports (core.report.evidence): the causal test's verdict as a flag's `causal` field
(schema-valid, in Markdown and HTML), word maps stored with a run and drawn over what the classifier sees, the
class's Grad-CAM, and the pointing game as the maps' measured reliability."""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from core.engine.word_map import WordMap
from core.evaluation.causal import CausalResult, CausalSettings
from core.report import REPORT_SCHEMA, build_report, to_html, to_markdown, validate_report
from core.report import evidence
from tests.dashboard_fixtures import make_dataset, make_run

POINTING = {"run": "erm", "images": 60, "translator": "t", "rule": "peaks", "tolerance_px": 16,
            "object": {"maps": 60, "hit_rate": 0.45, "ci95": [0.33, 0.58], "random_hit_rate": 0.17,
                       "random_ci95": [0.09, 0.28], "words": {"bird": 20}, "strict_hit_rate": 0.3,
                       "random_strict_hit_rate": 0.09, "flat_maps": 0},
            "scene": {"maps": 60, "hit_rate": 0.78, "ci95": [0.66, 0.87], "random_hit_rate": 0.88,
                      "random_ci95": [0.78, 0.94], "words": {"lake": 26}, "strict_hit_rate": 0.7,
                      "random_strict_hit_rate": 0.83, "flat_maps": 1},
            "seconds": 540.0, "seconds_per_map": 9.0}


def stored_test(class_name: str, word: str, changed: list[bool], control: list[bool], **settings) -> tuple[str, dict]:
    """A causal.json entry, as core.evaluation.causal writes one."""
    s = CausalSettings(**settings)
    rows = [{"image_id": f"i{k}", "prediction": 1, "after": 0 if c else 1, "control_after": 0 if k_ else 1,
             "changed": c, "control_changed": k_, "label": 0, "right_after": c, "control_right_after": k_,
             "share_before": 0.5, "share_after": 0.1 if c else 0.4, "share_control": 0.45, "region_share": 0.2,
             "map": "gradient"} for k, (c, k_) in enumerate(zip(changed, control))]
    result = CausalResult(class_name, word, asdict(s), rows)
    return s.key(class_name, word), {"class": class_name, "word": word, "settings": result.settings, "rows": rows,
                                     "summary": result.summary()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evidence-report")
    data = make_dataset(root / "data", per_group=20)
    return make_run(root / "erm-test", data, "erm (test)")


def test_a_tested_flag_carries_its_verdict_through_json_markdown_and_html(run):
    tests = dict([stored_test("landbird", "water", [True] * 9 + [False] * 3, [False] * 11 + [True],
                              predicted="waterbird"),
                  stored_test("landbird", "water", [False] * 6, [False] * 6),  # all landbirds: not the flag's test
                  stored_test("waterbird", "tree", [False, True] * 4, [True, False] * 4, predicted="landbird")])
    (run.path / "causal.json").write_text(json.dumps(tests))
    (run.path / "word_maps.json").write_text(json.dumps(POINTING))
    report = build_report(run)
    validate_report(report)
    water = next(f for f in report["flags"]["by_class"]["landbird"] if f["word"] == "water")
    c = water["causal"]
    assert c["verdict"] == "causal" and c["images"] == 12 and c["settings"]["predicted"] == "waterbird"
    assert c["prediction_changed"]["rate"] == 0.75 and len(c["prediction_changed"]["ci95"]) == 2
    assert c["control_prediction_changed"]["rate"] == pytest.approx(1 / 12, abs=1e-3)
    untested = [f for fs in report["flags"]["by_class"].values() for f in fs if f["word"] not in ("water", "tree")]
    assert untested and all("causal" not in f for f in untested)  # optional: only where a test is stored
    assert report["word_map_reliability"]["object"]["hit_rate"] == 0.45
    reliability = report["word_map_reliability"]
    assert reliability["scene"]["flat_maps"] == 1 and reliability["tolerance_px"] == 16
    md = to_markdown(report)
    assert ("- **water**: Causal test on 12 landbird images read as waterbird whose sentences use 'water': CAUSAL. "
            "With the word's region (20% of the image) removed (blur), 75% (95% CI") in md
    assert "of the predictions changed; with as much of the image removed elsewhere, 8% (95% CI" in md
    assert "no better than a random point" in md  # scene maps: 78% vs 88% at random, said plainly
    assert "a peak within 16 px of its word's region counting" in md and "30% on the object itself" in md
    assert "| causal test |" in md and "| causal (12 images) |" in md and "| not tested |" in md  # the flag table
    page = to_html(report)
    assert 'class="causal"' in page and "CAUSAL" in page and "<th>causal test</th>" in page
    # A malformed causal field is refused by the schema.
    water["causal"] = {"verdict": "causal"}
    with pytest.raises(ValueError, match="causal"):
        validate_report(report)
    pytest.importorskip("jsonschema").Draft202012Validator.check_schema(REPORT_SCHEMA)


def test_the_test_that_speaks_for_a_flag():
    tests = dict([stored_test("landbird", "lake", [True] * 6, [False] * 6),
                  stored_test("landbird", "lake", [True] * 3, [False] * 3, predicted="waterbird"),
                  stored_test("landbird", "lake", [True] * 8, [False] * 8, predicted="landbird")])
    assert evidence.causal_for(tests, "landbird", "lake", "waterbird")["settings"]["predicted"] == "waterbird"
    assert evidence.causal_for(tests, "landbird", "lake", "gull")["settings"]["predicted"] is None  # all images next
    assert evidence.causal_for(tests, "landbird", "sky") is None
    too_few = evidence.causal_for(tests, "landbird", "lake", "waterbird")
    assert too_few["verdict"] == "too few images"
    assert evidence.causal_text(too_few, "landbird", "lake") == (
        "Causal test on 3 landbird images read as waterbird whose sentences use 'lake': too few images to conclude "
        "(at least 5 are needed).")
    # A scene word's "correlational only" says how little it shows (the demo's truth); an object word's does not.
    weak = evidence.causal_record(stored_test("landbird", "lake", [False] * 30, [False] * 30)[1])
    assert weak["verdict"] == "correlational only"
    assert "For a scene word that says little" in evidence.causal_text(weak, "landbird", "lake")
    assert "scene word" not in evidence.causal_text(weak, "landbird", "beak")
    # A swap says what it swapped and what its control was; a scene word's caveat is about removal, not a swap.
    swapped = evidence.causal_record(stored_test("landbird", "lake", [False] * 30, [False] * 30, fill="swap",
                                                 share=0.4)[1])
    text = evidence.causal_text(swapped, "landbird", "lake")
    assert ("With the word's region (40% of the image) taken from an image of the class whose sentences lack the "
            "word, 0% (95% CI") in text
    assert "with the same region taken from an image of the class whose sentences use it, 0%" in text
    assert "For a scene word that says little" not in text
    key, region = stored_test("landbird", "sky", [True] * 6, [False] * 6)
    assert evidence.causal_for({key + "|region=mask": region}, "landbird", "sky") is None  # not the word's map
    # The same images removed another way (mean fill, a larger region: an experiment's variants) do not speak
    # for the flag before the usual removal, whatever order they were stored in.
    variants = dict([stored_test("landbird", "beak", [True] * 6, [True] * 6, fill="mean"),
                     stored_test("landbird", "beak", [True] * 6, [False] * 6, share=0.4),
                     stored_test("landbird", "beak", [True] * 6, [False] * 6, fill="swap", region="scene"),
                     stored_test("landbird", "beak", [False] * 6, [False] * 6)])
    usual = evidence.causal_for(variants, "landbird", "beak")["settings"]
    assert (usual["fill"], usual["share"], usual["region"]) == ("blur", 0.2, "map")
    # A scene word's flag is spoken for by its scene swap, the test that finds a scene bias.
    scene = dict([stored_test("landbird", "lake", [False] * 6, [False] * 6),
                  stored_test("landbird", "lake", [True] * 6, [False] * 6, fill="swap", region="scene"),
                  stored_test("landbird", "lake", [True] * 6, [True] * 6, fill="mean")])
    chosen = evidence.causal_for(scene, "landbird", "lake")
    assert (chosen["settings"]["fill"], chosen["settings"]["region"]) == ("swap", "scene")
    assert "the scene (all but the object) taken from an image of the class whose sentences lack the word" in \
        evidence.causal_text(chosen, "landbird", "lake")


def test_a_stored_map_is_drawn_over_the_crop_the_classifier_sees(run):
    images = run.images()
    image_id = str(images["image_id"].iloc[0])
    heat = np.zeros((32, 32), dtype=np.float32)
    heat[4:8, 24:28] = 1.0  # hot in the upper right
    pre = SimpleNamespace(resize=40, crop=32)  # the centre 80% of the shorter side
    evidence.save_map(run.path, image_id, WordMap("lake", heat, "gradient", -3.5, 4, 2), pre)
    back = evidence.stored_map(run.path, image_id, "Lake ")
    assert back.method == "gradient" and back.sentences == 2 and np.allclose(back.heatmap, heat)
    assert evidence.stored_map(run.path, image_id, "forest") is None
    picture = evidence.stored_picture(run, image_id, "lake", opacity=0.8)
    side = round(48 * 32 / 40)  # the fixtures' images are 48 px
    assert picture.size == (side, side)
    arr = np.asarray(picture, dtype=float)
    photo = np.asarray(Image.open(run.image_path(images["path"].iloc[0])).convert("RGB")
                       .crop(tuple(round(v) for v in evidence.crop_box((48, 48), pre))), dtype=float)
    assert arr[-6:, :6, 2].mean() > arr[-6:, :6, 0].mean() + 60  # cold: blue
    assert arr[6, 30, 0] > arr[6, 30, 2] + 60  # hot: red
    plain = evidence.overlay(Image.fromarray(photo.astype(np.uint8)), heat, None, opacity=0.0, peak=False)
    assert np.array_equal(np.asarray(plain), photo.astype(np.uint8))
    with pytest.raises(ValueError, match="opacity"):
        evidence.overlay(Image.fromarray(photo.astype(np.uint8)), heat, opacity=1.5)


def test_crop_box_and_colours():
    pre = SimpleNamespace(resize=256, crop=224)
    left, top, right, bottom = evidence.crop_box((400, 300), pre)
    assert right - left == bottom - top == pytest.approx(300 * 224 / 256)
    assert (left + right) / 2 == 200 and (top + bottom) / 2 == 150
    c = evidence.colour(np.array([[0.0, 1.0]]))
    assert c.shape == (1, 2, 3) and c[0, 0, 2] > 150 > c[0, 0, 0] and c[0, 1, 0] > 150 > c[0, 1, 2]  # blue, red


def test_class_map_and_word_map_on_a_tiny_run(tmp_path, tiny_lm, tiny_classifier, tiny_waterbirds):
    import torch

    from core.data import open_dataset
    from core.engine.config import ExplainConfig
    from core.engine.pipeline import explain_dataset
    from core.engine.words import WordExtractor
    from core.models.superclass import SuperclassClassifier
    from core.models.translator import Translator, TranslatorConfig

    torch.manual_seed(0)
    tr = Translator(TranslatorConfig(feature_dim=tiny_classifier.feature_dim, hidden_size=tiny_lm.hidden_size,
                                     prefix_length=2, mlp_hidden=16, classifier_identity=tiny_classifier.identity,
                                     classifier_name="tinynet", lm_identity=tiny_lm.identity))
    words = WordExtractor(stop_words=(), lemmatize=False, vocabulary=None)
    run = explain_dataset(open_dataset(tiny_waterbirds), tiny_classifier, tr, tiny_lm, tmp_path / "run",
                          ExplainConfig(sentences_per_image=6, max_new_tokens=6, seed=1), extractor=words,
                          show_progress=False)
    row = run.images().iloc[0]
    image = Image.open(run.image_path(row.path)).convert("RGB")
    modes = [m.training for m in tiny_classifier.modules()]
    assert not tiny_classifier.module.training
    cam = evidence.class_map(image, tiny_classifier)
    assert cam.shape == (32, 32) and cam.min() >= 0 and cam.max() <= 1
    # A Grad-CAM leaves a (cached) classifier's network as it was: in eval mode, its batch norms not learning.
    assert [m.training for m in tiny_classifier.modules()] == modes
    # Read in superclasses, the classifier keeps its base's features: the same spatial map, gradient maps.
    wrapped = SuperclassClassifier(tiny_classifier, {"any": [0, 1]}, other=None)
    assert evidence.class_map(image, wrapped).shape == (32, 32)
    word = run.words().query("image_id == @row.image_id").sort_values("sentences").iloc[-1]["word"]
    wm = evidence.compute_map(run, row.image_id, word, wrapped, tr, tiny_lm, extractor=words)
    assert wm.method == "gradient" and evidence.stored_map(run.path, row.image_id, word) is not None
    # Occlusion, asked for, is kept beside the gradient map, not over it; each is read back as what it is.
    assert evidence.stored_map(run.path, row.image_id, word, "occlusion") is None
    occl = evidence.compute_map(run, row.image_id, word, wrapped, tr, tiny_lm, extractor=words, method="occlusion")
    assert occl.method == "occlusion"
    assert evidence.stored_map(run.path, row.image_id, word, "occlusion").method == "occlusion"
    assert evidence.stored_map(run.path, row.image_id, word).method == "gradient"
    # An occlusion map drawn otherwise (an older window or fill) is stale: it is drawn again, not shown.
    stored = evidence.save_map(run.path, row.image_id, replace(occl, occlusion={**occl.occlusion, "fill": "blur"}),
                               method="occlusion")
    assert stored.is_file() and evidence.stored_map(run.path, row.image_id, word, "occlusion") is None
    with pytest.raises(ValueError, match="method must be one of"):
        evidence.compute_map(run, row.image_id, word, wrapped, tr, tiny_lm, extractor=words, method="lime")
    with pytest.raises(ValueError, match="in none of the image's"):
        evidence.compute_map(run, row.image_id, "zeppelin", tiny_classifier, tr, tiny_lm, extractor=words)
    with pytest.raises(ValueError, match="is not in run"):
        evidence.compute_map(run, "no-such-image", word, tiny_classifier, tr, tiny_lm, extractor=words)


def test_reliability_is_said_with_random_peaks_beside_it():
    text = evidence.reliability_text(POINTING)
    assert ("object words' maps peak on the object for 45% of 60 images (95% CI 33%–58%; random peaks: 17%), 30% on "
            "the object itself") in text
    assert "scene words' maps peak in the scene around it for 78%" in text and "), 70% off the object entirely" in text
    assert "no better than a random point" in text
    # A game stored before the tolerance was recorded: no strict clause to add.
    old = {k: v for k, v in POINTING.items() if k != "tolerance_px"}
    assert "(95% CI 33%–58%; random peaks: 17%);" in evidence.reliability_text(old)
    good = {**POINTING, "scene": {**POINTING["scene"], "hit_rate": 0.95}}
    assert "no better" not in evidence.reliability_text(good)
    assert evidence.reliability_text(None) is None and evidence.reliability_summary(None) is None
    # Measured both ways: the maps shown get the figures, the other method one clause.
    both = {**POINTING, "occlusion": {**POINTING, "object": {**POINTING["object"], "hit_rate": 0.78},
                                      "scene": {**POINTING["scene"], "hit_rate": 0.70}}}
    by_grad, by_occl = evidence.reliability_text(both), evidence.reliability_text(both, "occlusion")
    assert "maps by gradient" in by_grad and "peak on the object for 45%" in by_grad
    assert "Mapped by occlusion instead, on the same images: object words 78% on the object" in by_grad
    assert "maps by occlusion" in by_occl and "peak on the object for 78%" in by_occl
    assert "Mapped by gradient instead" in by_occl and "object words 45%" in by_occl
    assert "maps by" not in text  # one method measured: nothing to compare
    # The centre of the image as a second baseline, where the game scored it.
    centred = {**POINTING, "object": {**POINTING["object"], "centre_hit_rate": 0.667, "centre_ci95": [0.58, 0.74],
                                      "off_centre": {"maps": 40, "hit_rate": 0.3, "ci95": [0.18, 0.45]}}}
    said = evidence.reliability_text(centred)
    assert "(95% CI 33%–58%; random peaks: 17%, the image's centre: 67%)" in said
    assert "and for 30% of the 40 whose object lies away from the centre" in said
    assert "no more often than the image's centre" in said and "no more often" not in text
    assert evidence.reliability_summary(centred)["object"]["centre_hit_rate"] == 0.667


def test_maps_to_compute_puts_tested_flags_first_and_stays_small(run):
    report = build_report(run)
    flags = [f for fs in report["flags"]["by_class"].values() for f in fs]
    assert len(flags) >= 2
    for f in flags:
        f.pop("causal", None)  # the run's stored tests (an earlier test's) aside: only this one is tested
    last = max(flags, key=lambda f: f["rank"])
    last["causal"] = {"verdict": "causal", "images": 9, "settings": {}}
    todo = evidence.maps_to_compute(report, per_flag=2, limit=3)
    assert len(todo) == 3 and todo[0][1] == last["word"]
    assert all(evidence.stored_map(run.path, i, w) is None for i, w in todo)


def test_a_report_without_causal_tests_does_not_load_the_causal_module(tmp_path):
    import subprocess
    import sys

    from core.evaluation.causal import RESULT_FILE

    assert evidence.CAUSAL_FILE == RESULT_FILE
    # A fresh interpreter: causal imports torch, seconds a first report need not pay when nothing was tested.
    code = ("import sys; from core.report import build_report; build_report(sys.argv[1]); "
            "print('core.evaluation.causal' in sys.modules)")
    run = make_run(tmp_path / "untested", make_dataset(tmp_path / "data", per_group=5), "untested")
    out = subprocess.run([sys.executable, "-c", code, str(run.path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_the_preferred_map_method_follows_the_runs_pointing_game(tmp_path):
    from core.store.run import user_file

    folder = tmp_path / "run"
    folder.mkdir()
    assert evidence.preferred_method(folder) == "auto"  # nothing measured: the fast map
    target = user_file(folder, evidence.POINTING_FILE)
    target.parent.mkdir(parents=True, exist_ok=True)
    apart = {**POINTING, "occlusion": {**POINTING, "object": {**POINTING["object"], "hit_rate": 0.84,
                                                              "ci95": [0.78, 0.88]}}}
    target.write_text(json.dumps(apart))
    assert evidence.preferred_method(folder) == "occlusion"  # 84% [78-88] against 45% [33-58]
    summary = evidence.reliability_summary(apart, "occlusion")  # what a report of such a run carries
    assert summary["method"] == "occlusion" and summary["object"]["hit_rate"] == 0.84
    assert "maps by occlusion" in summary["text"] and evidence.reliability_summary(apart)["method"] == "gradient"
    close = {**POINTING, "occlusion": {**POINTING, "object": {**POINTING["object"], "hit_rate": 0.6,
                                                              "ci95": [0.47, 0.72]}}}
    target.write_text(json.dumps(close))
    assert evidence.preferred_method(folder) == "auto"  # intervals overlap: no reason to wait for occlusion
