"""Word maps and causal tests checked where the truth is known: the demo worlds place every object themselves.

    texplain maintain word-maps   # the pointing game: Waterbirds ERM test run, ImageNet-9 original run
    texplain maintain causal      # the causal test of the Waterbirds ERM runs' scene flags, and a bird-word control

The mini Waterbirds and the mini ImageNet-9 know where each object is (their builders' object_masks); scene
words must point outside it, object words on it (core.evaluation.pointing). The causal test removes a word's
region and compares with same-area random regions (core.evaluation.causal). Results go beside the shipped runs
(word_maps.json, causal.json in checkpoints/runs/<run>/), where the dashboard and the report read them.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from core import paths

WATERBIRDS_RUN = paths.SHIPPED_RUNS / "demo-erm-test"
WATERBIRDS_VAL_RUN = paths.SHIPPED_RUNS / "demo-erm-val"
CAUSAL_TRUTH_FILE = "causal_truth.json"  # the pooled truth test, beside the test run
IMAGENET9_RUN = paths.SHIPPED_RUNS / "imagenet9-original"
POINTING_FILE = "word_maps.json"
# What the Waterbirds world plants: landbirds on water read as waterbirds. Scene words should be causal there;
# the bird's own word, under its own class, should not make predictions more right when removed.
CAUSAL_CHECKS = (
    {"class_name": "landbird", "word": "lake", "predicted": "waterbird", "expect": "causal"},
    {"class_name": "landbird", "word": "water", "predicted": "waterbird", "expect": "causal"},
    {"class_name": "landbird", "word": "bird", "predicted": None, "expect": "not more right than the control"},
)


def run_items(run_path: str | Path, mask_for: Callable[[pd.Series], Path], limit: int | None = None
              ) -> pd.DataFrame:
    """image, image_id, mask, sentences for a run's images (`limit` of them, evenly spread over the image ids);
    `mask_for(row)` is the mask file of an image row."""
    from PIL import Image

    from core.data import load_rgb
    from core.store import Run

    run = Run.open(run_path)
    images = run.images().sort_values("image_id").reset_index(drop=True)
    images = images[images["error"].isna()] if "error" in images else images
    if limit is not None and limit < len(images):
        images = images.iloc[np.linspace(0, len(images) - 1, limit).round().astype(int)]
    sents = run.sentences(list(images["image_id"])).groupby("image_id")["text"].agg(list)
    rows = []
    for _, r in images.iterrows():
        mask = np.asarray(Image.open(mask_for(r))) > 127
        rows.append({"image": load_rgb(run.image_path(r["path"])), "image_id": r["image_id"], "mask": mask,
                     "sentences": sents.get(r["image_id"], [])})
    return pd.DataFrame(rows)


def run_models(run_path):
    from core.models import load_classifier, load_language_model
    from core.models.registry import run_model_sources
    from core.models.translator import Translator
    from core.store import Run

    sources = run_model_sources(Run.open(run_path).manifest)
    clf, lm = load_classifier(sources.classifier), load_language_model(sources.lm)
    return clf, Translator.from_pretrained(sources.translator, clf, lm), lm


def pointing(run_path: str | Path, mask_for, limit: int | None, object_superclasses=None) -> dict:
    """The pointing game on a run's images, with the run's own classifier, translator and sentences."""
    from core.evaluation.pointing import pointing_game, score_pointing

    t0 = time.time()
    clf, tr, lm = run_models(run_path)
    items = run_items(run_path, mask_for, limit)
    name = Path(run_path).name
    rows = pointing_game(items, clf, tr, lm, object_superclasses=object_superclasses,
                         progress=lambda i, n: print(f"\r[word-maps] {name}: {i}/{n} images", end="", flush=True))
    print()
    from core.store import Run

    translator = (Run.open(run_path).manifest.get("models") or {}).get("translator")
    return {"run": name, "images": len(items), "translator": translator,
            **score_pointing(rows), "seconds": round(time.time() - t0, 1),
            "seconds_per_map": round((time.time() - t0) / max(1, len(rows)), 2)}


def waterbirds_pointing(limit: int | None = None) -> dict:
    from core.demo.worlds.waterbirds_mini import object_masks

    masks = object_masks()
    return pointing(WATERBIRDS_RUN, lambda r: (masks / r["path"]).with_suffix(".png"), limit, {"bird"})


def imagenet9_pointing(limit: int | None = None) -> dict:
    from core.demo.worlds.imagenet9_mini import object_masks

    masks = object_masks()
    return pointing(IMAGENET9_RUN, lambda r: masks / (Path(r["path"]).stem + ".png"), limit)


def causal_truth(max_images: int | None = 40, runs=(WATERBIRDS_RUN, WATERBIRDS_VAL_RUN)) -> dict:
    """The causal test of CAUSAL_CHECKS on the Waterbirds ERM test and val runs (each stored in its shipped
    folder), pooled: one split alone has 20 landbirds read as waterbirds, too few for intervals that part."""
    from core.evaluation.causal import CausalResult, CausalSettings, verify_flag

    found = {}
    models = run_models(runs[0])  # the val run was made by the same classifier, translator and LM
    for check in CAUSAL_CHECKS:
        settings = CausalSettings(max_images=max_images, predicted=check["predicted"])
        label = f"{check['class_name']}/{check['word']}"
        rows = []
        for run_path in runs:
            res = verify_flag(run_path, check["class_name"], check["word"], *models, settings,
                              out=Path(run_path) / "causal.json",
                              progress=lambda i, n, s: print(f"\r[causal] {label} on {Path(run_path).name}: {i}/{n} "
                                                             f"images, {s:.0f} s", end="", flush=True))
            print()
            rows += [{**r, "run": Path(run_path).name} for r in res.rows]
        s = CausalResult(check["class_name"], check["word"], asdict(settings), rows).summary()
        found[label] = {**s, "runs": [Path(r).name for r in runs], "expect": check["expect"]}
        print(f"[causal] {label}: {s.get('verdict')}; prediction changed {s.get('prediction_changed')}, control "
              f"{s.get('control_prediction_changed')}, ratio {s.get('ratio_to_control')}; right afterwards "
              f"{s.get('right_after')}, control {s.get('control_right_after')}")
    return found


POINTING_IMAGES, CAUSAL_IMAGES = 60, 40  # as shipped: images per run mapped; images per causal check


def build(step: str, limit: int | None = None, force: bool = False) -> int:
    """`word-maps`: the pointing game on `limit` images of each run (default POINTING_IMAGES); `causal`: the causal
    checks on at most `limit` images each (default CAUSAL_IMAGES)."""
    if step == "word-maps":
        for run_path, fn in ((WATERBIRDS_RUN, waterbirds_pointing), (IMAGENET9_RUN, imagenet9_pointing)):
            out = Path(run_path) / POINTING_FILE
            if out.exists() and not force:
                print(f"[word-maps] {out} exists (--force redoes it)")
                continue
            result = fn(limit or POINTING_IMAGES)
            out.write_text(json.dumps(result, indent=1) + "\n")
            print(json.dumps({k: {m: result[k][m] for m in ("maps", "hit_rate", "ci95", "random_hit_rate")}
                              for k in ("scene", "object") if k in result}, indent=1))
            print(f"[word-maps] -> {out}")
        return 0
    if step == "causal":
        if force:
            for run_path in (WATERBIRDS_RUN, WATERBIRDS_VAL_RUN):
                (run_path / "causal.json").unlink(missing_ok=True)
        out = WATERBIRDS_RUN / CAUSAL_TRUTH_FILE
        out.write_text(json.dumps(causal_truth(limit or CAUSAL_IMAGES), indent=1, default=str) + "\n")
        print(f"[causal] -> {out}, and causal.json beside each run")
        return 0
    raise ValueError(f"unknown step {step!r}")
