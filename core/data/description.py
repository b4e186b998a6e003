"""What a dataset's labels mean: class names, named attributes and readable group names, read from the data.

A dataset says what its labels are in one of these ways; the first that applies wins:

1. `dataset.json` beside the metadata (or in the image folder's root)::

       {"name": "shapes", "classes": ["circle", "square"],
        "attributes": {"texture": {"name": "texture", "values": {"0": "plain", "1": "striped"}}},
        "group_by": "texture"}

   and, optionally, each class's WordNet noun synset: `"synsets": ["n13873502", "n13878634"]` in the
   classes' order (null for none), or `{"circle": "n13873502"}` by class name. It settles which sense a
   name has ("crane" the bird, not the writer WordNet lists first) for the words that describe the
   class's own object (the concept words);

2. `classes.txt` (line i names label i), or a `class_name` column beside `y` in metadata.csv;
3. Waterbirds' own metadata (it has a `place_filename` column: the Places photo each bird was pasted
   on), or `read_waterbirds` called explicitly: classes landbird / waterbird, `place` = background:
   land / water;
4. otherwise "class 0", "class 1", ... and each attribute is named after its column.

An ImageFolder tree whose class folders are ImageNet ids (`n01440764/`, ...) names its classes itself: from
ImageNet's synset file beside them (`LOC_synset_mapping.txt` or `synset_words.txt`: "n01440764 tench,
Tinca tinca"), else from WordNet; the ids are the classes' synsets.

A group is a class crossed with the values of one attribute (the `group_by` column):
group = label x n_values + value code, so Waterbirds keeps its 2·y + place. Group names read
"class · attribute: value" ("landbird · background: water"); a yes/no attribute reads "class · attribute"
or "class · not attribute" ("blond hair · male").

Besides Waterbirds-style metadata.csv files this module reads CelebA-style attribute tables (one ±1 column
per attribute; pick the class column with `target`) and attaches an attributes CSV to an ImageFolder tree.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.data.records import (MAX_LISTED, Attribute, ImageDataset, ImageRecord, as_dir, check_files_exist,
                               check_inside_folder, is_inside, read_csv, waterbirds_split)
from core.errors import DatasetError

DESCRIPTION_FILE = "dataset.json"
CLASSES_FILE = "classes.txt"
CLASS_NAME_COLUMNS = ("class_name", "classes")
WATERBIRDS_DESCRIPTION = {
    "name": "Waterbirds", "classes": ["landbird", "waterbird"], "group_by": "place",
    "attributes": {"place": {"name": "background", "values": {"0": "land", "1": "water"}}},
}
# CelebA (Liu et al. 2015) file names; the Kaggle copy ships CSVs with the same content.
CELEBA_TABLES = ("list_attr_celeba.csv", "list_attr_celeba.txt")
CELEBA_PARTITIONS = ("list_eval_partition.csv", "list_eval_partition.txt")
CELEBA_IMAGE_DIRS = ("img_align_celeba/img_align_celeba", "img_align_celeba", "images", ".")
PATH_COLUMNS = ("path", "image_id", "filename", "img_filename", "file")
_BOOLEAN_SETS = ({-1, 1}, {0, 1}, {False, True})
# ImageNet's list of its classes' synsets and names ("n01440764 tench, Tinca tinca"): the Kaggle copy's
# and the devkit's names for it.
SYNSET_FILES = ("LOC_synset_mapping.txt", "synset_words.txt")
_WNID = re.compile(r"n\d{8}")


def readable(column: str) -> str:
    """A column name as words: "Blond_Hair" -> "blond hair"."""
    return re.sub(r"[_\s]+", " ", str(column)).strip().lower()


def group_names_for(class_names: list[str], attribute: Attribute | None) -> dict[int, str] | None:
    """group id -> "class · attribute: value", for group = label x n_values + code."""
    if attribute is None:
        return None
    n = len(attribute.values)
    return {y * n + c: attribute.group_name(name, c) for y, name in enumerate(class_names) for c in range(n)}


def read_description(folder: Path) -> dict:
    """The folder's dataset.json as a dict ({} when there is none); a malformed one is an error."""
    path = folder / DESCRIPTION_FILE
    if not path.exists():
        return {}
    try:
        desc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); fix it or delete it") from None
    if not isinstance(desc, dict):
        raise DatasetError(f"{path} must hold a JSON object with keys like 'classes', 'attributes', 'group_by'")
    classes = desc.get("classes")
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) and c.strip()
                                                                         for c in classes)):
        raise DatasetError(f"{path}: 'classes' must be a list of class names, got {classes!r}")
    if not isinstance(desc.get("attributes", {}), dict):
        raise DatasetError(f"{path}: 'attributes' must map a column to {{'name': ..., 'values': {{code: name}}}}")
    synsets = desc.get("synsets")
    given = synsets.values() if isinstance(synsets, dict) else synsets if isinstance(synsets, list) else None
    if synsets is not None and (given is None or not all(s is None or is_wnid(s) for s in given)):
        raise DatasetError(f"{path}: 'synsets' must list each class's WordNet noun id like \"n02469914\" "
                           f"(null for none), in the classes' order or as {{class name: id}}; got {synsets!r}")
    return desc


