"""A synthetic Waterbirds-like run store, for the analysis, report and fine-tuning tests.

`make_waterbirds_run` builds one: landbirds on water are often misread as waterbirds and their explanations then
say "water"/"lake"/"sea"; waterbirds on land are often misread and say "tree"/"forest"/"grass"; misread
landbirds also say "duck" (a bird word: it must never be flagged).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.store import IMAGE_COLUMNS, Run

CLASSES = ["landbird", "waterbird"]
GROUP_NAMES = {"0": "landbird on land", "1": "landbird on water", "2": "waterbird on land", "3": "waterbird on water"}
TRAIN_GROUP_COUNTS = {"0": 3498, "1": 184, "2": 56, "3": 1057}  # the real Waterbirds training set
WATER_WORDS = {"water", "lake", "sea"}
LAND_WORDS = {"tree", "forest", "grass"}


def _manifest(name: str) -> dict:
    return {"name": name,
            "models": {"classifier": "resnet50-erm", "classifier_identity": f"resnet50:{name}",
                       "translator": "translator-test", "lm": "smollm2-135m"},
            "dataset": {"name": "waterbirds-synthetic", "kind": "waterbirds", "root": "/data/wb",
                        "class_names": CLASSES, "group_names": GROUP_NAMES,
                        "train_group_counts": TRAIN_GROUP_COUNTS},
            "settings": {"sentences_per_image": 20, "top_p": 0.9, "temperature": 0.9, "max_new_tokens": 20,
                         "seed": 7}}


def make_waterbirds_run(path, name: str = "erm", per_group: int = 100, error_rates=(0.03, 0.55, 0.45, 0.03),
                        seed: int = 0, with_groups: bool = True) -> Run:
    """A synthetic run: 4 groups x `per_group` test images, 20 sentences each, written in two shards."""
    rng = np.random.default_rng(seed)
    n_sent = 20
    images, words, sentences = [], [], []
    for group in range(4):
        label, place = divmod(group, 2)
        for j in range(per_group):
            image_id = f"g{group}-{j:03d}"
            wrong = rng.random() < error_rates[group]
            pred = 1 - label if wrong else label
            probs = {"bird": 0.8, "photo": 0.5, "background": 0.3}
            probs.update({"sparrow": 0.3, "robin": 0.2} if label == 0 else {"duck": 0.4, "gull": 0.2})
            if label == 0 and pred == 1:
                probs["duck"] = 0.35
            if place == 1:
                strong = pred == 1  # the features that say "waterbird" are the water ones
                probs.update(water=0.5 if strong else 0.25, lake=0.3 if strong else 0.15,
                             sea=0.15 if strong else 0.05, tree=0.02)
            else:
                strong = pred == 0
                probs.update(tree=0.5 if strong else 0.25, forest=0.3 if strong else 0.15,
                             grass=0.2 if strong else 0.1, water=0.03, lake=0.02, sea=0.02)
            present = []
            for word, p in probs.items():
                k = int(rng.binomial(n_sent, p))
                if k:
                    present.append(word)
                    words.append({"image_id": image_id, "word": word, "count": k + int(rng.integers(0, 2)),
                                  "sentences": k})
            if group == 1 and j == 0:  # a made-up word, in one misread image only: must never win
                words.append({"image_id": image_id, "word": "quyvian", "count": 20, "sentences": 20})
            for idx in range(3):
                chosen = rng.choice(present, size=min(3, len(present)), replace=False)
                sentences.append({"image_id": image_id, "idx": idx,
                                  "text": "A photo of a " + " and ".join(chosen) + "."})
            images.append({"image_id": image_id, "path": f"/data/wb/{image_id}.jpg", "split": "test",
                           "label": label, "label_name": CLASSES[label], "prediction": pred,
                           "prediction_name": CLASSES[pred], "confidence": 0.9,
                           "group": group if with_groups else None, "place": place if with_groups else None,
                           "n_sentences": n_sent})
    images, words, sentences = pd.DataFrame(images), pd.DataFrame(words), pd.DataFrame(sentences)
    for column in IMAGE_COLUMNS:  # columns the store may add later (e.g. error) stay empty
        if column not in images:
            images[column] = None
    if not with_groups:
        images["group"] = pd.array([None] * len(images), dtype="Int64")
        images["place"] = pd.array([None] * len(images), dtype="Int64")
    run = Run.create(path, _manifest(name))
    halves = np.array_split(images["image_id"].to_numpy(), 2)
    for shard, ids in enumerate(halves):
        run.write_shard(shard, images[images["image_id"].isin(ids)], words[words["image_id"].isin(ids)],
                        sentences[sentences["image_id"].isin(ids)], total_images=len(images))
    run.finish()
    return run
