"""What the exported reports say, as a first-time user read them: every flag (or "5 of 13"), a comparison of a
classifier and its fix per predicted class, unreadable images counted apart, no escaped characters, no other
dataset's story, a warning on a fix that makes things worse, slices and the unfinished variation runs marked."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.report import FLAGS_DEFINITION, build_report, flags_definition, to_html, to_markdown, validate_report
from core.store import Run
from tests.fake_runs import make_waterbirds_run


def copy_run(src: Run, dest, name: str, images=None) -> Run:
    """A new run folder with `src`'s words and sentences and `images` (default: src's)."""
    images = src.images() if images is None else images
    words, sentences = src.words(), src.sentences()
    manifest = {**src.manifest, "name": name}
    manifest["models"] = {**manifest["models"], "classifier_identity": f"resnet50:{name}"}
    for k in ("status", "progress"):
        manifest.pop(k, None)
    run = Run.create(dest, manifest)
    halves = np.array_split(images["image_id"].to_numpy(), 2)
    for shard, ids in enumerate(halves):
        run.write_shard(shard, images[images["image_id"].isin(ids)], words[words["image_id"].isin(ids)],
                        sentences[sentences["image_id"].isin(ids)], total_images=len(images))
    run.finish()
    return run


@pytest.fixture(scope="module")
def erm(tmp_path_factory):
    return make_waterbirds_run(tmp_path_factory.mktemp("export") / "erm", name="erm")


def test_exports_keep_every_flag_the_page_shows(erm):
    report = build_report(erm)
    counts = report["flags"]["counts"]
    for cls, rows in report["flags"]["by_class"].items():
        assert len(rows) == counts[cls]["error"]  # all of them, not the first 5
    md = to_markdown(report)
    assert f"### Error view: flags for landbird ({counts['landbird']['error']})" in md
    short = build_report(erm, flags_k=1)
    assert short["flags"]["kept_per_class"] == 1
    n = counts["landbird"]["error"]
    assert n > 1 and f"flags for landbird (1 of {n} shown)" in to_markdown(short)


def test_a_classifier_and_its_fix_are_compared_per_predicted_class(erm, tmp_path):
    images = erm.images()
    flip = images["image_id"].isin(images["image_id"].iloc[::3])
    images.loc[flip, "prediction"] = 1 - images.loc[flip, "prediction"]
    images["prediction_name"] = images["prediction"].map({0: "landbird", 1: "waterbird"})
    fixed = copy_run(erm, tmp_path / "fixed", "fixed", images)
    report = build_report(erm, compare=fixed)
    cmp = report["comparison"]
    assert cmp["by"] == "prediction" and cmp["same_explanations"]
    changes = [w["change"] for ws in cmp["changed_words"].values() for w in ws]
    assert changes and all(abs(c) >= 0.0005 for c in changes)  # no +0.0 rows in alphabetical order
    words = [w["word"] for w in cmp["changed_words"]["landbird"]]
    assert words != sorted(words)
    md = to_markdown(report)
    assert "### Words that changed most for images predicted landbird" in md and "+0.0 pts" not in md
    validate_report(report)


def test_unreadable_images_are_counted_apart_in_the_header(erm, tmp_path):
    images = erm.images()
    bad = images["image_id"].iloc[:3]
    images.loc[images["image_id"].isin(bad), ["prediction", "prediction_name", "confidence"]] = None
    images.loc[images["image_id"].isin(bad), "error"] = "cannot identify image file"
    run = copy_run(erm, tmp_path / "unreadable", "unreadable", images)
    report = build_report(run)
    assert report["run"]["n_unreadable"] == 3 and report["accuracy"]["n_images"] == len(images) - 3
    md = to_markdown(report)
    assert f"({len(images) - 3} images explained, 3 unreadable (left out of every number))" in md
    assert f"({len(images)} images)" not in md
    assert "3 unreadable" in to_html(report)


def test_provenance_shows_characters_not_escapes(erm, tmp_path):
    images = erm.images()
    run = copy_run(erm, tmp_path / "dot", "dot", images)
    manifest = json.loads((run.path / "manifest.json").read_text())
    manifest["dataset"]["group_names"] = {"0": "landbird · land", "1": "landbird · water", "2": "waterbird · land",
                                          "3": "waterbird · water"}
    (run.path / "manifest.json").write_text(json.dumps(manifest))
    md = to_markdown(build_report(Run.open(run.path)))
    assert "\\u00b7" not in md and "landbird · land" in md


def test_the_flag_explanation_is_about_this_runs_data():
    assert "Waterbirds" not in FLAGS_DEFINITION and "landbird" not in FLAGS_DEFINITION
    text = flags_definition(["ant", "bee"])
    assert "under ant" in text and "Waterbirds" not in text


def test_a_fix_that_lowers_the_worst_group_is_reported_with_a_warning(erm, tmp_path):
    run = copy_run(erm, tmp_path / "worse", "worse")
    (run.path / "mitigation.json").write_text(json.dumps([{
        "method": "dfr", "groups": "inferred", "worst_group_before": 0.84, "worst_group_after": 0.50,
        "average_before": 0.9, "average_after": 0.85, "details": {"run_val": "runs/mine-val", "val_images": 40}}]))
    report = build_report(run)
    warning = [n for n in report["notes"] if "makes worst-group accuracy worse" in n]
    assert warning and "84% → 50%" in warning[0] and "Do not ship it" in warning[0]
    assert "runs/mine-val" in warning[0] and "40 images" in warning[0]
    assert "**Warning.** The fix dfr (inferred groups) makes worst-group accuracy worse" in to_markdown(report)
    good = copy_run(erm, tmp_path / "better", "better")
    (good.path / "mitigation.json").write_text(json.dumps([{
        "method": "dfr", "groups": "inferred", "worst_group_before": 0.4, "worst_group_after": 0.7}]))
    assert not [n for n in build_report(good)["notes"] if "worse" in n]


def test_saved_slices_are_exported(erm, tmp_path):
    from core.analysis.slices import SliceSpec, save_slice

    run = copy_run(erm, tmp_path / "sliced", "sliced")
    save_slice(run, SliceSpec(("water", "lake")))
    report = build_report(run)
    (s,) = report["slices"]
    assert s["name"] == "water or lake" and s["n"] > 0 and 0 <= s["ci_low"] <= s["accuracy"] <= s["ci_high"]
    assert "## Slices" in to_markdown(report) and "water or lake" in to_html(report)
    validate_report(report)


def test_unfinished_variation_runs_are_marked():
    from core.report.view import variations_table

    table = variations_table({"variations": [
        {"variation": "original", "images": 10, "accuracy": 0.9, "ci_low": 0.6, "ci_high": 0.98, "status": "complete"},
        {"variation": "mixed_rand", "images": 3, "accuracy": 0.3, "ci_low": 0.1, "ci_high": 0.7,
         "status": "running"}]})
    assert [r[0] for r in table.rows] == ["original", "mixed_rand (running: unfinished)"]


def test_the_variations_table_carries_each_runs_status(erm, tmp_path):
    from core.analysis.backgrounds import background_challenge
    from core.store import discover_runs

    for variation in ("original", "mixed_rand"):  # two variations of one (synthetic) ImageNet-9 copy
        run = copy_run(erm, tmp_path / "runs" / f"imagenet9-{variation}", variation)
        manifest = json.loads((run.path / "manifest.json").read_text())
        manifest["dataset"].update(kind="backgrounds_challenge", root=str(tmp_path / "in9" / variation))
        manifest["models"]["classifier_identity"] = "one-classifier"
        (run.path / "manifest.json").write_text(json.dumps(manifest))
    entries = discover_runs({"runs": tmp_path / "runs"})
    original = next(e for e in entries if e.folder == "imagenet9-original")
    other = next(e for e in entries if e.folder == "imagenet9-mixed_rand")
    other.status, other.health = "running", "running: 100 of 400 images explained so far; numbers cover those only."
    bc = background_challenge(original, entries)
    assert bc.table.set_index("variation")["status"].to_dict() == {"original": "complete", "mixed_rand": "running"}
    assert any(n.startswith("mixed_rand (imagenet9-mixed_rand) is running: running: 100 of 400") for n in bc.notes)


def test_an_adaptive_runs_sentences_are_said_with_their_mean_and_range():
    from core.report.view import settings_line
    from core.store import describe_sentences

    auto = {"sentences_per_image": "auto", "seed": 0}
    said = describe_sentences(auto, {"images": 200, "total": 3020, "mean": 15.1, "min": 12, "max": 20})
    assert said.startswith("15.1 sentences per image on average (12–20")
    assert settings_line({"settings": auto, "seed": 0, "sentences": said}).startswith("15.1 sentences per image")
    assert describe_sentences({"sentences_per_image": 32}) == "32 sentences per image"
    assert "auto" in describe_sentences(auto)  # a run still going: no record yet
