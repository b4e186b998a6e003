"""Dataset readers and the demo world: each test builds its own tiny dataset in tmp_path."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import paths
from core.data import (DatasetError, open_dataset, read_backgrounds_challenge, read_caption_csv, read_coco_captions,
                       read_image_folder, read_waterbirds)
from core.demo.worlds import waterbirds_mini as demo
from core.demo.worlds.waterbirds_mini import build_demo_world, demo_class_names


def make_image(path, color=(200, 30, 30), size=(10, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def make_waterbirds(root, rows=None):
    """A four-image Waterbirds folder, one image per group, splits train/train/val/test.

    Like the real file it lists the Places photo behind each bird (place_filename): that column is
    what tells open_dataset the folder is Waterbirds."""
    rows = rows or [(1, "001.Albatross/a.jpg", 1, 0, 1), (2, "001.Albatross/b.jpg", 1, 0, 0),
                    (3, "002.Sparrow/c.jpg", 0, 1, 1), (4, "002.Sparrow/d.jpg", 0, 2, 0)]
    for _, f, *_ in rows:
        make_image(root / f)
    frame = pd.DataFrame(rows, columns=["img_id", "img_filename", "y", "split", "place"])
    frame.assign(place_filename="/o/ocean/00001.jpg").to_csv(root / "metadata.csv", index=False)
    return root


# --- Waterbirds ------------------------------------------------------------------------------

def test_read_waterbirds_records_groups_and_splits(tmp_path):
    ds = read_waterbirds(make_waterbirds(tmp_path / "wb"))
    assert (ds.kind, len(ds), ds.splits) == ("waterbirds", 4, ["train", "val", "test"])
    assert ds.class_names == ["landbird", "waterbird"]
    assert ds.group_names[1] == "landbird · background: water"
    assert (ds.attribute.name, ds.attribute.values) == ("background", ("land", "water"))
    by_id = {r.image_id: r for r in ds.records}
    assert (by_id["1"].label, by_id["1"].place, by_id["1"].group) == (1, 1, 3)  # waterbird on water
    assert (by_id["3"].split, by_id["3"].group) == ("val", 1)                   # landbird on water
    assert by_id["4"].path == tmp_path / "wb" / "002.Sparrow/d.jpg"

    train = ds.split("train")
    assert len(train) == 2 and {r.split for r in train.records} == {"train"}
    frame = ds.to_frame()
    assert list(frame.columns[:4]) == ["image_id", "path", "split", "label"]
    assert frame.set_index("image_id").loc["2", "group_name"] == "waterbird · background: land"
    image = ds.load_image(by_id["1"])
    assert (image.mode, image.size) == ("RGB", (10, 8))


def test_unknown_split_names_the_available_ones(tmp_path):
    ds = read_waterbirds(make_waterbirds(tmp_path / "wb"))
    with pytest.raises(DatasetError, match=r"no split 'validation'.*\['train', 'val', 'test'\]"):
        ds.split("validation")


def test_waterbirds_missing_column_is_named(tmp_path):
    root = make_waterbirds(tmp_path / "wb")
    pd.read_csv(root / "metadata.csv").drop(columns=["place"]).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(DatasetError, match=r"metadata\.csv lacks the column\(s\) \['place'\]"):
        read_waterbirds(root)


def test_waterbirds_missing_images_are_listed(tmp_path):
    root = make_waterbirds(tmp_path / "wb")
    (root / "002.Sparrow/d.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 of 4 images .* missing: .*002\.Sparrow/d\.jpg"):
        read_waterbirds(root)


def test_waterbirds_bad_split_value(tmp_path):
    root = make_waterbirds(tmp_path / "wb", rows=[(1, "a.jpg", 0, 7, 0)])
    with pytest.raises(DatasetError, match="split"):
        read_waterbirds(root)


@pytest.mark.parametrize("content", [b"not an image at all", None])
def test_corrupt_image_error_names_the_file(tmp_path, content):
    root = make_waterbirds(tmp_path / "wb")
    bad = root / "001.Albatross/a.jpg"
    if content is None:  # a truncated JPEG: its header opens, its pixels do not
        Image.new("RGB", (64, 64), (10, 200, 10)).save(bad, quality=90)
        bad.write_bytes(bad.read_bytes()[:300])
    else:
        bad.write_bytes(content)
    ds = read_waterbirds(root)
    with pytest.raises(DatasetError, match=r"a\.jpg"):
        ds.load_image(next(r for r in ds.records if r.path == bad))


# --- ImageFolder -----------------------------------------------------------------------------

def test_image_folder_without_splits(tmp_path):
    for name in ("b1.png", "b2.png"):
        make_image(tmp_path / "pets" / "dog" / name)
    make_image(tmp_path / "pets" / "cat" / "deep" / "c1.jpg")  # nested images belong to their class
    ds = read_image_folder(tmp_path / "pets")
    assert ds.class_names == ["cat", "dog"] and ds.splits == ["all"]
    labels = {r.image_id: ds.class_names[r.label] for r in ds.records}
    assert labels == {"cat/deep/c1.jpg": "cat", "dog/b1.png": "dog", "dog/b2.png": "dog"}
    assert ds.group_names is None and ds.records[0].group is None


def test_image_folder_with_split_folders(tmp_path):
    for split in ("train", "val", "test"):
        for cls in ("cat", "dog"):
            make_image(tmp_path / "pets" / split / cls / "x.png")
    ds = read_image_folder(tmp_path / "pets")
    assert ds.splits == ["train", "val", "test"] and ds.class_names == ["cat", "dog"]
    assert len(ds.split("val")) == 2


def test_image_folder_empty_class_is_an_error(tmp_path):
    make_image(tmp_path / "pets" / "dog" / "a.png")
    (tmp_path / "pets" / "cat").mkdir()
    with pytest.raises(DatasetError, match=r"cat has no images"):
        read_image_folder(tmp_path / "pets")


def test_image_folder_without_class_folders(tmp_path):
    make_image(tmp_path / "loose" / "a.png")
    with pytest.raises(DatasetError, match="one subfolder per class"):
        read_image_folder(tmp_path / "loose")


# --- Backgrounds Challenge -------------------------------------------------------------------

def make_backgrounds(root):
    for variation in ("original", "mixed_rand", "only_fg"):
        for cls in ("00_dog", "01_bird", "02_wheeled vehicle"):
            make_image(root / variation / "val" / cls / f"{variation}_{cls[:2]}.JPEG")
    (root / "fg_mask" / "val" / "00_dog").mkdir(parents=True)
    (root / "fg_mask" / "val" / "00_dog" / "m.npy").write_bytes(b"\x93NUMPY")
    return root


def test_backgrounds_challenge_variations(tmp_path):
    root = make_backgrounds(tmp_path / "bg_challenge")
    ds = read_backgrounds_challenge(root, "only_fg")
    assert ds.kind == "backgrounds_challenge" and ds.splits == ["val"]
    assert ds.class_names == ["dog", "bird", "wheeled vehicle"]
    assert all("only_fg" in r.image_id for r in ds.records) and len(ds) == 3
    assert read_backgrounds_challenge(root).name.endswith("mixed_rand")  # the default variation
    with pytest.raises(DatasetError, match=r"no variation 'no_fg'.*\['mixed_rand', 'only_fg', 'original'\]"):
        read_backgrounds_challenge(root, "no_fg")


# --- open_dataset ----------------------------------------------------------------------------

def test_open_dataset_detects_each_layout(tmp_path):
    assert open_dataset(make_waterbirds(tmp_path / "wb")).kind == "waterbirds"
    assert open_dataset(tmp_path / "wb" / "metadata.csv").kind == "waterbirds"
    bg = open_dataset(make_backgrounds(tmp_path / "bg"), variation="original")
    assert (bg.kind, bg.name) == ("backgrounds_challenge", "bg/original")
    make_image(tmp_path / "folder" / "cat" / "a.png")
    assert open_dataset(tmp_path / "folder").kind == "image_folder"


@pytest.mark.parametrize("layout", ["empty", "text files", "missing"])
def test_open_dataset_explains_what_it_expects(tmp_path, layout):
    root = tmp_path / "notes"
    if layout != "missing":
        root.mkdir()
    if layout == "text files":
        (root / "readme.txt").write_text("hello")
    with pytest.raises(DatasetError) as err:
        open_dataset(root)
    message = str(err.value)
    assert "notes" in message
    if layout != "missing":
        assert "metadata.csv" in message and "ImageFolder" in message and "Backgrounds Challenge" in message


# --- captions --------------------------------------------------------------------------------

def test_read_coco_captions(tmp_path):
    make_image(tmp_path / "val2017" / "000001.jpg")
    make_image(tmp_path / "val2017" / "000002.jpg")
    coco = {"images": [{"id": 1, "file_name": "000001.jpg"}, {"id": 2, "file_name": "000002.jpg"}],
            "annotations": [{"image_id": 1, "caption": "A dog on a beach. "},
                            {"image_id": 1, "caption": "A brown dog near the sea."},
                            {"image_id": 2, "caption": "Two birds in a tree."}]}
    json_file = tmp_path / "captions_val2017.json"
    json_file.write_text(json.dumps(coco))
    frame = read_coco_captions(json_file, tmp_path / "val2017")
    assert len(frame) == 3 and set(frame.split) == {"val"}
    assert frame.caption.iloc[0] == "A dog on a beach."
    assert frame.path.iloc[2] == str(tmp_path / "val2017" / "000002.jpg")

    coco["annotations"].append({"image_id": 9, "caption": "orphan"})
    json_file.write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match=r"image ids that are not in 'images', e\.g\. \[9\]"):
        read_coco_captions(json_file, tmp_path / "val2017")


def test_read_coco_captions_karpathy_split_file(tmp_path):
    make_image(tmp_path / "coco" / "train2014" / "a.jpg")
    data = {"images": [{"filepath": "train2014", "filename": "a.jpg", "split": "restval", "cocoid": 5,
                        "sentences": [{"raw": "A cat."}, {"raw": "A sleeping cat."}]}]}
    (tmp_path / "dataset_coco.json").write_text(json.dumps(data))
    frame = read_coco_captions(tmp_path / "dataset_coco.json", tmp_path / "coco")
    assert frame.caption.tolist() == ["A cat.", "A sleeping cat."] and set(frame.split) == {"train"}


def test_read_caption_csv(tmp_path):
    make_image(tmp_path / "data" / "img" / "a.jpg")
    absolute = make_image(tmp_path / "elsewhere" / "b.jpg")
    csv = tmp_path / "data" / "captions.csv"
    pd.DataFrame({"path": ["img/a.jpg", str(absolute)],
                  "caption": ["A duck on a lake.", "A crow."]}).to_csv(csv, index=False)
    frame = read_caption_csv(csv)
    assert frame.path.tolist() == [str(tmp_path / "data" / "img" / "a.jpg"), str(absolute)]
    assert "split" not in frame.columns

    pd.DataFrame({"img_filename": ["img/a.jpg"], "caption": ["x"], "split": ["train"]}).to_csv(csv, index=False)
    assert read_caption_csv(csv).split.tolist() == ["train"]  # Waterbirds-style name for the path column

    pd.DataFrame({"path": ["img/a.jpg"], "text": ["A duck."]}).to_csv(csv, index=False)
    with pytest.raises(DatasetError, match=r"captions\.csv lacks the column\(s\) \['caption'\]"):
        read_caption_csv(csv)


# --- the demo world --------------------------------------------------------------------------

def test_scene_descriptions_use_only_their_place_words():
    for name, scene in demo.SCENES.items():
        for text in scene.all_descriptions:
            words = demo.caption_words(text)
            assert words & set(demo.SCENE_WORDS[scene.place]), (name, text)
            assert not words & set(demo.SCENE_WORDS[1 - scene.place]), (name, text)
    assert demo.WATER_BIRDS.isdisjoint(demo.LAND_BIRDS)
    assert set(demo.BIRD_NAMES) == demo.WATER_BIRDS | demo.LAND_BIRDS
    assert demo_class_names() == ["landbird", "waterbird"]


SMALL = dict(n_train=80, n_val=16, n_test=24, captions_per_image=6, workers=1, verbose=False)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    missing = demo.missing_photos(paths.BIRD_PHOTOS, paths.SCENE_PHOTOS)
    if not (paths.PHOTOS / ".done").exists() or missing:
        pytest.skip(f"the bird and scene photos are not prepared ({len(missing)} missing): run `make setup`")
    return build_demo_world(tmp_path_factory.mktemp("demo") / "world", seed=3, **SMALL)


def test_demo_world_groups_and_splits(small_world):
    ds = read_waterbirds(small_world)
    meta = pd.read_csv(small_world / "metadata.csv")
    assert len(ds) == 80 + 16 + 24 and ds.splits == ["train", "val", "test"]
    for split, n in (("train", 80), ("val", 16), ("test", 24)):
        groups = pd.Series([r.group for r in ds.split(split).records]).value_counts()
        assert set(groups.index) == {0, 1, 2, 3} and groups.sum() == n
        if split != "train":
            assert set(groups) == {n // 4}, groups  # balanced
    train = meta[meta.split == 0]
    for y in (0, 1):
        cls = train[train.y == y]
        assert abs((cls.place == y).mean() - 0.95) <= 1 / len(cls), "95% on the matching background"
    assert (meta.y == meta.bird.isin(demo.WATER_BIRDS)).all()
    scene_place = {sc.file: sc.place for sc in demo.SCENES.values()}
    assert (meta.place == meta.place_filename.map(scene_place)).all()


def test_demo_world_keeps_birds_and_crops_apart(small_world):
    meta = pd.read_csv(small_world / "metadata.csv")
    birds = {code: set(meta.bird[meta.split == code]) for code in (0, 1, 2)}
    # Three ways: a head refit on val (DFR) must meet new birds on test too.
    assert birds[0].isdisjoint(birds[2]) and birds[0].isdisjoint(birds[1]) and birds[1].isdisjoint(birds[2])
    heron = {"heron_greatblue", "heron_greatblue_flying"}
    assert sum(bool(heron & b) for b in birds.values()) <= 1, "both heron poses in one split"
    sizes = {sc.file: Image.open(paths.SCENE_PHOTOS / sc.file).size for sc in demo.SCENES.values()}
    for row in meta.itertuples():
        x0, _, x1, _ = map(int, row.crop.split()[:4])
        half = sizes[row.place_filename][0] / 2
        assert (x1 <= half) if row.split == 0 else (x0 >= half), row


def test_demo_world_images_and_captions(small_world):
    meta = pd.read_csv(small_world / "metadata.csv")
    image = Image.open(small_world / meta.img_filename.iloc[0])
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (256, 256))

    captions = read_caption_csv(small_world / "captions.csv")
    raw = pd.read_csv(small_world / "captions.csv").merge(meta, on="img_filename")
    assert len(captions) == len(raw) == 6 * len(meta) and set(captions.split) == {"train", "val", "test"}
    assert raw.groupby("img_filename").caption.nunique().eq(6).all()
    stamps = json.loads((paths.BIRD_PHOTOS / "captions.json").read_text())
    for row in raw.itertuples():
        text = row.caption.lower()
        names = [re.sub(r"^an? ", "", n.lower()) for n in demo.BIRD_NAMES[row.bird]]
        assert any(n in text for n in names) or stamps[row.bird].lower() in text, row.caption
        assert demo.caption_words(text) & set(demo.SCENE_WORDS[row.place]), row.caption
        assert len(row.caption.split()) <= 20, row.caption
    def skeleton(row):  # the caption with its bird and scene taken out: what is left is its phrasing
        text = row.caption.lower()
        for phrase in sorted(demo.SCENES[demo_scene[row.place_filename]].all_descriptions, key=len, reverse=True):
            text = text.replace(phrase.lower(), "<scene>")
        for name in sorted([*demo.BIRD_NAMES[row.bird], stamps[row.bird].rstrip(".")], key=len, reverse=True):
            text = text.replace(name.lower(), "<bird>")
        return text

    demo_scene = {sc.file: name for name, sc in demo.SCENES.items()}
    phrasings = raw.apply(skeleton, axis=1)
    assert phrasings.str.contains("<scene>").all() and phrasings.str.contains("<bird>").all()
    assert phrasings.nunique() >= 14, "captions vary their phrasing"


def test_demo_world_is_deterministic_and_idempotent(small_world, tmp_path):
    stamp = (small_world / "metadata.csv").stat().st_mtime_ns
    assert build_demo_world(small_world, seed=3, **SMALL) == small_world
    assert (small_world / "metadata.csv").stat().st_mtime_ns == stamp, "an up-to-date world is not rebuilt"

    again = build_demo_world(tmp_path / "again", seed=3, **SMALL)
    for name in ("metadata.csv", "captions.csv"):
        assert (again / name).read_text() == (small_world / name).read_text()
    other = build_demo_world(tmp_path / "other", seed=4, **SMALL)
    assert (other / "metadata.csv").read_text() != (small_world / "metadata.csv").read_text()
    world = json.loads((other / "world.json").read_text())
    assert world["seed"] == 4 and world["version"] == demo.DEMO_VERSION
    # Built in a temporary folder, described under its final name (runs record it as the dataset's name).
    assert json.loads((other / "dataset.json").read_text())["name"] == "other"


def test_demo_world_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(demo.DemoWorldError, match="not a demo world"):
        build_demo_world(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_larger_birds_change_only_the_birds_size(small_world, tmp_path):
    larger = build_demo_world(tmp_path / "larger", seed=3, bird_size=(0.7, 0.9), **SMALL)
    assert json.loads((larger / "world.json").read_text())["bird_size"] == [0.7, 0.9]
    assert "bird_size" not in json.loads((small_world / "world.json").read_text())  # the shipped worlds' files
    meta = pd.read_csv(small_world / "metadata.csv")
    assert pd.read_csv(larger / "metadata.csv").equals(meta)  # the same birds on the same crops
    small_masks, larger_masks = demo.object_masks(small_world), demo.object_masks(larger)
    for f in meta.img_filename.head(8):
        mask = f.replace(".jpg", ".png")
        assert (np.asarray(Image.open(larger_masks / mask)) > 127).mean() \
            > 1.3 * (np.asarray(Image.open(small_masks / mask)) > 127).mean()
    with pytest.raises(ValueError, match="bird_size"):
        build_demo_world(tmp_path / "bad", bird_size=(0.9, 0.2), **SMALL)


def test_a_place_swapped_image_keeps_its_bird_on_the_other_background(small_world, tmp_path):
    from scipy.ndimage import binary_erosion

    meta = pd.read_csv(small_world / "metadata.csv")
    picked = list(meta[meta.split == 2].img_filename.head(6))
    out = demo.build_place_swapped(small_world, tmp_path / "swapped", picked)
    masks = demo.object_masks(small_world)
    for f in picked:
        before = np.asarray(Image.open(small_world / f), dtype=float)
        after = np.asarray(Image.open(out / f), dtype=float)
        bird = np.asarray(Image.open(masks / f.replace(".jpg", ".png"))) > 127
        inside = binary_erosion(bird, iterations=3)  # JPEG blurs the edge
        assert np.abs(before - after)[inside].mean() < 6, f  # the same bird, same place
        assert np.abs(before - after)[~bird].mean() > 20, f  # another background
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == sorted(picked)
    stamp = (out / picked[0]).stat().st_mtime_ns
    demo.build_place_swapped(small_world, out, picked[:1])  # kept, not redrawn
    assert (out / picked[0]).stat().st_mtime_ns == stamp