def is_wnid(name: Any) -> bool:
    """Whether `name` is a WordNet noun synset id as ImageNet writes them ("n01440764")."""
    return isinstance(name, str) and _WNID.fullmatch(name) is not None


def load_wordnet():
    """NLTK's WordNet, or None where it is not installed (names and checks then do without it)."""
    import core  # noqa: F401  (points NLTK at the project's WordNet)

    try:
        from nltk.corpus import wordnet as wn

        wn.ensure_loaded()
    except (ImportError, LookupError):
        return None
    return wn


def wordnet_synset(wn, wnid: str):
    """The noun synset with id `wnid`, or None (NLTK versions differ: a warning and None, or an error)."""
    import warnings

    from nltk.corpus.reader.wordnet import WordNetError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return wn.synset_from_pos_and_offset("n", int(wnid[1:]))
    except WordNetError:
        return None


def class_synsets_from(desc: dict, class_names: list[str], where: str) -> list[str | None] | None:
    """Each class's synset from the description's "synsets" (a list in the classes' order or {class name: id});
    None when it gives none. Ids WordNet does not know are an error (when WordNet is installed)."""
    spec = desc.get("synsets")
    if not spec:
        return None
    if isinstance(spec, list):
        if len(spec) != len(class_names):
            raise DatasetError(f"{where}: 'synsets' lists {len(spec)} ids for {len(class_names)} classes "
                               f"{class_names}; give one per class (null for none), or map class names to ids")
        synsets = list(spec)
    else:
        unknown = sorted(set(spec) - set(class_names))
        if unknown:
            raise DatasetError(f"{where}: 'synsets' names classes the dataset does not have: {unknown}; "
                         f"its classes are {class_names}")
        synsets = [spec.get(c) for c in class_names]
    wn = load_wordnet()
    missing = [s for s in synsets if s and wn is not None and wordnet_synset(wn, s) is None]
    if missing:
        raise DatasetError(f"{where}: 'synsets' holds ids that are no WordNet noun synset: {missing}")
    return synsets if any(synsets) else None


def wnid_class_names(folder: Path, wnids: list[str]) -> list[str]:
    """Readable names for ImageNet-style class folders named by synset id: the first name ImageNet's synset
    file in `folder` gives (SYNSET_FILES), else WordNet's first lemma, else the id itself. A name two
    classes share (ImageNet's "crane" is a bird and a machine) keeps its id: "crane (n03126707)"."""
    named: dict[str, str] = {}
    file = next((folder / f for f in SYNSET_FILES if (folder / f).exists()), None)
    if file is not None:
        for line in file.read_text(encoding="utf-8", errors="replace").splitlines():
            wnid, _, names = line.strip().partition(" ")
            if is_wnid(wnid) and names.strip():
                named[wnid] = names.split(",")[0].strip()
    if any(w not in named for w in wnids) and (wn := load_wordnet()) is not None:
        for w in wnids:
            if w not in named and (syn := wordnet_synset(wn, w)) is not None:
                named[w] = syn.lemma_names()[0].replace("_", " ")
    names = [named.get(w, w) for w in wnids]
    return [f"{n} ({w})" if names.count(n) > 1 else n for n, w in zip(names, wnids)]


def _sort_key(value: Any) -> tuple:
    if isinstance(value, (int, float, np.integer, np.floating, bool)):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _raw_key(value: Any) -> str:
    """A raw attribute value as dataset.json writes it ("1", not "1.0" or 1.0).

    Text that is a whole number counts as that number: one non-numeric cell makes pandas read a whole
    column as text, and the other cells must still match the description.
    """
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        return str(int(number)) if number.is_integer() else value
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return str(value)


