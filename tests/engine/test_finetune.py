"""CLI parity with the API: `finetune` (resumable, saved for load_classifier), `report --min-misread/--min-z`,
`train` defaults equal to the shipped recipe, `explain --keep-sentences` and the dataset-naming options."""
from __future__ import annotations

import json

import pytest
import torch

from core import cli
from core.engine import finetune
from core.engine.config import FinetuneConfig
from core.engine.finetune import finetune_classifier
from core.models import load_classifier
from tests import tiny
from tests.fake_runs import make_waterbirds_run


def _describe(root):
    (root / "dataset.json").write_text(json.dumps({"classes": ["dark", "bright"], "group_by": "place",
                                                   "attributes": {"place": {"name": "scene",
                                                                            "values": {"0": "green", "1": "blue"}}}}))
    return root


def test_finetune_verb_saves_a_classifier_load_classifier_reads(tmp_path, capsys):
    root = _describe(tiny.make_waterbirds(tmp_path / "data", n_per_group=2))
    out = tmp_path / "clf"
    assert cli.main(["finetune", "--dataset", str(root), "--out", str(out), "--epochs", "1", "--batch-size", "8",
                     "--sampling", "group_balanced"]) == 0
    assert "2 classes (dark, bright)" in capsys.readouterr().out
    clf = load_classifier(out)
    assert clf.class_names == ["dark", "bright"]
    saved = json.loads((out / "config.json").read_text())
    assert saved["training"]["settings"]["sampling"] == "group_balanced"
    assert len(saved["metrics"]["test"]["per_group"]) == 4  # the four groups of the test split
    # Bad input is one line and exit 2: no train split, or group-balanced sampling without groups.
    assert cli.main(["finetune", "--dataset", str(root), "--out", str(out), "--group-by", "nope"]) == 2
    assert "no column 'nope' to group by" in capsys.readouterr().err


def test_finetune_resumes_where_it_stopped(tmp_path, monkeypatch):
    root = _describe(tiny.make_waterbirds(tmp_path / "data", n_per_group=2))
    from core.data import open_dataset

    ds = open_dataset(root)
    cfg = FinetuneConfig(epochs=2, batch_size=8)
    straight, _ = finetune_classifier(ds, tmp_path / "a", cfg, show_progress=False)
    real_save = finetune._save_state

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # stopped after the first epoch was saved

    monkeypatch.setattr(finetune, "_save_state", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        finetune_classifier(ds, tmp_path / "b", cfg, show_progress=False)
    monkeypatch.setattr(finetune, "_save_state", real_save)
    assert torch.load(tmp_path / "b" / finetune.STATE_FILE, weights_only=True)["epoch"] == 1
    resumed, hist = finetune_classifier(ds, tmp_path / "b", cfg, show_progress=False)
    assert [row["epoch"] for row in hist["history"]] == [1, 2]
    assert resumed.identity == straight.identity  # the same weights as the uninterrupted run
    with pytest.raises(ValueError, match="other settings or data"):
        finetune_classifier(ds, tmp_path / "b", FinetuneConfig(epochs=3, batch_size=8), show_progress=False)


def test_report_thresholds_from_the_command_line(tmp_path, capsys):
    run = make_waterbirds_run(tmp_path / "run", per_group=30)
    assert cli.main(["report", str(run.path), "--format", "json", "--min-misread", "500", "--min-z", "1.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["flags"]["scorer"]["min_misread"] == 500 and report["flags"]["scorer"]["min_z"] == 1.5
    assert report["flags"]["by_class"]["landbird"] == []
    reason = next(n["reason"] for n in report["flags"]["notes"] if n["class"] == "landbird" and n["view"] == "error")
    assert "needs 500" in reason
    assert report["flags"]["association"]["by_class"]["waterbird"]  # the association view does not need errors
    assert cli.main(["report", str(run.path), "--min-misread", "0"]) == 2
    assert "min_misread must be an integer >= 1" in capsys.readouterr().err


def test_train_and_explain_options():
    parser = cli.build_parser()
    train = parser.parse_args(["train", "--classifier", "c", "--out", "o"])
    assert (train.lr, train.warmup_steps) == (8e-4, 16)
    from core.engine.config import TrainConfig

    assert (TrainConfig().lr, TrainConfig().warmup_steps) == (train.lr, train.warmup_steps)
    explain = parser.parse_args(["explain", "--dataset", "d", "--classifier", "c", "--translator", "t", "--out", "o",
                                 "--keep-sentences", "4", "--group-by", "texture"])
    assert (explain.keep_sentences, explain.group_by) == (4, "texture")
    assert parser.parse_args(["explain", "--dataset", "d", "--classifier", "c", "--translator", "t",
                              "--out", "o"]).keep_sentences is None  # all sentences by default
    from core.engine.config import ExplainConfig

    assert ExplainConfig().keep_sentences is None
