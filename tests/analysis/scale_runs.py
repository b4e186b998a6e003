"""Generated runs for the analysis-at-scale tests: written with the real run store, with planted spurious words,
in three shapes that exercise what the cells (core.analysis.aggregates) must get right.

    make_generated_run(tmp / "wb", "waterbirds", n_images=3000)

- "waterbirds": two classes, four groups (class x place), 32 sentences per image: place words ("water", "lake";
  "tree", "forest") follow the place, so misread images carry the other class's scene words.
- "adaptive": the same world with 8, 16, 24 or 32 sentences per image (24 is not a power of two: shares are not
  exact in binary), unreadable images (an error, no sentences), images without a group.
- "multiclass": six classes, no groups, 16 sentences per image, two splits (val and test), confusions between
  neighbouring classes, each class with its own scene word.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SHAPES = ("waterbirds", "adaptive", "multiclass")
FILLER = [f"w{i}" for i in range(120)] + ["bird", "photo", "standing", "branch", "sky", "rock"]
SCENES = {0: ["tree", "forest", "grass"], 1: ["water", "lake", "sea"]}  # waterbirds: place -> its words
MULTI = ["cat", "dog", "car", "ship", "plane", "horse"]
MULTI_SCENE = ["sofa", "yard", "road", "harbour", "runway", "field"]


def make_generated_run(path: str | Path, shape: str = "waterbirds", n_images: int = 3000, seed: int = 0,
                       shard: int = 500):
    """Write a complete run of `n_images` images of `shape` (see the module docstring) to `path`; return it."""
    from core.store import Run

    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    rng = np.random.default_rng(seed)
    multi = shape == "multiclass"
    names = MULTI if multi else ["landbird", "waterbird"]
    dataset = {"name": f"generated-{shape}", "kind": "imagefolder" if multi else "waterbirds", "root": str(path),
               "class_names": names}
    if not multi:
        dataset["group_names"] = {"0": "landbird on land", "1": "landbird on water", "2": "waterbird on land",
                                  "3": "waterbird on water"}
        dataset["train_group_counts"] = {"0": 3498, "1": 184, "2": 56, "3": 1057}
    run = Run.create(path, {"name": Path(path).name, "models": {"classifier": "generated", "lm": "generated"},
                            "dataset": dataset, "settings": {"sentences_per_image": 16 if multi else 32, "seed": seed}})
    for s, start in enumerate(range(0, n_images, shard)):
        ids = np.arange(start, min(start + shard, n_images))
        images, words = _shard(rng, ids, shape, names)
        sentences = pd.DataFrame({"image_id": images["image_id"], "idx": 0,
                                  "text": [f"a photo of a bird by the {w}" for w in rng.choice(FILLER, len(images))]})
        run.write_shard(s, images, words, sentences, total_images=n_images)
    run.finish()
    return run


def _shard(rng, ids: np.ndarray, shape: str, names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = len(ids)
    if shape == "multiclass":
        label = rng.integers(0, len(names), n)
        wrong = rng.random(n) < 0.25
        pred = np.where(wrong, (label + rng.integers(1, 3, n)) % len(names), label)
        group = pd.array([pd.NA] * n, dtype="Int64")
        place = pd.array([pd.NA] * n, dtype="Int64")
        split = np.where(rng.random(n) < 0.5, "val", "test")
        n_sentences = np.full(n, 16)
    else:
        label = rng.integers(0, 2, n)
        place = np.where(rng.random(n) < 0.8, label, 1 - label)  # mostly the matching background
        wrong = rng.random(n) < np.where(place == label, 0.05, 0.45)
        pred = np.where(wrong, 1 - label, label)
        group = pd.array(2 * label + place, dtype="Int64")
        split = np.full(n, "test")
        n_sentences = np.full(n, 32) if shape == "waterbirds" else rng.choice([8, 16, 24, 32], n)
    error = np.full(n, None, dtype=object)
    if shape == "adaptive":
        broken = rng.random(n) < 0.02
        error[broken] = "cannot decode"
        n_sentences = np.where(broken, 0, n_sentences)
        no_group = rng.random(n) < 0.03
        group = pd.array(np.where(no_group, None, np.asarray(group, dtype=object)), dtype="Int64")
    image_ids = np.array([f"i{i:07d}" for i in ids], dtype=object)
    images = pd.DataFrame({
        "image_id": image_ids, "path": [f"img/{i}.jpg" for i in ids], "split": split, "label": label,
        "label_name": np.array(names)[label], "prediction": pred, "prediction_name": np.array(names)[pred],
        "confidence": rng.uniform(0.5, 1.0, n), "group": group, "place": place, "n_sentences": n_sentences,
        "error": error})
    rows = []
    for i in range(n):
        if n_sentences[i] == 0:
            continue
        k = int(n_sentences[i])
        chosen = list(rng.choice(FILLER, 12, replace=False))
        if shape == "multiclass":
            chosen += [MULTI[label[i]], MULTI_SCENE[pred[i]] if rng.random() < 0.7 else MULTI_SCENE[label[i]]]
        else:
            scene = SCENES[int(place[i])] if rng.random() < 0.85 else SCENES[int(pred[i])]
            chosen += list(rng.choice(scene, 2, replace=False)) + ["bird"]
        chosen = list(dict.fromkeys(chosen))
        used = rng.integers(1, k + 1, len(chosen))
        rows.append(pd.DataFrame({"image_id": image_ids[i], "word": chosen, "sentences": used,
                                  "count": used + rng.integers(0, 3, len(chosen))}))
    words = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["image_id", "word", "count",
                                                                                   "sentences"])
    return images, words[["image_id", "word", "count", "sentences"]]
