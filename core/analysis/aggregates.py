"""Sufficient statistics of a run: the two small tables every word share, log-odds score, flag and accuracy is
computed from, in place of one row per (image, word).

Images alike in every key the analysis groups by (split, class, its name, prediction, its name, group, number of
sentences, unreadable or not) form a *cell*; `RunStats.images` has one row per cell with its number of images.
`RunStats.words` has one row per (cell, word) with integer sums over the cell's images that use the word:

    images     images whose sentences use the word
    s1, s2     sum of c and of c², c = the image's sentences that use it, clipped to [0, n_sentences]
    sentences  sum of the sentences that use it (the log-odds' unit), count: sum of its occurrences

A set of images is a set of cells, and a word's share summed over the set is sum over n of s1(n) / n (s2(n) / n²
for the squares): integer sums, divided once per number of sentences n. With one n (a run of N sentences per
image) that is one division; with a power-of-two N (the default 32, every shipped run) each share c / N is
exact in binary and so is every sum, which is why these numbers equal those of summing per-image shares.

The cells are computed in one pass of DuckDB over the run's shards (a join of words and images on the image id,
grouped by cell id and word), or over in-memory DataFrames by the same SQL, and kept per run fingerprint
(core.store.cache): a run's second open reads two small Parquet files. Rows that a page shows (the examples of a
flag, the words of one image) are fetched by query, never by loading the tables.

    stats = run_stats(run)                    # RunStats of a core.store.Run
    stats.select(["landbird", "waterbird"], split="test").n_images
    totals(stats.words, n_images)             # word -> sentences, count, images, share (mean over the images)
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import pandas as pd

CELL_KEYS = ["split", "label", "label_name", "prediction", "prediction_name", "group", "n_sentences", "unreadable"]
WORD_KEYS = ["split", "label", "prediction", "group", "n_sentences"]  # the cell keys carried onto word rows
SUMS = ["images", "s1", "s2", "sentences", "count"]
STATS_VERSION = 1  # part of the cache key: bump when the cells' definition changes

__all__ = ["RunStats", "run_stats", "frame_stats", "totals", "share_sums", "filter_sql", "cell_mask",
           "CELL_KEYS", "SUMS"]


@dataclass
class RunStats:
    """A run's (or a set of its images') cells: `images` one row per cell (cell, CELL_KEYS, first: the position
    of its first image in the run, n_images), `words` one row per (cell, word) with SUMS and the WORD_KEYS."""

    images: pd.DataFrame
    words: pd.DataFrame

    @property
    def n_images(self) -> int:
        return int(self.images["n_images"].sum())

    def where(self, keep: np.ndarray | pd.Series) -> "RunStats":
        """The cells where `keep` (a mask over `images`) holds, and their words."""
        keep = np.asarray(keep, dtype=bool)
        if keep.all():
            return self
        images = self.images[keep]
        words = self.words[np.isin(self.words["cell"].to_numpy(), images["cell"].to_numpy())]
        return RunStats(images, words)

    def select(self, class_names: list[str], **filters: Any) -> "RunStats":
        """The cells of the images `select_images` keeps with these filters (label, prediction, group, split,
        outcome); image ids are not a cell key (see RunTables.subset)."""
        return self.where(cell_mask(self.images, class_names, filters))


def as_label_values(value: Any, names: list[str], argument: str) -> list[int]:
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


def as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple, set, np.ndarray, pd.Series)) else [value]


def cell_mask(cells: pd.DataFrame, class_names: list[str], filters: dict) -> np.ndarray:
    """Which cells `select_images(**filters)` keeps (the same rules, on the cells' keys)."""
    if filters.get("image_ids") is not None:
        raise ValueError("image ids are not a cell key: use RunTables.subset for a set of image ids")
    mask = np.ones(len(cells), dtype=bool)
    for column in ("label", "prediction"):
        if filters.get(column) is not None:
            values = as_label_values(filters[column], class_names, column)
            mask &= cells[column].isin(values).fillna(False).to_numpy(bool)
    if filters.get("group") is not None:
        mask &= cells["group"].isin([int(g) for g in as_list(filters["group"])]).fillna(False).to_numpy(bool)
    if filters.get("split") is not None:
        mask &= cells["split"].isin(as_list(filters["split"])).fillna(False).to_numpy(bool)
    outcome = filters.get("outcome")
    if outcome is not None:
        if outcome not in ("correct", "wrong"):
            raise ValueError(f"outcome must be 'correct' or 'wrong', got {outcome!r}")
        known = (cells["label"].notna() & cells["prediction"].notna()).to_numpy(bool)
        same = (cells["label"] == cells["prediction"]).fillna(False).to_numpy(bool)
        mask &= known & (same if outcome == "correct" else ~same)
    return mask


def _literal(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return "'" + str(value).replace("'", "''") + "'"


def filter_sql(filters: list[dict]) -> str:
    """The SQL condition on the `images` table that keeps what `cell_mask` keeps with every one of `filters`
    (class names already turned into indices: RunTables.select); "TRUE" for none."""
    parts = []
    for f in filters:
        for column in ("label", "prediction"):
            if f.get(column) is not None:
                values = [int(v) for v in as_list(f[column])]
                parts.append(f"{column} IN ({', '.join(map(_literal, values))})" if values else "FALSE")
        if f.get("group") is not None:
            groups = [int(g) for g in as_list(f["group"])]
            parts.append(f'"group" IN ({", ".join(map(_literal, groups))})' if groups else "FALSE")
        if f.get("split") is not None:
            splits = as_list(f["split"])
            parts.append(f"split IN ({', '.join(map(_literal, splits))})" if splits else "FALSE")
        outcome = f.get("outcome")
        if outcome is not None:
            if outcome not in ("correct", "wrong"):
                raise ValueError(f"outcome must be 'correct' or 'wrong', got {outcome!r}")
            parts.append(f"(label IS NOT NULL AND prediction IS NOT NULL AND label "
                         f"{'=' if outcome == 'correct' else '<>'} prediction)")
    return " AND ".join(f"({p})" for p in parts) or "TRUE"


# --- computing the cells -------------------------------------------------------------------------------------------

def _image_columns(con, view: str = "images") -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}


def _key_expr(name: str, present: set[str], cast: str | None = None) -> str:
    column = f'"{name}"'
    if name not in present:
        return f"CAST(NULL AS {cast or 'VARCHAR'}) AS {column}"
    return f"CAST({column} AS {cast}) AS {column}" if cast else f"CAST({column} AS VARCHAR) AS {column}"


def compute_cells(con, images: str = "images", words: str = "words") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(image cells, word cells) of the tables that views `images` (with a column `_pos`: each image's place in
    the run) and `words` of connection `con` hold. Word cells carry only the cell id (see RunStats for the rest)."""
    present = _image_columns(con, images)
    keys = ", ".join([
        _key_expr("split", present), _key_expr("label", present, "BIGINT"), _key_expr("label_name", present),
        _key_expr("prediction", present, "BIGINT"), _key_expr("prediction_name", present),
        _key_expr("group", present, "BIGINT"), _key_expr("n_sentences", present, "BIGINT")])
    unreadable = ("(error IS NOT NULL AND CAST(error AS VARCHAR) <> '')" if "error" in present else "FALSE")
    order = ", ".join(f'"{k}"' for k in CELL_KEYS)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _cell_of AS
        SELECT image_id, n_sentences, _pos, {order},
               CAST(dense_rank() OVER (ORDER BY {order}) AS BIGINT) AS _rank
        FROM (SELECT image_id, {keys}, {unreadable} AS unreadable, _pos FROM {images})""")
    # Cells are numbered in the order their first image appears in the run.
    cells = con.execute(f"""
        SELECT CAST(row_number() OVER (ORDER BY min(_pos)) - 1 AS BIGINT) AS cell, _rank,
               {", ".join(f'any_value("{k}") AS "{k}"' for k in CELL_KEYS)},
               min(_pos) AS first, CAST(count(*) AS BIGINT) AS n_images
        FROM _cell_of GROUP BY _rank ORDER BY first""").df()
    con.register("_cells_df", cells[["cell", "_rank"]])
    word_cells = con.execute(f"""
        WITH img AS (SELECT c.image_id, c.n_sentences, d.cell FROM _cell_of c JOIN _cells_df d ON c._rank = d._rank
                     WHERE c.n_sentences > 0),
             -- Cast: a shard written from an empty words DataFrame stores its counts as strings.
             r AS (SELECT img.cell, w.word, least(greatest(CAST(w.sentences AS BIGINT), 0), img.n_sentences) AS c,
                          CAST(w.sentences AS BIGINT) AS sentences, CAST(w."count" AS BIGINT) AS "count"
                   FROM {words} w JOIN img ON w.image_id = img.image_id WHERE w.word IS NOT NULL)
        SELECT cell, CAST(word AS VARCHAR) AS word, CAST(count(*) AS BIGINT) AS images, CAST(sum(c) AS BIGINT) AS s1,
               CAST(sum(CAST(c AS BIGINT) * c) AS BIGINT) AS s2, CAST(sum(sentences) AS BIGINT) AS sentences,
               CAST(sum("count") AS BIGINT) AS "count"
        FROM r GROUP BY cell, word""").df()
    con.unregister("_cells_df")
    con.execute("DROP TABLE _cell_of")
    return _typed_cells(cells.drop(columns="_rank")), _typed_word_cells(word_cells)


