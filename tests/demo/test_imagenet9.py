"""The general caption world and the mini ImageNet-9: splits by stamp, variations readable, the class map exact."""
import json

import numpy as np
import pandas as pd
import pytest

from core import paths
from core.data import imagenet9 as in9
from core.data.readers import open_dataset
from core.demo.worlds import general as gw
from core.demo.worlds import imagenet9_mini as mini
from core.errors import StampWorldError

pytestmark = pytest.mark.demo

needs_stamps = pytest.mark.skipif(
    not gw.STAMPS_DIR.exists() or not (paths.SCENE_PHOTOS / "Path.jpg").exists(),
    reason="tuxpaint stamps or scene photos are missing; run `make setup`")


# --- the class map ---------------------------------------------------------------------------

def test_class_map_covers_exactly_the_imagenet9_ranges():
    mapping = in9.imagenet_to_in9()
    assert mapping.shape == (1000,) and (mapping >= 0).sum() == 370
    # Counts per class of the release's in_to_in9.json.
    assert np.bincount(mapping[mapping >= 0]).tolist() == [116, 52, 42, 36, 35, 27, 26, 20, 16]
    from core.models.classifier import imagenet_class_names

    names = imagenet_class_names()
    # Spot checks across the ranges' edges, by ImageNet's own names.
    expect = {0: "fish", 6: "fish", 7: "bird", 24: "bird", 33: "reptile", 68: "reptile", 151: "dog", 268: "dog",
              273: "carnivore", 280: "carnivore", 300: "insect", 326: "insect", 365: "primate", 384: "primate",
              389: "fish", 397: "fish", 402: "instrument", 407: "vehicle", 847: "vehicle", 889: "instrument"}
    for idx, cls in expect.items():
        assert in9.IN9_CLASSES[mapping[idx]] == cls, (idx, names[idx])
    for outside in (25, 171, 172, 281, 285, 327, 400, 999):  # salamander, two dogs the release leaves out, cats
        assert mapping[outside] == -1, (outside, names[outside])


def test_predictions_map_like_the_backgrounds_challenge():
    logits = np.zeros((3, 1000))
    logits[0, 8] = 5           # hen -> bird
    logits[1, 281] = 5         # tabby cat: none of the nine, so wrong whatever the label
    logits[1, 290] = 4         # ... though a jaguar is the best of the nine
    logits[2, 402] = 1         # acoustic guitar -> instrument
    assert in9.predict_in9(logits).tolist() == [1, -1, 6]
    assert in9.predict_in9(logits, restrict=True).tolist() == [1, 4, 6]
    with pytest.raises(ValueError, match=r"\(N, 1000\)"):
        in9.predict_in9(np.zeros((2, 9)))


def test_intervals_and_paired_gap():
    from core.analysis.stats import paired_gap, wilson_interval

    lo, hi = wilson_interval(45, 50)
    assert 0.78 < lo < 0.8 and 0.95 < hi < 0.97  # the textbook values for 45/50
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    same, rand = np.array([1] * 40 + [0] * 10), np.array([1] * 30 + [0] * 20)
    g = paired_gap(same, rand)
    assert g["gap"] == pytest.approx(0.2) and g["low"] > 0 and g["high"] < 0.35
    with pytest.raises(ValueError):
        paired_gap(same, rand[:-1])


# --- the stamp inventory ---------------------------------------------------------------------

@needs_stamps
def test_inventory_leaves_out_cartoons_shapes_and_own_backgrounds():
    usable, excluded = gw.stamp_inventory()
    keys = {s.key for s in usable}
    assert len(usable) + len(excluded) == sum(1 for _ in gw.STAMPS_DIR.rglob("*.png"))
    assert not any("cartoon" in k.split("/") for k in keys)
    assert not any(k.startswith(gw.TYPOGRAPHY) for k in keys)
    assert excluded["town/roadsigns/stoplight_01_red"].startswith("carries its own background")
    assert excluded["animals/birds/albino_peahen"].startswith("carries its own background")
    assert "animals/birds/owl" in keys and "hobbies/music/string/violin" in keys
    assert all(s.caption and s.object_name for s in usable)
    # Every reviewed name still points at a stamp of the package (a typo would silently keep a drawing).
    assert gw.DRAWINGS <= set(excluded) and gw.GROUND_PATCH <= set(excluded)


