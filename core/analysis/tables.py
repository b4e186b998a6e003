"""The analysis layer's input: a run's images and words tables, and selecting subsets of images.

Every analysis function accepts a `Run` (read from its store) or a `RunTables`. A RunTables made from a run
(`load_tables(run)`, `RunTables.from_run`) reads nothing up front: word statistics, flags and accuracies come from
the run's cells (core.analysis.aggregates: computed in one pass of DuckDB over the shards and cached per run
fingerprint), rows a page shows are fetched by query, and `images` / `words` are read only when asked for (a
million-image run's words do not fit in a laptop's memory). A RunTables of DataFrames (what tests and notebooks
build by hand) gives the same numbers from the same SQL. `select_images` picks the images a question is about.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.analysis.aggregates import as_label_values, as_list

IMAGE_KEYS = ("image_id", "label", "prediction", "n_sentences")
WORD_KEYS = ("image_id", "word", "count", "sentences")


@dataclass(eq=False, repr=False)
class RunTables:
    """A run's tables: `images` and `words` DataFrames given in memory, or (`RunTables.from_run`) a run's store
    read on demand, optionally restricted to some images (`select`). `manifest` is optional (class and group
    names come from it); `run` is the Run they came from, when they came from one (for sentences)."""

    images: pd.DataFrame | None = None  # a property below: read from the store on first use
    words: pd.DataFrame | None = None  # idem
    manifest: dict = field(default_factory=dict)
    run: Any = None

    def __post_init__(self) -> None:
        if (self._images is None or self._words is None) and not (
                self._images is None and self._words is None and self.run is not None):
            raise TypeError("RunTables needs both images and words DataFrames, or RunTables.from_run(run)")
        self.manifest = self.manifest if self.manifest is not None else {}
        self.in_store = self._images is None  # read from the run's store on demand
        self.filters: list[dict] = []  # a store view's select() filters (label and prediction as class indices)
        self._stats = None
        self._base: RunTables = self  # a store view's unrestricted tables: their cells are computed once

    @classmethod
    def from_run(cls, run: Any) -> "RunTables":
        """A run's tables read from its store on demand (nothing is read here)."""
        return cls(None, None, run.manifest, run)

    def __repr__(self) -> str:
        if self.in_store:
            return f"RunTables(store {self.run.path}{f', {self.filters}' if self.filters else ''})"
        return f"RunTables({len(self._images)} images, {len(self._words)} word rows in memory)"

    @property
    def stats(self):
        """The cells of these tables (core.analysis.aggregates.RunStats): what word statistics are computed from."""
        if self._stats is None:
            from core.analysis.aggregates import frame_stats, run_stats

            if not self.in_store:
                self._stats = frame_stats(self._images, self._words)
            elif self._base is not self:
                stats = self._base.stats
                for f in self.filters:
                    stats = stats.select([], **f)
                self._stats = stats
            else:
                self._stats = run_stats(self.run)
        return self._stats

    def select(self, **filters: Any) -> "RunTables":
        """The tables of the images that match `filters` (the keywords of `select_images`; a set of image ids is
        `subset`). A store view stays a view (its cells are the run's, filtered); in-memory tables are filtered."""
        filters = {k: v for k, v in filters.items() if v is not None}
        if "image_ids" in filters:
            raise ValueError("select() takes no image_ids; use subset(...) for a set of image ids")
        if not self.in_store:
            images = select_images(self.images, class_names=self.class_names, **filters)
            return RunTables(images.reset_index(drop=True), self.words, self.manifest, self.run)
        for column in ("label", "prediction"):  # class names become indices once, with the whole run's names
            if column in filters:
                filters[column] = as_label_values(filters[column], self._base.class_names, column)
        if "outcome" in filters and filters["outcome"] not in ("correct", "wrong"):
            raise ValueError(f"outcome must be 'correct' or 'wrong', got {filters['outcome']!r}")
        view = RunTables(None, None, self.manifest, self.run)
        view._base, view.filters = self._base, [*self.filters, filters] if filters else list(self.filters)
        return view

    def subset(self, images: pd.DataFrame | Iterable[str]) -> "RunTables":
        """In-memory tables of some images: `images` rows (with image_id, label, prediction, n_sentences) or image
        ids (their rows are looked up); their words are read from the store for a run's tables."""
        if not isinstance(images, pd.DataFrame) or "n_sentences" not in images:
            ids = images["image_id"] if isinstance(images, pd.DataFrame) else list(images)
            images = self.images_of(ids)
        return RunTables(images, self.words_of(images["image_id"]), self.manifest, self.run)

    def images_of(self, image_ids: Iterable) -> pd.DataFrame:
        """The images rows of these ids (among the selected images), in the run's order."""
        ids = pd.Series(list(image_ids), dtype=object).astype(str)
        if not self.in_store or self._images is not None:
            return self.images[isin(self.images["image_id"], ids)]
        rows = self._query_ids("images", ids, order=True)
        return rows if rows is not None else self.run.images().head(0)

    def words_of(self, image_ids: Iterable) -> pd.DataFrame:
        """The words rows of these images."""
        ids = pd.Series(list(image_ids), dtype=object).astype(str)
        if not self.in_store or self._words is not None:
            return self.words[isin(self.words["image_id"], ids)]
        rows = self._query_ids("words", ids)
        return rows if rows is not None else pd.DataFrame({c: pd.Series(dtype=object) for c in WORD_KEYS})

    def _query_ids(self, table: str, ids: pd.Series, order: bool = False) -> pd.DataFrame | None:
        """Rows of `table` for some image ids (of the selected images), by one query; None when there are none."""
        from core.analysis.aggregates import filter_sql
        from core.store.run import run_sql

        if ids.empty or not self.run.done_shards():
            return None
        con = self.run.connect(positions=order)
        try:
            con.register("_ids", pd.DataFrame({"image_id": ids.drop_duplicates().to_numpy(dtype=object)}))
            where = f"image_id IN (SELECT image_id FROM _ids) AND image_id IN (SELECT image_id FROM images WHERE " \
                    f"{filter_sql(self.filters)})"
            rows = run_sql(con, f"SELECT * FROM {table} WHERE {where}" + (" ORDER BY _pos" if order else ""), None,
                           self.run.path)
        finally:
            con.close()
        return rows.drop(columns="_pos") if order else rows

    # names ----------------------------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        # The images' own names (of the selected images), from their cells unless the table is already read.
        images = self._images if self._images is not None else self.stats.images
        return _class_names(self.manifest, images)

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


