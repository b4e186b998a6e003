"""The pointing game of word maps (core.evaluation.pointing) on the tiny models and hand-made rows."""
import json

import numpy as np
import pandas as pd
import pytest

from core.evaluation.pointing import (centre_baseline, crop_like_input, distance_to, pointing_game, score_pointing,
                                     words_to_map)
from core.models.classifier import Preprocessing


class Counts:
    """An extractor whose counts are given: {word: (occurrences, sentences)}."""

    def __init__(self, counts):
        self.counts = counts

    def count(self, sentences):
        return self.counts


def test_a_mask_follows_the_classifiers_resize_and_centre_crop():
    mask = np.zeros((200, 300), bool)  # H x W: the shorter side (200) becomes 100, the width 150
    mask[:, 100:200] = True            # the middle third: columns 50-100 of 150, 25-75 after the crop
    out = crop_like_input(mask, Preprocessing(resize=100, crop=100))
    assert out.shape == (100, 100) and out.dtype == bool
    assert out[:, 26:74].all() and not out[:, :24].any() and not out[:, 76:].any()
    away = distance_to(out)
    assert (away[out] == 0).all() and away[:, 23].max() <= 3 and away[:, 20].min() > 3
    assert np.isinf(distance_to(np.zeros((4, 4), bool))).all()  # an empty region is nowhere near


def test_the_words_mapped_are_the_most_used_scene_word_and_object_word():
    got = words_to_map([], Counts({"lake": (9, 6), "heron": (5, 5), "water": (4, 4), "car": (7, 7)}), {"bird"})
    assert got == {"scene": "lake", "object": "heron"}  # "car" is an object, but not under "bird"
    assert words_to_map([], Counts({"car": (3, 3)}))["scene"] is None


def test_scores_count_hits_per_kind_beside_the_random_baseline():
    distance = [0.0] * 8 + [10.0, float("nan")] + [0.0] * 3 + [12.0] + [40.0] * 6
    rows = pd.DataFrame({"image_id": range(20), "kind": ["scene"] * 10 + ["object"] * 10,
                         "word": ["lake"] * 10 + ["bird"] * 10, "object_share": 0.2,
                         "distance": distance, "hit": [d <= 16 for d in distance],
                         "strict_hit": [d == 0 for d in distance],
                         "random_hit": [True] * 8 + [False] * 2 + [False] * 9 + [True],
                         "random_strict_hit": [True] * 7 + [False] * 3 + [False] * 10})
    s = score_pointing(rows, tolerance=16)
    assert s["scene"]["hit_rate"] == 0.9 and s["scene"]["random_hit_rate"] == 0.8
    assert s["scene"]["strict_hit_rate"] == 0.8 and s["scene"]["random_strict_hit_rate"] == 0.7
    assert s["scene"]["flat_maps"] == 1  # a flat map (NaN distance) is a miss, by either rule
    assert s["object"]["hit_rate"] == 0.4 and s["object"]["ci95"][0] < 0.4 < s["object"]["ci95"][1]
    assert s["object"]["strict_hit_rate"] == 0.3 and s["object"]["words"] == {"bird": 10}
    assert s["tolerance_px"] == 16 and "16 px" in s["rule"]
    assert "centre_hit_rate" not in s["scene"]  # rows stored before the centre was scored: no centre figures
    centred = rows.assign(centre_hit=[True] * 10 + [True] * 6 + [False] * 4,
                          centre_strict_hit=[True] * 10 + [True] * 5 + [False] * 5)
    c = score_pointing(centred, tolerance=16)
    assert c["object"]["centre_hit_rate"] == 0.6 and c["object"]["centre_strict_hit_rate"] == 0.5
    assert c["scene"]["centre_hit_rate"] == 1.0 and c["object"]["centre_ci95"][0] < 0.6
    # The 4 object rows whose centre misses (the last 4: distances 40): the maps miss them too.
    assert c["object"]["off_centre"]["maps"] == 4 and c["object"]["off_centre"]["hit_rate"] == 0.0
    assert "off_centre" not in c["scene"]  # the centre always lay in the scene


