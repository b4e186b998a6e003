"""Every image of a run as one row (what the Images page browses), a word's share per image, and the run's
2-D feature map read back (core.engine.feature_map computes it; nothing here loads a model).

    rows = image_rows(tables, flagged=scorer.flagged_words())   # image_id, class, group, predicted, ...
    share = word_share(tables, "water")                         # image_id -> share of its sentences
    points = read_feature_map(run.path)                         # image_id, x, y (None before it is computed)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.analysis.tables import RunTables, isin, load_tables

FEATURE_MAP_FILE = "feature_map.parquet"  # as core.engine.feature_map writes it
ROW_COLUMNS = ["image_id", "path", "class", "group", "predicted", "confidence", "correct", "top_words",
               "flagged_used", "uses_flagged", "error"]


def image_rows(run_or_tables: Any, flagged: dict[str, list[str]] | None = None, k_words: int = 3) -> pd.DataFrame:
    """One row per image: image_id, path, class, group (its name, or None), predicted, confidence, correct
    (True/False, None when unreadable), top_words ("water 60% · lake 45%": the words most of its sentences
    use), flagged_used (its class's flagged words that its sentences use), uses_flagged, error."""
    tables: RunTables = load_tables(run_or_tables)
    images, words = tables.images, tables.words
    if k_words < 1:
        raise ValueError(f"k_words must be >= 1, got {k_words}")
    n = images.set_index("image_id")["n_sentences"].astype(float)
    mine = words[isin(words["image_id"], images["image_id"])]
    mine = mine.assign(share=mine["sentences"].to_numpy(float) / n.reindex(mine["image_id"]).clip(lower=1).to_numpy())
    ranked = mine.sort_values(["image_id", "share", "word"], ascending=[True, False, True])
    top = ranked.groupby("image_id", sort=False).head(k_words)
    top_text = top.groupby("image_id", sort=False).apply(
        lambda g: " · ".join(f"{w} {100 * s:.0f}%" for w, s in zip(g["word"], g["share"])), include_groups=False)
    known = images["label"].notna() & images["prediction"].notna()
    if "error" in images:
        known &= images["error"].isna() | (images["error"].astype(str) == "")
    correct = pd.Series((images["label"] == images["prediction"]).to_numpy(), index=images.index).where(known, None)
    groups = tables.group_names
    group = images["group"].map(lambda g: groups.get(int(g), f"group {int(g)}") if pd.notna(g) else None) \
        if "group" in images else pd.Series([None] * len(images), index=images.index)
    out = pd.DataFrame({
        "image_id": images["image_id"].astype(str).to_numpy(), "path": images["path"].astype(str).to_numpy(),
        "class": images["label_name"].to_numpy(), "group": group.to_numpy(),
        "predicted": images["prediction_name"].to_numpy(), "confidence": pd.to_numeric(
            images["confidence"], errors="coerce").to_numpy(),
        "correct": correct.astype(object).to_numpy(),
        "top_words": top_text.reindex(images["image_id"]).fillna("").to_numpy(),
        "error": images["error"].to_numpy() if "error" in images else None})
    used = {}
    for cls, ws in (flagged or {}).items():
        if not ws:
            continue
        ids = images.loc[images["label_name"] == cls, "image_id"]
        hits = mine[isin(mine["image_id"], ids) & isin(mine["word"], list(ws))]
        order = {w: i for i, w in enumerate(ws)}
        for image_id, part in hits.groupby("image_id", sort=False):
            used[image_id] = ", ".join(sorted(part["word"], key=lambda w: order.get(w, 0)))
    out["flagged_used"] = out["image_id"].map(used).fillna("")
    out["uses_flagged"] = out["flagged_used"] != ""
    return out[ROW_COLUMNS]


def word_share(run_or_tables: Any, word: str) -> pd.Series:
    """image_id -> the share of the image's sentences that use `word` (0 where none does)."""
    tables = load_tables(run_or_tables)
    word = str(word).strip().lower()
    if not word:
        raise ValueError("word must be a non-blank word")
    images = tables.images
    if tables.in_store:  # only the rows of that word are read
        from core.analysis.aggregates import query

        rows = query(tables, "SELECT image_id, sentences FROM images_words WHERE CAST(word AS VARCHAR) = ?", [word])
    else:
        rows = tables.words[tables.words["word"] == word]
    hits = rows.groupby("image_id")["sentences"].sum()
    n = images.set_index("image_id")["n_sentences"].astype(float).clip(lower=1)
    return (hits.reindex(n.index).fillna(0) / n).rename(f"share_{word}")


def read_feature_map(run_path: str | Path) -> pd.DataFrame | None:
    """The run's feature map (image_id, x, y; attrs: method, n_features, created), or None before one is made.
    A file that cannot be read raises ValueError naming it."""
    from core.store import user_file

    path = user_file(Path(run_path), FEATURE_MAP_FILE)
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # a truncated or foreign file: say which, and how to remake it
        raise ValueError(f"{path} cannot be read ({exc}); delete it and compute the map again") from exc
    frame = table.to_pandas()
    missing = [c for c in ("image_id", "x", "y") if c not in frame]
    if missing:
        raise ValueError(f"{path} is missing columns {missing}; delete it and compute the map again")
    meta = {k.decode()[len("texplain."):]: v.decode() for k, v in (table.schema.metadata or {}).items()
            if k.decode().startswith("texplain.")}
    frame.attrs.update(meta)
    frame["x"], frame["y"] = frame["x"].astype(np.float32), frame["y"].astype(np.float32)
    return frame
