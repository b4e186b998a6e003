"""The open translator's replay data (core.demo.open_translator.replay_data): the general world's training pairs
beside as many of the open world's, so that learning the open world does not forget the general one."""
import numpy as np

from tests.evaluation.test_openworld import small_open_world


def test_replay_mixes_every_general_pair_with_as_many_open_pairs(tmp_path, tiny_classifier):
    from core.demo.imagenet9 import general_translator_data
    from core.demo.open_translator import open_translator_data, replay_data
    from core.demo.worlds.general import build_general_world

    world, _, _ = small_open_world(tmp_path)
    general = build_general_world(tmp_path / "general", n_images=12, workers=1, verbose=False)
    gz, gcaps, _, _ = general_translator_data(tiny_classifier, general)
    oz, ocaps, ovz, ovcaps = open_translator_data(tiny_classifier, world)
    assert len(gcaps) < len(ocaps)  # so the open side is a draw, not all of it

    z, caps, val_z, val_caps = replay_data(tiny_classifier, world, general)
    assert len(caps) == 2 * len(gcaps) and z.shape == (len(caps), *oz.shape[1:])
    assert caps[len(gcaps):] == list(gcaps)
    assert np.allclose(z[len(gcaps):].numpy(), gz.numpy())
    open_part = caps[:len(gcaps)]
    assert set(open_part) <= set(ocaps) and len(set(open_part)) > 1
    # Each open caption keeps its own image's features.
    for i, c in enumerate(open_part[:5]):
        assert any(np.allclose(z[i].numpy(), oz[j].numpy()) for j in np.flatnonzero(np.array(ocaps) == c))
    # Validation is the open world's: the recipe is chosen on its held-out scenes and objects.
    assert val_caps == ovcaps and np.allclose(val_z.numpy(), ovz.numpy())
    # The same seed draws the same pairs.
    assert replay_data(tiny_classifier, world, general)[1] == caps


