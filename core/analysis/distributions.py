"""Word distributions: how often each word appears in the explanations of a set of images.

The unit is the image. For one image, a word's *sentence share* is the fraction of that image's sampled
sentences that contain it (`sentences / n_sentences` in the words table). For a set of images, a word's
`share` is the mean of that fraction over the set, images without the word counting as 0: "on average,
58% of a landbird's sentences mention water". The interval is the normal approximation over images
(mean ± 1.96 standard errors, clipped to [0, 1]), cheap and honest about the image being the unit.

    shares = word_shares(run, by="label")              # one row per (class, word)
    top_words(shares, k=10, by="label")                # the 10 most shared words per class
    subset_word_shares(run, label="landbird", prediction="waterbird")
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.analysis.aggregates import share_sums
from core.analysis.tables import RunTables, add_outcome, load_tables, select_images

BY_OPTIONS = ("label", "prediction", "outcome", "group", None)
SHARE_COLUMNS = ["word", "share", "images_with_word", "n_images", "ci_low", "ci_high", "total_count"]

__all__ = ["word_shares", "subset_word_shares", "top_words", "select_images", "image_share_matrix",
           "BY_OPTIONS", "SHARE_COLUMNS"]


def key_column(images: pd.DataFrame, by: str | None, tables: RunTables) -> tuple[pd.Series, dict]:
    """Per image, the value of `by` as a readable string, and each value's sort position."""
    if by is None:
        return pd.Series("all", index=images.index), {"all": 0}
    if by in ("label", "prediction"):
        names = tables.class_names
        ids = images[by]
        fallback = images.get(f"{by}_name")
        labels = ids.map(lambda v: names[int(v)] if pd.notna(v) and 0 <= int(v) < len(names) else None)
        if fallback is not None:
            labels = labels.fillna(fallback)
        order = {n: i for i, n in enumerate(names)}
        return labels, order
    if by == "outcome":
        return add_outcome(images)["outcome"], {"correct": 0, "wrong": 1}
    if by == "group":
        if "group" not in images or images["group"].isna().all():
            raise ValueError("by='group' needs group ids, but this run's images have no group "
                             "(use GroupInferrer in core.analysis.groups to infer them)")
        names = tables.group_names
        keys = images["group"].map(lambda g: names.get(int(g), f"group {int(g)}") if pd.notna(g) else None)
        order = {names.get(int(g), f"group {int(g)}"): int(g) for g in images["group"].dropna().unique()}
        return keys, order
    raise ValueError(f"by must be one of {BY_OPTIONS}, got {by!r}")


