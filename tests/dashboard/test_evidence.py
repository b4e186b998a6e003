"""The evidence behind a flag on the dashboard, under Streamlit's AppTest with tiny models: a word's map on Explain an
image next to the class's Grad-CAM, the flagged word's map on the Spurious terms examples, and the causal test run
as a background job (`texplain verify`) whose verdict then shows on the page, in the flags table and in the report.

The run is the dashboard fixtures' Waterbirds story with every sentence kept (a map follows the word through the
image's own sentences, so the stored sentences and the stored words must agree).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("streamlit")

from core import jobs  # noqa: E402
from core.store import Run  # noqa: E402
from tests.dashboard_fixtures import make_dataset, make_run, make_tiny_models, texts  # noqa: E402
from tests.dashboard_fixtures import run_page as fixtures_run_page  # noqa: E402

TIMEOUT = 300
KEPT = 4  # sentences kept (and counted) per image


def consistent_run(path: Path, data: Path, models: dict, scratch: Path) -> Run:
    """make_run's run, rewritten so that each image's KEPT stored sentences are the ones its words are counted from:
    a word used in a share s of the original sentences appears in ceil(KEPT * s) of the kept ones."""
    run_models = {"classifier": "tiny-classifier", "classifier_source": models["classifier"],
                  "translator": models["translator"], "lm": models["lm"]}
    base = make_run(scratch, data, "demo erm (test)", models=run_models)
    images, words = base.images(), base.words()
    manifest = {k: v for k, v in base.manifest.items() if k in ("name", "kind", "models", "dataset", "settings",
                                                                 "device")}
    manifest["settings"] = {**manifest["settings"], "sentences_per_image": KEPT, "max_new_tokens": 8}
    n_orig = int(images["n_sentences"].iloc[0])
    sentences, counted = [], []
    for image_id, ws in words.groupby("image_id"):
        uses = {w: math.ceil(KEPT * s / n_orig) for w, s in zip(ws["word"], ws["sentences"])}
        for k in range(KEPT):
            chosen = [w for w, n in uses.items() if k < n] or ["bird"]
            sentences.append({"image_id": image_id, "idx": k, "text": "a photo of a " + " near the ".join(chosen)
                              + " ."})
        for w, n in uses.items():
            counted.append({"image_id": image_id, "word": w, "count": n, "sentences": n})
    images = images.assign(n_sentences=KEPT)
    sentences, counted = pd.DataFrame(sentences), pd.DataFrame(counted)
    run = Run.create(path, manifest)
    run.write_shard(0, images, counted, sentences, total_images=len(images))
    run.update_manifest(rate_images_per_s=12.5)
    run.finish()
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("evidence")
    data = make_dataset(root / "data" / "wb", per_group=12)
    models = make_tiny_models(root / "models")
    run = consistent_run(root / "shipped" / "demo-erm-test", data, models, root / "scratch" / "base")
    (root / "user").mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TEXPLAIN_SHIPPED_RUNS", str(root / "shipped"))
        env.setenv("TEXPLAIN_RUNS", str(root / "user"))
        yield {"root": root, "run": run, "models": models}


def run_page(page: str, **state):
    return fixtures_run_page(page, timeout=TIMEOUT, **state)


def misread_landbird_using(run: Run, word: str) -> str:
    images, words = run.images(), run.words()
    using = set(words.loc[words["word"] == word, "image_id"])
    misread = images[(images["label"] == 0) & (images["prediction"] == 1) & images["image_id"].isin(using)]
    return str(misread["image_id"].iloc[0])


def test_explain_maps_a_word_on_demand_next_to_the_class_gradcam(world):
    run = world["run"]
    image_id = misread_landbird_using(run, "water")
    at = run_page("pages/2_Explain_an_image.py", explain_image_id=image_id)
    assert "Where in the image a word comes from" in texts(at)
    box = at.selectbox(key=f"map_word_{image_id}")
    # The class's flag first, with what it pulls toward.
    assert box.value == "water" and "flagged: pulls landbird toward waterbird" in box.format_func("water")
    assert len(at.get("image")) == 2  # the image and its word cloud: nothing is computed before it is asked for
    assert "A word map is computed when you ask for it" in texts(at)
    at.button[0].click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    text = texts(at)
    # The tiny ShuffleNet at 32 px has a 1 x 1 last feature map: occlusion, and no Grad-CAM, said plainly.
    assert "Method: **occlusion**" in text and "sentences of this image that use 'water'" in text
    assert "This classifier has no spatial feature map: no Grad-CAM." in text
    assert len(at.get("image")) == 3
    # Kept with the run: the next word of the same session maps at once; coming back shows the stored map.
    from core.report.evidence import stored_map

    assert stored_map(run.path, image_id, "water").method == "occlusion"
    again = run_page("pages/2_Explain_an_image.py", explain_image_id=image_id)
    assert len(again.get("image")) == 3 and "A word map is computed" not in texts(again)
    # Asking for occlusion where the map already is one computes nothing again.
    assert again.radio(key="map_method").value == "auto"
    again.radio(key="map_method").set_value("occlusion").run(timeout=TIMEOUT)
    assert not again.exception and len(again.get("image")) == 3 and "A word map is computed" not in texts(again)
    # A flat map (no patch makes the word likelier) points nowhere: the page says so rather than place a peak.
    import numpy as np

    from core.engine.word_map import WordMap
    from core.report.evidence import save_map

    wm = stored_map(run.path, image_id, "water")
    save_map(run.path, image_id, WordMap("water", np.zeros_like(wm.heatmap), wm.method, 0.0, 1, wm.sentences,
                                         wm.occlusion))
    flat = run_page("pages/2_Explain_an_image.py", explain_image_id=image_id)
    assert not flat.exception and "The map is flat: no part of the image" in texts(flat)
    assert "Its peak (the ring)" not in texts(flat)
    save_map(run.path, image_id, wm)
    # A word of the image's that its kept sentences lack is refused with the words they have, not a traceback.
    at.selectbox(key=f"map_word_{image_id}").set_value("bird").run(timeout=TIMEOUT)
    assert not at.exception


def test_spurious_terms_maps_the_examples_and_runs_the_causal_test_as_a_job(world):
    run = world["run"]
    at = run_page("pages/4_Spurious_terms.py")
    flag = next(s for s in at.selectbox if s.label == "Flag")
    assert flag.value == ("error", "landbird", "water")
    text = texts(at)
    assert "Does the classifier use it?" in text and "causal test" not in str(at.dataframe[0].value.columns)
    # The example images' maps: computed on a click, drawn over the images, kept with the run.
    at.button(key="evidence-maps").click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    assert "Coloured: where in the image the classifier's features make the language model say 'water'" in texts(at)
    assert not any(b.key == "evidence-maps" for b in at.button)
    # The causal test: a background job on 5 of the misread landbirds that use the word, with progress.
    at.number_input(key="verify-images").set_value(5)
    at.button(key="verify-start").click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    folder = run.path  # a run outside checkpoints/ keeps its own results
    status = jobs.job_status(folder, kind="verify")
    assert status.state in ("starting", "running", "complete")
    assert jobs.verify_target(status) == {"class": "landbird", "word": "water", "predicted": "waterbird",
                                          "max_images": 5}
    deadline, seen = time.time() + 240, set()
    while status.running and time.time() < deadline:
        seen.add(status.state)
        time.sleep(1)
        status = jobs.job_status(folder, kind="verify")
    assert status.state == "complete", status.log_tail
    assert status.done_images == status.total_images == 5
    at.run(timeout=TIMEOUT)
    assert not at.exception
    text = texts(at)
    assert ("**causal**" in text or "**correlational only**" in text) and "5 landbird images read as waterbird" in text
    # 'water' names a scene: the button tested it as a scene swap, and the page says so.
    assert "--region" in status.command and status.command[status.command.index("--region") + 1] == "scene"
    assert "'water' names a scene: swap each image's scene" in text
    labels = [m.label for m in at.metric]
    assert "Predictions changed: the scene swapped" in labels and "Control: the scene from an image with the word" \
        in labels
    assert all("95% CI" in m.delta for m in at.metric if m.label.startswith(("Predictions", "Control")))
    # The flags table now says which flags were tested.
    error_table = at.dataframe[0].value
    assert "causal" in error_table.columns
    verdicts = dict(zip(error_table["word"], error_table["causal"]))
    assert verdicts["water"] in ("causal", "correlational only") and set(verdicts.values()) - {verdicts["water"]} \
        <= {"not tested"}
    # The report carries it: a causal field on the flag (schema-valid), the sentence in Markdown, maps in HTML.
    from core.report import build_report, to_html, to_markdown, validate_report

    report = build_report(run.path)
    validate_report(report)
    water = next(f for f in report["flags"]["by_class"]["landbird"] if f["word"] == "water")
    assert water["causal"]["images"] == 5 and water["causal"]["settings"]["predicted"] == "waterbird"
    assert "Causal test on 5 landbird images read as waterbird whose sentences use 'water'" in to_markdown(report)
    page = to_html(report)
    assert "Where &#39;water&#39; comes from in example landbird images" in page and "data:image/jpeg;base64," in page


def test_the_report_page_adds_a_few_word_maps_to_the_html_report(world):
    from core.report.evidence import maps_to_compute

    at = run_page("pages/7_Report.py")
    add = [b for b in at.button if b.label.startswith("Draw ")]
    assert len(add) == 1 and "more word map(s) for the examples" in add[0].label
    assert "so building it loads no model" in texts(at)
    add[0].click().run(timeout=TIMEOUT)
    assert not at.exception, [e.value for e in at.exception]
    # The maps asked for are kept with the run; the next report embeds them without computing anything.
    from core.report import build_report

    report = build_report(world["run"].path)
    assert len(maps_to_compute(report)) < 6


def test_a_test_of_another_flag_waits_for_the_running_one(world):
    import sys

    # A stand-in for a long verify job of another flag (what a job is testing is read from its command).
    folder = world["run"].path
    jobs.start(folder, [sys.executable, "-c", "import time; time.sleep(120)", "--class", "waterbird", "--word", "tree"],
               kind="verify")
    try:
        assert jobs.job_status(folder, kind="verify").running
        at = run_page("pages/4_Spurious_terms.py")
        text = texts(at)
        assert "Causal test of 'tree' under waterbird" in text and "One test runs at a time per run" in text
        assert at.button(key="verify-start").disabled
    finally:
        assert jobs.stop(folder, kind="verify", timeout=5).state == "stopped"
