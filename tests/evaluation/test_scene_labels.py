"""`texplain evaluate` names a run's scene words after its own attribute values, not Waterbirds' land/water."""
from __future__ import annotations

import json

from core.evaluation.captions import evaluate_run
from tests import tiny
from tests.evaluation.test_evaluate import make_captioned_run


def test_scene_words_are_labelled_with_the_datasets_attribute_values(tmp_path):
    run = make_captioned_run(tmp_path, tiny.save_tiny_lm(tmp_path / "lm"))  # an untrained LM: fluency is not read
    manifest = run.manifest
    manifest["dataset"]["group_names"] = {"0": "landbird · habitat: meadow", "1": "landbird · habitat: pond",
                                          "2": "waterbird · habitat: meadow", "3": "waterbird · habitat: pond"}
    (run.path / "manifest.json").write_text(json.dumps(manifest))
    ev = evaluate_run(run, max_sentences=8)
    assert ev.scene_words == {"meadow": ["forest", "grass"], "pond": ["lake", "water"]}