def encode_attribute(values: pd.Series, column: str, spec: dict | None, where: str) -> tuple[np.ndarray, Attribute]:
    """Codes (0..n-1) for a column of raw attribute values, and the Attribute that names them.

    `spec` is the dataset description's entry for the column ({"name", "values": {raw: name}}), or None.
    """
    spec = spec or {}
    if values.isna().any():
        rows = [int(i) + 2 for i in values.index[values.isna()][:5]]
        raise DatasetError(f"{where}: column {column!r} (the group attribute) is empty on lines {rows}")
    raw = sorted(pd.unique(values), key=_sort_key)
    names = spec.get("values")
    name = str(spec.get("name") or readable(column))
    if isinstance(names, dict):
        named = {str(k): str(v) for k, v in names.items()}
        unknown = [_raw_key(v) for v in raw if _raw_key(v) not in named]
        if unknown:
            raise DatasetError(f"{where}: column {column!r} holds {unknown[:5]}, which the dataset description "
                               f"does not name (it names {sorted(named)})")
        keys = sorted(named, key=lambda k: _sort_key(float(k)) if re.fullmatch(r"-?\d+(\.\d+)?", k) else _sort_key(k))
        code_of = {k: i for i, k in enumerate(keys)}
        codes = np.array([code_of[_raw_key(v)] for v in values], dtype=int)
        return codes, Attribute(column, name, tuple(named[k] for k in keys))
    code_of = {_raw_key(v): i for i, v in enumerate(raw)}
    codes = np.array([code_of[_raw_key(v)] for v in values], dtype=int)
    as_set = {v.item() if hasattr(v, "item") else v for v in raw}
    if any(as_set == s for s in _BOOLEAN_SETS) or (len(as_set) == 1 and as_set <= {-1, 0, 1}):
        # A yes/no column (CelebA's -1/1, a 0/1 flag): the lower value is "no".
        if len(raw) == 1:  # only one value present: still say which
            codes = np.full(len(values), 1 if _raw_key(raw[0]) in ("1", "True") else 0, dtype=int)
        return codes, Attribute(column, name, (f"not {name}", name), boolean=True)
    return codes, Attribute(column, name, tuple(_raw_key(v) for v in raw))


def class_names_from(folder: Path, desc: dict, meta: pd.DataFrame | None, labels: np.ndarray, where: str,
                     default: list[str] | None = None) -> list[str]:
    """Class names for integer labels: dataset.json, classes.txt, a class-name column, `default`, "class i"."""
    n_labels = int(labels.max()) + 1 if len(labels) else 0
    names: list[str] | None = None
    source = ""
    if desc.get("classes"):
        names, source = [str(c).strip() for c in desc["classes"]], f"{folder / DESCRIPTION_FILE}"
    elif (folder / CLASSES_FILE).exists():
        lines = (folder / CLASSES_FILE).read_text(encoding="utf-8").splitlines()
        names, source = [ln.strip() for ln in lines if ln.strip()], str(folder / CLASSES_FILE)
    elif meta is not None and (col := next((c for c in CLASS_NAME_COLUMNS if c in meta.columns), None)):
        pairs = meta[["y", col]].dropna().drop_duplicates()
        clash = pairs[pairs["y"].duplicated(keep=False)]
        if len(clash):
            raise DatasetError(f"{where}: label {int(clash['y'].iloc[0])} has several names in column {col!r}: "
                         f"{sorted(clash[col].astype(str).unique())[:5]}")
        by_label = dict(zip(pairs["y"].astype(int), pairs[col].astype(str)))
        names = [by_label.get(i, f"class {i}") for i in range(n_labels)]
        source = f"column {col!r} of {where}"
    elif default is not None:
        names = list(default)
    if names is None:
        return [f"class {i}" for i in range(n_labels)]
    if len(names) < n_labels:
        raise DatasetError(f"{source or where} names {len(names)} classes, but the labels go up to {n_labels - 1}")
    if len(set(names)) < len(names):
        raise DatasetError(f"{source or where}: class names repeat: {names}")
    return names


def is_waterbirds(meta: pd.DataFrame) -> bool:
    """Waterbirds' metadata lists the Places photo behind each bird; no other dataset does."""
    return "place_filename" in meta.columns and "place" in meta.columns


# Waterbirds' images are CUB's, in CUB's species folders: "001.Black_footed_Albatross/Black_Footed_...jpg".
_CUB_FOLDER = re.compile(r"^\d{3}\.[^/\\]+[/\\]")


