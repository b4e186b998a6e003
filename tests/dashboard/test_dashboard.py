"""Every dashboard page under Streamlit's AppTest, on synthetic runs with real image files and tiny models.

The runs (tests/dashboard_fixtures.py) tell the Waterbirds story: the ERM run misreads landbirds on water
(worst group 42.5%) and its flags are water words for landbird and land words for waterbird; the robust
run does better. Error paths: a broken run folder, a corrupt upload, a folder that is not a dataset, a
translator trained for another classifier, runs on different datasets.
"""
from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from core import jobs  # noqa: E402
from tests.dashboard_fixtures import make_world, texts  # noqa: E402
from tests.dashboard_fixtures import run_page as fixtures_run_page  # noqa: E402

TIMEOUT = 180


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    made = make_world(tmp_path_factory.mktemp("dashboard"), with_models=True)
    with pytest.MonkeyPatch.context() as env:  # restored however the module's tests end
        env.setenv("TEXPLAIN_SHIPPED_RUNS", str(made["shipped"]))
        env.setenv("TEXPLAIN_RUNS", str(made["user"]))
        yield made


def run_page(page: str, **state):
    return fixtures_run_page(page, timeout=TIMEOUT, **state)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def values(v) -> list:
    """A Plotly JSON array, decoded when Plotly packed it as typed binary data."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"]).tolist()
    return list(v)


def png_bytes(colour=(40, 90, 200), size=64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


# --- Home ---------------------------------------------------------------------------------------------------

def test_home_opens_on_the_demo_runs(world):
    at = run_page("Home.py")
    assert at.session_state["run_a"] == str(world["erm"]) and at.session_state["run_b"] == str(world["robust"])
    text = texts(at)
    assert "Run A: demo-erm-test" in text and "Run B: demo-robust-test" in text
    values = [m.value for m in at.metric]
    assert values[:3] == ["74.4%", "42.5%", "160"]  # accuracy, worst group, images of the ERM run
    assert values[3:5] == ["83.1%", "77.5%"]
    assert "landbird on water" in text  # the worst group
    assert "<span class='texplain-chip'>water</span>" in text and "<span class='texplain-chip'>tree</span>" in text
    assert "Live explanations run on **CPU" in text or "Live explanations run on **CUDA" in text
    assert "Language model (SmolLM2-135M-Instruct)" in text  # asset status, found or missing with its fix
    assert len(at.get("page_link")) == 8
    # The broken run folder is listed with its reason, not opened.
    assert "broken-run" in "\n".join(c.value for c in at.sidebar.caption)


def test_home_without_runs_says_how_to_make_one(world, tmp_path, monkeypatch):
    monkeypatch.setenv("TEXPLAIN_SHIPPED_RUNS", str(tmp_path / "none"))
    monkeypatch.setenv("TEXPLAIN_RUNS", str(tmp_path / "empty"))
    at = run_page("Home.py")
    text = texts(at)
    assert "There are no runs yet" in text and "texplain explain" in text and "New run" in text
    at = run_page("pages/3_Class_words.py")
    assert "No run is chosen" in texts(at)


def test_the_choice_of_runs_survives_a_page_change(world):
    at = run_page("Home.py")
    at.sidebar.selectbox[0].set_value(str(world["robust"])).run()
    assert at.session_state["run_a"] == str(world["robust"])
    at.switch_page("pages/5_Worst-group_accuracy.py").run()
    assert not at.exception
    assert "Run **demo-robust-test**" in texts(at)


# --- Explain an image ---------------------------------------------------------------------------------------

def test_explain_shows_a_stored_image_with_its_words(world):
    at = run_page("pages/2_Explain_an_image.py")
    text = texts(at)
    assert "species words for unseen birds are often wrong" in text
    assert set(metrics(at)) >= {"Prediction", "Confidence", "True class"}
    assert len(at.get("image")) == 2  # the image file itself and the word cloud
    assert "<li>A photo of a" in text  # sample sentences, shown as plain text
    # By default the run's first misread image; any image by its id (the Images page links here with ?image=).
    assert metrics(at)["True class"] != metrics(at)["Prediction"]
    at.text_input(key="explain_image_id").set_value("g0-001").run()
    assert metrics(at)["True class"] == "landbird" and at.query_params["image"] in ("g0-001", ["g0-001"])
    at.text_input(key="explain_image_id").set_value("nope").run()
    assert not at.exception and "No image **nope**" in texts(at)


def test_explain_opens_the_image_the_url_names(world):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "dashboard/pages/2_Explain_an_image.py"),
                           default_timeout=TIMEOUT)
    at.query_params["image"] = "g3-002"
    at.run()
    assert not at.exception and at.text_input(key="explain_image_id").value == "g3-002"
    assert metrics(at)["True class"] == "waterbird"


def test_explain_an_upload_live_with_the_runs_models(world):
    at = run_page("pages/2_Explain_an_image.py")
    at.radio[0].set_value("Upload an image").run()
    at.file_uploader[0].upload("lake.png", png_bytes(), "image/png").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    m = metrics(at)
    assert m["Prediction"] in ("landbird", "waterbird") and m["Confidence"].endswith("%")
    assert "Most frequent words" in json.dumps([c.proto.spec for c in at.get("plotly_chart")])
    assert "Models: classifier" in texts(at)


def test_explain_rejects_a_corrupt_upload_and_keeps_working(world):
    at = run_page("pages/2_Explain_an_image.py")
    at.radio[0].set_value("Upload an image").run()
    at.file_uploader[0].upload("bird.png", b"\x89PNG\r\n\x1a\n this is not really a png", "image/png").run()
    assert not at.exception
    assert any("Cannot explain this upload" in e.value and "'bird.png' is not an image" in e.value for e in at.error)
    at.radio[0].set_value("From the run").run()
    assert not at.exception and "Prediction" in metrics(at)


# --- Class words --------------------------------------------------------------------------------------------

def test_class_words_per_class_and_group_and_a_comparison(world):
    at = run_page("pages/3_Class_words.py")
    assert at.radio[0].options == ["class", "group", "prediction", "correct vs. wrong"]
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert "Top words per class" in charts[0] and "landbird" in charts[0] and "waterbird" in charts[0]
    # The default contrast: landbirds on water vs. on land; water words lean to the first set.
    m = metrics(at)
    assert m["Images in group landbird on water"] == "40" and m["Images in group landbird on land"] == "40"
    assert m["Jensen–Shannon divergence"].endswith("bits")
    log_odds = json.loads(charts[1])
    bars = log_odds["data"][0]
    z = dict(zip(values(bars["y"]), values(bars["x"])))
    assert z["water"] > 0 and z["tree"] < 0
    at.radio[0].set_value("group").run()
    assert "Top words per group" in at.get("plotly_chart")[0].proto.spec
    at.selectbox(key="set_a").set_value("landbird, misread").run()
    at.selectbox(key="set_b").set_value("landbird, read correctly").run()
    assert not at.exception
    at.selectbox(key="set_b").set_value("landbird, misread").run()
    assert "Choose two different sets." in texts(at)


def test_comparing_an_empty_set_says_so(world):
    from dataclasses import replace

    from core.analysis.tables import load_tables
    from core.store import Run
    from dashboard import backend as api

    tables = load_tables(Run.open(world["erm"]))
    full = api.compare_sets(tables, "landbird, misread", "landbird, read correctly")
    assert full.n_a > 0 and full.table["word"].iloc[0] == "water" and full.jensen_shannon > 0
    images = tables.images
    right = images[~((images["label"] == 0) & (images["prediction"] == 1))]
    empty = api.compare_sets(replace(tables, images=right), "landbird, misread", "landbird, read correctly")
    assert empty.n_a == 0 and empty.table.empty and "'landbird, misread' has no images" in empty.note

# --- Spurious terms -----------------------------------------------------------------------------------------

def test_spurious_terms_shows_flags_with_evidence(world):
    at = run_page("pages/4_Spurious_terms.py")
    assert [t.label for t in at.tabs][:2] == ["Flags for landbird (3)", "Flags for waterbird (3)"]
    # The association view: water words go with predicting waterbird, land words with landbird.
    assert [t.label for t in at.tabs][2:] == ["Associated with landbird (3)", "Associated with waterbird (3)"]
    assert at.dataframe[3].value["word"].iloc[0] in {"water", "lake", "sea"}
    assert at.dataframe[3].value["confirmed"].iloc[0]
    text = texts(at)
    assert "**water** for **landbird**: 'water' is in" in text and "landbird images predicted as waterbird" in text
    assert "Example misread images" in text
    sentences = at.dataframe[-1].value
    assert len(sentences) and sentences["text"].str.contains("water").all()


def test_marking_words_updates_the_flags(world):
    annotations = world["erm"] / "annotations.json"
    at = run_page("pages/4_Spurious_terms.py")
    # Mark a new word spurious for landbird with the form.
    at.text_input(key="mark_word").set_value("sky")
    at.radio(key="mark_action").set_value("spurious")
    submit = [b for b in at.button if b.label == "Save mark"][0]
    submit.click().run()
    assert not at.exception
    assert "Saved: 'sky' is now spurious for landbird" in texts(at)
    assert json.loads(annotations.read_text())["core_words"]["spurious"] == {"landbird": ["sky"]}
    assert at.tabs[0].label == "Flags for landbird (4)"
    assert "sky" in "\n".join(m.value for m in at.markdown if "Your marks" in m.value)
    # The evidence buttons: 'water' is declared core for landbird, so it is no longer flagged.
    core = [b for b in at.button if b.label.startswith("Not spurious: 'water'")][0]
    core.click().run()
    assert not at.exception
    assert at.tabs[0].label == "Flags for landbird (3)"
    flagged = at.dataframe[0].value["word"].tolist()
    assert "water" not in flagged and "sky" in flagged
    # Undo both marks; the flags are back to the statistics alone.
    for word in ("sky", "water"):
        at.text_input(key="mark_word").set_value(word)
        at.radio(key="mark_action").set_value("no mark")
        [b for b in at.button if b.label == "Save mark"][0].click().run()
    assert at.tabs[0].label == "Flags for landbird (3)"
    assert json.loads(annotations.read_text())["core_words"] == {"schema_version": 1, "core": {}, "spurious": {}}


# --- Worst-group accuracy -------------------------------------------------------------------------------------------

def test_worst_group_page_with_true_and_inferred_groups(world):
    at = run_page("pages/5_Worst-group_accuracy.py")
    m = metrics(at)
    assert m["Worst-group accuracy"] == "42.5%"
    assert m["Average (this split's group sizes)"] == "74.4%"
    assert m["Average (training group shares)"].endswith("%")
    assert float(m["Agreement with true groups"].rstrip("%")) > 80
    text = texts(at)
    assert "Worst group: **landbird on water**." in text
    # No mitigation.json yet: the command that makes one (it reads a validation run, writes into this one).
    assert "texplain mitigate RUN_VAL --test-run" in text and "demo-erm-test --method all" in text
    assert len(at.dataframe) == 1  # inferred vs. true groups


def test_worst_group_page_reads_mitigation_results(world):
    path = world["robust"] / "mitigation.json"
    path.write_text(json.dumps([{"method": "dfr", "groups": "inferred", "worst_group_before": 0.42,
                                 "worst_group_after": 0.71, "average_before": 0.74, "average_after": 0.80,
                                 "per_group_before": {"0": 0.97, "1": 0.42}, "per_group_after": {"0": 0.9, "1": 0.71},
                                 "group_names": {"0": "landbird on land", "1": "landbird on water"}}]))
    try:
        at = run_page("pages/5_Worst-group_accuracy.py", run_a=str(world["robust"]))
        # Results shown; running it again needs a validation run of this classifier, which there is not.
        assert "Explain the val split on the New run page" in texts(at)
        assert not [b for b in at.button if b.label == "Run in the background"]
        assert "Before and after mitigation" in at.get("plotly_chart")[-1].proto.spec
        assert at.dataframe[-2].value["label"].tolist() == ["dfr (inferred groups)"]
        assert any(m.label == "Worst group, fixed from the explanations" and m.value == "71.0%" for m in at.metric)
        per_group = at.dataframe[-1].value
        assert per_group["group"].tolist() == ["landbird on land", "landbird on water"]
        assert per_group["change"].round(1).tolist() == [-7.0, 29.0]
        path.write_text("[{not json")
        at = run_page("pages/5_Worst-group_accuracy.py", run_a=str(world["robust"]))
        assert any("is not valid JSON" in e.value for e in at.error)
    finally:
        path.unlink()


# --- Compare classifiers ------------------------------------------------------------------------------------

def test_compare_two_classifiers_on_the_same_data(world):
    at = run_page("pages/6_Compare_classifiers.py")
    labels = [(m.label, m.value) for m in at.metric]
    assert labels == [("Average accuracy", "74.4%"), ("Worst-group accuracy", "42.5%"),
                      ("Average accuracy", "83.1%"), ("Worst-group accuracy", "77.5%")]
    assert [m.proto.delta for m in at.metric][2:] == ["+8.8 pts", "+35.0 pts"]
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert "A and B on the same 160 images" in specs[0]  # the 2x2 agreement table
    assert "Words that changed most: demo-erm-test vs. demo-robust-test" in specs[1]
    assert len(specs) == 6  # agreement, changes, words per class x 2, flags x 2
    at.radio[0].set_value("group").run()
    assert not at.exception and "landbird on water" in at.get("plotly_chart")[1].proto.spec


def test_compare_refuses_runs_on_different_datasets(world):
    at = run_page("pages/6_Compare_classifiers.py", run_b=str(world["other_run"]))
    assert any("These runs are not on the same data" in e.value and "other-synthetic" in e.value for e in at.error)
    assert not at.get("plotly_chart")
    at = run_page("pages/6_Compare_classifiers.py", run_b=None)
    assert "Choose **Run B** in the sidebar" in texts(at)


# --- Report -------------------------------------------------------------------------------------------------

def test_report_downloads_for_one_run_and_a_comparison(world):
    at = run_page("pages/7_Report.py")
    buttons = at.get("download_button")
    assert [b.proto.label for b in buttons] == ["HTML (interactive charts)", "JSON (machine-readable)",
                                                "Markdown (for a pull request)"]
    preview = texts(at)
    assert "# TExplain bias report: demo erm (test)" in preview
    assert "water" in preview and "landbird on water" in preview
    at.radio[0].set_value(at.radio[0].options[1]).run()
    assert not at.exception
    assert "Comparison with demo robust (test)" in texts(at)
    at = run_page("pages/7_Report.py", run_b=str(world["other_run"]))
    at.radio[0].set_value(at.radio[0].options[1]).run()
    assert any("cannot be compared" in e.value for e in at.error)


# --- New run ------------------------------------------------------------------------------------------------

def _new_run(at: AppTest, dataset: Path, classifier: str, translator: str, lm: str) -> AppTest:
    at.text_input(key="dataset_folder").set_value(str(dataset)).run()
    at.selectbox(key="classifier_choice").set_value("Another folder…").run()
    at.selectbox(key="translator_choice").set_value("Another folder…").run()
    at.text_input(key="classifier_folder").set_value(classifier)
    at.text_input(key="translator_folder").set_value(translator)
    [t for t in at.text_input if t.label == "Language model"][0].set_value(lm)
    return at.run()


def test_new_run_rejects_a_folder_that_is_not_a_dataset(world):
    at = run_page("pages/8_New_run.py")
    at.text_input(key="dataset_folder").set_value(str(world["not_a_dataset"])).run()
    assert not at.exception
    assert any("This folder is not a dataset TExplain can read" in e.value and "metadata.csv" in e.value
               for e in at.error)
    assert [b for b in at.button if b.label == "Start"][0].disabled


def test_new_run_rejects_a_translator_for_another_classifier(world):
    models = world["models"]
    at = _new_run(run_page("pages/8_New_run.py"), world["data"], models["other_classifier"], models["translator"],
                  models["lm"])
    assert "waterbirds-synthetic" in texts(at) or "wb" in texts(at)
    [b for b in at.button if b.label == "Check models"][0].click().run()
    assert not at.exception
    assert any("The translator does not fit this classifier or language model" in e.value for e in at.error)
    at = _new_run(at, world["data"], models["classifier"], models["translator"], models["lm"])
    [b for b in at.button if b.label == "Check models"][0].click().run()
    assert "The translator fits the classifier and the language model." in texts(at)


def test_new_run_finds_a_translator_for_the_classifier_or_says_it_will_build_one(world):
    models = world["models"]
    mine = world["user"] / "translators" / "tiny"
    shutil.copytree(models["translator"], mine)
    (mine / "evaluation.json").write_text('{"scene_accuracy": 0.5}')
    try:
        at = run_page("pages/8_New_run.py")
        assert at.selectbox(key="translator_choice").value == "auto"  # the default: no translator to pick
        at.text_input(key="dataset_folder").set_value(str(world["data"])).run()
        at.selectbox(key="classifier_choice").set_value("Another folder…").run()
        at.text_input(key="classifier_folder").set_value(models["classifier"])
        [t for t in at.text_input if t.label == "Language model"][0].set_value(models["lm"])
        [b for b in at.button if b.label == "Check models"][0].click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert f"The job will use **{mine}**, made for this classifier's features: it names the scene for 50% of " \
               "unseen objects' images." in texts(at)  # which one, and how good it measured
        at.text_input(key="classifier_folder").set_value(models["other_classifier"])
        [b for b in at.button if b.label == "Check models"][0].click().run()
        assert any("No translator is made for this classifier yet" in i.value for i in at.info)
        assert jobs.explain_command("d", "c", None, "o")[4:8] == ["--dataset", "d", "--classifier", "c"]
        assert "--translator" not in jobs.explain_command("d", "c", None, "o")
    finally:
        shutil.rmtree(mine.parent)


def test_new_run_starts_a_background_job_that_finishes(world):
    models = world["models"]
    at = _new_run(run_page("pages/8_New_run.py"), world["data"], models["classifier"], models["translator"],
                  models["lm"])
    at.number_input[0].set_value(4)
    [t for t in at.text_input if t.label == "Run name"][0].set_value("tiny-job")
    [b for b in at.button if b.label == "Start"][0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Started **tiny-job** in the background" in texts(at)
    out = world["user"] / "tiny-job"
    deadline = time.time() + 240
    while jobs.job_status(out).running and time.time() < deadline:
        time.sleep(1)
    status = jobs.job_status(out)
    assert status.state == "complete", status.log_tail
    assert status.done_images == status.total_images == 160
    at = run_page("pages/8_New_run.py")
    assert "**tiny-job** · complete" in texts(at)
    at = run_page("Home.py", run_a=str(out), run_b=None)
    assert "Run A: tiny-job" in texts(at)


# --- broken runs --------------------------------------------------------------------------------------------

def test_a_broken_run_folder_shows_a_clear_error(world, tmp_path):
    broken = world["user"] / "corrupt-shard"
    shutil.copytree(world["robust"], broken)
    try:
        (broken / "words" / "shard-00001.parquet").write_bytes(b"PAR1 garbage")
        for page in ("pages/3_Class_words.py", "pages/4_Spurious_terms.py", "pages/6_Compare_classifiers.py"):
            at = run_page(page, run_a=str(broken))
            # The damaged shard is left out and the page says so (the readable shards are still shown).
            assert any("is damaged: 1 finished shard(s) cannot be read: words/shard-00001.parquet cannot be read"
                       in e.value for e in at.warning), page
    finally:
        shutil.rmtree(broken)


# --- background jobs (core.jobs) ----------------------------------------------------------------------------

def test_jobs_stop_and_resume_a_detached_process(tmp_path):
    import sys

    out = tmp_path / "job"
    command = [sys.executable, "-m", "core", "explain", "--help"]  # the recorded argv identifies the process
    sleeper = [sys.executable, "-c", "import time, sys; print('working', flush=True); time.sleep(60)",
               "-m", "core", "explain"]
    status = jobs.start(out, sleeper)
    assert status.running and status.state == "starting"
    deadline = time.time() + 60
    while "working" not in jobs.log_tail(out) and time.time() < deadline:  # its output reaches the log
        time.sleep(0.2)
    assert "working" in jobs.log_tail(out)
    with pytest.raises(jobs.JobError, match="already running"):
        jobs.start(out, command)
    (out / "manifest.json").write_text(json.dumps({"status": "running", "progress": {"done_images": 64,
                                                                                   "total_images": 160}}))
    status = jobs.job_status(out)
    assert status.state == "running" and status.fraction == pytest.approx(0.4)
    status = jobs.stop(out)
    assert not status.running and status.state == "stopped" and status.resumable
    assert json.loads((out / "manifest.json").read_text())["status"] == "stopped"
    status = jobs.resume(out)
    assert status.running
    jobs.stop(out)
    assert [s.out for s in jobs.list_jobs(tmp_path)] == [out]


def test_jobs_report_a_process_that_died_as_failed_and_resumable(tmp_path):
    import sys

    out = tmp_path / "dies"
    jobs.start(out, [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)", "-m", "core", "explain"])
    deadline = time.time() + 30
    while jobs.job_status(out).running and time.time() < deadline:
        time.sleep(0.2)
    status = jobs.job_status(out)
    assert status.state == "failed" and status.resumable and "boom" in status.log_tail


def test_new_run_page_stops_and_resumes_a_job(world):
    import sys

    out = world["user"] / "sleeper-job"
    jobs.start(out, [sys.executable, "-c", "import time; time.sleep(120)", "-m", "core", "explain"])
    try:
        at = run_page("pages/8_New_run.py")
        assert "**sleeper-job** · starting" in texts(at)
        [b for b in at.button if b.key == "stop-sleeper-job"][0].click().run()
        assert not at.exception
        assert jobs.job_status(out).state == "stopped"
        assert "**sleeper-job** · stopped" in texts(at)
        [b for b in at.button if b.key == "resume-sleeper-job"][0].click().run()
        assert not at.exception
        assert jobs.job_status(out).running
    finally:
        jobs.stop(out)
        shutil.rmtree(out)


def test_a_worst_group_of_a_few_images_comes_with_a_caution():
    import pandas as pd

    from core.analysis.groups import worst_group_accuracy
    from dashboard import backend as api

    big = [{"image_id": f"b{i}", "label": 0, "prediction": int(i % 4 == 0), "group": 0} for i in range(40)]
    small = [{"image_id": f"s{i}", "label": 1, "prediction": 0, "group": 1} for i in range(2)]
    wga = worst_group_accuracy(pd.DataFrame(big + small), group_names={0: "large", 1: "tiny"})
    assert wga.worst_group == 1
    note = api.small_worst_group(wga)
    assert note.startswith("The worst group, tiny, holds only 2 images (0 right; 95% interval 0% to ")
    # a worst group of 40 images needs no caution
    wga = worst_group_accuracy(pd.DataFrame(big), group_names={0: "large"})
    assert api.small_worst_group(wga) is None
