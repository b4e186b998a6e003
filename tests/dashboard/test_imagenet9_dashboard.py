"""The ImageNet-9 backgrounds experiment in the dashboard: one classifier's variation runs side by side.

The runs are tiny but real (tests/imagenet9_fixtures.py: a toy classifier read as ImageNet-9, the tiny LM,
every variation explained through core.demo_imagenet9.explain_variations), next to the synthetic Waterbirds
demo runs of tests/dashboard_fixtures.py. Every number the page shows is checked against the runs' images.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")

from core import store  # noqa: E402
from core.analysis import backgrounds  # noqa: E402
from core.analysis.stats import wilson_interval  # noqa: E402
from core.models import registry  # noqa: E402
from core.store import Run  # noqa: E402
from dashboard import backend as api  # noqa: E402
from tests.dashboard_fixtures import ERM_ERRORS, ROBUST_ERRORS, make_dataset, make_run, run_page, texts  # noqa: E402
from tests.imagenet9_fixtures import have_stamps, make_variation_runs  # noqa: E402

ORDER = ["original", "only_bg_t", "only_fg", "mixed_same", "mixed_rand"]  # the release's order (BACKGROUND_VARIATIONS)
needs_stamps = pytest.mark.skipif(not have_stamps(), reason="tuxpaint stamps or scene photos are missing; "
                                                            "run `make setup`")


def waterbirds_runs(shipped: Path, data: Path) -> None:
    make_run(shipped / "demo-erm-test", data, "demo erm (test)", ERM_ERRORS, seed=0)
    make_run(shipped / "demo-robust-test", data, "demo robust (test)", ROBUST_ERRORS, seed=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_lm):
    """Shipped-like runs: imagenet9-<variation> for all five variations and the two Waterbirds demo runs."""
    if not have_stamps():
        pytest.skip("tuxpaint stamps or scene photos are missing; run `make setup`")
    root = tmp_path_factory.mktemp("in9dash")
    shipped = make_variation_runs(root, tiny_lm)
    waterbirds_runs(shipped, make_dataset(root / "wb", per_group=10))
    with pytest.MonkeyPatch.context() as env:  # restored however the module's tests end
        env.setenv("TEXPLAIN_SHIPPED_RUNS", str(shipped))
        env.setenv("TEXPLAIN_RUNS", str(root / "user"))
        yield shipped


def accuracy(path: Path) -> tuple[int, int]:
    """(right, images) straight from a run's images table."""
    images = Run.open(path).images()
    return int((images["label"] == images["prediction"]).sum()), len(images)


# --- the API ---------------------------------------------------------------------------------------------

