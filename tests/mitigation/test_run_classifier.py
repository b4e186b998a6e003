"""`texplain mitigate` finds the classifier a run recorded, also a weights or TorchScript file; and a fix that
makes the worst group worse carries a warning that says why it may (mitigation.json's `warning`)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from core import cli
from core.data import open_dataset
from core.engine.config import ExplainConfig
from core.engine.pipeline import explain_dataset
from core.errors import ClassifierLoadError
from core.mitigation.methods import evaluate_mitigation, read_mitigation_json, write_mitigation_json
from core.mitigation.pipeline import MitigationOutcome, why_worse
from core.models.registry import load_classifier_spec, resolve_run_classifier
from core.models.translator import Translator, TranslatorConfig
from tests import tiny


def _translator(clf, lm):
    torch.manual_seed(0)
    return Translator(TranslatorConfig(feature_dim=clf.feature_dim, hidden_size=lm.hidden_size, prefix_length=2,
                                       classifier_identity=clf.identity, lm_identity=lm.identity)).eval()


def test_a_run_of_a_torchvision_checkpoint_file_finds_its_classifier_again(tmp_path, tiny_lm, tiny_waterbirds):
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "shufflenet.pt"
    torch.save(torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=2).state_dict(), weights)
    clf = load_classifier_spec("torchvision:shufflenet_v2_x0_5", checkpoint=str(weights))
    cfg = ExplainConfig(sentences_per_image=1, max_new_tokens=2, device="cpu")
    run = explain_dataset(open_dataset(tiny_waterbirds), clf, _translator(clf, tiny_lm), tiny_lm, tmp_path / "run",
                          cfg, split="test", max_images=2, show_progress=False)
    assert run.manifest["models"]["classifier_source"] == str(weights)
    adapter, source, note = resolve_run_classifier(run.manifest)
    assert (adapter.identity, source, note) == (clf.identity, str(weights), "")
    weights.unlink()  # gone: the message says what the run recorded and what to pass
    with pytest.raises(ClassifierLoadError, match=rf"the run recorded {weights}, which is not here.*--classifier"):
        resolve_run_classifier(run.manifest)


def test_a_torchscript_source_is_found_too(tmp_path):
    from core.models import load_classifier

    torch.manual_seed(0)
    path = tmp_path / "net.pt"
    torch.jit.script(tiny.TinyNet()).save(str(path))
    clf = load_classifier(path)
    manifest = {"models": {"classifier": "net", "classifier_identity": clf.identity, "classifier_source": str(path)}}
    adapter, source, note = resolve_run_classifier(manifest)
    assert adapter.identity == clf.identity and source == str(path) and note == ""


def _worse(val_groups=None):
    """DFR on inferred groups that lowers the worst group: group 3's images go wrong after the fix."""
    labels = np.array([0] * 10 + [0] * 10 + [1] * 10 + [1] * 10)
    groups = np.repeat([0, 1, 2, 3], 10)
    before = labels.copy()
    before[[10, 11, 30]] = 1 - before[[10, 11, 30]]  # worst group before: 1, 80%
    after = labels.copy()
    after[30:36] = 0  # worst group after: 3, 40%
    return evaluate_mitigation(before, after, labels=labels, groups=groups, method="dfr", group_source="inferred",
                               group_names={0: "a · x", 1: "a · y", 2: "b · x", 3: "b · y"}, show_progress=False)


def test_a_fix_that_makes_the_worst_group_worse_says_why_it_may():
    result = _worse()
    val_groups = pd.Series([0] * 60 + [1] * 30 + [2] * 50 + [3] * 2, dtype="Int64")  # b · y: 2 val images
    warning = why_worse(result, val_groups, n_val=len(val_groups), agreement=0.6)
    assert warning.startswith("dfr (inferred groups) lowers worst-group accuracy on the test split from 80.0% to "
                              "40.0% (95% interval")
    assert "worst now b · y" in warning
    assert "the validation split it was refit on is small (142 images)" in warning
    assert "few or no images of b · y (2 val vs 10 test)" in warning
    assert "its groups are unlike the test split's" in warning
    assert "the inferred groups agree with the true ones on only 60%" in warning
    assert warning.endswith("Keep the original classifier unless a larger validation split, drawn like the test "
                            "split, confirms it.")
    assert "may fit the validation images too closely" in why_worse(result, None, n_val=1000)
    better = evaluate_mitigation(np.zeros(4), np.zeros(4), labels=[0, 0, 1, 1],
                                 groups=[0, 1, 2, 3], show_progress=False)
    assert why_worse(better) == ""


def test_the_warning_is_in_mitigation_json_and_printed(tmp_path, capsys, monkeypatch):
    import core.mitigation.pipeline as pipeline

    result = _worse()
    result.warning = why_worse(result, None, n_val=50)
    write_mitigation_json(tmp_path, [result])
    raw = json.loads((tmp_path / "mitigation.json").read_text())
    assert raw[0]["warning"] == result.warning and read_mitigation_json(tmp_path)[0].warning == result.warning
    ok = evaluate_mitigation(np.zeros(4), np.zeros(4), labels=[0, 0, 1, 1], groups=[0, 1, 2, 3], show_progress=False)
    assert ok.to_dict()["warning"] == ""  # every record has the field

    monkeypatch.setattr(pipeline, "mitigate", lambda *a, **k: MitigationOutcome([result], [], [], 1.0))
    assert cli.main(["mitigate", str(tmp_path / "val"), "--test-run", str(tmp_path / "test")]) == 0
    assert f"warning: {result.warning}" in capsys.readouterr().out