@needs_stamps
def test_in9_stamps_are_usable_and_in_one_class_each():
    stamps = mini.in9_stamps()
    keys = [s.key for ss in stamps.values() for s in ss]
    assert len(keys) == len(set(keys)) and all(stamps[c] for c in in9.IN9_CLASSES)
    assert all(set(names) <= set(gw.SCENES) for names in mini.IN9_SCENES.values())


# --- builds ----------------------------------------------------------------------------------

@needs_stamps
def test_general_world_splits_are_disjoint_by_stamp_and_deterministic(tmp_path):
    a = gw.build_general_world(tmp_path / "a", seed=3, n_images=120, workers=1, verbose=False)
    meta = pd.read_csv(a / "metadata.csv")
    stamps = {sp: set(meta.loc[meta.split == sp, "identity"]) for sp in ("train", "val", "test")}
    assert stamps["train"] and stamps["val"] and stamps["test"]
    assert not stamps["train"] & stamps["val"] and not stamps["train"] & stamps["test"]
    assert not stamps["val"] & stamps["test"]
    captions = pd.read_csv(a / "captions.csv")
    assert set(captions.img_filename) == set(meta.img_filename) and len(captions) == 3 * len(meta)
    # Every caption names its scene by one of the scene's descriptions, where scene_span finds it.
    named = captions.merge(meta[["img_filename", "scene"]], on="img_filename")
    spans = [gw.scene_span(c, sc) for c, sc in zip(named.caption, named.scene)]
    assert all(spans) and all(c[a:b].lower() in [d.lower() for d in gw.SCENES[sc].descriptions]
                              for (a, b), c, sc in zip(spans, named.caption, named.scene))
    assert gw.scene_span("A fox in the snow.", "plain-white") is None
    ds = open_dataset(a)
    assert len(ds) == 120 and set(ds.splits) == {"train", "val", "test"}
    # Same seed, same world; another seed, another one.
    b = gw.build_general_world(tmp_path / "b", seed=3, n_images=120, workers=2, verbose=False)
    assert (a / "captions.csv").read_text() == (b / "captions.csv").read_text()
    assert (a / "images/00007.jpg").read_bytes() == (b / "images/00007.jpg").read_bytes()
    c = gw.build_general_world(tmp_path / "c", seed=4, n_images=120, workers=1, verbose=False)
    assert (a / "captions.csv").read_text() != (c / "captions.csv").read_text()
    # Current: a second call is a no-op (the images keep their times).
    before = (a / "images/00000.jpg").stat().st_mtime_ns
    gw.build_general_world(tmp_path / "a", seed=3, n_images=120, workers=1, verbose=False)
    assert (a / "images/00000.jpg").stat().st_mtime_ns == before


@needs_stamps
def test_imagenet9_variations_read_back_through_open_dataset(tmp_path):
    root = mini.build_imagenet9_mini(tmp_path / "in9", seed=1, n_per_class=3, workers=2, verbose=False)
    plan = pd.read_csv(root / "in9_plan.csv")
    assert len(plan) == 27
    names = {}
    for variation in in9.VARIATIONS:
        ds = open_dataset(root, variation=variation)
        assert ds.kind == "backgrounds_challenge" and len(ds) == 27
        assert ds.class_names == list(in9.IN9_CLASSES)
        assert ds.class_synsets == list(in9.IN9_SYNSETS)  # the senses the concept words use
        frame = ds.to_frame()
        assert frame.groupby("label").size().tolist() == [3] * 9
        names[variation] = {(r.path.stem, ds.class_names[r.label]) for r in ds}
    assert all(n == names["original"] for n in names.values())  # one image name across variations
    assert names["original"] == set(zip(plan.image, plan.class_name))
    # mixed_same backgrounds come from the same class, never the image itself.
    by_image = plan.set_index("image")
    assert (by_image.loc[plan.mixed_same_background, "class_name"].to_numpy() == plan.class_name.to_numpy()).all()
    assert (plan.mixed_same_background != plan.image).all()
    # only_fg is the object on black; only_bg_t has no object left where it stood.
    from PIL import Image

    first = plan.iloc[0]
    fg = np.asarray(Image.open(root / "only_fg/val" / f"00_dog/{first.image}.JPEG"))
    assert (fg.max(axis=2) < 20).mean() > 0.2
    # The object masks (for the pointing game) are where only_fg shows the object.
    masks = mini.object_masks(root)
    for r in plan.itertuples():
        mask = np.asarray(Image.open(masks / f"{r.image}.png")) > 127
        shown = np.asarray(Image.open(next(root.glob(f"only_fg/val/*/{r.image}.JPEG"))).convert("L")) > 40
        assert (mask & shown).sum() / shown.sum() > 0.95 and 0.005 < mask.mean() < 0.8
    again = mini.build_imagenet9_mini(tmp_path / "again", seed=1, n_per_class=3, workers=1, verbose=False)
    for variation in in9.VARIATIONS:
        rel = f"{variation}/val/03_reptile/{plan[plan.label == 3].image.iloc[0]}.JPEG"
        assert (root / rel).read_bytes() == (again / rel).read_bytes()


