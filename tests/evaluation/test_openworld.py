"""Open-world measures (core.evaluation.openworld) and the open caption world's builder (core.demo.worlds.open_world):
held-out scenes and objects are measured with fixed vocabularies, and the world keeps them out of training."""
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.engine.words import WordExtractor
from core.evaluation.openworld import (KIND_WORDS, SCENE_KINDS, kinds_of, named_kind, named_superclass,
                                       score_open_world, superclass_of)


@pytest.fixture(scope="module")
def ex():
    return WordExtractor()


def test_every_kind_has_words_and_no_word_names_two_kinds():
    assert set(KIND_WORDS) == set(SCENE_KINDS)
    seen = {}
    for kind, words in KIND_WORDS.items():
        assert words, kind
        for w in words:
            assert w not in seen, (w, kind, seen.get(w))
            seen[w] = kind


def test_named_kind_is_the_kind_used_most_and_a_tie_names_none(ex):
    counts = ex.count(["a bird by the lake", "a bird on the water", "a bird in the grass"])
    assert kinds_of(counts)["water"] == (2, 1) and named_kind(counts) == "water"
    assert named_kind(ex.count(["a dog on the grass by a lake"])) is None
    assert named_kind(ex.count(["a dog"])) is None


def test_superclasses_come_from_wordnet_most_specific_first():
    assert superclass_of("puppy") == "dog" and superclass_of("lion") == "cat" and superclass_of("wolf") == "carnivore"
    assert superclass_of("cow") == "hoofed mammal" and superclass_of("heron") == "bird"
    assert superclass_of("banana") == "food"  # the fruit, not the plant WordNet lists first
    assert superclass_of("guitar") == "musical instrument" and superclass_of("canoe") == "boat"
    assert superclass_of("grass") is None and superclass_of("tree") is None  # vegetation names the background
    # Colours are adjectives first: "green" is not the vegetable, "black" not a game piece.
    assert [superclass_of(w) for w in ("green", "white", "black", "blue")] == [None] * 4
    assert superclass_of("robin") == "bird" and superclass_of("crane") == "bird"


def test_superclasses_are_related_when_one_lies_under_the_other():
    from core.evaluation.openworld import superclasses_related

    assert superclasses_related("dog", "carnivore") and superclasses_related("mammal", "dog")
    assert superclasses_related("boat", "vehicle") and superclasses_related("food", "plant")
    assert not superclasses_related("dog", "cat") and not superclasses_related("boat", "food")
    assert not superclasses_related("bird", "mammal") and not superclasses_related("container", "food")
    with pytest.raises(ValueError, match="unknown superclass 'fruit'"):
        superclasses_related("fruit", "food")


def test_scores_held_out_scenes_false_water_and_superclasses(ex):
    sentences = {
        "a": ["a dog in the grass", "a dog on a green field", "a puppy in a meadow"],  # grass, right; dog, right
        "b": ["a cow by a lake", "a cow on the water", "a cow near the sea"],          # water, wrong; a cow: wrong
        "c": ["a dog in the snow", "a dog on the ice", "a dog by the lake"],           # snow, right; false water
        "d": ["a red apple on a wooden table", "an apple on wooden planks", "fruit"],  # wood, right
    }
    rows = pd.DataFrame({"image": list(sentences), "kinds": [{"grass"}, {"grass"}, {"snow"}, {"wood", "indoor"}],
                         "superclass": ["dog", "dog", {"dog", "bird"}, "food"],
                         "sentences": list(sentences.values()),
                         "counts": [ex.count(s) for s in sentences.values()]})
    out = score_open_world(rows, ex)
    assert out["scene_kind_accuracy"]["rate"] == 0.75 and out["images"] == 4
    assert out["false_scene_rate"]["water"]["rate"] == 0.5  # b and c show no water; both say it
    assert out["false_scene_rate"]["snow"]["rate"] == 0.0
    # The share of sentences: b says water in 3 of 3, c in 1 of 3, a and d never.
    assert out["false_scene_share"]["water"]["mean_share"] == round((1 + 1 / 3) / 4, 4)
    assert out["false_scene_share"]["water"]["quarter_or_more"]["rate"] == 0.5
    assert out["false_scene_share"]["grass"]["mean_share"] == 0.0  # c and d show no grass and none says it
    # What the false rates are bought with: a says grass, b does not; c says snow.
    assert out["kept_scene_rate"]["grass"]["rate"] == 0.5 and out["kept_scene_rate"]["snow"]["rate"] == 1.0
    assert "water" not in out["kept_scene_rate"]  # no image shows water
    assert out["superclass_accuracy"]["rate"] == 0.75
    assert out["superclass_confusions"][0] == {"truth": "dog", "said": "hoofed mammal", "images": 1}
    assert named_superclass(ex.count(["a cow and a dog", "a dog"])) == "dog"