@needs_stamps
def test_variation_runs_give_accuracy_per_variation_and_the_bg_gap(runs, tmp_path):
    # Your own copy of the original run, made by another classifier: it must not join this classifier's table.
    other = tmp_path / "yours" / "other-classifier-original"
    shutil.copytree(runs / "imagenet9-original", other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["models"]["classifier_identity"] = "someone-else"
    (other / "manifest.json").write_text(json.dumps(manifest))
    entries = store.discover_runs({"shipped": runs, "yours": tmp_path / "yours"})
    by_folder = {e.folder: e for e in entries}
    assert {f: backgrounds.background_variation(e) for f, e in by_folder.items()} == {
        **{f"imagenet9-{v}": v for v in ORDER}, "other-classifier-original": "original",
        "demo-erm-test": None, "demo-robust-test": None}
    assert backgrounds.background_challenge(by_folder["demo-erm-test"], entries) is None

    bc = backgrounds.background_challenge(by_folder["imagenet9-mixed_rand"], entries)
    table = bc.table.set_index("variation")
    assert list(table.index) == ORDER and list(table["run"]) == [f"imagenet9-{v}" for v in ORDER]
    for v in ORDER:
        right, n = accuracy(runs / f"imagenet9-{v}")
        assert table.loc[v, "images"] == n == 18 and table.loc[v, "correct"] == right
        assert table.loc[v, "accuracy"] == pytest.approx(right / n)
        assert (table.loc[v, "ci_low"], table.loc[v, "ci_high"]) == pytest.approx(wilson_interval(right, n), abs=1e-3)
    assert table["accuracy"].nunique() > 1  # the toy classifier's accuracies differ: a real check, not 0 = 0
    same, rand = (accuracy(runs / f"imagenet9-{v}")[0] / 18 for v in ("mixed_same", "mixed_rand"))
    assert bc.bg_gap["gap"] == pytest.approx(same - rand) and bc.bg_gap["n"] == 18
    assert bc.bg_gap["low"] <= bc.bg_gap["gap"] <= bc.bg_gap["high"]
    assert bc.reading() and not bc.notes
    # Any variation run as run A gives the same table (the other classifier's copy stays out either way).
    again = backgrounds.background_challenge(by_folder["imagenet9-original"], entries)
    assert again.table.equals(bc.table) and again.bg_gap == bc.bg_gap
    assert list(backgrounds.background_challenge(by_folder["other-classifier-original"],
                                                 entries).table["variation"]) == ["original"]


@needs_stamps
def test_words_of_mixed_rand_errors_rise_from_the_same_photos_in_original(runs):
    entries = store.discover_runs({"shipped": runs})
    bc = backgrounds.background_challenge(next(e for e in entries if e.folder == "imagenet9-original"), entries)
    words = bc.words
    assert len(words) and (words["rise"] > 0).all() and words["rise"].is_monotonic_decreasing
    assert np.allclose(words["share_mixed_rand_errors"] - words["share_original"], words["rise"])
    # The shares, counted here by hand: mean over images of (sentences with the word / sentences).
    def share(run: Path, word: str, wrong_only: bool, ids: set | None = None) -> float:
        r = Run.open(run)
        images, w = r.images(), r.words()
        if wrong_only:
            images = images[images["label"] != images["prediction"]]
        if ids is not None:
            images = images[images["image_id"].str.split("/", n=1).str[1].isin(ids)]
        per_image = w[w["word"] == word].set_index("image_id")["sentences"]
        return float((images["image_id"].map(per_image).fillna(0) / images["n_sentences"]).mean())

    mixed = Run.open(runs / "imagenet9-mixed_rand").images()
    wrong = mixed[mixed["label"] != mixed["prediction"]]
    photos = set(wrong["image_id"].str.split("/", n=1).str[1])
    top = words.iloc[0]
    assert top["share_mixed_rand_errors"] == pytest.approx(share(runs / "imagenet9-mixed_rand", top["word"], True))
    assert top["share_original"] == pytest.approx(share(runs / "imagenet9-original", top["word"], False, photos))
    assert (words["images"] <= len(wrong)).all()


@needs_stamps
def test_class_by_variation_groups_count_each_class_in_each_variation(runs):
    entries = store.discover_runs({"shipped": runs})
    bc = backgrounds.background_challenge(next(e for e in entries if e.folder == "imagenet9-original"), entries)
    cells = bc.by_class
    assert list(cells.columns) == ["variation", "class", "images", "correct", "accuracy", "ci_low", "ci_high"]
    assert list(dict.fromkeys(cells["variation"])) == ORDER
    for v in ORDER:  # counted here by hand from each run's images
        images = Run.open(runs / f"imagenet9-{v}").images()
        names = Run.open(runs / f"imagenet9-{v}").manifest["dataset"]["class_names"]
        mine = cells[cells["variation"] == v].set_index("class")
        for label, part in images.groupby("label"):
            right = int((part["label"] == part["prediction"]).sum())
            row = mine.loc[names[int(label)]]
            assert (row["images"], row["correct"]) == (len(part), right)
            assert (row["ci_low"], row["ci_high"]) == pytest.approx(wilson_interval(right, len(part)), abs=1e-3)
        assert mine["images"].sum() == len(images)
    # The worst cell shows the object: only_bg_* are left out, whatever their accuracy.
    worst = bc.worst_cell(min_images=1)
    shown = cells[~cells["variation"].str.startswith("only_bg")]
    assert not worst["variation"].startswith("only_bg") and worst["accuracy"] == shown["accuracy"].min()
    assert bc.worst_cell(min_images=10_000) is None


# --- the Worst-group page -------------------------------------------------------------------------------------

@needs_stamps
def test_worst_group_page_shows_accuracy_by_background_variation(runs):
    at = run_page("pages/5_Worst-group_accuracy.py", run_a=str(runs / "imagenet9-original"))
    assert "Accuracy by background variation" in [s.value for s in at.subheader]
    same, rand = (accuracy(runs / f"imagenet9-{v}")[0] / 18 for v in ("mixed_same", "mixed_rand"))
    metric = next(m for m in at.metric if m.label.startswith("BG-gap"))
    assert metric.value == f"{100 * (same - rand):+.1f} pts"
    assert "paired bootstrap interval" in texts(at)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert chart["layout"]["title"]["text"] == "Accuracy per background variation"
    assert list(chart["data"][0]["x"]) == ORDER
    table = at.dataframe[0].value
    assert table["variation"].tolist() == ORDER
    assert table["accuracy"].tolist() == pytest.approx([accuracy(runs / f"imagenet9-{v}")[0] / 18 for v in ORDER])
    assert "Words that separate mixed_rand errors" in texts(at)
    heat = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if json.loads(c.proto.spec)["layout"]["title"]["text"] == "Accuracy per class and background variation")
    assert list(heat["data"][0]["x"]) == ORDER and heat["data"][0]["type"] == "heatmap"
    worst = next(m for m in at.metric if m.label == "Worst class × variation")
    entries = store.discover_runs({"shipped": runs})
    cell = backgrounds.background_challenge(next(e for e in entries if e.folder == "imagenet9-original"),
                                            entries).worst_cell()
    assert worst.value == f"{100 * cell['accuracy']:.1f}%"
    # One set per variation, no splits: mitigation says why it cannot run instead of asking for a val run.
    assert "there is nothing to fit on" in texts(at) and "Explain the val split" not in texts(at)
    assert not at.get("form")