def test_the_game_maps_each_images_words_on_the_tiny_models(tmp_path, tiny_classifier, tiny_lm, tiny_waterbirds):
    import torch

    from core.data import load_rgb, open_dataset
    from core.models.translator import Translator, TranslatorConfig

    torch.manual_seed(0)
    tr = Translator(TranslatorConfig(feature_dim=tiny_classifier.feature_dim, hidden_size=tiny_lm.hidden_size,
                                     prefix_length=2, mlp_hidden=16, classifier_identity=tiny_classifier.identity,
                                     classifier_name="tinynet", lm_identity=tiny_lm.identity))
    ds = open_dataset(tiny_waterbirds)
    mask = np.zeros((32, 32), bool)
    mask[10:16, 10:16] = True  # the tiny world's "bird"
    items = pd.DataFrame([{"image": load_rgb(r.path), "image_id": i, "mask": mask,
                           "sentences": ["a bird near water by the lake", "small duck on the lake",
                                         "bird in the green forest"]} for i, r in enumerate(list(ds)[:3])])
    calls = []
    rows = pointing_game(items, tiny_classifier, tr, tiny_lm, object_superclasses={"bird"},
                         progress=lambda i, n: calls.append((i, n)))
    assert calls[-1] == (3, 3) and set(rows["kind"]) == {"scene", "object"} and len(rows) == 6
    assert set(rows["word"]) <= {"lake", "water", "forest", "bird", "duck"}
    assert rows["hit"].dtype == bool and rows["object_share"].iloc[0] == pytest.approx(36 / 1024, abs=1e-3)
    # Hits follow the distances to each word's own region, at the default tolerance (half of a 7 x 7 cell: 2 px).
    assert rows.attrs["tolerance"] == 2
    mapped = rows[rows["peak"].notna()]
    assert (mapped["hit"] == (mapped["distance"] <= 2)).all()
    assert (mapped["strict_hit"] == (mapped["distance"] == 0)).all()
    # The centre baseline: the crop's centre (16, 16) lies 1.4 px from the "bird" (rows and columns 10-15): within
    # the tolerance of an object word's region but not on it, and in the scene; centre_baseline agrees without maps.
    objects, scenes = rows[rows["kind"] == "object"], rows[rows["kind"] == "scene"]
    assert objects["centre_hit"].all() and not objects["centre_strict_hit"].any()
    assert (objects["centre_distance"] == 1.4).all() and scenes["centre_strict_hit"].all()
    base = centre_baseline(items, tiny_classifier.preprocessing, object_superclasses={"bird"})
    assert base["object"]["maps"] == 3 and base["object"]["centre_hit_rate"] == 1.0
    assert base["object"]["centre_strict_hit_rate"] == 0.0 and base["scene"]["centre_hit_rate"] == 1.0
    for r in mapped.itertuples():  # a scene word's region is everything but the "bird"
        on_bird = bool(mask[r.peak])
        assert (r.distance == 0) == (on_bird if r.kind == "object" else not on_bird)
    # Resumable: a game stopped after its first image (and halfway through writing the second) goes on from there
    # to the same rows, random peaks included; one kept with other settings starts over.
    ckpt = tmp_path / "game.jsonl"
    whole = pointing_game(items, tiny_classifier, tr, tiny_lm, object_superclasses={"bird"}, checkpoint=ckpt)
    pd.testing.assert_frame_equal(whole, rows)
    lines = ckpt.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["settings"]["method"] == "auto"
    ckpt.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    seen = []
    resumed = pointing_game(items, tiny_classifier, tr, tiny_lm, object_superclasses={"bird"}, checkpoint=ckpt,
                            progress=lambda i, n: seen.append(i))
    pd.testing.assert_frame_equal(resumed, rows)
    assert seen == [1, 2, 3] and len(ckpt.read_text().splitlines()) == 4
    # Rows kept before the centre was scored (no centre_* fields) get it on resuming: the same rows again.
    lines = ckpt.read_text().splitlines()
    old = [json.loads(x) for x in lines[1:]]
    for entry in old:
        entry["rows"] = [{k: v for k, v in r.items() if not k.startswith("centre_")} for r in entry["rows"]]
    ckpt.write_text("\n".join([lines[0]] + [json.dumps(e) for e in old]) + "\n")
    pd.testing.assert_frame_equal(pointing_game(items, tiny_classifier, tr, tiny_lm, object_superclasses={"bird"},
                                                checkpoint=ckpt), rows)
    other = pointing_game(items.iloc[:1], tiny_classifier, tr, tiny_lm, object_superclasses={"bird"},
                          checkpoint=ckpt, seed=1)
    assert len(ckpt.read_text().splitlines()) == 2 and json.loads(ckpt.read_text().splitlines()[0])["settings"][
        "seed"] == 1 and len(other) == 2
