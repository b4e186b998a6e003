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

from core.analysis.distributions import BY_OPTIONS, image_share_matrix, key_column
from core.analysis.tables import isin, load_tables, select_images

UNITS = ("sentences", "count")
COMPARE_COLUMNS = ["word", "share_a", "share_b", "images_a", "images_b", "n_images_a", "n_images_b",
                   "count_a", "count_b", "delta", "z"]

__all__ = ["ImageSet", "image_set", "word_totals", "totals_from_rows", "log_odds_table", "compare_word_sets",
           "Divergence", "divergence",
           "compare_runs", "COMPARE_COLUMNS"]


@dataclass
class ImageSet:
    """Some images of a run and their words rows. `images` needs image_id and n_sentences."""

    name: str
    images: pd.DataFrame
    words: pd.DataFrame

    def __post_init__(self) -> None:
        for attr, cols in (("images", ("image_id", "n_sentences")), ("words", ("image_id", "word", "count",
                                                                              "sentences"))):
            df = getattr(self, attr)
            if not isinstance(df, pd.DataFrame):
                raise TypeError(f"ImageSet.{attr} must be a DataFrame, got {type(df).__name__}")
            missing = [c for c in cols if c not in df]
            if missing:
                raise ValueError(f"ImageSet.{attr} is missing columns {missing}")
        self.images = self.images[self.images["n_sentences"].fillna(0) > 0]
        self.words = self.words[isin(self.words["image_id"], self.images["image_id"])]

    @property
    def n_images(self) -> int:
        return len(self.images)

    def __len__(self) -> int:
        return self.n_images


def image_set(run_or_tables: Any, name: str | None = None, images: pd.DataFrame | None = None,
              **filters: Any) -> ImageSet:
    """The images of a run matching `filters` (keywords of `select_images`), or the given `images` rows."""
    tables = load_tables(run_or_tables)
    if images is None:
        images = select_images(tables.images, class_names=tables.class_names, **filters)
    elif filters:
        raise ValueError("give either images or filters to image_set, not both")
    else:
        images = tables.images[isin(tables.images["image_id"], images["image_id"])]
    if name is None:
        name = ", ".join(f"{k}={v}" for k, v in filters.items()) or "images"
    words = tables.words[isin(tables.words["image_id"], images["image_id"])]
    return ImageSet(name, images, words)


def _check_set(s: Any, argument: str) -> ImageSet:
    if not isinstance(s, ImageSet):
        raise TypeError(f"{argument} must be an ImageSet (see image_set), got {type(s).__name__}")
    return s


def word_totals(s: ImageSet) -> pd.DataFrame:
    """Per word of a set: sentence incidences, occurrences, images using it and mean sentence share."""
    return totals_from_rows(image_share_matrix(s.words, s.images), s.n_images)


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
    images_a, images_b = ta.images, tb.images
    if split is not None:
        images_a, images_b = select_images(images_a, split=split), select_images(images_b, split=split)
    keys_a, order = key_column(images_a, by, ta)
    keys_b, order_b = key_column(images_b, by, tb)
    for key, pos in order_b.items():
        order.setdefault(key, len(order) + pos)
    frames = []
    for value in sorted(set(keys_a.dropna()) | set(keys_b.dropna()), key=lambda v: order.get(v, len(order))):
        set_a = image_set(ta, name=f"{value} (a)", images=images_a[(keys_a == value).to_numpy()])
        set_b = image_set(tb, name=f"{value} (b)", images=images_b[(keys_b == value).to_numpy()])
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

    out.attrs.update(a=_name(ta, "a"), b=_name(tb, "b"),
                     shared_images=int(isin(images_a["image_id"], images_b["image_id"]).sum()))
    return out


def same_explanations(a: Any, b: Any) -> bool:
    """Whether two runs hold the same words for the same images (same features, translator, LM and seed).

    A classifier whose last layer was refit keeps its features, so its explanations are the original's; then
    only predictions differ, and words are best compared per predicted class.
    """
    a, b = load_tables(a), load_tables(b)
    cols = ["image_id", "word", "count"]
    if len(a.words) != len(b.words) or not set(cols) <= set(a.words) or not set(cols) <= set(b.words):
        return False
    wa = a.words[cols].sort_values(cols[:2]).reset_index(drop=True)
    wb = b.words[cols].sort_values(cols[:2]).reset_index(drop=True)
    return bool(wa.astype(str).equals(wb.astype(str)))