def test_a_kind_shown_in_part_counts_neither_as_shown_nor_as_absent(ex):
    sentences = {"bay": ["a city skyline by the bay", "a city at night"],      # a strip of bay under a skyline
                 "street": ["a city street by the sea", "a busy street"],     # no water anywhere: false water
                 "harbour": ["boats in a harbour", "a city"],                 # water shown and said
                 "square": ["a city square", "a busy square"]}                # no water, none said
    rows = pd.DataFrame({"image": list(sentences), "kinds": [{"city"}, {"city"}, {"city", "water"}, {"city"}],
                         "partial": [frozenset({"water"}), frozenset(), frozenset(), frozenset({"sky"})],
                         "sentences": list(sentences.values()),
                         "counts": [ex.count(s) for s in sentences.values()]})
    out = score_open_world(rows, ex)
    assert out["false_scene_rate"]["water"]["images"] == 2  # street and square: the bay is left out
    assert out["false_scene_rate"]["water"]["rate"] == 0.5
    assert out["kept_scene_rate"]["water"]["images"] == 1  # nor is it counted as showing water
    assert out["shown_in_part"] == {"water": 1, "sky": 1}
    assert out["scene_kind_accuracy"]["rate"] == 1.0  # the kind named is still judged by the photo's own kinds
    without = score_open_world(rows.drop(columns="partial"), ex)
    assert without["false_scene_rate"]["water"]["rate"] == round(2 / 3, 4) and without["shown_in_part"] == {}


def test_the_catalogues_kinds_shown_in_part_are_kinds_and_not_the_photos_own():
    from core.demo.worlds import open_world as ow

    catalogue = {s["name"]: s for s in json.loads(ow.SCENES_FILE.read_text())}
    partial = ow.partial_kinds()
    assert "tuxtype_granite_beach" in partial and "water" in partial["tuxtype_granite_beach"]
    for name, kinds in partial.items():
        assert kinds and kinds <= set(SCENE_KINDS), name
        assert not kinds & set(catalogue[name]["kinds"]), name


def _png(path, colour, size=(40, 60), alpha=True):
    im = Image.new("RGBA" if alpha else "RGB", size, (*colour, 255) if alpha else colour)
    if alpha:
        px = np.asarray(im).copy()
        px[:5, :, 3] = 0  # a transparent margin, as a cut-out has
        im = Image.fromarray(px)
    im.save(path)
    return str(path)


def small_open_world(tmp_path, out="world", seed=3, workers=1, more_trained=()):
    """A 58-image open world: two trained lakes, a val field, a test snow slope, a plain background; two trained
    objects (and the nouns of `more_trained`), a val guitar and a test heron. Returns (world folder, scenes,
    things)."""
    from core.demo.worlds import open_world as ow

    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    scenes = [ow.OpenScene(f"lake{i}", "p-train", _png(src / f"lake{i}.png", (40, 90, 200), (300, 200), False),
                           frozenset({"water"}), ("a lake", "blue water", "a calm lake"), "train") for i in range(2)]
    scenes += [ow.OpenScene("field", "p-val", _png(src / "field.png", (60, 160, 60), (300, 200), False),
                            frozenset({"grass"}), ("a field", "green grass"), "val"),
               ow.OpenScene("snow", "p-test", _png(src / "snow.png", (240, 240, 250), (300, 200), False),
                            frozenset({"snow"}), ("snow", "a snowy slope"), "test"),
               ow.OpenScene("plain-white", "plain", "", frozenset({"plain"}), ("a plain white background",), "all",
                            (245, 245, 245))]
    things = [ow.Thing(f"clipart:{n}", f"a {n}", n, superclass_of(n), _png(src / f"{n}.png", c), sp)
              for n, c, sp in (("dog", (120, 80, 40), "train"), ("apple", (200, 30, 30), "train"),
                               ("guitar", (150, 100, 50), "val"), ("heron", (90, 90, 120), "test"),
                               *((n, (230, 200, 40), "train") for n in more_trained))]
    out = ow.build_open_world(tmp_path / out, seed=seed, scenes=scenes, things=things, workers=workers,
                              verbose=False, n_train=40, n_val=8, n_test=10)
    return out, scenes, things