def _typed_cells(cells: pd.DataFrame) -> pd.DataFrame:
    out = cells.copy()
    for column in ("label", "prediction", "group", "n_sentences"):
        out[column] = out[column].astype("Int64")
    for column in ("split", "label_name", "prediction_name"):
        out[column] = out[column].astype("str")
    out["unreadable"] = out["unreadable"].astype(bool)
    out["cell"], out["first"], out["n_images"] = (out[c].astype("int64") for c in ("cell", "first", "n_images"))
    return out.sort_values("first", kind="stable").reset_index(drop=True)


def _typed_word_cells(words: pd.DataFrame) -> pd.DataFrame:
    out = words.sort_values(["cell", "word"], kind="stable").reset_index(drop=True)
    out["word"] = pd.Categorical(out["word"].astype(str), categories=sorted(set(out["word"].astype(str))))
    for column in ("cell", *SUMS):
        out[column] = out[column].fillna(0).astype("int64")
    return out


def with_keys(image_cells: pd.DataFrame, word_cells: pd.DataFrame) -> RunStats:
    """RunStats from the two stored tables: the cell keys the analysis groups words by are put onto word rows."""
    keys = image_cells.set_index("cell")[WORD_KEYS]
    words = word_cells.join(keys, on="cell")
    return RunStats(image_cells, words)


