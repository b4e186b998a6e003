"""The fast path shown on a classifier the project never trained: ImageNet EfficientNet-Lite2.

    texplain maintain lite2          # its aligned translator, that translator's evaluation, its ImageNet-9 runs
    texplain maintain lite2-trained  # the reference: a translator trained on Lite2's features (~1 h on 2 cores)

Lite2 (260 px input, 1280-d features) is trained independently of Lite0 by its authors; no caption of any kind
is used here. Its translator is the fast path's (core.demo.auto_translator.build_fast_translator: a ridge map of
its features onto Lite0's, in front of the shipped general translator; the shipped one was fitted on the demo
worlds' photos, the fast path's fit set until 2026-12-05, and --force refits it on the current one). It is
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
# The fast path's reference: the general translator's recipe on Lite2's own features. Its 21 MB of weights stay
# out of checkpoints/ (the budget); its evaluation is recorded in LITE2_EVALUATION under "trained_reference".
LITE2_TRAINED = paths.ASSETS / "translators" / "lite2-trained"
# The general recipe's first stage as shipped: 604 steps of 64 (4 epochs; the shipped translator kept epoch 4
# of a 10-epoch schedule on a GPU, this one runs a 4-epoch cosine to the end), bf16 autocast; then its refinement.
TRAINED_EPOCHS = 4


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
            # Merged, not rewritten: build_trained's reference and the runs' superclass words live there too.
            imagenet9.update_evaluation(LITE2_EVALUATION, **ev)
            print(f"lite2 translator on {ev['images']} images of {ev['unseen_stamps']} unseen stamps: "
                  f"{_scores(ev)} -> {LITE2_EVALUATION}")
    if "runs" in steps:
        imagenet9.explain_variations(mini.in9_classifier(clf), tr, lm, mini.IMAGENET9_MINI, force=force,
                                     prefix=LITE2_RUN_PREFIX, name_suffix=" (EfficientNet-Lite2)")
        imagenet9.record_superclass_words(out=LITE2_EVALUATION, prefix=LITE2_RUN_PREFIX)
    return 0


def build_trained(force: bool = False, limit: int | None = None) -> int:
    """Train (resumable) and evaluate the reference translator for Lite2: the general recipe on the general
    world's captions, as the shipped general translator was trained for Lite0. About an hour on a 2-core CPU.
    `limit`: evaluate that many test images only (a check: it is not recorded beside the fast path's)."""
    from core.demo import imagenet9
    from core.demo.waterbirds import read_selection
    from core.engine.config import TrainConfig
    from core.models import load_classifier, load_language_model
    from core.models.translator import Translator

    clf, lm = load_classifier(LITE2), load_language_model()
    if (LITE2_TRAINED / "config.json").exists() and not force:
        print(f"translator lite2-trained: exists ({LITE2_TRAINED})")
    else:
        cfg = TrainConfig(**{**imagenet9.GENERAL_RECIPE, "epochs": TRAINED_EPOCHS}, autocast_bf16=True,
                          **read_selection())
        imagenet9.train_general_translator(clf, lm, LITE2_TRAINED, cfg=cfg,
                                           work=paths.ASSETS / "train" / "translator-lite2-trained")
        print(f"translator lite2-trained -> {LITE2_TRAINED}")
    own = LITE2_TRAINED / "evaluation.json"
    if own.exists() and not force and limit is None:
        print(f"lite2-trained evaluation: exists ({own})")
        return 0
    t0 = time.time()
    ev = imagenet9.evaluate_general_translator(clf, Translator.from_pretrained(LITE2_TRAINED, clf, lm), lm,
                                               limit=limit, more_sentences=None)
    ev["seconds"] = round(time.time() - t0, 1)
    if limit is not None:
        print(f"lite2-trained on {ev['images']} images (--limit; not recorded): scene {ev['scene_accuracy']:.1%}")
        return 0
    own.write_text(json.dumps(ev, indent=1, default=str) + "\n")
    keys = ("images", "sentences_per_image", "scene_accuracy", "scene_accuracy_ci95", "scene_accuracy_photos",
            "scene_accuracy_plain", "object_kind_accuracy")
    imagenet9.update_evaluation(LITE2_EVALUATION, trained_reference={
        "translator": "the general recipe on Lite2's features (texplain maintain lite2-trained; not shipped)",
        **{k: ev[k] for k in keys if k in ev}})
    print(f"lite2-trained on {ev['images']} images: {_scores(ev)} -> {LITE2_EVALUATION}")
    return 0


def _scores(ev: dict) -> str:
    """evaluate_general_translator's headline figures, as both steps print them."""
    return (f"scene {ev['scene_accuracy']:.1%} (photos {ev['scene_accuracy_photos']:.1%}, plain colours "
            f"{ev['scene_accuracy_plain']:.1%}), object kind {ev['object_kind_accuracy']:.1%}")