def test_a_small_open_world_keeps_held_out_scenes_and_objects_out_of_training(tmp_path):
    from core.demo.worlds import open_world as ow

    out, scenes, things = small_open_world(tmp_path)
    meta = pd.read_csv(out / "metadata.csv", keep_default_na=False)
    caps = pd.read_csv(out / "captions.csv")
    assert len(meta) == 58 and (out / "images" / "00000.jpg").exists()
    assert json.loads((out / "dataset.json").read_text())["name"] == "world"  # not the temporary build folder's
    train = meta[meta["split"] == "train"]
    assert set(train["scene"]) <= {"lake0", "lake1", "plain-white"} and set(train["held_out"]) == {""}
    assert not train["nouns"].str.contains("guitar|heron").any()
    test = meta[meta["split"] == "test"]
    assert (test.loc[test["held_out"] == "scene", "scene"] == "snow").all()
    assert test.loc[test["held_out"] == "object", "nouns"].str.split().map(set(["heron"]).issuperset).all()
    assert (meta.loc[meta["scene"] == "snow", "scene_kinds"] == "snow").all()
    train_caps = caps[caps["split"] == "train"]["caption"].str.lower()
    assert not train_caps.str.contains("heron|guitar|snow").any()  # no held-out word in a training caption
    assert caps.groupby("img_filename").size().max() <= 4
    assert caps.groupby("img_filename")["caption"].agg(lambda c: c.is_unique).all()
    assert caps["caption"].nunique() > 0.5 * len(caps)  # varied wording, even with four objects and five scenes
    world = json.loads((out / "world.json").read_text())
    assert world["scenes"]["test"] == ["snow"] and world["objects"]["test"]["nouns"] == 1
    # Deterministic from the seed; another seed, another world.
    again = ow.build_open_world(tmp_path / "again", seed=3, scenes=scenes, things=things, workers=2, verbose=False,
                                n_train=40, n_val=8, n_test=10)
    assert (again / "captions.csv").read_text() == (out / "captions.csv").read_text()
    other = ow.build_open_world(tmp_path / "other", seed=4, scenes=scenes, things=things, workers=1, verbose=False,
                                n_train=40, n_val=8, n_test=10)
    assert (other / "captions.csv").read_text() != (out / "captions.csv").read_text()


def test_superclass_captions_rename_objects_by_words_that_read_back_as_their_superclass(tmp_path):
    from core.demo.worlds import open_world as ow

    for superclass, phrase in ow.SUPERCLASS_PHRASES.items():
        assert superclass_of(phrase.split()[-1]) == superclass, phrase
    apple = ow.Thing("clipart:apple", "a red apple", "apple", "food", "", "train")
    dog = ow.Thing("clipart:dog", "a black dog", "dog", "dog", "", "train")
    ball = ow.Thing("clipart:ball", "a ball", "ball", "sports equipment", "", "train")
    assert ow.superclass_rewording("A red apple by the sea.", [apple]) == "Some food by the sea."
    assert (ow.superclass_rewording("A photo of a black dog and an apple near a lake.", [dog, apple])
            == "A photo of a dog and some food near a lake.")
    assert ow.superclass_rewording("A ball on grass.", [ball]) is None  # no one word reads as its superclass

    out, _, things = small_open_world(tmp_path)
    extra = ow.superclass_captions(out, things)
    meta = pd.read_csv(out / "metadata.csv", keep_default_na=False)
    train = {str(out / f) for f in meta.loc[meta["split"] == "train", "img_filename"]}
    assert len(extra) == len(set(extra["path"])) and set(extra["path"]) <= train and len(extra) > len(train) // 2
    assert (extra["split"] == "train").all()
    said = extra["caption"].str.lower()
    assert said.str.contains("some food|a dog").all() and not said.str.contains("apple").any()


