"""The analysis layer's input: a run's images and words tables, and selecting subsets of images.

Every analysis function accepts a `Run` (read from its store) or a `RunTables` (DataFrames already in
memory: what tests and notebooks build by hand). `select_images` picks the images a question is about.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

IMAGE_KEYS = ("image_id", "label", "prediction", "n_sentences")
WORD_KEYS = ("image_id", "word", "count", "sentences")


@dataclass
class RunTables:
    """A run's tables in memory. `manifest` is optional (class and group names come from it)."""

    images: pd.DataFrame
    words: pd.DataFrame
    manifest: dict = field(default_factory=dict)
    run: Any = None  # the Run these came from, when they came from one (for sentences)

    @property
    def class_names(self) -> list[str]:
        names = (self.manifest.get("dataset") or {}).get("class_names")
        if names:
            names = [str(n) for n in names]
            # A classifier may predict classes the dataset has no images of (ImageNet-9's "none of the nine"):
            # they follow the dataset's, named as the run recorded them.
            seen = class_names_from_images(self.images)
            return names + seen[len(names):]
        return class_names_from_images(self.images)

    @property
    def class_synsets(self) -> dict[str, str]:
        """class name -> WordNet noun synset ("n02469914"), for the classes the dataset gave one."""
        ds = self.manifest.get("dataset") or {}
        return {str(n): str(s) for n, s in zip(ds.get("class_names") or [], ds.get("class_synsets") or []) if s}

    @property
    def group_names(self) -> dict[int, str]:
        names = (self.manifest.get("dataset") or {}).get("group_names") or {}
        if isinstance(names, list):
            return {i: str(n) for i, n in enumerate(names)}
        return {int(k): str(v) for k, v in names.items()}


def class_names_from_images(images: pd.DataFrame) -> list[str]:
    """Class names indexed by label, from the images table's label/label_name (and prediction) columns."""
    pairs = {}
    for lab, name in (("label", "label_name"), ("prediction", "prediction_name")):
        if lab in images and name in images:
            sub = images[[lab, name]].dropna().drop_duplicates(lab)
            pairs.update({int(k): str(v) for k, v in zip(sub[lab], sub[name]) if int(k) not in pairs})
    if not pairs:
        labels = pd.concat([images.get("label", pd.Series(dtype=float)),
                            images.get("prediction", pd.Series(dtype=float))]).dropna()
        pairs = {int(k): str(int(k)) for k in labels.unique()}
    if not pairs:
        return []
    return [pairs.get(i, str(i)) for i in range(max(pairs) + 1)]


def isin(series: pd.Series, values: Iterable) -> np.ndarray:
    """`series.isin(values)` as a bool array, fast for pandas' Arrow strings (image ids, words).

    pandas' own isin on Arrow strings builds one Python scalar per value, which costs seconds when
    thousands of image ids are looked up in a million word rows; pyarrow's is_in does not.
    """
    values = values.to_numpy() if isinstance(values, (pd.Series, pd.Index)) else values
    if pd.api.types.is_string_dtype(series.dtype) and not isinstance(series.dtype, pd.CategoricalDtype):
        try:
            arr = pa.array(series)
            wanted = pd.unique(np.asarray(list(values), dtype=object))
            value_set = pa.array([v for v in wanted if isinstance(v, str)], type=arr.type)
            return np.asarray(pc.is_in(arr, value_set=value_set).fill_null(False), dtype=bool)
        except (TypeError, ValueError, pa.ArrowException):
            pass
    return series.isin(list(values) if not isinstance(values, (np.ndarray, list)) else values).to_numpy()


def _check_columns(df: Any, name: str, required: Iterable[str]) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{name} is missing columns {missing}; it has {list(df.columns)}")


def load_tables(run_or_tables: Any) -> RunTables:
    """A `RunTables` from a Run, a run folder's path, a RunTables, or an (images, words) pair of DataFrames."""
    from pathlib import Path

    from core.store import Run

    if isinstance(run_or_tables, (str, Path)):
        run_or_tables = Run.open(run_or_tables)  # a clear RunStoreError when it is not a run folder
    if isinstance(run_or_tables, RunTables):
        tables = run_or_tables
    elif isinstance(run_or_tables, Run):
        tables = RunTables(run_or_tables.images(), run_or_tables.words(), run_or_tables.manifest, run_or_tables)
    elif isinstance(run_or_tables, (tuple, list)) and len(run_or_tables) == 2:
        tables = RunTables(run_or_tables[0], run_or_tables[1])
    else:
        raise TypeError("run_or_tables must be a core.store.Run, a run folder path, a RunTables or an (images, words) "
                        f"pair of DataFrames, got {type(run_or_tables).__name__}")
    _check_columns(tables.images, "images", IMAGE_KEYS)
    _check_columns(tables.words, "words", WORD_KEYS)
    return tables


