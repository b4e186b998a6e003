"""What a dataset reader assumes, leaves out or refuses is said, never done silently: Waterbirds' names taken
from a column, options a kind of dataset has no use for, GIFs and other files, links leaving the folder, ids
that only look alike."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from PIL import Image

from core import cli
from core.data import DatasetError, open_dataset


def image(path, colour=(200, 30, 30), size=(16, 16), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)
    return path


def insects_and_mammals(root, place_filename: bool = True):
    """A user's metadata.csv in Waterbirds' format, copied with its place_filename column: not birds at all."""
    rows = []
    for i, (y, place) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        name = f"photos/{i}.png"
        image(root / name)
        rows.append({"img_id": i, "img_filename": name, "y": y, "split": 2, "place": place,
                     **({"place_filename": "meadow.jpg"} if place_filename else {})})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def test_a_metadata_csv_read_as_waterbirds_for_its_place_filename_column_says_so(tmp_path, capsys):
    ds = open_dataset(insects_and_mammals(tmp_path / "bugs"))
    assert ds.class_names == ["landbird", "waterbird"] and ds.kind == "waterbirds"  # what Waterbirds' names give
    (note,) = ds.notes
    assert "has Waterbirds' place_filename column, so it is read as Waterbirds" in note
    assert "its classes as landbird / waterbird and the attribute 'place' as background land (0) / water (1)" in note
    assert str(tmp_path / "bugs" / "dataset.json") in note and '"classes"' in note
    # The CLI prints it when it reads the dataset (here explain, which stops at the unknown classifier).
    assert cli.main(["explain", "--dataset", str(tmp_path / "bugs"), "--classifier", "nonsense", "--translator",
                     "t", "--out", str(tmp_path / "run")]) == 2
    assert "warning: " + note in capsys.readouterr().err
    # Named in dataset.json: the user's names, and nothing to say.
    (tmp_path / "bugs" / "dataset.json").write_text(json.dumps(
        {"classes": ["insect", "mammal"], "attributes": {"place": {"name": "habitat",
                                                                   "values": {"0": "meadow", "1": "pond"}}}}))
    named = open_dataset(tmp_path / "bugs")
    assert named.class_names == ["insect", "mammal"] and named.notes == []
    assert named.group_names[1] == "insect · habitat: pond"
    # Classes named in classes.txt: only the attribute's names were assumed, and the note says so.
    (tmp_path / "bugs" / "dataset.json").unlink()
    (tmp_path / "bugs" / "classes.txt").write_text("insect\nmammal\n")
    (note,) = open_dataset(tmp_path / "bugs").notes
    assert "read as Waterbirds: the attribute 'place' as background land (0) / water (1)" in note


def test_waterbirds_itself_reads_without_a_note(tmp_path):
    root = tmp_path / "wb"
    rows = []
    for i, (y, place) in enumerate([(0, 0), (1, 1)]):
        name = f"00{i + 1}.Black_footed_Albatross/Black_Footed_Albatross_00{i}.jpg"  # CUB's species folders
        image(root / name, fmt="JPEG")
        rows.append({"img_id": i, "img_filename": name, "y": y, "split": 2, "place": place,
                     "place_filename": "/o/ocean/00001.jpg"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    assert open_dataset(root).notes == []


def test_value_names_come_from_the_runs_group_names():
    from core.data.description import value_names_from_groups

    assert value_names_from_groups(["insect", "mammal"], {"0": "insect · habitat: meadow",
                                                          "1": "insect · habitat: pond",
                                                          "2": "mammal · habitat: meadow",
                                                          "3": "mammal · habitat: pond"}) == {0: "meadow", 1: "pond"}
    assert value_names_from_groups(["not blond", "blond"], {0: "not blond · not male", 1: "not blond · male",
                                                            2: "blond · not male", 3: "blond · male"}) == \
        {0: "not male", 1: "male"}
    assert value_names_from_groups(["landbird", "waterbird"], {0: "landbird on land", 1: "landbird on water",
                                                               2: "waterbird on land", 3: "waterbird on water"}) == \
        {0: "land", 1: "water"}
    assert value_names_from_groups(["a", "b"], None) == {}


def test_ids_that_only_look_alike_are_two_images(tmp_path):
    root = tmp_path / "ids"
    for name in ("a.png", "b.png"):
        image(root / name)
    pd.DataFrame({"img_id": ["01", "1"], "img_filename": ["a.png", "b.png"], "y": [0, 1], "split": [2, 2]}).to_csv(
        root / "metadata.csv", index=False)
    assert [r.image_id for r in open_dataset(root).records] == ["01", "1"]
    pd.DataFrame({"img_id": ["1", "1"], "img_filename": ["a.png", "b.png"], "y": [0, 1], "split": [2, 2]}).to_csv(
        root / "metadata.csv", index=False)
    with pytest.raises(DatasetError, match="image ids repeat, e.g. '1'"):
        open_dataset(root)


def test_an_image_folder_reads_gifs_and_says_which_files_it_left_out(tmp_path):
    root = tmp_path / "animals"
    image(root / "cat" / "a.png")
    image(root / "cat" / "b.gif", fmt="GIF")
    image(root / "dog" / "c.GIF", fmt="GIF")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / "d.heic").write_bytes(b"\x00" * 32)
    ds = open_dataset(root)
    assert sorted(r.image_id for r in ds.records) == ["cat/a.png", "cat/b.gif", "dog/c.GIF"]
    assert ds.load_image(ds.records[1]).mode == "RGB"
    (note,) = ds.notes
    assert note.startswith(f"2 file(s) in the class folders of {root} are not images TExplain reads and were left "
                           "out (.heic 1, .txt 1); it reads .jpg, .jpeg, .png")


def test_links_to_files_outside_the_dataset_folder_are_refused(tmp_path):
    outside = image(tmp_path / "elsewhere" / "secret.png")
    root = tmp_path / "animals"
    image(root / "cat" / "a.png")
    image(root / "dog" / "b.png")
    os.symlink(root / "cat" / "a.png", root / "dog" / "inside-link.png")  # inside the folder: fine
    assert len(open_dataset(root)) == 3
    os.symlink(outside, root / "dog" / "outside-link.png")
    with pytest.raises(DatasetError, match=r"1 image\(s\) are links to files outside the dataset folder .*"
                                           r"outside-link.png -> .*elsewhere/secret.png"):
        open_dataset(root)
    os.unlink(root / "dog" / "outside-link.png")
    os.symlink(tmp_path / "elsewhere", root / "dog" / "linked-folder")  # a linked folder leads out as well
    with pytest.raises(DatasetError, match="links to files outside the dataset folder"):
        open_dataset(root)
    os.unlink(root / "dog" / "linked-folder")
    os.symlink(root, root / "dog" / "loop")  # a link to a folder above: read once, not forever
    assert len(open_dataset(root)) >= 3
    os.unlink(root / "dog" / "loop")
    # A metadata.csv naming a link that leads out is refused the same way.
    meta = insects_and_mammals(tmp_path / "bugs", place_filename=False)
    os.unlink(meta / "photos" / "0.png")
    os.symlink(outside, meta / "photos" / "0.png")
    with pytest.raises(DatasetError, match="metadata.csv: 1 image\\(s\\) are links to files outside"):
        open_dataset(meta)


def test_options_a_kind_of_dataset_has_no_use_for_are_refused(tmp_path, capsys):
    bc = tmp_path / "bg"
    for variation in ("original", "mixed_rand"):
        image(bc / variation / "val" / "00_dog" / "a.JPEG", fmt="JPEG")
        image(bc / variation / "val" / "01_bird" / "b.JPEG", fmt="JPEG")
    assert open_dataset(bc).kind == "backgrounds_challenge"
    with pytest.raises(DatasetError, match=r"is the Backgrounds Challenge \(ImageNet-9\), which does not use "
                                           r"--group-by \(group_by='place'\): its images carry no attribute"):
        open_dataset(bc, group_by="place")
    assert cli.main(["finetune", "--dataset", str(bc), "--group-by", "place", "--out", str(tmp_path / "c")]) == 2
    assert "does not use --group-by" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="which does not use --target"):
        open_dataset(insects_and_mammals(tmp_path / "bugs"), target="y")