def waterbirds_note(csv_file: Path, meta: pd.DataFrame, class_names: list[str], named_classes: bool) -> str | None:
    """What a user must hear when a metadata.csv is read as Waterbirds only because it has Waterbirds'
    place_filename column: which names were assumed, and how to give the real ones. None for Waterbirds itself
    (its images sit in CUB's species folders)."""
    if meta["img_filename"].astype(str).str.match(_CUB_FOLDER).all():
        return None
    assumed = "the attribute 'place' as background land (0) / water (1)"
    if not named_classes:
        assumed = f"its classes as {' / '.join(class_names)} and " + assumed
    values = ", ".join(f'"{v}": "..."' for v in sorted({_raw_key(v) for v in meta["place"].dropna()})[:4])
    return (f"{csv_file} has Waterbirds' place_filename column, so it is read as Waterbirds: {assumed}. If these "
            f"are not Waterbirds' birds and backgrounds, name them in {csv_file.parent / DESCRIPTION_FILE}, e.g. "
            f'{{"classes": ["...", "..."], "attributes": {{"place": {{"name": "...", "values": {{{values}}}}}}}}}')


def value_names_from_groups(class_names: list[str], group_names: dict | None) -> dict[int, str]:
    """The group attribute's value names by code, read back from a run's group names (group = label x n_values
    + code): "landbird · background: water" -> "water", "blond hair · not male" -> "not male", and the first
    runs' "landbird on water" -> "water". {} without groups."""
    if not group_names or not class_names:
        return {}
    names = {int(k): str(v) for k, v in group_names.items()}
    n_values = max(1, len(names) // len(class_names))
    out = {}
    for code in range(n_values):
        name = names.get(code, f"value {code}")
        if " · " in name:
            part = name.split(" · ", 1)[1]
            out[code] = part.split(": ", 1)[1] if ": " in part else part
        elif " on " in name:
            out[code] = name.rsplit(" on ", 1)[1]
        else:
            out[code] = name
    return out


# --- metadata.csv (Waterbirds' format, any classes and attributes) ---------------------------

def read_metadata_csv(root: str | Path, check_files: bool = True, group_by: str | None = None,
                      waterbirds: bool | None = None):
    """A dataset described by metadata.csv: img_filename, y (class index), split (0/1/2 or train/val/test),
    and any attribute columns. Waterbirds' own file is one: img_id, img_filename, y, split, place.

    `group_by` names the attribute column that groups are made from (default: the description's
    `group_by`, else `place` when present, else no groups). `waterbirds=True` reads it as Waterbirds
    (class and attribute names) even without Waterbirds' place_filename column; None decides from the file.
    """

    root = Path(root).expanduser()
    csv_file = root if root.suffix.lower() == ".csv" else root / "metadata.csv"
    if not csv_file.exists():
        raise DatasetError(f"{csv_file} does not exist; a metadata.csv dataset holds columns img_filename, y, split "
                     "(and attribute columns such as Waterbirds' place)")
    root = csv_file.parent
    required = ("img_filename", "y", "split", "place") if waterbirds else ("img_filename", "y", "split")
    meta = read_csv(csv_file, required, text=("img_filename", "img_id"))  # ids "01" and "1" are two images
    desc = read_description(root)
    wb = bool(waterbirds) or (waterbirds is None and not desc and is_waterbirds(meta))
    spec = {**WATERBIRDS_DESCRIPTION, **desc} if wb else desc

    y = pd.to_numeric(meta["y"], errors="coerce")
    bad = sorted(map(str, meta.loc[y.isna() | (y < 0) | (y % 1 != 0), "y"].unique()))
    if bad:
        raise DatasetError(f"{csv_file}: column 'y' must hold class indices 0, 1, ...; found {bad[:MAX_LISTED]}")
    labels = y.astype(int).to_numpy()
    where = str(csv_file)
    class_names = class_names_from(root, desc, meta, labels, where, default=spec.get("classes"))
    notes = []
    if wb and not waterbirds and (note := waterbirds_note(csv_file, meta, class_names,
                                                           named_classes=class_names != spec.get("classes"))):
        notes.append(note)

    splits = meta["split"].map(waterbirds_split)  # 0/1/2 as numbers or text, or train/val/test
    if splits.isna().any():
        bad = sorted({"empty" if pd.isna(v) else str(v) for v in meta.loc[splits.isna(), "split"]})
        raise DatasetError(f"{csv_file}: column 'split' must be 0/1/2 (train/val/test); found {bad[:MAX_LISTED]}")
    outside = [f for f in meta["img_filename"].astype(str) if not is_inside(f)]
    if outside:
        raise DatasetError(f"{csv_file}: img_filename must be a path inside {root}; {len(outside)} are not "
                     f"(absolute, or leaving the folder with '..'), e.g. {outside[:MAX_LISTED]}")
    ids = meta["img_id"].astype(str) if "img_id" in meta.columns else meta["img_filename"].astype(str)
    if ids.duplicated().any():
        raise DatasetError(f"{csv_file}: image ids repeat, e.g. {ids[ids.duplicated()].iloc[0]!r}")
    paths = [root / f for f in meta["img_filename"].astype(str)]
    if check_files:
        check_files_exist(paths, csv_file)
        check_inside_folder(paths, root, csv_file)

    column = group_by or spec.get("group_by") or ("place" if "place" in meta.columns else None)
    attribute, codes = None, [None] * len(meta)
    if column is not None:
        if column not in meta.columns:
            raise DatasetError(f"{csv_file} has no column {column!r} to group by; it has {list(meta.columns)}")
        codes, attribute = encode_attribute(meta[column], column, (spec.get("attributes") or {}).get(column), where)
        codes = [int(c) for c in codes]
    n_values = len(attribute.values) if attribute else 0
    records = [ImageRecord(image_id=i, path=p, split=s, label=int(lab),
                           group=None if c is None else lab * n_values + c, place=c)
               for i, p, s, lab, c in zip(ids, paths, splits, labels, codes)]
    return ImageDataset(name=str(desc.get("name") or root.name), kind="waterbirds" if wb else "metadata_csv",
                        root=root, records=records, class_names=class_names,
                        group_names=group_names_for(class_names, attribute), attribute=attribute,
                        class_synsets=class_synsets_from(desc, class_names, str(root / DESCRIPTION_FILE)),
                        notes=notes)


# --- CelebA-style attribute tables ----------------------------------------------------------

def _read_table(path: Path) -> pd.DataFrame:
    """CelebA's attribute/partition file: CSV (Kaggle) or the original whitespace text."""
    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path)
        lines = path.read_text(encoding="utf-8").splitlines()
        first = lines[0].split()
        if len(first) == 1 and first[0].isdigit() and len(lines) > 1:  # "202599" then the header line
            header = ["image_id", *lines[1].split()]
            body = lines[2:]
        else:  # a partition file: "000001.jpg 0"
            header = ["image_id", "partition"]
            body = lines
        rows = [ln.split() for ln in body if ln.strip()]
        return pd.DataFrame(rows, columns=header).apply(_numeric_if_possible)
    except (OSError, ValueError, IndexError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DatasetError(f"{path} is not a readable attribute table: {exc}") from None


def _numeric_if_possible(column: pd.Series) -> pd.Series:
    converted = pd.to_numeric(column, errors="coerce")
    return column if converted.isna().any() else converted


def find_attribute_table(root: Path) -> Path | None:
    return next((root / n for n in CELEBA_TABLES if (root / n).exists()), None)


def read_attribute_table(root: str | Path, target: str | None = None, group_by: str | None = None,
                         images: str | Path | None = None, check_files: bool = True):
    """A CelebA-style dataset: a table of images x attributes (±1 or 0/1), optionally a partition file.

    `target` is the attribute that is the class (a yes/no attribute gives classes "not X" and "X";
    e.g. target="Blond_Hair", group_by="Male" is the classic CelebA bias benchmark). Splits come
    from list_eval_partition (0/1/2), else every image is in "all". Images are looked for under
    `images`, else img_align_celeba/ (or the Kaggle copy's nested folder), else the root.
    """

    root = as_dir(root, "attribute-table dataset")
    table_file = find_attribute_table(root)
    if table_file is None:
        raise DatasetError(f"{root} has no attribute table ({' or '.join(CELEBA_TABLES)})")
    table = _read_table(table_file)
    key = next((c for c in PATH_COLUMNS if c in table.columns), table.columns[0])
    attributes = [c for c in table.columns if c != key]
    if target is None or target not in table.columns:
        got = "no target was given" if target is None else f"it has no column {target!r}"
        raise DatasetError(f"{table_file}: choose the attribute that is the class with target=COLUMN ({got}); "
                     f"its attributes: {attributes[:40]}")
    if group_by is not None and group_by not in table.columns:
        raise DatasetError(f"{table_file} has no column {group_by!r} to group by; its attributes: {attributes[:40]}")
    desc = read_description(root)
    specs = desc.get("attributes") or {}
    labels, target_attr = encode_attribute(table[target], target, specs.get(target), str(table_file))
    class_names = list(target_attr.values)
    attribute, codes = None, [None] * len(table)
    if group_by is not None:
        codes, attribute = encode_attribute(table[group_by], group_by, specs.get(group_by), str(table_file))
    split_of = {}
    part_file = next((root / n for n in CELEBA_PARTITIONS if (root / n).exists()), None)
    if part_file is not None:
        parts = _read_table(part_file)
        pcol = "partition" if "partition" in parts.columns else parts.columns[-1]
        split_of = dict(zip(parts[parts.columns[0]].astype(str),
                            parts[pcol].map({0: "train", 1: "val", 2: "test"}).fillna("all")))
    folder = Path(images) if images is not None else next(
        (root / d for d in CELEBA_IMAGE_DIRS if (root / d / str(table[key].iloc[0])).exists()), root)
    folder = folder if folder.is_absolute() else root / folder
    names = table[key].astype(str)
    paths = [folder / n for n in names]
    if check_files:
        check_files_exist(paths, table_file)
        check_inside_folder(paths, folder, table_file)
    n_values = len(attribute.values) if attribute else 0
    records = [ImageRecord(image_id=n, path=p, split=split_of.get(n, "all"), label=int(lab),
                           group=None if c is None else int(lab) * n_values + int(c),
                           place=None if c is None else int(c))
               for n, p, lab, c in zip(names, paths, labels, codes)]
    return ImageDataset(name=str(desc.get("name") or root.name), kind="attribute_table", root=root,
                        records=records, class_names=class_names,
                        group_names=group_names_for(class_names, attribute), attribute=attribute,
                        class_synsets=class_synsets_from(desc, class_names, str(root / DESCRIPTION_FILE)))


# --- an attributes CSV for an ImageFolder tree ----------------------------------------------

def attach_attributes(dataset, attributes_csv: str | Path, group_by: str | None = None):
    """The dataset with groups from an attributes CSV: one row per image, keyed by its path relative to the
    dataset root (column path / image_id / filename; a bare file name works when names are unique)."""

    csv_file = Path(attributes_csv).expanduser()
    if not csv_file.is_absolute() and not csv_file.exists():
        csv_file = dataset.root / csv_file
    frame = read_csv(csv_file, (), text=PATH_COLUMNS)
    key = next((c for c in PATH_COLUMNS if c in frame.columns), None)
    if key is None:
        raise DatasetError(f"{csv_file} needs a column naming each image ({' or '.join(PATH_COLUMNS)}); "
                     f"it has {list(frame.columns)}")
    others = [c for c in frame.columns if c != key]
    desc = read_description(dataset.root)
    column = group_by or desc.get("group_by") or (others[0] if len(others) == 1 else None)
    if column is None or column not in frame.columns:
        raise DatasetError(f"{csv_file}: say which column to group by (group_by=COLUMN); it has {others}")
    keys = frame[key].astype(str).str.replace("\\", "/", regex=False)
    by_path = dict(zip(keys, frame.index))
    by_name = dict(zip(keys.map(lambda k: k.rsplit("/", 1)[-1]), frame.index))
    if len(by_name) < len(keys):
        by_name = {}
    rows, missing = [], []
    for r in dataset.records:
        i = by_path.get(r.image_id, by_path.get(r.path.as_posix(), by_name.get(r.path.name)))
        (missing.append(r.image_id) if i is None else rows.append(i))
    if missing:
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise DatasetError(f"{csv_file} has no row for {len(missing)} of {len(dataset)} images: "
                     f"{', '.join(missing[:MAX_LISTED])}{more}")
    values = frame.loc[rows, column].reset_index(drop=True)
    codes, attribute = encode_attribute(values, column, (desc.get("attributes") or {}).get(column), str(csv_file))
    n = len(attribute.values)
    for r, c in zip(dataset.records, codes):
        r.place, r.group = int(c), r.label * n + int(c)
    dataset.attribute = attribute
    dataset.group_names = group_names_for(dataset.class_names, attribute)
    return dataset