@needs_stamps
def test_association_tables_leave_out_group_columns_without_groups(runs):
    at = run_page("pages/4_Spurious_terms.py", run_a=str(runs / "imagenet9-original"))
    assert not at.exception
    tables = [d.value for d in at.dataframe if "share_class" in d.value.columns]
    assert tables, "no association table to check"
    assert all(not {"group_high", "share_group_high", "confirmed"} & set(t.columns) for t in tables)
    waterbirds = run_page("pages/4_Spurious_terms.py", run_a=str(runs / "demo-erm-test"))
    assert any("group_high" in d.value.columns for d in waterbirds.dataframe if "share_class" in d.value.columns)


@needs_stamps
def test_worst_group_page_is_unchanged_for_a_waterbirds_run(runs):
    at = run_page("pages/5_Worst-group_accuracy.py", run_a=str(runs / "demo-erm-test"))
    assert "Accuracy by background variation" not in [s.value for s in at.subheader]
    assert not [m for m in at.metric if m.label.startswith("BG-gap")]
    assert any(m.label == "Worst-group accuracy" for m in at.metric)


# --- Home's demo buttons ----------------------------------------------------------------------------------------

@needs_stamps
def test_home_demo_buttons_choose_runs_a_and_b(runs):
    at = run_page("Home.py")
    assert at.session_state["run_a"] == str(runs / "demo-erm-test")
    assert "Demos" in [s.value for s in at.subheader]
    at.button(key="demo-ImageNet-9 backgrounds").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["run_a"] == str(runs / "imagenet9-original")
    assert at.session_state["run_b"] == str(runs / "imagenet9-mixed_rand")
    assert at.sidebar.selectbox[0].value == str(runs / "imagenet9-original")
    text = texts(at)
    assert "Run A: imagenet9-original" in text and "Run B: imagenet9-mixed_rand" in text
    at.button(key="demo-Waterbirds").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert (at.session_state["run_a"], at.session_state["run_b"]) == (str(runs / "demo-erm-test"),
                                                                      str(runs / "demo-robust-test"))
    assert "Run B: demo-robust-test" in texts(at)


