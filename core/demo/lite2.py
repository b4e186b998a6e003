"""The fast path shown on a classifier the project never trained: ImageNet EfficientNet-Lite2.

    texplain maintain lite2      # its aligned translator, that translator's evaluation, its ImageNet-9 runs

Lite2 (260 px input, 1280-d features) is trained independently of Lite0 by its authors; no caption of any kind
is used here. Its translator is the fast path's (core.demo.auto_translator.build_fast_translator: a ridge map of
its features onto Lite0's, fitted on the demo worlds' photos, in front of the shipped general translator). It is
scored as the general translator is, on the general world's test split (stamps it never saw), so the two
evaluations sit side by side; and every ImageNet-9 variation is explained with it on the same images as Lite0's
runs, so Compare and the ImageNet-9 page can put the two classifiers beside each other.
"""
from __future__ import annotations

import json
import time

from core import paths

LITE2 = "efficientnet-lite2"
LITE2_TRANSLATOR = paths.CHECKPOINTS / "translators" / "lite2"
LITE2_EVALUATION = LITE2_TRANSLATOR / "evaluation.json"
LITE2_RUN_PREFIX = "imagenet9-lite2-"  # checkpoints/runs/imagenet9-lite2-<variation>


def build(force: bool = False, steps: tuple[str, ...] = ("translator", "evaluation", "runs")) -> int:
    from core.demo import imagenet9
    from core.demo.auto_translator import build_fast_translator
    from core.demo.worlds import imagenet9_mini as mini
    from core.models import load_classifier, load_language_model
    from core.models.translator import Translator

    clf, lm = load_classifier(LITE2), load_language_model()
    if "translator" in steps:
        if (LITE2_TRANSLATOR / "config.json").exists() and not force:
            print(f"translator lite2: exists ({LITE2_TRANSLATOR})")
        else:
            build_fast_translator(clf, lm, LITE2_TRANSLATOR)
            print(f"translator lite2 -> {LITE2_TRANSLATOR}")
    tr = Translator.from_pretrained(LITE2_TRANSLATOR, clf, lm)
    if "evaluation" in steps:
        if LITE2_EVALUATION.exists() and not force:
            print(f"lite2 translator evaluation: exists ({LITE2_EVALUATION})")
        else:
            t0 = time.time()
            ev = imagenet9.evaluate_general_translator(clf, tr, lm)
            ev["seconds"] = round(time.time() - t0, 1)
            LITE2_EVALUATION.write_text(json.dumps(ev, indent=1, default=str) + "\n")
            print(f"lite2 translator on {ev['images']} images of {ev['unseen_stamps']} unseen stamps: scene "
                  f"{ev['scene_accuracy']:.1%} (photos {ev['scene_accuracy_photos']:.1%}, plain colours "
                  f"{ev['scene_accuracy_plain']:.1%}), object kind {ev['object_kind_accuracy']:.1%} "
                  f"-> {LITE2_EVALUATION}")
    if "runs" in steps:
        imagenet9.explain_variations(mini.in9_classifier(clf), tr, lm, mini.IMAGENET9_MINI, force=force,
                                     prefix=LITE2_RUN_PREFIX, name_suffix=" (EfficientNet-Lite2)")
        imagenet9.record_superclass_words(out=LITE2_EVALUATION, prefix=LITE2_RUN_PREFIX)
    return 0