def image_share_matrix(words: pd.DataFrame, images: pd.DataFrame, keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """Words rows of `images` with `share` = sentences / n_sentences for that image (rows: image, word).

    `keep` names further columns of `images` to carry onto each row.
    """
    rows = words.merge(images[["image_id", "n_sentences", *keep]], on="image_id", how="inner")
    rows = rows[rows["n_sentences"] > 0]
    share = (rows["sentences"].astype(float) / rows["n_sentences"].astype(float)).clip(0.0, 1.0)
    return rows.assign(share=share)


def word_shares(run_or_tables: Any, by: str | None = "label", split: str | list[str] | None = None,
                min_images: int = 3, images: pd.DataFrame | None = None, z: float = 1.96) -> pd.DataFrame:
    """Per value of `by` (or over all images when by=None), each word's mean sentence share.

    Columns: [<by>,] word, share, images_with_word, n_images, ci_low, ci_high, total_count.
    `by`: "label" or "prediction" (class names), "outcome" ("correct"/"wrong"), "group" (group names), None.
    `split` keeps only images of that split (or list of splits); `images` restricts to a subset you
    selected yourself (e.g. with `select_images`). A word is listed for a value of `by` only if at least
    `min_images` of its images use it. Images without sentences (n_sentences 0) are left out.
    Rows are ordered by the class / group order of the run, then by share, largest first.

    Computed from the run's cells (core.analysis.aggregates): sums of the per-image shares and their squares,
    the mean and its normal interval from them.
    """
    if by not in BY_OPTIONS:
        raise ValueError(f"by must be one of {BY_OPTIONS}, got {by!r}")
    if not isinstance(min_images, (int, np.integer)) or min_images < 1:
        raise ValueError(f"min_images must be an integer >= 1, got {min_images!r}")
    tables = load_tables(run_or_tables)
    if images is not None:
        tables = tables.subset(images)
    stats = tables.stats
    if split is not None:
        stats = stats.select([], split=split)
    cells = stats.images[stats.images["n_sentences"].fillna(0).to_numpy() > 0]
    keys, order = key_column(cells, by, tables)
    col = by or "_all"
    cells = cells[["cell", "n_images"]].assign(**{col: keys.values})
    cells = cells[cells[col].notna()]
    if cells.empty:
        return pd.DataFrame(columns=([by] if by else []) + SHARE_COLUMNS)

    key_of = pd.Series(cells[col].to_numpy(), index=cells["cell"].to_numpy())
    words = stats.words[np.isin(stats.words["cell"].to_numpy(), cells["cell"].to_numpy())]
    words = words.assign(**{col: key_of.reindex(words["cell"].to_numpy()).to_numpy()})
    sums = share_sums(words, [col, "word"]).reset_index()
    agg = pd.DataFrame({col: sums[col].to_numpy(), "word": sums["word"].astype(str).to_numpy(),
                        "s1": sums["share"].to_numpy(), "s2": sums["share_sq"].to_numpy(),
                        "images_with_word": sums["images"].to_numpy(), "total_count": sums["count"].to_numpy()})
    n_images = cells.groupby(col)["n_images"].sum()
    agg["n_images"] = agg[col].map(n_images).astype(int)
    agg = agg[agg["images_with_word"] >= min_images]

    n = agg["n_images"].astype(float)
    share = agg["s1"] / n
    # Sample variance of the per-image share (images without the word contribute zeros).
    var = ((agg["s2"] / n - share ** 2) * n / np.maximum(n - 1.0, 1.0)).clip(lower=0.0)
    half = z * np.sqrt(var / n)
    agg = agg.assign(share=share, ci_low=(share - half).clip(lower=0.0), ci_high=(share + half).clip(upper=1.0))
    agg["total_count"] = agg["total_count"].astype(int)
    agg["images_with_word"] = agg["images_with_word"].astype(int)
    agg["_order"] = agg[col].map(order).fillna(len(order))
    agg = agg.sort_values(["_order", "share", "word"], ascending=[True, False, True], kind="stable")
    out = agg[[col] + SHARE_COLUMNS].reset_index(drop=True)
    return out.drop(columns="_all") if by is None else out


def subset_word_shares(run_or_tables: Any, min_images: int = 1, **filters: Any) -> pd.DataFrame:
    """Word shares over the images that match `filters` (the keywords of `select_images`).

        subset_word_shares(run, label="landbird", prediction="waterbird", split="test")
    """
    tables = load_tables(run_or_tables)
    ids = filters.pop("image_ids", None)
    subset = tables.select(**filters)
    if ids is not None:
        subset = subset.subset(list(ids))
    return word_shares(subset, by=None, min_images=min_images)


def top_words(shares: pd.DataFrame, k: int = 10, by: str | None = None) -> pd.DataFrame:
    """The `k` rows with the largest share, per value of the `by` column when given."""
    if not isinstance(shares, pd.DataFrame) or "share" not in shares:
        raise ValueError("shares must be a DataFrame from word_shares (with a 'share' column)")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ordered = shares.sort_values("share", ascending=False, kind="stable")
    if by is None:
        return ordered.head(k).reset_index(drop=True)
    if by not in shares:
        raise ValueError(f"by={by!r} is not a column of shares; columns are {list(shares.columns)}")
    top = ordered.groupby(by, sort=False).head(k)
    # Keep the groups in the order word_shares gave them.
    first = {v: i for i, v in enumerate(dict.fromkeys(shares[by]))}
    return top.assign(_o=top[by].map(first)).sort_values(["_o", "share"], ascending=[True, False],
                                                          kind="stable").drop(columns="_o").reset_index(drop=True)