def test_tiled_background_fills_the_box_from_its_surroundings():
    img = np.zeros((10, 10, 3), np.uint8)
    img[:, :] = 50
    img[3:6, 3:6] = 255  # the "object"
    out = mini.tiled_background(img, (3, 3, 6, 6))
    assert (out == 50).all()
    assert (mini.tiled_background(img, (0, 0, 10, 10)) == 0).all()


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(StampWorldError, match="no tuxpaint stamps"):
        gw.stamp_inventory(tmp_path)
    with pytest.raises(ValueError, match="n_per_class"):
        mini.build_imagenet9_mini(tmp_path / "x", n_per_class=1)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(StampWorldError, match="not a general world"):
        gw.build_general_world(tmp_path / "taken", n_images=20)
    assert json.loads(json.dumps(gw.asdict(gw.GeneralWorldSettings())))["n_images"] == 4000


def test_the_imagenet9_reading_of_a_classifier_predicts_as_xiao_et_al():
    """The superclass adapter's argmax is predict_in9's, in both readings; its features and feature
    identity are the base's (so the base's translator explains it), its identity is not."""
    import torch

    from core.models.classifier import from_module
    from core.models.superclass import SuperclassClassifier

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1000))
    base = from_module(net, [f"c{i}" for i in range(1000)], name="toy")
    x = torch.randn(64, 3, 2, 2)
    for restrict in (False, True):
        clf = mini.in9_classifier(base, restrict=restrict)
        z, logits = clf.features_and_logits(x)
        fine = base(x).detach().numpy()
        pred = logits.argmax(1).numpy()
        expected = in9.predict_in9(fine, restrict=restrict)
        if not restrict:
            expected = np.where(expected < 0, 9, expected)  # "none of the nine" is the tenth class
        assert (pred == expected).all()
        assert torch.equal(z, base.features(x)) and clf.feature_identity == base.feature_identity
        assert clf.identity != base.identity
        assert clf.class_names[:9] == list(in9.IN9_CLASSES) and len(clf.class_names) == 9 + (not restrict)
    with pytest.raises(Exception, match="shares fine classes"):
        SuperclassClassifier(base, {"a": [1, 2], "b": [2, 3]})
    with pytest.raises(Exception, match="1000-class"):
        mini.in9_classifier(from_module(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)),
                                       ["a", "b", "c"]))