def _as_label_values(value: Any, names: list[str], argument: str) -> list[int]:
    """Labels given as ints or class names (one or a list) -> list of ints."""
    values = value if isinstance(value, (list, tuple, set, np.ndarray, pd.Series)) else [value]
    out = []
    for v in values:
        if isinstance(v, str):
            if v not in names:
                raise ValueError(f"{argument}={v!r} is not a class name; expected one of {names}")
            out.append(names.index(v))
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            out.append(int(v))
        else:
            raise TypeError(f"{argument} must be a class index or class name, got {v!r}")
    return out


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple, set, np.ndarray, pd.Series)) else [value]


def add_outcome(images: pd.DataFrame) -> pd.DataFrame:
    """Add an `outcome` column: "correct" where prediction == label, "wrong" otherwise, None if unknown."""
    out = images.copy()
    known = out["label"].notna() & out["prediction"].notna()
    out["outcome"] = np.where(~known, None, np.where(out["label"] == out["prediction"], "correct", "wrong"))
    return out


def select_images(images: pd.DataFrame, *, label: Any = None, prediction: Any = None, group: Any = None,
                  split: Any = None, outcome: str | None = None, image_ids: Iterable[str] | None = None,
                  class_names: list[str] | None = None) -> pd.DataFrame:
    """The rows of `images` that match every filter given (None = no filter).

    `label` and `prediction` take a class index, a class name or a list of them; `group` a group id or a
    list; `split` a split name or a list; `outcome` "correct" or "wrong"; `image_ids` any iterable of ids.
    """
    _check_columns(images, "images", ("image_id", "label", "prediction"))
    names = class_names if class_names is not None else class_names_from_images(images)
    mask = pd.Series(True, index=images.index)
    if label is not None:
        mask &= images["label"].isin(_as_label_values(label, names, "label"))
    if prediction is not None:
        mask &= images["prediction"].isin(_as_label_values(prediction, names, "prediction"))
    if group is not None:
        if "group" not in images:
            raise ValueError("group was given but images has no 'group' column")
        mask &= images["group"].isin([int(g) for g in _as_list(group)])
    if split is not None:
        if "split" not in images:
            raise ValueError("split was given but images has no 'split' column")
        mask &= images["split"].isin(_as_list(split))
    if outcome is not None:
        if outcome not in ("correct", "wrong"):
            raise ValueError(f"outcome must be 'correct' or 'wrong', got {outcome!r}")
        same = images["label"] == images["prediction"]
        known = images["label"].notna() & images["prediction"].notna()
        mask &= known & (same if outcome == "correct" else ~same)
    if image_ids is not None:
        mask &= isin(images["image_id"], list(image_ids))
    return images[mask]


def scored_images(images: pd.DataFrame) -> pd.DataFrame:
    """Images with a known label and prediction and no recorded error (what accuracy is computed on)."""
    keep = images["label"].notna() & images["prediction"].notna()
    if "error" in images:
        keep &= images["error"].isna() | (images["error"].astype(str).str.len() == 0)
    return images[keep]


def evaluation_split(images: pd.DataFrame, split: str | None = "auto") -> str | None:
    """The split to evaluate on: `split` itself, or for "auto" "test" when present, else all (None)."""
    if split != "auto":
        return split
    if "split" in images and (images["split"] == "test").any():
        return "test"
    return None


def evaluation_tables(run_or_tables: Any, split: str | None = "auto") -> tuple[RunTables, str | None]:
    """The run's tables restricted to the evaluation split ("auto": test when present, else all images)."""
    tables = load_tables(run_or_tables)
    used = evaluation_split(tables.images, split)
    images = select_images(tables.images, split=used) if used else tables.images
    return RunTables(images.reset_index(drop=True), tables.words, tables.manifest, tables.run), used