def run_stats(run) -> RunStats:
    """The cells of a core.store.Run, from its shards in one pass, kept per run fingerprint (core.store.cache)."""
    from core.store.cache import cached_frame

    fingerprint = run.fingerprint()
    computed: dict[str, pd.DataFrame] = {}

    def both() -> dict[str, pd.DataFrame]:
        from core.store.run import duckdb_connection, reading_shards

        if not computed:
            if not run.shard_files("images"):
                computed.update(images=_typed_cells(_empty_cells()), words=_typed_word_cells(_empty_words()))
            else:
                con = duckdb_connection(bounded=True)
                try:
                    with reading_shards(run.path):
                        add_store_views(con, "images", run, [], words=True, positions=True)
                        computed["images"], computed["words"] = compute_cells(con, "images", "images_words")
                finally:
                    con.close()
        return computed

    params = {"version": STATS_VERSION}
    images = cached_frame(run, "image-cells", params, lambda: both()["images"], fingerprint)
    words = cached_frame(run, "word-cells", params, lambda: both()["words"], fingerprint)
    return with_keys(images, words)


def _empty_cells() -> pd.DataFrame:
    return pd.DataFrame({"cell": pd.Series(dtype="int64"), **{k: pd.Series(dtype=object) for k in CELL_KEYS},
                         "first": pd.Series(dtype="int64"), "n_images": pd.Series(dtype="int64")})


