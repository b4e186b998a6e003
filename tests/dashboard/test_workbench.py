"""The audit workbench under AppTest (Images: table, filters, map, slices; Compare image by image; New run's
estimate) and the UI bugs a first-time user met, each reproduced: a transparent upload, a non-image upload,
a too-small run, ImageNet-9's worst group on Home, the demo button's pair, the runs in the URL, a damaged run
called complete, the fix's words and a fix that makes things worse, a 0-point change drawn as a gain."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from tests.dashboard_fixtures import make_run, make_world, texts  # noqa: E402
from tests.dashboard_fixtures import run_page as fixtures_run_page  # noqa: E402

TIMEOUT = 240
HOME = str(Path(__file__).resolve().parents[2] / "dashboard" / "Home.py")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    made = make_world(tmp_path_factory.mktemp("workbench"), with_models=True)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TEXPLAIN_SHIPPED_RUNS", str(made["shipped"]))
        env.setenv("TEXPLAIN_RUNS", str(made["user"]))
        yield made


def run_page(page: str, **state):
    return fixtures_run_page(page, timeout=TIMEOUT, **state)


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def from_home(page: str, **state) -> AppTest:
    """Start the app at Home (so pages can switch to one another), then open `page`."""
    at = AppTest.from_file(HOME, default_timeout=TIMEOUT)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# --- Images ------------------------------------------------------------------------------------------------

def test_images_page_lists_filters_sorts_and_pages_every_image(world):
    at = run_page("pages/1_Images.py")
    table = at.dataframe[0].value
    assert len(table) == 25 and "**160** of 160 images match" in texts(at)  # the first page of 25
    assert table["thumbnail"].str.startswith("data:image/jpeg;base64,").all()
    assert {"class", "group", "predicted", "confidence", "correct", "top_words", "flagged_used"} <= set(table)
    at.multiselect(key="images_class").set_value(["landbird"]).run()
    at.selectbox(key="images_outcome").set_value("misread").run()
    table = at.dataframe[0].value
    assert len(table) and (table["class"] == "landbird").all() and (table["correct"] == "✗ misread").all()
    at.selectbox(key="images_sort").set_value("most confident first").run()
    confidence = at.dataframe[0].value["confidence"].tolist()
    assert confidence == sorted(confidence, reverse=True)
    at.text_input(key="images_word").set_value("water").run()
    table = at.dataframe[0].value
    assert (table["share of 'water'"] > 0).all()
    at.multiselect(key="images_class").set_value([]).run()
    at.selectbox(key="images_outcome").set_value("any").run()
    at.text_input(key="images_word").set_value("").run()
    at.number_input(key="images_page").set_value(7).run()  # 160 / 25: the last page holds 10
    assert len(at.dataframe[0].value) == 10 and "page 7 of 7" in texts(at)
    at.text_input(key="images_word").set_value("zebra").run()
    assert "No image matches these filters." in texts(at)


def test_the_feature_map_is_computed_with_a_progress_bar_and_opens_an_image(world):
    at = from_home("pages/1_Images.py")
    assert "Compute the map" in [b.label for b in at.button]
    [b for b in at.button if b.label == "Compute the map"][0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert (world["erm"] / "feature_map.parquet").exists()
    spec = json.loads([c.proto.spec for c in at.get("plotly_chart")][-1])
    assert spec["layout"]["title"]["text"].startswith("The classifier's features in 2-D (UMAP)")
    assert sum(len(t["x"]) if isinstance(t["x"], list) else 1 for t in spec["data"]) >= 1
    at.selectbox(key="map_colour").set_value("a word's share").run()
    at.text_input(key="map_word").set_value("water").run()
    assert "share of 'water'" in at.get("plotly_chart")[-1].proto.spec
    at.selectbox(key="map_pick").set_value("g1-003").run()
    [b for b in at.button if b.label == "Open g1-003"][0].click().run()
    assert not at.exception
    assert at.text_input(key="explain_image_id").value == "g1-003"
    assert metrics(at)["True class"] == "landbird"


def test_a_slice_from_words_with_its_accuracy_confusion_and_examples(world):
    at = run_page("pages/1_Images.py", slice_words="water, lake")
    m = metrics(at)
    assert int(m["Images in the slice"]) > 0 and m["Accuracy in the slice"].endswith("%")
    assert "95% interval of the slice's accuracy" in texts(at)
    assert "Example images" in texts(at) and len(at.get("image")) >= 1
    [b for b in at.button if b.label == "Save this slice with the run"][0].click().run()
    saved = json.loads((world["erm"] / "slices.json").read_text())
    assert saved["slices"][0]["words"] == ["water", "lake"]
    assert "Saved **water or lake**" in texts(at)
    # Run B is on the same data: the slice is compared across the two classifiers, and listed as saved.
    assert "The same images under run B (demo-robust-test)" in texts(at)
    assert "Saved slices" in texts(at)
    at = run_page("pages/1_Images.py", run_a=str(world["robust"]))
    assert "also those saved with other runs of this dataset" in texts(at)  # reused on another run of the data
    (world["erm"] / "slices.json").unlink()


def test_a_flagged_word_is_one_click_from_its_slice(world):
    at = from_home("pages/4_Spurious_terms.py")
    button = [b for b in at.button if b.key == "slice-error-landbird-water"]
    assert button, [b.key for b in at.button][:20]
    button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_input(key="slice_words").value == "water"
    assert int(metrics(at)["Images in the slice"]) > 0


def test_spurious_terms_speaks_of_this_runs_classes_not_waterbirds(world):
    at = run_page("pages/4_Spurious_terms.py")
    text = texts(at)
    assert "Waterbirds" not in text and "a word flagged under landbird" in text


# --- Compare, image by image -------------------------------------------------------------------------------

def test_compare_shows_flipped_images_both_ways_and_mcnemar(world):
    at = run_page("pages/6_Compare_classifiers.py")
    labels = [t.label for t in at.tabs]
    assert (any(lbl.startswith("Fixed by B (") for lbl in labels)
            and any(lbl.startswith("Broken by B (") for lbl in labels))
    text = texts(at)
    assert "McNemar's test" in text and "only B reads right" in text
    assert "B − A: average" in text and "95% paired bootstrap interval" in text
    per_group = at.dataframe[0].value
    assert {"accuracy_a", "accuracy_b", "change", "low", "high"} <= set(per_group)
    fixed = int(next(lbl for lbl in labels if lbl.startswith("Fixed by B")).split("(")[1].rstrip(")"))
    assert fixed > 0 and len(at.get("image")) >= min(fixed, 24)


def test_an_upload_is_explained_by_a_and_b_side_by_side(world):
    at = run_page("pages/6_Compare_classifiers.py")
    at.file_uploader(key="compare_upload").upload("lake.png", png_bytes(), "image/png").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert [m.label for m in at.metric].count("Prediction") == 2
    assert "**A: demo-erm-test**" in texts(at) and "**B: demo-robust-test**" in texts(at)


# --- uploads -----------------------------------------------------------------------------------------------

def png_bytes(colour=(40, 90, 200), size=64, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_a_transparent_png_upload_is_laid_on_white():
    from dashboard import backend as api

    rgba = np.zeros((64, 64, 4), np.uint8)  # fully transparent, colour channels black (what erasers leave)
    rgba[16:48, 16:48] = [200, 30, 30, 255]  # an opaque red square
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    image = api.decode_image(buf.getvalue(), "cut-out.png")
    assert image.mode == "RGB"
    assert image.getpixel((2, 2)) == (255, 255, 255) and image.getpixel((32, 32)) == (200, 30, 30)
    la = io.BytesIO()
    Image.new("LA", (40, 40), (0, 0)).save(la, format="PNG")
    assert api.decode_image(la.getvalue(), "grey.png").getpixel((0, 0)) == (255, 255, 255)
    palette = io.BytesIO()
    Image.new("P", (40, 40), 0).save(palette, format="PNG", transparency=0)
    assert api.decode_image(palette.getvalue(), "gif-like.png").getpixel((0, 0)) == (255, 255, 255)


def test_a_non_image_upload_says_so_without_a_python_object(world):
    at = run_page("pages/2_Explain_an_image.py")
    at.radio[0].set_value("Upload an image").run()
    at.file_uploader[0].upload("notes.png", b"just some text, not a picture", "image/png").run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("'notes.png' is not an image TExplain can read" in e for e in errors)
    assert not any("object at 0x" in e or "BytesIO" in e for e in errors), errors


# --- Home ----------------------------------------------------------------------------------------------------

def test_home_says_a_too_small_run_has_too_few_misread_images(world, tmp_path):
    small = make_run(world["user"] / "small-run", world["data"], "small", error_rates=(0.02, 0, 0, 0), seed=5)
    try:
        at = run_page("Home.py", run_a=str(small.path), run_b="")
        assert "none: too few misread images to test" in texts(at)
        assert "no word pulls a class toward another" not in texts(at)
    finally:
        shutil.rmtree(small.path)


def _variation_runs(world, root: Path) -> dict[str, Path]:
    """Two synthetic ImageNet-9 variation runs of one classifier: no groups (Home must use class x variation)."""
    import pandas as pd

    from core.store import Run

    out = {}
    for variation, errors, seed in (("original", (0.1, 0.1, 0.1, 0.1), 0), ("mixed_rand", (0.3, 0.6, 0.5, 0.2), 1)):
        src = make_run(root / "src" / variation, world["data"], f"in9 {variation}", errors, seed=seed)
        images = src.images().assign(group=pd.array([None] * 160, dtype="Int64"))
        images["image_id"] = f"{variation}/" + images["image_id"]
        words, sentences = src.words(), src.sentences()
        words["image_id"] = f"{variation}/" + words["image_id"]
        sentences["image_id"] = f"{variation}/" + sentences["image_id"]
        manifest = {k: v for k, v in src.manifest.items() if k not in ("status", "progress")}
        manifest["dataset"] = {**manifest["dataset"], "kind": "backgrounds_challenge", "group_names": {},
                               "root": str(root / "in9" / variation), "train_group_counts": None}
        manifest["models"] = {**manifest["models"], "classifier_identity": "one-imagenet-classifier"}
        run = Run.create(root / f"imagenet9-{variation}", manifest)
        run.write_shard(0, images, words, sentences, total_images=len(images))
        run.finish()
        out[variation] = run.path
    shutil.rmtree(root / "src")
    return out


def test_home_shows_imagenet9s_worst_group(world, tmp_path, monkeypatch):
    runs = _variation_runs(world, tmp_path / "in9runs")
    monkeypatch.setenv("TEXPLAIN_RUNS", str(tmp_path / "in9runs"))
    at = run_page("Home.py", run_a=str(runs["original"]), run_b=str(runs["mixed_rand"]))
    worst = [m for m in at.metric if m.label == "Worst group"]
    assert worst and all(m.value != "–" for m in worst), [m.value for m in worst]
    assert "(class × background variation)" in texts(at)


def test_the_waterbirds_demo_button_opens_erm_and_its_fix(world, tmp_path, monkeypatch):
    shipped = tmp_path / "shipped"
    for name in ("demo-erm-test", "demo-robust-test", "demo-erm-fixed-test"):
        shutil.copytree(world["erm"] if name != "demo-robust-test" else world["robust"], shipped / name)
    monkeypatch.setenv("TEXPLAIN_SHIPPED_RUNS", str(shipped))
    at = run_page("Home.py", run_a=str(shipped / "demo-robust-test"), run_b="")
    [b for b in at.button if b.key == "demo-Waterbirds"][0].click().run()
    assert at.session_state["run_a"] == str(shipped / "demo-erm-test")
    assert at.session_state["run_b"] == str(shipped / "demo-erm-fixed-test")  # the pair Home starts on


def test_the_runs_live_in_the_url(world):
    at = AppTest.from_file(HOME, default_timeout=TIMEOUT)
    at.query_params["a"] = "demo-robust-test"
    at.query_params["b"] = "demo-erm-test"
    at.run()
    assert not at.exception
    assert at.session_state["run_a"] == str(world["robust"]) and at.session_state["run_b"] == str(world["erm"])
    at.sidebar.selectbox[0].set_value(str(world["erm"])).run()
    assert at.query_params["a"] in ("demo-erm-test", ["demo-erm-test"])
    at = AppTest.from_file(HOME, default_timeout=TIMEOUT)
    at.query_params["a"] = "no-such-run"
    at.run()
    assert at.session_state["run_a"] == str(world["erm"])  # the default, and a word on why
    assert "no-such-run" in "\n".join(w.value for w in at.sidebar.warning)


def test_a_damaged_run_is_not_called_complete_on_home(world):
    broken = world["user"] / "damaged-run"
    shutil.copytree(world["robust"], broken)
    try:
        (broken / "words" / "shard-00001.parquet").write_bytes(b"PAR1 garbage")
        at = run_page("Home.py", run_a=str(broken), run_b="")
        captions = "\n".join(c.value for c in at.caption)
        assert "· :red[damaged] ·" in captions and "· complete ·" not in captions
        assert any("damaged" in w.value for w in at.warning)
    finally:
        shutil.rmtree(broken)


def test_a_running_job_is_labelled_in_the_run_pickers():
    from core.store import RunEntry
    from dashboard import common as ui

    entry = RunEntry(path=Path("/runs/big"), folder="big", location="yours", status="running",
                     progress={"done_images": 64, "total_images": 200})
    assert ui.run_label(entry) == "big · running 64/200 (yours)"
    assert ui.run_label(RunEntry(path=Path("/r/x"), folder="x", location="yours", status="complete")) == "x (yours)"


# --- Worst-group accuracy: which words the fix used, and a fix that makes things worse ----------------------

def _mitigation(path: Path, before: float, after: float) -> None:
    (path / "mitigation.json").write_text(json.dumps([{
        "method": "dfr", "groups": "inferred", "worst_group_before": before, "worst_group_after": after,
        "average_before": 0.74, "average_after": 0.74,
        "details": {"run_val": "runs/demo-erm-val", "val_images": 40,
                    "spurious_words": {"landbird": ["lake", "blue"], "waterbird": ["grass"]}}}]))


def test_the_fix_says_which_words_from_which_run(world):
    _mitigation(world["robust"], 0.42, 0.71)
    try:
        at = run_page("pages/5_Worst-group_accuracy.py", run_a=str(world["robust"]))
        text = texts(at)
        assert "the words flagged on the validation run **demo-erm-val**" in text and "lake" in text
        assert "the flagged words above" not in text
        m = {x.label: x for x in at.metric}
        assert m["Average after"].proto.delta.startswith("±0.0") and m["Average after"].proto.color == 2  # grey
    finally:
        (world["robust"] / "mitigation.json").unlink()


def test_a_fix_that_lowers_the_worst_group_is_a_warning(world):
    _mitigation(world["robust"], 0.84, 0.50)
    try:
        at = run_page("pages/5_Worst-group_accuracy.py", run_a=str(world["robust"]))
        assert any("makes worst-group accuracy worse: 84% → 50%" in w.value and "Do not ship it" in w.value
                   for w in at.warning)
        assert "Worst group after the fix: worse, do not ship" in metrics(at)
    finally:
        (world["robust"] / "mitigation.json").unlink()


def test_a_zero_point_change_is_not_drawn_as_a_gain():
    from dashboard import common as ui

    assert ui.delta(0.02) == {"delta": "±0.0 pts", "delta_color": "off", "delta_arrow": "off"}
    assert ui.delta(-0.04)["delta_color"] == "off"
    assert ui.delta(3.0) == {"delta": "+3.0 pts"}


# --- New run -------------------------------------------------------------------------------------------------

def test_new_run_shows_a_time_estimate_and_offers_a_sample(world):
    at = run_page("pages/8_New_run.py")
    at.text_input(key="dataset_folder").set_value(str(world["data"])).run()
    info = "\n".join(i.value for i in at.info)
    assert "to explain all 160 images at 32 sentences" in info
    at.number_input(key="sample_size").set_value(40).run()
    info = "\n".join(i.value for i in at.info)
    assert "a sample of 40 of the 160 images" in info