@needs_stamps
def test_general_translator_trains_and_every_variation_is_explained(tmp_path, tiny_lm):
    """The explaining half end to end on a small build, a toy 1000-class classifier and the tiny LM: the
    translator trains on the general world's feature views and each variation becomes a complete run whose
    predictions are the ImageNet-9 reading."""
    import torch

    from core.demo.imagenet9 import explain_variations, train_general_translator
    from core.engine.config import ExplainConfig, TrainConfig
    from core.models.classifier import Preprocessing, from_module

    world = gw.build_general_world(tmp_path / "world", seed=1, n_images=40, workers=1, verbose=False)
    root = mini.build_imagenet9_mini(tmp_path / "in9", seed=1, n_per_class=2, workers=1, verbose=False)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 8),
                              torch.nn.ReLU(), torch.nn.Linear(8, 1000))
    base = from_module(net, [f"c{i}" for i in range(1000)], preprocessing=Preprocessing(resize=32, crop=32), name="toy")
    cfg = TrainConfig(epochs=1, max_steps=3, batch_size=4, prefix_length=2, mlp_hidden=16, device="cpu")
    tr = train_general_translator(base, tiny_lm, tmp_path / "translator", world, cfg, tmp_path / "work",
                                  views=("identity", "flip"))
    # The refinement ran from the first stage, on every plain-background pair and as many photo pairs.
    from core.demo.imagenet9 import GENERAL_REFINE, general_refine_pairs

    refine = general_refine_pairs(world)
    meta = pd.read_csv(world / "metadata.csv")
    on_plain = {str(world / f) for f in meta.loc[meta["scene"].str.startswith(gw.PLAIN_PREFIX), "img_filename"]}
    plain = gw.read_general_world(world).query("split == 'train'")["path"].isin(on_plain).to_numpy()
    assert plain[refine].sum() == plain.sum() == len(refine) // 2 and len(refine) < len(plain)
    assert tr.config.training["refine_stage"] == 1 and tr.config.training["train_pairs"] == len(refine)
    assert tr.config.training["settings"]["lr"] == GENERAL_REFINE["lr"]
    assert tr.config.training["started_from"]["settings"]["max_steps"] == 3  # the first stage's
    clf = mini.in9_classifier(base)
    runs = explain_variations(clf, tr, tiny_lm, root, tmp_path / "runs",
                              ExplainConfig(sentences_per_image=2, max_new_tokens=4, device="cpu"),
                              variations=("original", "mixed_rand"), per_class=1)
    ids = {}
    for variation, run in runs.items():
        images = run.images()
        assert run.status == "complete" and len(images) == 9, variation  # one image of each class
        ids[variation] = sorted(i.split("/", 1)[1] for i in images["image_id"])  # ids start with the variation
        assert set(images["prediction_name"]) <= set(clf.class_names)
    assert ids["original"] == ids["mixed_rand"]  # the same photos, other backgrounds

    # The evaluation scores 4 and 8 sentences from one run of 8, taking a run of 4 to be its first 4 sentences
    # (counter-based sampling): that must hold sentence for sentence.
    from dataclasses import replace

    from core.demo.imagenet9 import evaluate_general_translator, explain_general_split

    few = ExplainConfig(sentences_per_image=4, max_new_tokens=4, device="cpu")
    four = explain_general_split(base, tr, tiny_lm, world, limit=6, cfg=few)
    eight = explain_general_split(base, tr, tiny_lm, world, limit=6, cfg=replace(few, sentences_per_image=8))
    assert [ss[:4] for ss in eight["sentences"]] == list(four["sentences"])
    assert eight["sentences"].map(len).tolist() == [8] * 6 and eight["sentences"].map(set).map(len).max() > 1
    got = evaluate_general_translator(base, tr, tiny_lm, world, limit=6, cfg=few, more_sentences=8)
    assert (got["images"], got["sentences_per_image"], got["more_sentences"]["sentences_per_image"]) == (6, 4, 8)
    assert "more_sentences" not in evaluate_general_translator(base, tr, tiny_lm, world, limit=2, cfg=few,
                                                               more_sentences=None)


def test_words_map_to_the_imagenet9_class_wordnet_puts_them_under():
    from core.demo.imagenet9 import superclass_of_words

    got = superclass_of_words(["terrier", "dog", "cat", "lion", "parrot", "bus", "guitar", "gorilla", "salmon",
                               "beetle", "iguana", "tree", "water"])
    assert got == {"terrier": "dog", "dog": "dog", "cat": "carnivore", "lion": "carnivore", "parrot": "bird",
                   "bus": "vehicle", "guitar": "instrument", "gorilla": "primate", "salmon": "fish",
                   "beetle": "insect", "iguana": "reptile"}  # "tree" and "water" name no class


