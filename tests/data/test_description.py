"""Class, attribute and group names come from the data: metadata.csv, dataset.json, classes.txt, CelebA-style
attribute tables and an ImageFolder tree with an attributes CSV. Each test builds its own tiny dataset."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from core.data import DatasetError, open_dataset, read_attribute_table, read_image_folder, read_waterbirds


def _image(path, color=(90, 90, 90)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), color).save(path)


def _shapes(root, extra: dict | None = None, rows=None):
    """A user's binary dataset in Waterbirds' format, without Waterbirds' place_filename column."""
    rows = rows or [("a.png", 0, 0, "plain"), ("b.png", 0, 2, "striped"), ("c.png", 1, 0, "striped"),
                    ("d.png", 1, 2, "plain")]
    for f, *_ in rows:
        _image(root / f)
    frame = pd.DataFrame(rows, columns=["img_filename", "y", "split", "texture"])
    for column, values in (extra or {}).items():
        frame[column] = values
    frame.to_csv(root / "metadata.csv", index=False)
    return root


def test_user_metadata_without_names_gets_neutral_names_not_birds(tmp_path):
    ds = open_dataset(_shapes(tmp_path / "shapes"), group_by="texture")
    assert ds.kind == "metadata_csv" and ds.name == "shapes"
    assert ds.class_names == ["class 0", "class 1"]
    assert ds.group_names == {0: "class 0 · texture: plain", 1: "class 0 · texture: striped",
                              2: "class 1 · texture: plain", 3: "class 1 · texture: striped"}
    groups = {r.image_id: r.group for r in ds.records}
    assert groups == {"a.png": 0, "b.png": 1, "c.png": 3, "d.png": 2}


def test_class_names_from_a_column_or_classes_txt(tmp_path):
    ds = open_dataset(_shapes(tmp_path / "col", {"class_name": ["circle", "circle", "square", "square"]}),
                      group_by="texture")
    assert ds.class_names == ["circle", "square"]
    assert ds.group_names[3] == "square · texture: striped"

    root = _shapes(tmp_path / "txt")
    (root / "classes.txt").write_text("circle\nsquare\n")
    assert open_dataset(root).class_names == ["circle", "square"]
    assert open_dataset(root).group_names is None  # no group column named, none guessed


def test_dataset_json_names_classes_attribute_and_grouping(tmp_path):
    root = _shapes(tmp_path / "described")
    (root / "dataset.json").write_text(json.dumps({
        "name": "striped shapes", "classes": ["circle", "square"], "group_by": "texture",
        "attributes": {"texture": {"name": "surface", "values": {"plain": "smooth", "striped": "stripes"}}}}))
    ds = open_dataset(root)
    assert ds.name == "striped shapes"
    assert ds.group_names == {0: "circle · surface: smooth", 1: "circle · surface: stripes",
                              2: "square · surface: smooth", 3: "square · surface: stripes"}


def test_yes_no_attribute_reads_as_class_with_or_without_it(tmp_path):
    ds = open_dataset(_shapes(tmp_path / "flag", {"class_name": ["circle"] * 2 + ["square"] * 2,
                                                  "has_stripes": [0, 1, 1, 0]}), group_by="has_stripes")
    assert ds.group_names == {0: "circle · not has stripes", 1: "circle · has stripes",
                              2: "square · not has stripes", 3: "square · has stripes"}


def test_multi_class_labels_and_bad_inputs_are_named(tmp_path):
    rows = [("a.png", 0, 0, "x"), ("b.png", 1, 0, "y"), ("c.png", 2, 2, "x")]
    ds = open_dataset(_shapes(tmp_path / "three", {"class_name": ["cat", "dog", "fox"]}, rows=rows), group_by="texture")
    assert ds.class_names == ["cat", "dog", "fox"] and ds.group_names[5] == "fox · texture: y"
    with pytest.raises(DatasetError, match=r"no column 'colour' to group by.*texture"):
        open_dataset(tmp_path / "three", group_by="colour")
    bad = _shapes(tmp_path / "bad", rows=[("a.png", 0, 0, "x"), ("b.png", -1, 0, "y")])
    with pytest.raises(DatasetError, match=r"column 'y' must hold class indices.*-1"):
        open_dataset(bad)
    clash = _shapes(tmp_path / "clash", {"class_name": ["cat", "dog", "cat", "cat"]})
    with pytest.raises(DatasetError, match=r"label 0 has several names"):
        open_dataset(clash)
    short = _shapes(tmp_path / "short")
    (short / "classes.txt").write_text("only one\n")
    with pytest.raises(DatasetError, match=r"names 1 classes, but the labels go up to 1"):
        open_dataset(short)


def test_waterbirds_keeps_its_names_because_its_metadata_says_so(tmp_path):
    root = _shapes(tmp_path / "wb", {"place": [0, 1, 1, 0], "place_filename": ["/b/bamboo/1.jpg"] * 4})
    ds = open_dataset(root)
    assert ds.kind == "waterbirds" and ds.class_names == ["landbird", "waterbird"]
    assert ds.group_names[1] == "landbird · background: water"
    # The same file read as Waterbirds explicitly, but a dataset.json there wins: the folder says what it is.
    (root / "dataset.json").write_text(json.dumps({"classes": ["cat", "dog"]}))
    ds = read_waterbirds(root)
    assert ds.class_names == ["cat", "dog"] and ds.group_names[3] == "dog · background: water"


def _celeba(root):
    names = [f"{i:06d}.jpg" for i in range(1, 7)]
    for n in names:
        _image(root / "img_align_celeba" / n)
    pd.DataFrame({"image_id": names, "Blond_Hair": [1, -1, 1, -1, -1, 1], "Male": [-1, -1, 1, 1, -1, 1],
                  "Smiling": [1, 1, -1, -1, 1, 1]}).to_csv(root / "list_attr_celeba.csv", index=False)
    pd.DataFrame({"image_id": names, "partition": [0, 0, 1, 1, 2, 2]}).to_csv(root / "list_eval_partition.csv",
                                                                               index=False)
    return root


