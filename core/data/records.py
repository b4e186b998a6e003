"""A dataset as the rest of the project sees it: `ImageDataset`, a list of `ImageRecord`s with class and group
names, and the checks every reader applies to the files it is given (folders, CSV columns, paths that must
stay inside the dataset). Readers (core.data.readers) and the label descriptions (core.data.description)
build on these.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.data.images import load_rgb
from core.errors import DatasetError

# torchvision's ImageFolder extensions, and GIF (its first frame is read).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
SPLIT_ORDER = ("train", "val", "test", "all")
# Folder names accepted as splits of an ImageFolder tree, and what they are called here.
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
WATERBIRDS_SPLITS = {0: "train", 1: "val", 2: "test"}
MAX_LISTED = 5  # how many missing files an error message names


@dataclass(frozen=True)
class Attribute:
    """One named attribute of the images (the one groups are made from)."""

    column: str               # where it lives in the metadata
    name: str                 # what it is, in words ("background")
    values: tuple[str, ...]   # value names; a value's code is its index
    boolean: bool = False     # a yes/no attribute: values are ("not <name>", "<name>")

    def group_name(self, class_name: str, code: int) -> str:
        if self.boolean:
            return f"{class_name} · {self.name}" if code == 1 else f"{class_name} · not {self.name}"
        return f"{class_name} · {self.name}: {self.values[code]}"

    def to_dict(self) -> dict:
        return {"column": self.column, "name": self.name, "values": list(self.values), "boolean": self.boolean}

@dataclass
class ImageRecord:
    image_id: str            # unique within its dataset (Waterbirds' img_id, else the relative path)
    path: Path
    split: str               # "train", "val", "test", or "all" when the dataset has no splits
    label: int               # index into ImageDataset.class_names
    group: int | None = None  # label * n_values + place (Waterbirds: 2 * label + place)
    place: int | None = None  # code of the group attribute's value (Waterbirds: 0 land, 1 water)


@dataclass
class ImageDataset:
    name: str
    kind: str                 # "waterbirds", "metadata_csv", "attribute_table", "image_folder", "backgrounds_challenge"
    root: Path
    records: list[ImageRecord]
    class_names: list[str]
    group_names: dict[int, str] | None = None
    attribute: Attribute | None = None  # the attribute groups are made from (names its values)
    # Each class's WordNet noun synset ("n02469914"), where the dataset knows it: it settles a name's sense
    # for the concept words ("primate" the animal, not the archbishop; "instrument" the musical one).
    class_synsets: list[str | None] | None = None
    # What the reader assumed or left out that the user should know (printed by the CLI at read time).
    notes: list[str] = field(default_factory=list)
    _by_split: dict[str, list[ImageRecord]] = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    def __getitem__(self, i: int) -> ImageRecord:
        return self.records[i]

    @property
    def splits(self) -> list[str]:
        """Split names present, in the order train, val, test, then any others."""
        present = {r.split for r in self.records}
        known = [s for s in SPLIT_ORDER if s in present]
        return known + sorted(present - set(known))

    def split(self, name: str) -> ImageDataset:
        """The records of one split, as a dataset of their own."""
        if self._by_split is None:
            self._by_split = {}
            for r in self.records:
                self._by_split.setdefault(r.split, []).append(r)
        if name not in self._by_split:
            raise DatasetError(f"{self.name} has no split {name!r}; its splits are {self.splits}")
        return replace(self, records=list(self._by_split[name]))

    def sample(self, max_images: int, seed: int = 0) -> ImageDataset:
        """At most `max_images` records, stratified by group (by class where there are no groups), in the
        dataset's order. Each stratum keeps its share of the records (largest remainders), and every stratum
        keeps at least one image when `max_images` allows, so a small group still has a worst-group number.
        The same records, seed and size give the same sample; all records when there are no more than asked."""
        if max_images < 1:
            raise DatasetError(f"max_images must be >= 1, got {max_images}")
        n = len(self.records)
        if max_images >= n:
            return self
        strata: dict[tuple, list[int]] = {}
        for i, r in enumerate(self.records):
            strata.setdefault((r.label, -1) if r.group is None else (-1, r.group), []).append(i)
        keys = sorted(strata)
        take = {k: 0 for k in keys}
        if max_images >= len(keys):  # one each first, then the rest by share
            take = {k: 1 for k in keys}
        left = max_images - sum(take.values())
        want = {k: left * (len(strata[k]) - take[k]) / (n - sum(take.values())) for k in keys}
        for k in keys:
            take[k] += int(want[k])
        by_remainder = sorted(keys, key=lambda k: (-(want[k] - int(want[k])), k))
        for k in by_remainder[:max_images - sum(take.values())]:
            take[k] += 1
        rng = np.random.default_rng(seed)
        chosen = sorted(int(i) for k in keys
                        for i in rng.choice(strata[k], size=min(take[k], len(strata[k])), replace=False))
        return replace(self, records=[self.records[i] for i in chosen])

    def to_frame(self) -> pd.DataFrame:
        """One row per image: image_id, path, split, label, class_name, group, group_name, place."""
        rows = [{
            "image_id": r.image_id, "path": str(r.path), "split": r.split, "label": r.label,
            "class_name": self.class_names[r.label], "group": r.group,
            "group_name": (self.group_names or {}).get(r.group) if r.group is not None else None,
            "place": r.place,
        } for r in self.records]
        frame = pd.DataFrame(rows, columns=["image_id", "path", "split", "label", "class_name",
                                            "group", "group_name", "place"])
        for col in ("group", "place"):
            frame[col] = frame[col].astype("Int64")
        return frame

    def load_image(self, record: ImageRecord | int) -> Image.Image:
        """The image as RGB; an unreadable file raises DatasetError naming it."""
        if isinstance(record, int):
            record = self.records[record]
        return load_rgb(record.path)

# --- helpers ---------------------------------------------------------------------------------

def as_dir(root: str | Path, what: str) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{what} folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{what} expects a folder, got the file {root}")
    return root


def read_csv(csv_file: Path, required: tuple[str, ...] | list[str], text: tuple[str, ...] | list[str] = ()
              ) -> pd.DataFrame:
    """A CSV with its `required` columns; the `text` columns (file names, captions) stay exactly as written."""
    try:
        # Only an empty cell is missing: a caption or file named "NA", "None" or "null" is text; and a text
        # column is never parsed as a number (a caption "00" would come back as "0", a file "001" as "1").
        frame = pd.read_csv(csv_file, keep_default_na=False, na_values=[""], dtype={c: str for c in text})
    except FileNotFoundError:
        raise DatasetError(f"{csv_file} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{csv_file} is not a readable CSV file: {exc}") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DatasetError(f"{csv_file} lacks the column(s) {missing}; it has {list(frame.columns)}")
    return frame


def check_files_exist(paths: list[Path], where: Path) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        listed = ", ".join(str(p) for p in missing[:MAX_LISTED])
        more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise DatasetError(f"{len(missing)} of {len(paths)} images listed in {where} are missing: {listed}{more}")


def check_inside_folder(paths: list[Path], root: Path, where: Path | str) -> None:
    """Refuse files that are links (or lie under linked folders) leading outside `root`: as a path with '..'
    would, they read data from elsewhere on the machine."""
    base = os.path.realpath(root)
    outside = [(p, real) for p in paths
               if (real := os.path.realpath(p)) != base and not real.startswith(base.rstrip(os.sep) + os.sep)]
    if outside:
        listed = ", ".join(f"{p} -> {real}" for p, real in outside[:MAX_LISTED])
        raise DatasetError(f"{where}: {len(outside)} image(s) are links to files outside the dataset folder {root} "
                           f"({listed}); files outside it are refused, as paths with '..' are. Copy them into the "
                           "folder, or point --dataset at a folder that holds them")


def is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()

def as_int(value) -> int | None:
    """0, 1.0, "2" -> int; anything else (text, 0.5, empty) -> None."""
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def waterbirds_split(value) -> str | None:
    """Waterbirds' split code (0/1/2, as a number or text) or a split name -> "train"/"val"/"test"."""
    code = as_int(value)
    if code is not None:
        return WATERBIRDS_SPLITS.get(code)
    name = str(value).strip().lower()
    return name if name in SPLIT_ORDER[:3] else None


def is_inside(relative: str) -> bool:
    """Whether a path from a metadata file stays inside the dataset folder (no absolute path, no '..')."""
    path = relative.replace("\\", "/")
    if not path or os.path.isabs(path) or re.match(r"^[A-Za-z]:", path):
        return False
    norm = os.path.normpath(path)
    return norm != ".." and not norm.startswith("../") and not norm.startswith("/")