def _empty_words() -> pd.DataFrame:
    return pd.DataFrame({"cell": pd.Series(dtype="int64"), "word": pd.Series(dtype=str),
                         **{k: pd.Series(dtype="int64") for k in SUMS}})


_EMPTY_IMAGES = {"image_id": "str", "label": "Int64", "label_name": "str", "prediction": "Int64",
                 "prediction_name": "str", "group": "Int64", "split": "str", "n_sentences": "Int64", "error": "str"}
_EMPTY_WORDS = {"image_id": "str", "word": "str", "count": "Int64", "sentences": "Int64"}


def _register(con, name: str, frame: pd.DataFrame) -> None:
    con.register(f"_{name}_df", frame)
    con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_df")


def add_views(con, name: str, tables, words: bool = False, positions: bool = False) -> None:
    """Views `name` (the tables' selected images; with `_pos`, each image's place in the run, when `positions`)
    and, when `words`, `<name>_words` (every words row: join on image_id to keep the selected images') on `con`:
    read_parquet over a run's readable shards, or the DataFrames of in-memory tables (a RunTables)."""
    if tables.in_store:
        add_store_views(con, name, tables.run, tables.filters, words, positions)
    else:
        add_frame_views(con, name, tables.images, tables.words if words else None, positions)


def add_store_views(con, name: str, run, filters: list[dict], words: bool = False, positions: bool = False) -> None:
    """`add_views` over a core.store.Run's readable shards, its images kept by `filters` (see filter_sql)."""
    files = {t: run.shard_files(t) for t in ("images", "words")}
    if files["images"]:
        extra = ", filename=true, file_row_number=true" if positions else ""
        pos = (r", (CAST(regexp_extract(filename, 'shard-(\d+)', 1) AS BIGINT) << 32) + file_row_number AS _pos"
               if positions else "")
        star = "* EXCLUDE (filename, file_row_number)" if positions else "*"
        con.execute(f"CREATE VIEW {name} AS SELECT {star}{pos} FROM read_parquet({files['images']!r}, "
                    f"union_by_name=true{extra}) WHERE {filter_sql(filters)}")
    else:
        frame = pd.DataFrame({c: pd.Series(dtype=d) for c, d in _EMPTY_IMAGES.items()})
        _register(con, name, frame.assign(_pos=pd.Series(dtype="int64")) if positions else frame)
    if words:
        if files["words"]:
            con.execute(f"CREATE VIEW {name}_words AS SELECT * FROM read_parquet({files['words']!r}, "
                        "union_by_name=true)")
        else:
            _register(con, f"{name}_words", pd.DataFrame({c: pd.Series(dtype=d) for c, d in _EMPTY_WORDS.items()}))


def add_frame_views(con, name: str, images: pd.DataFrame, words: pd.DataFrame | None = None,
                    positions: bool = False) -> None:
    """`add_views` over in-memory DataFrames (`_pos`: the images' row order)."""
    images = images.reset_index(drop=True)
    _register(con, name, images.assign(_pos=np.arange(len(images), dtype="int64")) if positions else images)
    if words is not None:
        if isinstance(words["word"].dtype, pd.CategoricalDtype):
            words = words.assign(word=words["word"].astype(str))
        _register(con, f"{name}_words", words)


@contextmanager
def tables_connection(named: dict, words: bool = False, positions: bool = False) -> Iterator[Any]:
    """A DuckDB connection (bounded memory) with `add_views` for each name -> RunTables of `named`."""
    from core.store.run import duckdb_connection

    con = duckdb_connection(bounded=True)
    try:
        for name, tables in named.items():
            add_views(con, name, tables, words=words, positions=positions)
        yield con
    finally:
        con.close()


