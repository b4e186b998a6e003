"""Word maps checked where the truth is known: the pointing game on the demos' test images.

    texplain maintain word-maps     # the Waterbirds demo's ERM test run, and the ImageNet-9 original run

The mini Waterbirds knows where each bird is (core.demo.worlds.waterbirds_mini.object_masks); scene words must
point outside the bird, bird words inside (core.evaluation.pointing). Results beside each run:
word_maps.json (shipped runs: under runs/.shipped/).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core import paths

WATERBIRDS_RUN = paths.SHIPPED_RUNS / "demo-erm-test"
RESULT_FILE = "word_maps.json"


def waterbirds_items(run_path: str | Path = WATERBIRDS_RUN, limit: int | None = None) -> pd.DataFrame:
    """image, image_id, mask, sentences for a Waterbirds demo run (every `k`-th image for `limit` of them)."""
    from PIL import Image

    from core.data import load_rgb
    from core.demo.worlds.waterbirds_mini import object_masks
    from core.store import Run

    run = Run.open(run_path)
    masks = object_masks()
    images = run.images().sort_values("image_id").reset_index(drop=True)
    images = images[images["error"].isna()] if "error" in images else images
    if limit is not None and limit < len(images):
        images = images.iloc[np.linspace(0, len(images) - 1, limit).round().astype(int)]
    sents = run.sentences(list(images["image_id"])).groupby("image_id")["text"].agg(list)
    rows = []
    for r in images.itertuples():
        mask = np.asarray(Image.open((masks / r.path).with_suffix(".png"))) > 127
        rows.append({"image": load_rgb(run.image_path(r.path)), "image_id": r.image_id, "mask": mask,
                     "sentences": sents.get(r.image_id, [])})
    return pd.DataFrame(rows)


def waterbirds_pointing(limit: int | None = None, run_path: str | Path = WATERBIRDS_RUN) -> dict:
    """The pointing game on a Waterbirds demo run, with the run's own classifier and translator."""
    from core.evaluation.pointing import pointing_game, score_pointing
    from core.models import load_classifier, load_language_model
    from core.models.registry import run_model_sources
    from core.models.translator import Translator
    from core.store import Run

    t0 = time.time()
    sources = run_model_sources(Run.open(run_path).manifest)
    clf, lm = load_classifier(sources.classifier), load_language_model(sources.lm)
    tr = Translator.from_pretrained(sources.translator, clf, lm)
    items = waterbirds_items(run_path, limit)
    rows = pointing_game(items, clf, tr, lm, object_superclasses={"bird"},
                         progress=lambda i, n: print(f"\r[word-maps] {i}/{n} images", end="", flush=True))
    print()
    return {"run": Path(run_path).name, "images": len(items), **score_pointing(rows),
            "seconds": round(time.time() - t0, 1), "seconds_per_map": round((time.time() - t0) / max(1, len(rows)), 2)}


def build(step: str = "word-maps", limit: int | None = 60) -> int:
    from core.store import user_file

    result = waterbirds_pointing(limit)
    out = user_file(WATERBIRDS_RUN, RESULT_FILE)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("scene", "object") if k in result}, indent=1))
    print(f"[word-maps] -> {out}")
    return 0
