"""Dataset readers: Waterbirds, the Backgrounds Challenge, any ImageFolder tree, and caption files.

Every image dataset comes back as one `ImageDataset` (a list of `ImageRecord`s plus class and
group names), so the classifier, the explainer and the run store never care where it came from.
Caption readers return a DataFrame with columns `path`, `caption` (and `split` when known) for
translator training. Problems a user can fix raise `DatasetError` with the file and what to do.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pandas as pd

from core.data.description import (DESCRIPTION_FILE, attach_attributes, class_synsets_from, find_attribute_table,
                                   is_wnid, read_attribute_table, read_description, read_metadata_csv, wnid_class_names)
from core.data.records import (IMAGE_EXTENSIONS, MAX_LISTED, SPLIT_FOLDERS, ImageDataset, ImageRecord, as_dir,
                               check_files_exist, check_inside_folder, is_image, is_inside, read_csv)
from core.errors import DatasetError

WATERBIRDS_COLUMNS = ("img_filename", "y", "split", "place")
WATERBIRDS_CLASSES = ["landbird", "waterbird"]
# Group names of runs made before class and attribute names came from the data (their manifests keep them).
WATERBIRDS_GROUPS_V1 = {0: "landbird on land", 1: "landbird on water", 2: "waterbird on land", 3: "waterbird on water"}

# The Backgrounds Challenge (Xiao et al. 2020) ships ImageNet-9 in these variations; fg_mask holds masks.
BACKGROUND_VARIATIONS = ("original", "only_bg_b", "only_bg_t", "no_fg", "only_fg",
                         "mixed_same", "mixed_rand", "mixed_next")




# --- helpers ---------------------------------------------------------------------------------

def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(folder: Path, skipped: Counter | None = None) -> list[Path]:
    """Image files under `folder`, sorted, following linked folders once each (a link to a folder above
    would loop); `skipped` counts the other files by extension."""
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            if Path(f).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / f)
            elif skipped is not None:
                skipped[Path(f).suffix.lower() or "(no extension)"] += 1
    return found


def _has_class_folders_with_images(folder: Path) -> bool:
    return any(_images_under(d) for d in _subdirs(folder))


def _skipped_note(root: Path, skipped: Counter) -> list[str]:
    if not skipped:
        return []
    kinds = ", ".join(f"{ext} {n}" for ext, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))[:6])
    return [f"{sum(skipped.values())} file(s) in the class folders of {root} are not images TExplain reads and were "
            f"left out ({kinds}); it reads {', '.join(IMAGE_EXTENSIONS)}"]


# --- Waterbirds ------------------------------------------------------------------------------

def read_waterbirds(root: str | Path, check_files: bool = True, group_by: str | None = None) -> ImageDataset:
    """Waterbirds (Sagawa et al. 2020) from its own metadata.csv: img_filename, y, split, place.

    `root` is the folder holding metadata.csv (or the CSV itself); img_filename is relative to it.
    split 0/1/2 is train/val/test; group = 2 * y + place (place 1 = water). Classes are landbird and
    waterbird unless a dataset.json or classes.txt beside it says otherwise (see core.data.description).
    """
    return read_metadata_csv(root, check_files=check_files, group_by=group_by, waterbirds=True)


# --- ImageFolder trees -----------------------------------------------------------------------

def _class_folder_records(split_root: Path, split: str, class_names: list[str], dataset_root: Path,
                          folder_to_class: dict[str, str], skipped: Counter) -> list[ImageRecord]:
    records = []
    for folder in _subdirs(split_root):
        images = _images_under(folder, skipped)
        if not images:
            raise DatasetError(f"class folder {folder} has no images (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                               "remove it or add images")
        check_inside_folder(images, dataset_root, folder)
        label = class_names.index(folder_to_class[folder.name])
        records += [ImageRecord(image_id=p.relative_to(dataset_root).as_posix(), path=p, split=split, label=label)
                    for p in images]
    return records


def _read_class_folders(root: Path, folder_to_class=lambda name: name
                        ) -> tuple[list[ImageRecord], list[str], list[str]]:
    """Records, class names and notes (files left out) of an ImageFolder tree, with or without train/val/test
    split folders."""
    subdirs = _subdirs(root)
    if not subdirs:
        loose = [p for p in root.iterdir() if is_image(p)]
        hint = (f"; its {len(loose)} images must sit in one subfolder per class" if loose
                else "; an image folder dataset has one subfolder of images per class")
        raise DatasetError(f"{root} has no subfolders{hint}")
    as_splits = all(d.name.lower() in SPLIT_FOLDERS for d in subdirs)
    split_roots = ([(SPLIT_FOLDERS[d.name.lower()], d) for d in subdirs] if as_splits else [("all", root)])
    if as_splits and len({s for s, _ in split_roots}) < len(split_roots):
        raise DatasetError(f"{root} has two folders for the same split: {[d.name for d in subdirs]}")
    folder_names = sorted({d.name for _, sr in split_roots for d in _subdirs(sr)})
    if not folder_names:
        raise DatasetError(f"{root}: the split folders {[d.name for d in subdirs]} hold no class subfolders")
    mapping = {f: folder_to_class(f) for f in folder_names}
    class_names = [mapping[f] for f in folder_names]  # sorted by folder name, as torchvision's ImageFolder
    records, skipped = [], Counter()
    for split, sr in split_roots:
        records += _class_folder_records(sr, split, class_names, root, mapping, skipped)
    return records, class_names, _skipped_note(root, skipped)


def read_image_folder(root: str | Path, attributes: str | Path | None = None,
                      group_by: str | None = None) -> ImageDataset:
    """Any ImageFolder tree: root/<class>/<images>, or root/{train,val,test}/<class>/<images>.

    Classes are the folder names in sorted order (labels match torchvision's ImageFolder; folders named by
    ImageNet synset id get their classes' names, see core.data.description); without split folders every
    image is in split "all". `attributes` is a CSV with one row per image (its path relative to root,
    or its file name) and attribute columns; groups are made from its `group_by` column. A dataset.json in root
    may name both ("attributes_file", "group_by").
    """
    root = as_dir(root, "image folder")
    records, class_names, notes = _read_class_folders(root)
    desc = read_description(root)
    synsets = class_synsets_from(desc, class_names, str(root / DESCRIPTION_FILE))
    if synsets is None and all(is_wnid(c) for c in class_names):  # ImageNet's layout: n01440764/, ...
        synsets, class_names = list(class_names), wnid_class_names(root, class_names)
    ds = ImageDataset(name=str(desc.get("name") or root.name), kind="image_folder", root=root, records=records,
                      class_names=class_names, group_names=None, class_synsets=synsets, notes=notes)
    attributes = attributes or desc.get("attributes_file")
    if attributes is not None:
        ds = attach_attributes(ds, attributes, group_by)
    elif group_by is not None:
        raise DatasetError(f"group_by={group_by!r} needs an attributes CSV for the image folder {root} "
                           "(attributes=FILE, or 'attributes_file' in its dataset.json)")
    return ds


# --- the Backgrounds Challenge (ImageNet-9) --------------------------------------------------

def background_variations(root: str | Path) -> list[str]:
    """The variation folders of a Backgrounds Challenge copy at `root` that hold images (original, mixed_rand, ...)."""
    return _background_variations(Path(root).expanduser())


def _background_variations(root: Path) -> list[str]:
    """Subfolders of root that hold ImageNet-9 images (directly or under train/val)."""
    found = []
    for d in _subdirs(root):
        inner = [s for s in _subdirs(d) if s.name.lower() in SPLIT_FOLDERS] or [d]
        if any(_has_class_folders_with_images(s) for s in inner):
            found.append(d.name)
    return found


def read_backgrounds_challenge(root: str | Path, variation: str | None = "mixed_rand") -> ImageDataset:
    """The Backgrounds Challenge / ImageNet-9 (Xiao et al. 2020): root/<variation>/val/<00_dog>/...

    `variation` is one of its folders: original, mixed_same, mixed_rand, only_fg, no_fg, ... (None: mixed_rand
    where the copy has it, else its first). Class names come from the folders with their number prefix dropped
    ("00_dog" -> "dog").
    """
    root = as_dir(root, "Backgrounds Challenge")
    available = _background_variations(root)
    if variation is None and available:
        variation = "mixed_rand" if "mixed_rand" in available else available[0]
    if variation not in available:
        hint = f"available variations: {available}" if available else (
            "it holds no variation folders with images; expected e.g. "
            f"{root}/mixed_rand/val/00_dog/*.JPEG")
        raise DatasetError(f"{root} has no variation {variation!r}; {hint}")
    records, class_names, notes = _read_class_folders(root / variation, lambda f: re.sub(r"^\d+_", "", f))
    for r in records:
        r.image_id = f"{variation}/{r.image_id}"
    from core.data.imagenet9 import IN9_CLASSES, IN9_SYNSETS

    synsets = dict(zip(IN9_CLASSES, IN9_SYNSETS))
    return ImageDataset(name=f"{root.name}/{variation}", kind="backgrounds_challenge", root=root / variation,
                        records=records, class_names=class_names, group_names=None,
                        class_synsets=[synsets.get(c) for c in class_names], notes=notes)


# --- auto-detection --------------------------------------------------------------------------

def open_dataset(root: str | Path, variation: str | None = "mixed_rand", group_by: str | None = None,
                 target: str | None = None, attributes: str | Path | None = None) -> ImageDataset:
    """Read whatever dataset is at `root`: a metadata.csv (Waterbirds' format, any classes and
    attributes), a CelebA-style attribute table (`target` = the class attribute), the Backgrounds
    Challenge (variation folders such as original/ and mixed_rand/), or an ImageFolder tree (with an
    `attributes` CSV for groups). `group_by` names the attribute column groups are made from."""
    root = Path(root).expanduser()
    given = {"group_by": group_by, "target": target, "attributes": attributes}

    def unused(kind: str, *options: str, hint: str = "") -> None:
        """An option this kind of dataset has no use for is refused, never ignored without a word."""
        named = [o for o in options if given[o] is not None]
        if named:
            flags = " and ".join(f"--{o.replace('_', '-')} ({o}={given[o]!r})" for o in named)
            raise DatasetError(f"{root} is {kind}, which does not use {flags}{hint}")

    if root.is_file() and root.suffix.lower() == ".csv":
        unused("a metadata.csv dataset", "target", "attributes",
               hint="; its attribute columns are in metadata.csv itself: choose one with --group-by")
        return read_metadata_csv(root, group_by=group_by)
    root = as_dir(root, "dataset")
    if (root / "metadata.csv").exists():
        unused("a metadata.csv dataset", "target", "attributes",
               hint="; its attribute columns are in metadata.csv itself: choose one with --group-by")
        return read_metadata_csv(root, group_by=group_by)
    if find_attribute_table(root) is not None:
        unused("a CelebA-style attribute-table dataset", "attributes",
               hint="; its attributes are in its table: choose the class with --target, groups with --group-by")
        return read_attribute_table(root, target=target or read_description(root).get("target"), group_by=group_by)
    if any(d.name in BACKGROUND_VARIATIONS for d in _subdirs(root)) and _background_variations(root):
        unused("the Backgrounds Challenge (ImageNet-9)", "group_by", "target", "attributes",
               hint=": its images carry no attribute to group by. Its backgrounds are compared by variation: "
                    "explain two (--variation original, --variation mixed_rand) and compare the runs "
                    "(texplain report RUN --compare RUN2)")
        return read_backgrounds_challenge(root, variation)
    unused("an ImageFolder tree", "target", hint="; --target picks the class column of an attribute table")
    try:
        return read_image_folder(root, attributes=attributes, group_by=group_by)
    except DatasetError as exc:
        raise DatasetError(
            f"{root} is not a dataset TExplain can read ({exc}). Expected one of: a folder with metadata.csv "
            "(img_filename, y, split, attribute columns such as Waterbirds' place); a CelebA-style "
            "list_attr_celeba.csv; a Backgrounds Challenge folder "
            "(original/, mixed_rand/, ... each with val/<class>/ images); or an ImageFolder tree "
            "(one subfolder of images per class, optionally under train/, val/, test/).") from exc


# --- captions --------------------------------------------------------------------------------

def _split_from_name(name: str) -> str | None:
    for key in ("train", "val", "test"):
        if key in name.lower():
            return key
    return None


def read_coco_captions(json_file: str | Path, images_root: str | Path, check_files: bool = True) -> pd.DataFrame:
    """COCO caption annotations (images[{id, file_name}], annotations[{image_id, caption}]) as a
    DataFrame of path, caption, image_id and split. Also reads Karpathy's dataset_coco.json
    (images[{filename, filepath, split, sentences[{raw}]}]), whose splits it keeps."""
    json_file, images_root = Path(json_file).expanduser(), Path(images_root).expanduser()
    try:
        data = json.loads(json_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{json_file} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{json_file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or "images" not in data:
        raise DatasetError(f"{json_file} is not a COCO caption file: it needs the keys 'images' and 'annotations'")
    images = data["images"]
    if "annotations" in data:
        try:
            names = {im["id"]: im["file_name"] for im in images}
            pairs = [(a["image_id"], a["caption"]) for a in data["annotations"]]
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{json_file}: COCO entries need images[{{id, file_name}}] and "
                               f"annotations[{{image_id, caption}}]; missing {exc}") from None
        unknown = sorted({i for i, _ in pairs if i not in names})
        if unknown:
            raise DatasetError(f"{json_file}: {len(unknown)} annotations point to image ids that are not in "
                               f"'images', e.g. {unknown[:MAX_LISTED]}")
        split = _split_from_name(json_file.name)
        frame = pd.DataFrame({
            "path": [str(images_root / names[i]) for i, _ in pairs],
            "caption": [c.strip() for _, c in pairs],
            "image_id": [str(i) for i, _ in pairs],
        })
        if split:
            frame["split"] = split
    elif images and isinstance(images[0], dict) and "sentences" in images[0]:  # Karpathy's split file
        rows = []
        try:
            for im in images:
                rel = Path(im.get("filepath", "")) / im["filename"]
                split = {"restval": "train"}.get(im.get("split"), im.get("split"))
                rows += [(str(images_root / rel), s["raw"].strip(), str(im.get("cocoid", im.get("imgid", rel))), split)
                         for s in im["sentences"]]
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{json_file}: Karpathy-style entries need filename and sentences[{{raw}}]; "
                               f"missing {exc}") from None
        frame = pd.DataFrame(rows, columns=["path", "caption", "image_id", "split"])
    else:
        raise DatasetError(f"{json_file} has 'images' but no 'annotations'; it is not a COCO caption file")
    outside = [p for p in frame["path"].unique() if not is_inside(os.path.relpath(p, images_root))]
    if outside:
        raise DatasetError(f"{json_file}: image file names must be paths inside {images_root}; {len(outside)} are "
                           f"not (absolute, or leaving the folder with '..'), e.g. {outside[:MAX_LISTED]}")
    if check_files:
        check_files_exist([Path(p) for p in frame["path"].unique()], json_file)
    return frame


def read_caption_csv(csv_file: str | Path, check_files: bool = True) -> pd.DataFrame:
    """A CSV of image paths and captions: columns path (or Waterbirds-style img_filename) and caption,
    optionally split. Relative paths are resolved against the CSV's folder; one image may have many rows."""
    csv_file = Path(csv_file).expanduser()
    try:
        head = pd.read_csv(csv_file, nrows=0)
    except FileNotFoundError:
        raise DatasetError(f"{csv_file} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_file} is not a readable CSV file: {exc}") from exc
    path_col = "path" if "path" in head.columns or "img_filename" not in head.columns else "img_filename"
    frame = read_csv(csv_file, [path_col, "caption"], text=[path_col, "caption", "split"])
    empty = frame["caption"].isna() | (frame["caption"].astype(str).str.strip() == "")
    if empty.any():
        rows = [int(i) + 2 for i in frame.index[empty][:MAX_LISTED]]  # +2: header line, 1-based
        raise DatasetError(f"{csv_file}: {int(empty.sum())} rows have no caption (lines {rows})")
    base = csv_file.parent
    paths = [str(p if p.is_absolute() else (base / p)) for p in map(Path, frame[path_col].astype(str))]
    out = pd.DataFrame({"path": paths, "caption": frame["caption"].astype(str).str.strip()})
    if "split" in frame.columns:
        out["split"] = frame["split"].astype(str)
    if check_files:
        check_files_exist([Path(p) for p in out["path"].unique()], csv_file)
    return out