def _images(self: RunTables) -> pd.DataFrame:
    """The images table (of the selected images); for a run's store, read on first use."""
    if self._images is None:
        from core.analysis.aggregates import filter_sql

        if self.filters and self.run.done_shards():
            self._images = self.run.query(f"SELECT * FROM images WHERE {filter_sql(self.filters)}")
        else:
            self._images = self.run.images()
    return self._images


def _words(self: RunTables) -> pd.DataFrame:
    """The words table; for a run's store, read on first use (only the selected images' rows)."""
    if self._words is None:
        from core.analysis.aggregates import filter_sql

        if self.filters and self.run.done_shards():
            self._words = self.run.query("SELECT * FROM words WHERE image_id IN (SELECT image_id FROM images "
                                         f"WHERE {filter_sql(self.filters)})")
        else:
            self._words = self.run.words()
    return self._words


def _setter(name: str):
    def set_table(self: RunTables, value: pd.DataFrame | None) -> None:
        setattr(self, name, value)
        self._stats = None  # the cells of other tables

    return set_table


# Fields of the dataclass (RunTables(images, words, ...), dataclasses.replace) read through these properties.
RunTables.images = property(_images, _setter("_images"))
RunTables.words = property(_words, _setter("_words"))



def _class_names(manifest: dict, images: pd.DataFrame) -> list[str]:
    names = ((manifest or {}).get("dataset") or {}).get("class_names")
    if names:
        names = [str(n) for n in names]
        # A classifier may predict classes the dataset has no images of (ImageNet-9's "none of the nine"):
        # they follow the dataset's, named as the run recorded them.
        seen = class_names_from_images(images)
        return names + seen[len(names):]
    return class_names_from_images(images)


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
    """A `RunTables` from a Run (read on demand), a run folder's path, a RunTables, or an (images, words) pair of
    DataFrames."""
    from pathlib import Path

    from core.store import Run

    if isinstance(run_or_tables, (str, Path)):
        run_or_tables = Run.open(run_or_tables)  # a clear RunStoreError when it is not a run folder
    if isinstance(run_or_tables, RunTables):
        tables = run_or_tables
    elif isinstance(run_or_tables, Run):
        return RunTables.from_run(run_or_tables)
    elif isinstance(run_or_tables, (tuple, list)) and len(run_or_tables) == 2:
        tables = RunTables(run_or_tables[0], run_or_tables[1])
    else:
        raise TypeError("run_or_tables must be a core.store.Run, a run folder path, a RunTables or an (images, words) "
                        f"pair of DataFrames, got {type(run_or_tables).__name__}")
    if not tables.in_store:
        _check_columns(tables.images, "images", IMAGE_KEYS)
        _check_columns(tables.words, "words", WORD_KEYS)
    return tables


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
        mask &= images["label"].isin(as_label_values(label, names, "label"))
    if prediction is not None:
        mask &= images["prediction"].isin(as_label_values(prediction, names, "prediction"))
    if group is not None:
        if "group" not in images:
            raise ValueError("group was given but images has no 'group' column")
        mask &= images["group"].isin([int(g) for g in as_list(group)])
    if split is not None:
        if "split" not in images:
            raise ValueError("split was given but images has no 'split' column")
        mask &= images["split"].isin(as_list(split))
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
    """Images with a known label and prediction and no recorded error (what accuracy is computed on); also the
    cells of such images (core.analysis.aggregates), whose `unreadable` says whether they have an error."""
    keep = images["label"].notna() & images["prediction"].notna()
    if "error" in images:
        keep &= images["error"].isna() | (images["error"].astype(str).str.len() == 0)
    if "unreadable" in images:
        keep &= ~images["unreadable"].astype(bool)
    return images[keep]


def image_counts(images: pd.DataFrame) -> np.ndarray:
    """How many images each row stands for: 1 per row of an images table, `n_images` per cell."""
    if "n_images" in images:
        return images["n_images"].to_numpy(dtype="int64")
    return np.ones(len(images), dtype="int64")


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
    if tables.in_store:  # a view of the run's cells: nothing is read
        used = evaluation_split(tables.stats.images, split)
        return (tables.select(split=used) if used else tables), used
    used = evaluation_split(tables.images, split)
    images = select_images(tables.images, split=used) if used else tables.images
    return RunTables(images.reset_index(drop=True), tables.words, tables.manifest, tables.run), used