def test_home_hides_a_demo_whose_runs_are_absent(tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    waterbirds_runs(shipped, make_dataset(tmp_path / "wb", per_group=5))
    monkeypatch.setenv("TEXPLAIN_SHIPPED_RUNS", str(shipped))
    monkeypatch.setenv("TEXPLAIN_RUNS", str(tmp_path / "user"))
    at = run_page("Home.py")
    assert [b.key for b in at.button if b.key and b.key.startswith("demo-")] == ["demo-Waterbirds"]
    shutil.rmtree(shipped / "demo-robust-test")  # a demo with one of its two runs is not offered either
    at = run_page("Home.py")
    assert not [b for b in at.button if b.key and b.key.startswith("demo-")]
    assert "Demos" not in [s.value for s in at.subheader]


def test_the_report_of_a_variation_run_covers_every_variation(runs):
    from core.report import build_report, to_html, to_markdown, validate_report

    report = build_report(runs / "imagenet9-mixed_rand")
    validate_report(report)
    bg = report["backgrounds"]
    got = {v["variation"]: (v["images"], v["accuracy"]) for v in bg["variations"]}
    from core.data import imagenet9 as in9
    from core.data.readers import BACKGROUND_VARIATIONS

    assert list(got) == [v for v in BACKGROUND_VARIATIONS if v in in9.VARIATIONS]  # all five, in the usual order
    for variation, (n, acc) in got.items():
        right, total = accuracy(runs / f"imagenet9-{variation}")
        assert n == total and acc == pytest.approx(right / total)
    assert bg["bg_gap"]["gap"] == pytest.approx(got["mixed_same"][1] - got["mixed_rand"][1])
    md, html = to_markdown(report), to_html(report)
    assert "## Background variations (ImageNet-9)" in md and "BG-gap (mixed_same − mixed_rand)" in md
    assert "Background variations (ImageNet-9)" in html
    cells = {(c["class"], c["variation"]): c for c in bg["by_class"]}
    assert sum(c["images"] for c in bg["by_class"]) == sum(n for n, _ in got.values())  # every image in one cell
    w = bg["worst_cell"]
    assert w is not None and cells[(w["class"], w["variation"])]["accuracy"] == w["accuracy"]
    assert f"Worst class × variation: **{w['class']} in {w['variation']}**" in md
    assert "Accuracy per class and background variation" in html  # the heatmap
    assert build_report(runs / "demo-erm-test")["backgrounds"] is None  # other runs: no such section


@needs_stamps
def test_explain_and_compare_pages_take_variation_runs(runs):
    # Explain: a variation run's images have no group (pd.NA), which once ended the page in a TypeError.
    at = run_page("pages/2_Explain_an_image.py", run_a=str(runs / "imagenet9-mixed_rand"))
    assert not at.exception and "names **backgrounds**" not in texts(at)  # its translator has no evaluation
    # With the translator's evaluation, the page says how far to trust the words, in its numbers.
    translator = runs.parent / "translator"
    (translator / "evaluation.json").write_text(json.dumps({
        "unseen_stamps": 7, "scene_accuracy_photos": 0.91, "scene_accuracy_plain": 0.25,
        "background_called_plain": {"plain_scenes": 0.97, "photo_scenes": 0.04},
        "imagenet9_superclass_words": {"only_fg": {"right_superclass_unseen_per_stamp": 0.6,
                                                   "by_class": {"dog": 0.0, "bird": 0.5}}}}))
    try:
        at = run_page("pages/2_Explain_an_image.py", run_a=str(runs / "imagenet9-mixed_rand"))
        tip = texts(at)
        assert not at.exception and "On 7 stamps it never saw in training" in tip
        assert "photo background for 91%" in tip and "colour for only 25%" in tip and "class 60% of the time" in tip
        assert "It never names dog right there." in tip
        assert "say so for 97% of the plain backgrounds, 4% of the photos" in tip
    finally:
        (translator / "evaluation.json").unlink()
    # Compare: two variations of one copy are the same photos on other backgrounds, so they compare.
    at = run_page("pages/6_Compare_classifiers.py", run_a=str(runs / "imagenet9-original"),
                  run_b=str(runs / "imagenet9-mixed_rand"))
    assert not at.exception and "not on the same data" not in texts(at)
    # ... whose ids differ by the variation folder: said as such, not as "no shared image"
    assert "original and mixed_rand variations of the same ImageNet-9 photos" in texts(at)
    assert "share no image id" not in texts(at)
    at = run_page("pages/6_Compare_classifiers.py", run_a=str(runs / "imagenet9-original"),
                  run_b=str(runs / "demo-erm-test"))
    assert "not on the same data" in texts(at)


def test_classes_a_classifier_predicts_beyond_the_datasets_follow_them():
    import pandas as pd

    from core.analysis.tables import RunTables

    images = pd.DataFrame({"image_id": ["a", "b"], "label": [0, 1], "prediction": [2, 1],
                           "label_name": ["dog", "bird"], "prediction_name": ["none of the nine", "bird"]})
    tables = RunTables(images, pd.DataFrame(columns=["image_id", "word", "count", "sentences"]),
                       {"dataset": {"class_names": ["dog", "bird"]}})
    assert tables.class_names == ["dog", "bird", "none of the nine"]


def test_variations_of_one_copy_are_the_same_data_and_other_copies_are_not(tmp_path):
    from dashboard.backend import dataset_mismatch

    def manifest(root):
        return {"dataset": {"kind": "backgrounds_challenge", "name": f"in9/{Path(root).name}", "root": str(root),
                            "split": None, "class_names": ["dog", "bird"]}}

    a, b = tmp_path / "in9" / "original", tmp_path / "in9" / "mixed_rand"
    assert dataset_mismatch(manifest(a), manifest(b)) is None
    assert dataset_mismatch(manifest(a), manifest(tmp_path / "other" / "mixed_rand")) is not None


def test_the_general_translators_tip_says_where_its_colours_go_wrong(tmp_path):
    """The Explain page's tip reads the translator's evaluation.json: the shade slips it makes most and how
    little of a plain colour the classifier's own features keep, only when the evaluation has them."""
    ev = {"unseen_stamps": 35, "scene_accuracy_photos": 0.97, "scene_accuracy_plain": 0.38,
          "background_called_plain": {"plain_scenes": 0.99, "photo_scenes": 0.03},
          "scene_confusions": [{"truth": "plain-white", "said": "plain-light-grey", "images": 6},
                               {"truth": "plain-green", "said": "Dragonfly", "images": 5},
                               {"truth": "plain-black", "said": "plain-dark-grey", "images": 5}],
          "feature_probe": {"plain_colour_accuracy": 0.46}}
    (tmp_path / "config.json").write_text("{}")  # a translator folder has one
    (tmp_path / "evaluation.json").write_text(json.dumps(ev))
    tip = api.general_translator_tip({"translator": str(tmp_path)})
    assert "mostly by a shade (white as light grey and black as dark grey)." in tip  # not the photo slip
    assert "names the colour for only 46%" in tip
    del ev["scene_confusions"], ev["feature_probe"]
    (tmp_path / "evaluation.json").write_text(json.dumps(ev))
    tip = api.general_translator_tip({"translator": str(tmp_path)})
    assert "it is the colour it gets wrong." in tip and "shade" not in tip and "probe" not in tip


@pytest.mark.demo
@pytest.mark.skipif(not (Path(__file__).resolve().parents[2] / "checkpoints/translators/general/config.json").exists(),
                    reason="the shipped general translator is missing")
def test_new_run_explains_the_off_the_shelf_classifier_on_a_chosen_variation(tmp_path):
    """New run offers the ImageNet classifier as it comes and, on a Backgrounds Challenge folder, a variation;
    Check models says how its 1,000 classes count as the dataset's, or why they cannot (Waterbirds' classes)."""
    from PIL import Image

    from tests.dashboard_fixtures import run_page, texts

    challenge = tmp_path / "bg"
    for variation in ("original", "mixed_rand"):
        for folder in ("00_dog", "01_bird"):
            (challenge / variation / "val" / folder).mkdir(parents=True)
            Image.new("RGB", (32, 32), (120, 90, 60)).save(challenge / variation / "val" / folder / "a.png")
    at = run_page("pages/8_New_run.py")
    at.text_input(key="dataset_folder").set_value(str(challenge)).run()
    assert at.selectbox(key="variation").options == ["mixed_rand", "original"]
    assert at.selectbox(key="variation").value == "mixed_rand"
    at.selectbox(key="variation").set_value("original").run()
    assert "**bg/original** (backgrounds_challenge)" in texts(at)
    at.selectbox(key="classifier_choice").set_value("efficientnet-lite0").run()
    general = [str(f) for f in registry.checkpoint_folders("translators") if f.name == "general"][0]
    at.selectbox(key="translator_choice").set_value(general).run()
    [b for b in at.button if b.label == "Check models"][0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "The translator fits the classifier and the language model." in texts(at)
    assert any("1000 classes are read in the dataset's 2 classes by ImageNet-9's class ranges" in i.value
               and "dog (116), bird (52)" in i.value for i in at.info), texts(at)
    assert "efficientnet-lite0 (ImageNet, off the shelf)" in at.selectbox(key="classifier_choice").options
    birds = make_dataset(tmp_path / "wb", per_group=1)  # Waterbirds' classes: none of ImageNet's
    at.text_input(key="dataset_folder").set_value(str(birds)).run()
    [b for b in at.button if b.label == "Check models"][0].click().run()
    assert any("The classifier's classes are not the dataset's" in e.value and "synsets" in e.value
               for e in at.error), texts(at)
