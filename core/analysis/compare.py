"""Compare the words of two image sets: weighted log-odds ("Fightin' Words") and Jensen–Shannon divergence.

An `ImageSet` is any set of a run's images with their words: two classes, two groups, correct vs. wrong,
or the same class under two classifiers. `compare_word_sets(a, b)` ranks words by how much more set `a`
uses them than set `b` (positive z: more in a), after Monroe, Colaresi & Quinn (2008), "Fightin' Words",
section 3.5: the log-odds ratio with an informative Dirichlet prior, divided by its standard error.

The counted unit is a word's *sentence incidences* (the number of sentences that contain it, summed over
the set's images). Sentences of one image are not independent, so read z as a ranking score and a
rough strength, not as a calibrated test; the image-level shares beside it are the numbers to quote.

    a = image_set(run, label="landbird", prediction="waterbird", name="landbirds misread")
    b = image_set(run, label="landbird", prediction="landbird", name="landbirds read right")
    compare_word_sets(a, b).head(10)
    divergence(a, b).jensen_shannon
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.analysis.aggregates import totals
from core.analysis.distributions import BY_OPTIONS, key_column
from core.analysis.tables import RunTables, isin, load_tables

UNITS = ("sentences", "count")
COMPARE_COLUMNS = ["word", "share_a", "share_b", "images_a", "images_b", "n_images_a", "n_images_b",
                   "count_a", "count_b", "delta", "z"]

__all__ = ["ImageSet", "image_set", "word_totals", "totals_from_rows", "log_odds_table", "compare_word_sets",
           "Divergence", "divergence",
           "compare_runs", "COMPARE_COLUMNS"]


class ImageSet:
    """Some images of a run and their words: `ImageSet(name, images, words)` from DataFrames (`images` needs
    image_id and n_sentences), or, from `image_set`, a view of a run's tables whose word totals come from its cells
    (nothing is read until `images` or `words` is asked for). Images without sentences are left out."""

    def __init__(self, name: str, images: pd.DataFrame | None = None, words: pd.DataFrame | None = None,
                 tables: RunTables | None = None):
        self.name = name
        if tables is None:
            for attr, df, cols in (("images", images, ("image_id", "n_sentences")),
                                   ("words", words, ("image_id", "word", "count", "sentences"))):
                if not isinstance(df, pd.DataFrame):
                    raise TypeError(f"ImageSet.{attr} must be a DataFrame, got {type(df).__name__}")
                missing = [c for c in cols if c not in df]
                if missing:
                    raise ValueError(f"ImageSet.{attr} is missing columns {missing}")
            images = images[images["n_sentences"].fillna(0) > 0]
            tables = RunTables(images, words[isin(words["image_id"], images["image_id"])])
        self.tables = tables

    def __repr__(self) -> str:
        return f"ImageSet({self.name!r}, {self.n_images} images)"

    @property
    def images(self) -> pd.DataFrame:
        images = self.tables.images
        return images[images["n_sentences"].fillna(0) > 0]

    @property
    def words(self) -> pd.DataFrame:
        words = self.tables.words
        return words[isin(words["image_id"], self.images["image_id"])]

    def _cells(self):
        stats = self.tables.stats
        return stats.where(stats.images["n_sentences"].fillna(0).to_numpy() > 0)

    @property
    def n_images(self) -> int:
        return self._cells().n_images

    def __len__(self) -> int:
        return self.n_images

    def totals(self) -> pd.DataFrame:
        """Per word: sentence incidences, occurrences, images using it and mean sentence share (word_totals)."""
        cells = self._cells()
        return totals(cells.words, cells.n_images)


def image_set(run_or_tables: Any, name: str | None = None, images: pd.DataFrame | None = None,
              **filters: Any) -> ImageSet:
    """The images of a run matching `filters` (keywords of `select_images`), or the given `images` rows (looked up
    by image id)."""
    tables = load_tables(run_or_tables)
    if images is None:
        ids = filters.get("image_ids")
        chosen = tables.select(**{k: v for k, v in filters.items() if k != "image_ids"})
        if ids is not None:
            chosen = chosen.subset(list(ids))
    elif filters:
        raise ValueError("give either images or filters to image_set, not both")
    else:
        chosen = tables.subset(list(images["image_id"]))
    if name is None:
        name = ", ".join(f"{k}={v}" for k, v in filters.items()) or "images"
    return ImageSet(name, tables=chosen)


def _check_set(s: Any, argument: str) -> ImageSet:
    if not isinstance(s, ImageSet):
        raise TypeError(f"{argument} must be an ImageSet (see image_set), got {type(s).__name__}")
    return s


def word_totals(s: ImageSet) -> pd.DataFrame:
    """Per word of a set: sentence incidences, occurrences, images using it and mean sentence share."""
    return _check_set(s, "s").totals()


def totals_from_rows(rows: pd.DataFrame, n_images: int) -> pd.DataFrame:
    """`word_totals` from rows of `image_share_matrix` (word, sentences, count, share), over `n_images`."""
    out = rows.groupby("word", observed=True).agg(sentences=("sentences", "sum"), count=("count", "sum"),
                                                  images=("share", "size"), share=("share", "sum"))
    out["share"] = out["share"] / max(n_images, 1)
    out.index = out.index.astype(str)
    return out


def compare_word_sets(a: ImageSet, b: ImageSet, prior: pd.Series | None = None, prior_strength: float = 0.1,
                      unit: str = "sentences", min_images: int = 1) -> pd.DataFrame:
    """Words ranked by weighted log-odds of appearing in `a` rather than `b` (Monroe et al. 2008).

    Returns one row per word used by either set, columns: word, share_a, share_b (mean sentence share over
    each set's images), images_a, images_b (images that use it), n_images_a, n_images_b, count_a, count_b
    (the counted unit, see `unit`), delta (log-odds ratio, positive = more in a) and z (delta / its
    standard error), sorted by z, largest first. `attrs` records the set names.

    The prior is informative: alpha_w = alpha_0 * background share of w, with background = `prior` (word ->
    count, e.g. a whole run's counts) or, by default, both sets pooled; alpha_0 = `prior_strength` times
    the pooled number of counted units, so the prior shrinks rare words without swamping common ones.
    `unit` is "sentences" (sentence incidences) or "count" (occurrences). Words used by fewer than
    `min_images` images of a and b together are left out.
    """
    a, b = _check_set(a, "a"), _check_set(b, "b")
    out = log_odds_table(word_totals(a), word_totals(b), a.n_images, b.n_images, prior=prior,
                         prior_strength=prior_strength, unit=unit, min_images=min_images)
    out.attrs.update(a=a.name, b=b.name, unit=unit)
    return out


def log_odds_table(totals_a: pd.DataFrame, totals_b: pd.DataFrame, n_images_a: int, n_images_b: int,
                   prior: pd.Series | None = None, prior_strength: float = 0.1, unit: str = "sentences",
                   min_images: int = 1) -> pd.DataFrame:
    """The arithmetic of `compare_word_sets`, from two `word_totals` tables."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if not prior_strength > 0:
        raise ValueError(f"prior_strength must be > 0, got {prior_strength!r}")
    ta, tb = totals_a, totals_b
    words = ta.index.union(tb.index)
    ta, tb = ta.reindex(words, fill_value=0), tb.reindex(words, fill_value=0)
    ya, yb = ta[unit].astype(float), tb[unit].astype(float)
    na, nb = ya.sum(), yb.sum()
    if prior is None:
        background = ya + yb
    else:
        if not isinstance(prior, pd.Series):
            raise TypeError(f"prior must be a pandas Series of word -> count, got {type(prior).__name__}")
        background = prior.reindex(words).fillna(0).astype(float) + 0.5  # unseen words keep a little mass
    alpha0 = prior_strength * max(na + nb, 1.0)
    alpha = (alpha0 * background / max(background.sum(), 1e-12)).clip(lower=1e-3)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_odds_a = np.log((ya + alpha) / (na + alpha0 - ya - alpha))
        log_odds_b = np.log((yb + alpha) / (nb + alpha0 - yb - alpha))
        delta = log_odds_a - log_odds_b
        z = delta / np.sqrt(1.0 / (ya + alpha) + 1.0 / (yb + alpha))
    out = pd.DataFrame({
        "word": np.asarray(words, dtype=object), "share_a": ta["share"].to_numpy(), "share_b": tb["share"].to_numpy(),
        "images_a": ta["images"].astype(int).to_numpy(), "images_b": tb["images"].astype(int).to_numpy(),
        "n_images_a": int(n_images_a), "n_images_b": int(n_images_b),
        "count_a": ya.astype(int).to_numpy(), "count_b": yb.astype(int).to_numpy(),
        "delta": delta.to_numpy(), "z": z.to_numpy()})
    out = out[out["images_a"] + out["images_b"] >= min_images]
    return out.sort_values(["z", "word"], ascending=[False, True], kind="stable").reset_index(drop=True)


@dataclass
class Divergence:
    """Jensen–Shannon divergence between two word distributions, in bits (0 = same, 1 = disjoint)."""

    jensen_shannon: float
    distance: float  # sqrt of the divergence: a metric
    n_words_a: int
    n_words_b: int
    shared_words: int
    top_contributors: pd.DataFrame  # word, p_a, p_b, contribution (bits), largest first


def divergence(a: ImageSet, b: ImageSet, unit: str = "sentences", top: int = 10) -> Divergence:
    """Jensen–Shannon divergence (base 2) between the word distributions of `a` and `b`.

    Each distribution is the word's share of all counted units in the set (`unit` as in compare_word_sets).
    """
    a, b = _check_set(a, "a"), _check_set(b, "b")
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    ta, tb = word_totals(a)[unit].astype(float), word_totals(b)[unit].astype(float)
    if ta.sum() <= 0 or tb.sum() <= 0:
        empty = "a" if ta.sum() <= 0 else "b"
        raise ValueError(f"set {empty} ({(a if empty == 'a' else b).name!r}) has no words to compare")
    words = ta.index.union(tb.index)
    p = ta.reindex(words, fill_value=0.0) / ta.sum()
    q = tb.reindex(words, fill_value=0.0) / tb.sum()
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = 0.5 * np.where(p > 0, p * np.log2(p / m), 0.0) + 0.5 * np.where(q > 0, q * np.log2(q / m), 0.0)
    js = float(max(min(terms.sum(), 1.0), 0.0))
    contrib = pd.DataFrame({"word": words, "p_a": p.to_numpy(), "p_b": q.to_numpy(), "contribution": terms})
    contrib = contrib.sort_values("contribution", ascending=False).head(top).reset_index(drop=True)
    return Divergence(js, float(np.sqrt(js)), int((p > 0).sum()), int((q > 0).sum()),
                      int(((p > 0) & (q > 0)).sum()), contrib)


def compare_runs(run_a: Any, run_b: Any, by: str = "label", split: str | list[str] | None = None,
                 min_images: int = 3, k: int | None = None) -> pd.DataFrame:
    """Words whose share changed most between two runs (two classifiers on the same data), per `by` value.

    Returns columns: <by>, word, share_a, share_b, change (share_b - share_a), z (log-odds z, positive =
    more in run b), images_a, images_b, n_images_a, n_images_b; within each value of `by`, rows are
    sorted by |change|, largest first, and cut to `k` rows when given. `attrs` holds the run names and
    how many image ids the runs share (0 means they were not run on the same images).
    """
    if by not in BY_OPTIONS or by is None:
        raise ValueError(f"by must be one of {[b for b in BY_OPTIONS if b]}, got {by!r}")
    ta, tb = load_tables(run_a), load_tables(run_b)
    if split is not None:
        ta, tb = ta.select(split=split), tb.select(split=split)
    keys_a, order = key_column(ta.stats.images, by, ta)
    keys_b, order_b = key_column(tb.stats.images, by, tb)
    for key, pos in order_b.items():
        order.setdefault(key, len(order) + pos)
    frames = []
    for value in sorted(set(keys_a.dropna()) | set(keys_b.dropna()), key=lambda v: order.get(v, len(order))):
        set_a = ImageSet(f"{value} (a)", tables=_key_view(ta, keys_a, by, value))
        set_b = ImageSet(f"{value} (b)", tables=_key_view(tb, keys_b, by, value))
        if set_a.n_images == 0 or set_b.n_images == 0:
            continue
        cmp = compare_word_sets(set_b, set_a, min_images=min_images)
        cmp = cmp.rename(columns={"share_a": "share_b", "share_b": "share_a", "images_a": "images_b",
                                  "images_b": "images_a", "n_images_a": "n_images_b", "n_images_b": "n_images_a"})
        cmp["change"] = cmp["share_b"] - cmp["share_a"]
        cmp = cmp.reindex(cmp["change"].abs().sort_values(ascending=False, kind="stable").index)
        if k is not None:
            cmp = cmp.head(k)
        frames.append(cmp.assign(**{by: value}))
    cols = [by, "word", "share_a", "share_b", "change", "z", "images_a", "images_b", "n_images_a", "n_images_b"]
    out = pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)

    def _name(t, fallback):
        return (t.manifest or {}).get("name") or (t.run.name if t.run is not None else fallback)

    out.attrs.update(a=_name(ta, "a"), b=_name(tb, "b"), shared_images=shared_image_count(ta, tb))
    return out


def _key_view(tables: RunTables, keys: pd.Series, by: str, value: str) -> RunTables:
    """The tables of the images whose `by` key (key_column of their cells) is `value`."""
    if by == "outcome":
        return tables.select(outcome=value)
    cells = tables.stats.images
    ids = sorted({int(v) for v in cells.loc[(keys == value).to_numpy(), by].dropna()})
    return tables.select(**{by: ids})


def shared_image_count(a: RunTables, b: RunTables) -> int:
    """How many of a's (selected) images have an id that b's images have too (0: not the same images)."""
    from core.analysis.aggregates import tables_connection

    if not a.in_store and not b.in_store:
        return int(isin(a.images["image_id"], b.images["image_id"]).sum())
    with tables_connection({"a": a, "b": b}) as con:
        return int(con.execute("SELECT count(*) FROM a WHERE image_id IN (SELECT image_id FROM b)").fetchone()[0])


def same_explanations(a: Any, b: Any) -> bool:
    """Whether two runs hold the same words for the same images (same features, translator, LM and seed).

    A classifier whose last layer was refit keeps its features, so its explanations are the original's; then
    only predictions differ, and words are best compared per predicted class. In-memory tables are compared row
    by row; a run's store by a digest of its (image_id, word, count) rows (words_digest), one pass each, kept
    per run fingerprint.
    """
    a, b = load_tables(a), load_tables(b)
    cols = ["image_id", "word", "count"]
    if not a.in_store and not b.in_store:
        if len(a.words) != len(b.words) or not set(cols) <= set(a.words) or not set(cols) <= set(b.words):
            return False
        wa = a.words[cols].sort_values(cols[:2]).reset_index(drop=True)
        wb = b.words[cols].sort_values(cols[:2]).reset_index(drop=True)
        return bool(wa.astype(str).equals(wb.astype(str)))
    return words_digest(a) == words_digest(b)


def words_digest(tables: RunTables) -> tuple[int, int, int]:
    """(rows, sum and xor of a 64-bit hash of each row's image_id, word and count as text) of the words rows of
    the tables' images: equal for the same rows in any order, different (but for a 2^-64 chance) otherwise."""
    from core.analysis.aggregates import query

    sql = """SELECT count(*) AS n, CAST(coalesce(sum(CAST(h AS HUGEINT)) % 18446744073709551616, 0) AS VARCHAR) AS s,
                    CAST(coalesce(bit_xor(h), 0) AS VARCHAR) AS x
             FROM (SELECT hash(CAST(w.image_id AS VARCHAR), CAST(w.word AS VARCHAR), CAST(w."count" AS VARCHAR)) AS h
                   FROM images_words w WHERE w.image_id IN (SELECT image_id FROM images))"""

    def compute() -> pd.DataFrame:
        return query(tables, sql)

    if tables.in_store:
        from core.store.cache import cached_frame

        row = cached_frame(tables.run, "words-digest", {"filters": tables.filters}, compute).iloc[0]
    else:
        row = compute().iloc[0]
    return int(row["n"]), int(row["s"]), int(row["x"])