def test_unlikely_words_follow_the_replay_pairs_and_spare_what_the_image_shows(tmp_path, tiny_classifier):
    """replay_unlikely_words: one set per replay pair, in its order; never a scene word of a kind the image's scene
    lists or any of its captions names; the water words for an image that shows no water."""
    import re

    import pandas as pd

    from core.demo.open_translator import replay_data, replay_unlikely_words, shown_kinds
    from core.demo.worlds.general import build_general_world
    from core.evaluation.openworld import KIND_WORDS

    assert shown_kinds(["a steel bridge over a wide river"], {"city"}) == {"city", "water"}
    assert shown_kinds(["two boats by the pier"], ()) == {"water"}  # plurals read as their words
    world, _, _ = small_open_world(tmp_path)
    general = build_general_world(tmp_path / "general", n_images=12, workers=1, verbose=False)
    _, caps, _, _ = replay_data(tiny_classifier, world, general)
    words = replay_unlikely_words(world, general)
    assert len(words) == len(caps)
    for c, ws in zip(caps, words):
        said = set(re.findall(r"[a-z]+", c.lower()))
        assert not said & ws, (c, said & ws)
    meta = pd.read_csv(world / "metadata.csv", keep_default_na=False).query("split == 'train'")
    frame = pd.read_csv(world / "captions.csv").query("split == 'train'")
    kinds = dict(zip(meta["img_filename"], meta["scene_kinds"]))
    by_caption = {c: kinds[f] for f, c in zip(frame["img_filename"], frame["caption"])}
    open_pairs = [(c, ws) for c, ws in zip(caps[:len(caps) // 2], words[:len(caps) // 2])]
    # A kind is penalised whole or not at all: all its words, or none (another caption of the image may name it).
    assert all(KIND_WORDS["water"] <= ws or not ws & KIND_WORDS["water"] for ws in words)
    wet = [ws for c, ws in open_pairs if "water" in by_caption[c].split()]
    dry = [ws for c, ws in open_pairs if "water" not in by_caption[c].split()]
    assert wet and all(not ws & KIND_WORDS["water"] for ws in wet)
    assert dry and any(KIND_WORDS["water"] <= ws for ws in dry)
    # With object words: the same scene words, and the dog's image is kept from saying "apple" unless it has one.
    with_objects = replay_unlikely_words(world, general, objects={"dog": "dog", "apple": "food"})
    assert len(with_objects) == len(caps) and all(ws <= wo for ws, wo in zip(words, with_objects))
    nouns = {c: meta.set_index("img_filename")["nouns"][f].split() for f, c in zip(frame["img_filename"],
                                                                                   frame["caption"])}
    for c, wo in zip(caps[:len(caps) // 2], with_objects[:len(caps) // 2]):
        assert ("apple" in wo) == ("dog" in nouns[c] and "apple" not in nouns[c]), (c, nouns[c])
        assert not set(re.findall(r"[a-z]+", c.lower())) & wo


def test_superclass_captions_join_the_replay_pairs_with_their_unlikely_words(tmp_path, tiny_classifier,
                                                                           monkeypatch):
    from core.demo import open_translator as ot
    from core.demo.worlds import general as gw
    from core.demo.worlds import open_world as ow

    world, _, things = small_open_world(tmp_path)
    general = gw.build_general_world(tmp_path / "general", n_images=12, workers=1, verbose=False)
    monkeypatch.setattr(ow, "thing_catalog", lambda: things)  # the small world's objects, not the catalog's
    plain = ot.open_captions(world)
    more = ot.open_captions(world, superclass_captions=True)
    assert len(more) > len(plain) and more.iloc[:len(plain)].equals(plain)  # appended: every old pair stays put
    _, caps, _, val_caps = ot.replay_data(tiny_classifier, world, general, superclass_captions=True)
    assert len(ot.replay_unlikely_words(world, general, superclass_captions=True)) == len(caps)
    assert val_caps == ot.replay_data(tiny_classifier, world, general)[3]  # validation is unchanged
    _, open_caps, _, _ = ot.open_translator_data(tiny_classifier, world, superclass_captions=True)
    assert any("some food" in c.lower() for c in open_caps)


def test_unlikely_object_words_name_unrelated_superclasses_and_spare_what_the_captions_say():
    """unlikely_object_words: for an image of a dog, the food and instrument words and a cat, not a wolf (a
    carnivore: the dog's own superclass lies under it); nothing for an image whose object has no superclass; never
    a word (or its singular) that a caption of the image says."""
    import pandas as pd

    from core.demo.open_translator import unlikely_object_words

    vocabulary = {"dog": "dog", "cat": "cat", "wolf": "carnivore", "apple": "food", "guitar": "musical instrument",
                  "canoe": "boat"}
    frame = pd.DataFrame({"path": ["d", "d", "a", "x", "v"],
                          "caption": ["A dog by a lake.", "A puppy and two cats.", "An apple.", "A thing.", "A dog."],
                          "split": ["train", "train", "train", "train", "val"]})
    nouns = {"d": ["dog"], "a": ["apple"], "x": ["thingamajig"], "v": ["dog"]}
    words = unlikely_object_words(frame, nouns, vocabulary)
    assert len(words) == 4  # one per training caption
    assert words[0] == words[1] == {"apple", "guitar", "canoe"}  # "cats" is said: "cat" is spared
    assert words[2] == {"dog", "cat", "wolf", "guitar", "canoe"}
    assert words[3] == frozenset()


def test_build_refuses_a_training_whose_start_is_missing_before_loading_anything(tmp_path, monkeypatch, capsys):
    import pytest

    from core.demo import open_translator as ot

    open_out, replay_out = tmp_path / "open", tmp_path / "open-replay"
    monkeypatch.setattr(ot, "TRAININGS", {"open-translator": {"out": open_out},
                                          "open-replay": {"out": replay_out, "start": open_out, "replay": True}})
    with pytest.raises(FileNotFoundError, match="run `texplain maintain open-translator` first"):
        ot.build("open-replay")
    replay_out.mkdir()
    (replay_out / "config.json").write_text("{}")
    assert ot.build("open-replay") == 0  # there already: neither the world nor a model is touched
    assert "exists" in capsys.readouterr().out


def test_feature_probes_read_water_from_the_classifier_features_and_skips_a_kind_training_lacks(tmp_path,
                                                                                              tiny_classifier):
    import pandas as pd

    from core.demo.open_translator import feature_probes

    world, _, _ = small_open_world(tmp_path)
    meta = pd.read_csv(world / "metadata.csv", keep_default_na=False)
    held = meta[meta["split"] != "train"]  # the val field, the test snow, and the held-out objects on the lakes
    rows = pd.DataFrame({"image": held["img_filename"], "kinds": held["scene_kinds"].str.split().map(set)})
    rows["superclass"] = held["superclass"].map(lambda c: {c} if c else set())
    out = feature_probes(tiny_classifier, rows, world, kinds=("water", "snow"), at_recall={"water": 1.0},
                         superclass=True)
    water = out["water"]
    assert water["images"] == len(rows) and water["with_kind"] == sum("water" in k for k in rows["kinds"]) > 0
    assert water["auc"] > 0.8  # blue lakes against a green field, white snow and a plain white background
    assert water["at_recall"] == 1.0 and 0 <= water["false_at_recall"] <= 1
    assert "training images with and without the kind" in out["snow"]["skipped"]  # no trained scene shows snow
    # The trained dog and apple teach two superclasses: the held-out guitar and heron are neither, so only the
    # images of a trained object can be right.
    sc = out["superclass"]
    assert sc["superclasses"] == 2 and sc["accuracy"]["images"] == len(rows)
    assert 0 < sc["accuracy"]["rate"] <= rows["superclass"].map(lambda s: bool(s & {"dog", "food"})).mean()


def test_mixup_pick_pairs_two_objects_of_one_superclass_on_one_scene_photo():
    import pandas as pd

    from core.demo.open_translator import mixup_pick

    meta = pd.DataFrame({"img_filename": ["a1", "a2", "b1", "c1", "d1", "d2", "v1"],
                         "split": ["train"] * 6 + ["val"],
                         "scene": ["lake", "lake", "lake", "field", "lake", "lake", "lake"],
                         "things": ["apple", "banana", "dog", "cherry", "apple", "apple", "pear"],
                         "nouns": ["apple", "banana", "dog", "cherry", "apple", "apple", "pear"],
                         "n_objects": [1] * 7})
    pairs = mixup_pick(meta)
    # apple and banana on the lake pair up (food, one scene, two objects); the dog has no partner, the cherry is on
    # another scene, the two images of one apple pair only with the banana; the val pear is never drawn.
    assert {a for a, _ in pairs} == {"a1", "a2", "d1", "d2"}
    assert dict(pairs)["a2"] in {"a1", "d1", "d2"} and {dict(pairs)[x] for x in ("a1", "d1", "d2")} == {"a2"}
    assert mixup_pick(meta) == pairs  # drawn from the seed


def test_superclass_mixup_mixes_two_images_features_under_the_first_ones_superclass_caption(tmp_path,
                                                                                           tiny_classifier,
                                                                                           monkeypatch):
    """superclass_mixup: each pair's features lie between its two images' (every view, one weight in [0.3, 0.7]),
    its caption is the first image's superclass caption, its unlikely words are those neither image may say."""
    import pandas as pd
    import torch

    from core.data import load_rgb
    from core.demo import open_translator as ot
    from core.demo.worlds import open_world as ow
    from core.engine.train import VIEWS, compute_feature_views

    world, _, things = small_open_world(tmp_path, more_trained=("banana",))  # apple and banana: two foods
    monkeypatch.setattr(ow, "thing_catalog", lambda: things)
    z, caps, words = ot.superclass_mixup(tiny_classifier, world)
    meta = pd.read_csv(world / "metadata.csv", keep_default_na=False)
    pairs = [(str(world / a), str(world / b)) for a, b in ot.mixup_pick(meta)]
    assert 0 < len(caps) == len(pairs) == len(z) == len(words)
    first = ow.superclass_captions(world).drop_duplicates("path").set_index("path")["caption"]
    assert caps == [first[a] for a, _ in pairs] and all("food" in c.lower() for c in caps)
    f = compute_feature_views(tiny_classifier, [p for pair in pairs for p in pair], load_rgb, views=VIEWS)
    a, b = f[0::2], f[1::2]
    # z = lam * a + (1 - lam) * b, one lam per pair: solve it from the first view, check every view
    lam = ((z - b) * (a - b)).sum((1, 2)) / ((a - b) ** 2).sum((1, 2))
    assert torch.allclose(z, lam[:, None, None] * a + (1 - lam[:, None, None]) * b, atol=1e-4)
    assert ((lam > 0.3 - 1e-4) & (lam < 0.7 + 1e-4)).all()
    frame = ot.open_captions(world, superclass_captions=True)
    kinds = {str(world / g): str(k).split() for g, k in zip(meta["img_filename"], meta["scene_kinds"])}
    unlikely = dict(zip(frame.loc[frame["split"] == "train", "path"], ot.unlikely_scene_words(frame, kinds)))
    assert words == [unlikely[p] & unlikely[q] for p, q in pairs]


def test_the_evaluation_scores_the_held_out_kinds_asked_for_on_the_tiny_models(tmp_path, tiny_classifier, tiny_lm):
    """evaluate_open(held_out=("object",)) explains and scores the held-out objects' images only (the whole split's,
    for a tight interval, at the cost of the scenes'); headline leaves the scenes' measures empty."""
    import pytest
    import torch

    from core.demo import open_translator as ot
    from core.engine.config import ExplainConfig
    from core.models.translator import Translator, TranslatorConfig

    world, _, _ = small_open_world(tmp_path)
    torch.manual_seed(0)
    tr = Translator(TranslatorConfig(feature_dim=tiny_classifier.feature_dim, hidden_size=tiny_lm.hidden_size,
                                     prefix_length=2, mlp_hidden=16, classifier_identity=tiny_classifier.identity,
                                     classifier_name="tinynet", lm_identity=tiny_lm.identity)).eval()
    cfg = ExplainConfig(sentences_per_image=2, max_new_tokens=6, seed=0)
    rows = ot.explain_open_split(tiny_classifier, tr, tiny_lm, world, "test", cfg=cfg, held_out=("object",))
    assert len(rows) and set(rows["held_out"]) == {"object"}
    out = ot.evaluate_open(tiny_classifier, tr, tiny_lm, world, "test", cfg=cfg, probe=False, held_out=("object",))
    assert "held_out_scenes" not in out and out["held_out_objects"]["superclass_accuracy"]["images"] == len(rows)
    line = ot.headline(out)
    assert line["false_water_held_out_scenes"] is None and line["superclass_accuracy_held_out_objects"] is not None
    with pytest.raises(ValueError, match="held_out names"):
        ot.evaluate_open(tiny_classifier, tr, tiny_lm, world, "test", cfg=cfg, held_out=("objects",))


def test_an_open_gate_rules_water_out_where_the_features_show_none_and_saves_beside_its_translator(
        tmp_path, tiny_classifier, capsys):
    """fit_open_gate on the small world alone: the trained lakes and the plain background teach water and plain (no
    training image shows snow, so it is never gated); water is ruled out on the held-out green field and kept on
    the lakes. build_gate refuses a folder without its translator and keeps a gate that is there."""
    from dataclasses import replace

    import pandas as pd
    import pytest

    from core.data import load_rgb
    from core.demo import open_translator as ot
    from core.engine.train import compute_features
    from core.models.gate import SceneGate

    world, _, _ = small_open_world(tmp_path)
    gate = ot.fit_open_gate(tiny_classifier, world, general_world=None, threshold=0.2)
    assert {"water", "plain"} <= set(gate.kinds) and "skipped" in gate.fit["kinds"]["snow"]
    assert "lake" in gate.words["water"] and gate.classifier_identity == tiny_classifier.identity
    assert "folds of held-out photos" in gate.fit["strength"]  # chosen per photo where there are enough of them
    meta = pd.read_csv(world / "metadata.csv", keep_default_na=False)
    z = compute_features(tiny_classifier, [str(world / f) for f in meta["img_filename"]], load_rgb)
    water = pd.Series(gate.probabilities(z)[:, gate.kinds.index("water")].numpy(), index=meta["scene"])
    lakes = water[water.index.str.startswith("lake")]
    assert water["field"].max() < lakes.min()  # the tiny net's features are close: the order is what is learnt
    gate = replace(gate, threshold=float(water["field"].max() + lakes.min()) / 2)
    blocked = pd.Series(gate.blocked(z), index=meta["scene"])
    assert all("water" in b for b in blocked["field"]) and not any("water" in b for b in blocked[lakes.index])

    folder = tmp_path / "tr"
    with pytest.raises(FileNotFoundError, match="run `texplain maintain tr` first"):
        ot.build_gate(world, folder=folder)
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    gate.save(folder)
    assert ot.build_gate(world, folder=folder) == 0 and "exists" in capsys.readouterr().out
    assert SceneGate.load(folder).digest() == gate.digest()


def test_the_gate_learns_from_both_worlds_training_images_with_the_kinds_their_captions_show(tmp_path):
    """gate_training_kinds: every training image of the open and the general world (the replay mix), none of
    their val or test images, each with its scene's kinds and any kind one of its captions names."""
    import pandas as pd

    from core.demo.open_translator import gate_training_kinds, training_photos
    from core.demo.worlds import open_world as ow
    from core.demo.worlds.general import build_general_world, read_general_world

    world, _, _ = small_open_world(tmp_path)
    general = build_general_world(tmp_path / "general", n_images=12, workers=1, verbose=False)
    kinds = gate_training_kinds(world, general)
    caps, gcaps = ow.read_open_world(world), read_general_world(general)
    train = set(caps.loc[caps["split"] == "train", "path"]) | set(gcaps.loc[gcaps["split"] == "train", "path"])
    assert set(kinds) == train
    meta = pd.read_csv(world / "metadata.csv", keep_default_na=False)
    for f, listed in zip(meta["img_filename"], meta["scene_kinds"]):
        if str(world / f) in kinds:
            assert set(listed.split()) <= kinds[str(world / f)]
    said_water = gcaps[(gcaps["split"] == "train") & gcaps["caption"].str.contains(r"\b(?:lake|water|river)\b")]
    assert len(said_water) and all("water" in kinds[p] for p in said_water["path"])
    assert set(gate_training_kinds(world, None)) == set(caps.loc[caps["split"] == "train", "path"])
    # The photo behind each image, per world: what a gate's strength is chosen on, photos held out whole.
    photos = training_photos(world, general)
    assert set(kinds) <= set(photos)
    assert {photos[str(world / f)] for f in meta["img_filename"]} == {f"{world.name}:{s}" for s in meta["scene"]}
    gmeta = pd.read_csv(general / "metadata.csv", keep_default_na=False)
    assert all(photos[str(general / f)] == f"{general.name}:{s}" for f, s in zip(gmeta["img_filename"], gmeta["scene"]))
