"""What a run says it holds: unreadable images counted apart from explained ones (explain's last line, `runs
show`, `runs ls`, a job's status), and a finished run that lost a shard shown as damaged, not complete."""
from __future__ import annotations

import json
import sys

import pytest

from core import cli, jobs
from core.store import Run
from tests import tiny


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from tests.dashboard_fixtures import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def run_with_an_unreadable_image(tmp_path, tiny_models, capsys, monkeypatch):
    monkeypatch.setenv("TEXPLAIN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TEXPLAIN_SHIPPED_RUNS", str(tmp_path / "shipped"))
    data = tiny.make_waterbirds(tmp_path / "wb", n_per_group=1)
    (data / "img" / "0008.png").write_bytes(b"\x89PNG broken")  # the first test image
    out = tmp_path / "runs" / "r"
    argv = ["explain", "--dataset", str(data), "--split", "test", "--classifier", tiny_models["classifier"],
            "--translator", tiny_models["translator"], "--lm", tiny_models["lm"], "--sentences", "2",
            "--max-new-tokens", "3", "--shard-size", "2", "--device", "cpu", "--out", str(out)]
    assert cli.main(argv) == 0
    return Run.open(out), capsys.readouterr().out


def test_unreadable_images_are_counted_apart_from_the_explained_ones(run_with_an_unreadable_image, capsys):
    run, out = run_with_an_unreadable_image
    assert f"run {run.path}: complete, 3 of 4 images explained, 1 unreadable (skipped;" in out
    health = run.health()
    assert (health.status, health.images_present, health.unreadable_images) == ("complete", 4, 1)
    assert run.manifest["progress"]["unreadable_images"] == 1
    assert cli.main(["runs", "show", str(run.path)]) == 0
    assert "evaluated on test: 3 images explained, and 1 unreadable (skipped" in capsys.readouterr().out
    assert cli.main(["runs", "show", str(run.path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["images"], summary["unreadable_images"]) == (3, 1)
    assert cli.main(["runs", "ls"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert "unreadable" in listing[0] and listing[1].split()[:5] == ["r", "yours", "complete", "4/4", "1"]


def test_a_run_from_before_the_counts_is_counted_from_its_table(run_with_an_unreadable_image):
    from core.cli.commands.explain import images_line

    run, _ = run_with_an_unreadable_image
    manifest = run.manifest
    del manifest["progress"]["shard_unreadable"]
    (run.path / "manifest.json").write_text(json.dumps(manifest))
    health = run.health()
    assert health.unreadable_images is None
    assert images_line(run, health).startswith("3 of 4 images explained, 1 unreadable")


def test_a_finished_job_whose_run_lost_a_shard_is_damaged_not_complete(run_with_an_unreadable_image):
    run, _ = run_with_an_unreadable_image
    (run.path / "job.json").write_text(json.dumps({"pid": 2**22 + 1, "command": [sys.executable, "-m", "core",
                                                                                  "explain"], "started": "2024"}))
    status = jobs.job_status(run.path)
    assert status.state == "complete" and status.message == "Finished: 3 images explained, 1 unreadable (skipped)."
    (run.path / "words" / "shard-00001.parquet").unlink()
    status = jobs.job_status(run.path)
    assert status.state == "damaged" and status.resumable
    assert status.message.startswith("Finished, then damaged: damaged: 1 finished shard(s) cannot be read")


def test_shards_whose_columns_are_empty_read_as_one_table(tmp_path):
    """A shard with no unreadable image has no error, one whose images gave no words has an empty words table:
    written by another version such a column is Parquet's NULL type, and the shards still read as one table."""
    from core.engine.run_io import shard_tables

    run = Run.create(tmp_path / "r", {"name": "r", "dataset": {"name": "d", "root": str(tmp_path)}})
    row = {"path": "a.png", "split": "test", "label": 0, "label_name": "a", "prediction": 0, "prediction_name": "a",
           "confidence": 0.9, "group": None, "place": None, "n_sentences": 1}
    run.write_shard(0, *shard_tables([{**row, "image_id": "1"}], [], []), total_images=3)
    run.write_shard(1, *shard_tables([{**row, "image_id": "2", "prediction": None, "prediction_name": None,
                                       "error": "cannot read it"}],
                                     [{"image_id": "2", "word": "bird", "count": 1, "sentences": 1}],
                                     [{"image_id": "2", "idx": 0, "text": "a bird"}]), total_images=3)
    images, words, sentences = shard_tables([{**row, "image_id": "3"}], [], [])
    run.write_shard(2, images, words, sentences, total_images=3)
    for table, df in (("images", images), ("words", words), ("sentences", sentences)):  # as pandas wrote them
        df.to_parquet(run.path / table / "shard-00002.parquet", index=False)
    run.finish()
    assert list(run.images()["error"].fillna("")) == ["", "cannot read it", ""]
    assert list(run.words()["word"]) == ["bird"] and len(run.sentences()) == 1