def test_celeba_style_attribute_table(tmp_path):
    root = _celeba(tmp_path / "celeba")
    ds = open_dataset(root, target="Blond_Hair", group_by="Male")
    assert ds.kind == "attribute_table" and ds.class_names == ["not blond hair", "blond hair"]
    assert ds.group_names == {0: "not blond hair · not male", 1: "not blond hair · male",
                              2: "blond hair · not male", 3: "blond hair · male"}
    first = ds.records[0]
    assert (first.label, first.group, first.split) == (1, 2, "train")
    assert ds.splits == ["train", "val", "test"]
    with pytest.raises(DatasetError, match=r"target=COLUMN.*Blond_Hair"):
        open_dataset(root)
    with pytest.raises(DatasetError, match=r"no column 'Hat'"):
        read_attribute_table(root, target="Blond_Hair", group_by="Hat")


def test_celeba_original_text_files(tmp_path):
    root = tmp_path / "celeba_txt"
    for n in ("000001.jpg", "000002.jpg"):
        _image(root / "img_align_celeba" / n)
    (root / "list_attr_celeba.txt").write_text("2\nBlond_Hair Male\n000001.jpg  1 -1\n000002.jpg -1  1\n")
    (root / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg 2\n")
    ds = read_attribute_table(root, target="Male", group_by="Blond_Hair")
    assert ds.class_names == ["not male", "male"]
    assert [(r.label, r.split, ds.group_names[r.group]) for r in ds.records] == [
        (0, "train", "not male · blond hair"), (1, "test", "male · not blond hair")]


def test_image_folder_with_an_attributes_csv(tmp_path):
    root = tmp_path / "pets"
    for cls, name in (("cat", "a.png"), ("cat", "b.png"), ("dog", "c.png")):
        _image(root / cls / name)
    pd.DataFrame({"path": ["cat/a.png", "cat/b.png", "dog/c.png"], "place": ["indoor", "outdoor", "outdoor"],
                  "lit": [1, 0, 1]}).to_csv(root / "attributes.csv", index=False)
    ds = read_image_folder(root, attributes=root / "attributes.csv", group_by="place")
    assert ds.group_names == {0: "cat · place: indoor", 1: "cat · place: outdoor", 2: "dog · place: indoor",
                              3: "dog · place: outdoor"}
    assert {r.image_id: r.group for r in ds.records} == {"cat/a.png": 0, "cat/b.png": 1, "dog/c.png": 3}
    with pytest.raises(DatasetError, match=r"group by.*\['place', 'lit'\]"):
        read_image_folder(root, attributes=root / "attributes.csv")
    (root / "dataset.json").write_text(json.dumps({"attributes_file": "attributes.csv", "group_by": "lit"}))
    assert open_dataset(root).group_names[1] == "cat · lit"
    pd.DataFrame({"path": ["cat/a.png"], "place": ["indoor"]}).to_csv(root / "attributes.csv", index=False)
    with pytest.raises(DatasetError, match=r"no row for 2 of 3 images: cat/b.png, dog/c.png"):
        read_image_folder(root, attributes=root / "attributes.csv", group_by="place")


def test_dataset_json_gives_each_class_its_wordnet_synset(tmp_path):
    root = _shapes(tmp_path / "senses")
    (root / "dataset.json").write_text(json.dumps({"classes": ["crane", "square"], "synsets": ["n02012849", None]}))
    assert open_dataset(root).class_synsets == ["n02012849", None]  # the bird, not the writer listed first
    (root / "dataset.json").write_text(json.dumps({"classes": ["crane", "square"], "synsets": {"square": "n13878634"}}))
    assert open_dataset(root).class_synsets == [None, "n13878634"]
    (root / "dataset.json").write_text(json.dumps({"classes": ["crane", "square"]}))
    assert open_dataset(root).class_synsets is None
    for synsets, message in ((["n02012849"], r"lists 1 ids for 2 classes"),
                             ({"heron": "n02012849"}, r"names classes the dataset does not have: \['heron'\]"),
                             (["crane.n.05", None], r"WordNet noun id like \"n02469914\""),
                             (["n99999999", None], r"no WordNet noun synset: \['n99999999'\]")):
        (root / "dataset.json").write_text(json.dumps({"classes": ["crane", "square"], "synsets": synsets}))
        with pytest.raises(DatasetError, match=message):
            open_dataset(root)


def test_imagenet_style_folders_name_their_classes_and_give_their_synsets(tmp_path):
    root = tmp_path / "imagenet"
    for wnid in ("n01440764", "n02012849", "n03126707"):  # tench, crane (the bird), crane (the machine)
        _image(root / "val" / wnid / "a.png")
    ds = open_dataset(root)
    assert ds.class_synsets == ["n01440764", "n02012849", "n03126707"]
    assert ds.class_names == ["tench", "crane (n02012849)", "crane (n03126707)"]  # WordNet's names, kept apart
    # ImageNet's own synset file, where it is there, names them (no WordNet needed).
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn02012849 crane\n"
                                                 "n03126707 crane\nn99999999 not a class here\n")
    (root / "dataset.json").write_text(json.dumps({"name": "three of ImageNet"}))
    assert read_image_folder(root).class_names == ["tench", "crane (n02012849)", "crane (n03126707)"]
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tinca\nn02012849 crane bird\nn03126707 crane machine\n")
    assert read_image_folder(root).class_names == ["tinca", "crane bird", "crane machine"]