def query(tables, sql: str, params: list | None = None, frames: dict | None = None, positions: bool = False
          ) -> pd.DataFrame:
    """`sql` over views `images` (the tables' selected images), `images_words` (every words row: join on image_id)
    and the DataFrames of `frames` (name -> frame) of one RunTables: DuckDB over a run's shards or in-memory
    tables alike."""
    from core.store.run import run_sql

    with tables_connection({"images": tables}, words=True, positions=positions) as con:
        for name, frame in (frames or {}).items():
            con.register(name, frame)
        return run_sql(con, sql, params, tables.run.path if tables.run is not None else "in-memory tables")


def image_key_sql(tables, keys: list[str], alias: str = "i") -> tuple[str, str]:
    """(a select list of `keys` of the tables' images, cast to BIGINT, NULL where a column is missing; the SQL
    of "the image is unreadable"), for queries over `images {alias}`."""
    present = _present_columns(tables)
    cols = ", ".join(f'CAST({alias}."{k}" AS BIGINT) AS "{k}"' if k in present else f'CAST(NULL AS BIGINT) AS "{k}"'
                     for k in keys)
    unreadable = (f"({alias}.error IS NOT NULL AND CAST({alias}.error AS VARCHAR) <> '')" if "error" in present
                  else "FALSE")
    return cols, unreadable


def _present_columns(tables) -> set[str]:
    if not tables.in_store:
        return set(tables.images.columns)
    from core.store.run import IMAGE_COLUMNS

    return set(IMAGE_COLUMNS)


def frame_stats(images: pd.DataFrame, words: pd.DataFrame) -> RunStats:
    """The cells of in-memory tables (what tests and notebooks build), by the same SQL as a run's."""
    from core.store.run import duckdb_connection

    if images.empty:
        return with_keys(_typed_cells(_empty_cells()), _typed_word_cells(_empty_words()))
    con = duckdb_connection(bounded=True)
    try:
        add_frame_views(con, "images", images, words, positions=True)
        cells, word_cells = compute_cells(con, "images", "images_words")
    finally:
        con.close()
    return with_keys(cells, word_cells)


# --- reading the cells -------------------------------------------------------------------------------------------

def share_sums(words: pd.DataFrame, by: Iterable[str]) -> pd.DataFrame:
    """Per `by` (e.g. ["word"], or [key, "word"]): images, sentences, count (integer sums) and share, share_sq:
    the sums of the images' sentence shares and of their squares, sum over n of s1(n) / n and s2(n) / n²."""
    by = list(by)
    if words.empty:
        index = pd.MultiIndex.from_tuples([], names=by) if len(by) > 1 else pd.Index([], name=by[0])
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in SUMS else float)
                             for c in ["images", "sentences", "count", "share", "share_sq"]}, index=index)
    per_n = words.groupby([*by, "n_sentences"], observed=True, sort=True)[["images", "s1", "s2", "sentences",
                                                                           "count"]].sum()
    n = per_n.index.get_level_values("n_sentences").to_numpy(dtype=float)
    per_n = per_n.assign(share=per_n["s1"].to_numpy(dtype=float) / n,
                         share_sq=per_n["s2"].to_numpy(dtype=float) / (n * n))
    out = per_n.groupby(level=list(range(len(by))), observed=True, sort=True)[
        ["images", "sentences", "count", "share", "share_sq"]].sum()
    out.index = out.index.set_names(by)
    return out


def totals(words: pd.DataFrame, n_images: int) -> pd.DataFrame:
    """core.analysis.compare.word_totals from cells: per word (index, str), sentences, count, images and share
    (mean sentence share over the `n_images` images)."""
    sums = share_sums(words, ["word"])
    out = pd.DataFrame({"sentences": sums["sentences"].astype("int64"), "count": sums["count"].astype("int64"),
                        "images": sums["images"].astype("int64"), "share": sums["share"] / max(n_images, 1)})
    out.index = pd.Index(out.index.astype(str), name="word")
    return out