def test_superclass_word_accuracy_counts_the_right_class_and_unseen_stamps(tmp_path):
    from types import SimpleNamespace

    from core.demo.imagenet9 import superclass_word_accuracy

    images = pd.DataFrame({"image_id": ["original/val/00_dog/a.JPEG", "original/val/01_bird/b.JPEG",
                                        "original/val/08_fish/c.JPEG"], "label": [0, 1, 8]})
    words = pd.DataFrame({"image_id": [images.image_id[0]] * 2 + [images.image_id[1]] * 2 + [images.image_id[2]],
                          "word": ["puppy", "grass", "parrot", "lion", "grass"], "count": [3, 5, 1, 4, 2],
                          "sentences": [3, 5, 1, 4, 2]})
    (tmp_path / "plan.csv").write_text("image,stamp\na,dogs/dog\nb,birds/parrot\nc,fish/trout\n")
    run = SimpleNamespace(images=lambda: images, words=lambda: words)
    got = superclass_word_accuracy(run, stamps_seen={"dogs/dog"}, plan=tmp_path / "plan.csv")
    # the dog is named; the bird's sentences say "lion" more often than "parrot"; the fish is not named
    assert got["right_superclass"] == pytest.approx(1 / 3, abs=1e-4)
    assert got["names_its_superclass"] == pytest.approx(2 / 3, abs=1e-4)
    assert got["unseen_images"] == 2 and got["unseen_stamps"] == 2 and got["right_superclass_unseen"] == 0.0


def test_unseen_superclass_words_are_scored_per_stamp_as_well_as_per_photo(tmp_path):
    """One stamp with many photos (the mini ImageNet-9's only dog) must not stand for all unseen stamps."""
    from types import SimpleNamespace

    from core.demo.imagenet9 import superclass_word_accuracy

    ids = [f"only_fg/val/00_dog/d{i}.JPEG" for i in range(3)] + ["only_fg/val/01_bird/b.JPEG"]
    images = pd.DataFrame({"image_id": ids, "label": [0, 0, 0, 1]})
    words = pd.DataFrame({"image_id": ids, "word": ["cow", "cow", "cow", "parrot"], "count": 1, "sentences": 1})
    (tmp_path / "plan.csv").write_text("image,stamp\nd0,dogs/dog\nd1,dogs/dog\nd2,dogs/dog\nb,birds/parrot\n")
    run = SimpleNamespace(images=lambda: images, words=lambda: words)
    got = superclass_word_accuracy(run, stamps_seen=set(), plan=tmp_path / "plan.csv")
    assert got["right_superclass_unseen"] == 0.25  # photos: 1 of 4
    assert got["right_superclass_unseen_per_stamp"] == 0.5  # stamps: the parrot right, the dog not
    assert got["unseen_by_stamp"]["dogs/dog"] == {"class": "dog", "images": 3, "right": 0.0}


def test_general_evaluation_reads_each_image_by_its_most_frequent_words():
    from core.demo.imagenet9 import score_general_split

    scene_vocab = {"lake": ["lake", "water"], "plain-red": ["red"], "plain-pink": ["pink"], "plain-blue": ["blue"],
                   "plain-light-blue": ["blue", "light"], "sky": ["blue", "cloud", "sky"]}
    kind_vocab = {"animals/birds": ["heron"], "food/fruit": ["apple"]}
    explained = pd.DataFrame([
        # red in every sentence, pink once: red (presence alone would call it a tie)
        {"image": "a", "stamp": "s1", "scene": "plain-red", "kind": "animals/birds",
         "sentences": ["A heron on a plain red background.", "An empty backdrop.", "A heron."],
         "counts": {"red": (15, 15), "pink": (1, 1), "heron": (3, 3)}},
        # lake words 4 times against red 4 times: a tie reads as nothing
        {"image": "b", "stamp": "s2", "scene": "lake", "kind": "food/fruit", "sentences": ["A plainly red lake.", "y"],
         "counts": {"lake": (2, 2), "water": (2, 2), "red": (4, 4)}},
        {"image": "c", "stamp": "s2", "scene": "lake", "kind": "food/fruit", "sentences": [],
         "counts": {"water": (5, 5), "apple": (1, 1)}},
        # "blue" alone ties plain blue with light blue and the sky: the name the sentences cover whole wins
        {"image": "d", "stamp": "s3", "scene": "plain-blue", "kind": "animals/birds",
         "sentences": ["A heron against an empty blue backdrop."] * 16,
         "counts": {"blue": (16, 16), "heron": (16, 16)}},
    ])
    got = score_general_split(explained, scene_vocab, kind_vocab)
    assert got["scene_accuracy"] == 0.75 and got["images"] == 4 and got["unseen_stamps"] == 3
    assert got["scene_accuracy_plain"] == 1.0 and got["scene_accuracy_photos"] == 0.5
    assert got["object_kind_accuracy"] == 0.75
    assert got["scene_confusions"] == [{"truth": "lake", "said": None, "images": 1}]
    # Most of a's sentences call its background plain or empty; "plainly" is not "plain", and c has none.
    assert got["background_called_plain"]["plain_scenes"] == 1.0
    assert got["background_called_plain"]["photo_scenes"] == 0.0
    lo, hi = got["scene_accuracy_ci95"]
    assert lo < 0.75 < hi