def test_images_inside_containers_are_read(tmp_path):
    import struct
    import zipfile

    from core.demo.worlds.containers import open_image

    pixels = bytes([10, 20, 30] * 6)  # a 3 x 2 RGB GIMP pattern
    name = b"brick\0"
    (tmp_path / "p.pat").write_bytes(struct.pack(">5I", 24 + len(name), 1, 3, 2, 3) + b"GPAT" + name + pixels)
    im = open_image(tmp_path / "p.pat", "gimp-pat")
    assert im.size == (3, 2) and im.getpixel((2, 1)) == (10, 20, 30)
    Image.new("RGB", (4, 4), (200, 0, 0)).save(tmp_path / "x.jpg")
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.write(tmp_path / "x.jpg", "Pictures/x.jpg")
    assert open_image(tmp_path / "a.zip", "zip", "Pictures/x.jpg").size == (4, 4)
    with pytest.raises(Exception, match="not a GIMP pattern"):
        open_image(tmp_path / "x.jpg", "gimp-pat")


def test_a_feature_probe_reads_a_kind_the_features_carry_and_not_one_they_do_not():
    from core.evaluation.openworld import feature_probe

    rng = np.random.default_rng(0)

    def world(n, signal):
        shown = rng.random(n) < 0.3
        z = rng.normal(size=(n, 16))
        z[:, 3] += signal * shown  # one direction carries the kind, as much as `signal` says
        return z, shown

    for signal, lo, hi in ((4.0, 0.95, 1.0), (0.0, 0.3, 0.7)):
        (ztr, ytr), (zte, yte) = world(600, signal), world(300, signal)
        out = feature_probe(ztr, ytr, zte, yte, at_recall=0.75)
        assert lo <= out["auc"] <= hi and out["images"] == 300 and out["with_kind"] == int(yte.sum())
        if signal:  # separable: it keeps nearly every image with the kind and flags almost none without it
            assert out["recall_at_max_false"] > 0.9 and out["false_at_recall"] < 0.05
        else:  # no signal: keeping 75% of them costs about 75% false
            assert out["recall_at_max_false"] < 0.4 and out["false_at_recall"] > 0.4
    with pytest.raises(ValueError, match="held-out images with and without the kind"):
        feature_probe(ztr, ytr, zte, np.zeros(len(zte), bool))


def test_a_superclass_probe_names_an_unseen_objects_superclass_from_features_that_carry_it():
    from core.evaluation.openworld import superclass_probe

    rng = np.random.default_rng(1)
    names = np.array(["dog", "bird", "vehicle"])

    def images(n):
        c = rng.integers(0, 3, n)
        z = rng.normal(size=(n, 12))
        z[np.arange(n), c] += 3.0  # each superclass has its direction
        return z, c

    ztr, ctr = images(300)
    zte, cte = images(120)
    train = [None if i % 10 == 0 else str(names[c]) for i, c in enumerate(ctr)]  # some images of several objects
    out = superclass_probe(ztr, train, zte, [{names[c]} | ({"food"} if i % 2 else set()) for i, c in enumerate(cte)])
    assert out["accuracy"]["rate"] > 0.85 and out["accuracy"]["images"] == 120
    assert out["training_images"] == 270 and out["superclasses"] == 3
    assert out["commonest"]["accuracy"]["rate"] < 0.5  # naming one superclass always
    # A lookup of the nearest training images reads the directions less well than the probe, but far above chance
    assert set(out["nearest_neighbours"]) == {"1", "20"}
    assert 0.5 < out["nearest_neighbours"]["1"]["rate"] <= out["nearest_neighbours"]["20"]["rate"] + 0.05
    # Features that carry nothing: about one in three.
    noise = superclass_probe(rng.normal(size=(300, 12)), train, zte, [{names[c]} for c in cte])
    assert noise["accuracy"]["rate"] < 0.55
    with pytest.raises(ValueError, match="two superclasses or more"):
        superclass_probe(ztr, ["dog"] * 300, zte, [{"dog"}] * 120)