@needs_stamps
def test_scene_vocabularies_hold_only_words_of_the_scenes_own_descriptions(tmp_path):
    """In a small world chance pairings abound (a stamp drawn on one colour more often than elsewhere): its
    caption words pass the contrast but are no scene words, and they are left out."""
    from core.demo.imagenet9 import general_vocabularies
    from core.engine.words import WordExtractor

    world = gw.build_general_world(tmp_path / "w", seed=3, n_images=120, workers=1, verbose=False)
    raw, _ = general_vocabularies(world, scene_words_from_descriptions=False)
    kept, kinds = general_vocabularies(world)
    ex = WordExtractor()
    described = {n: {w for d in sc.descriptions for w in ex.words(d)} for n, sc in gw.SCENES.items()}
    assert any(set(ws) - described[n] for n, ws in raw.items())  # the pairings contrast alone lets in
    assert all(set(ws) <= described[n] for n, ws in kept.items())
    assert all(kept[n] == [w for w in raw[n] if w in described[n]] for n in raw)  # nothing else changes
    assert kept["plain-red"] == ["red"] and kinds


@needs_stamps
def test_scene_probe_finds_what_the_features_hold(tmp_path):
    """Pooled pixels hold a plain background's colour; features that ignore the image hold nothing."""
    import torch

    from core.demo.imagenet9 import scene_probe
    from core.models.classifier import Preprocessing, from_module

    world = gw.build_general_world(tmp_path / "world", seed=3, n_images=120, plain_share=0.7, workers=1,
                                   verbose=False)

    class Blind(torch.nn.Module):  # features from a fixed random stream, whatever the image
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(48, 1000)
            self.g = torch.Generator().manual_seed(0)

        def forward(self, x):
            return self.head(torch.randn(x.shape[0], 48, generator=self.g))

    pixels = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 1000))
    pre = Preprocessing(resize=32, crop=32)
    seeing = scene_probe(from_module(pixels, [f"c{i}" for i in range(1000)], preprocessing=pre, name="px"), world)
    blind = scene_probe(from_module(Blind(), [f"c{i}" for i in range(1000)], preprocessing=pre, name="blind"), world)
    assert seeing["images"] == blind["images"] > 0 and seeing["features"] == 48
    assert seeing["plain_colour_accuracy"] >= 0.5 > blind["plain_colour_accuracy"] + 0.2


def test_the_general_evaluation_keeps_what_each_step_wrote(tmp_path):
    from core.demo.imagenet9 import update_evaluation

    out = tmp_path / "evaluation.json"
    update_evaluation(out, scene_accuracy=0.5, images=10)
    update_evaluation(out, imagenet9_superclass_words={"only_fg": {"right_superclass": 0.7}})
    update_evaluation(out, scene_accuracy=0.6, images=12)  # general-evaluation run again, after the runs
    assert json.loads(out.read_text()) == {"scene_accuracy": 0.6, "images": 12,
                                           "imagenet9_superclass_words": {"only_fg": {"right_superclass": 0.7}}}
