"""Groups: per-group and worst-group accuracy, and inferring groups from flagged words when a dataset has none.

Waterbirds' groups are class x background (group = 2 * label + place). The worst-group accuracy is the
lowest per-group accuracy; the "average" accuracy is reported two ways: weighted by the evaluation
set's own group sizes (plain accuracy over its images) and weighted by the TRAINING set's group shares,
which is how the Waterbirds literature reports it. Both come back, with the unweighted mean of groups.

Without group labels, `GroupInferrer` builds them from the spurious-term flags: class x whether the
image's explanations carry that class's flagged words ("landbird, with water words").

    per_group = group_accuracy(images)
    counts = train_group_counts_from_manifest(run.manifest)
    wga = worst_group_accuracy(images, weights="train", train_group_counts=counts)
    inferrer = GroupInferrer().fit(run, scorer.flags_)
    group_agreement(images["group"], inferrer.predict(images))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from core.analysis.spurious import SpuriousTermScorer, spurious_share, spurious_share_counts
from core.analysis.stats import wilson_bounds
from core.analysis.tables import RunTables, image_counts, isin, load_tables, scored_images

__all__ = ["group_accuracy", "worst_group_accuracy", "WorstGroupAccuracy", "train_group_counts_from_manifest",
           "GroupInferrer", "group_agreement", "GroupAgreement", "otsu_threshold", "describe_group_words",
           "adjusted_rand"]


def _group_values(images: pd.DataFrame, groups: str | pd.Series) -> pd.Series:
    if isinstance(groups, str):
        if groups not in images:
            raise ValueError(f"groups={groups!r} is not a column of images; columns are {list(images.columns)}")
        values = images[groups]
    elif isinstance(groups, pd.Series):
        # A Series indexed by image_id (as GroupInferrer.predict returns), or aligned with images.
        by_id = "image_id" in images and groups.index.isin(images["image_id"]).any()
        values = images["image_id"].map(groups) if by_id else groups
        values = pd.Series(np.asarray(values), index=images.index)
    else:
        raise TypeError(f"groups must be a column name or a pandas Series, got {type(groups).__name__}")
    if values.isna().all():
        raise ValueError("no image has a group (the dataset has none?); infer them with GroupInferrer and pass "
                         "groups=inferrer.predict(...)")
    return values


def group_accuracy(images: pd.DataFrame, groups: str | pd.Series = "group",
                   group_names: dict | None = None, z: float = 1.96) -> pd.DataFrame:
    """Accuracy per group: columns group, group_name, n, correct, accuracy, ci_low, ci_high (Wilson).

    `groups` is the images column holding group ids, or a Series of ids (indexed by image_id, e.g. from
    GroupInferrer.predict). Images without a group, label or prediction are left out. `images` may also be
    counts: rows that stand for `n_images` images each (a run's cells, core.analysis.aggregates).
    """
    if not isinstance(images, pd.DataFrame):
        raise TypeError(f"images must be a DataFrame, got {type(images).__name__}")
    missing = [c for c in ("label", "prediction") + (() if "n_images" in images else ("image_id",))
               if c not in images]
    if missing:
        raise ValueError(f"images is missing columns {missing}")
    values = _group_values(images, groups)
    known = values.notna() & images.index.isin(scored_images(images).index)
    count = pd.Series(image_counts(images), index=images.index)[known]
    right = (images.loc[known, "label"] == images.loc[known, "prediction"]).astype(int)
    frame = pd.DataFrame({"group": values[known].astype(int), "n": count, "correct": right * count})
    out = frame.groupby("group").agg(n=("n", "sum"), correct=("correct", "sum")).reset_index()
    out["accuracy"] = out["correct"] / out["n"]
    out["ci_low"], out["ci_high"] = wilson_bounds(out["correct"].to_numpy(), out["n"].to_numpy(), z)
    names = {int(k): str(v) for k, v in (group_names or {}).items()}
    out.insert(1, "group_name", out["group"].map(lambda g: names.get(int(g), f"group {int(g)}")))
    return out


@dataclass
class WorstGroupAccuracy:
    """Worst-group and average accuracy. `average_weighted` uses `weighting`'s group shares."""

    worst: float
    worst_group: int
    worst_group_name: str
    average_unweighted: float  # mean of the per-group accuracies
    average_weighted: float
    weighting: str  # "test" (the evaluation images' own group sizes), "train" or "custom"
    weights: dict = field(default_factory=dict)  # group -> weight (sums to 1)
    per_group: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    def to_dict(self) -> dict:
        return {"worst": self.worst, "worst_group": self.worst_group, "worst_group_name": self.worst_group_name,
                "average_unweighted": self.average_unweighted, "average_weighted": self.average_weighted,
                "weighting": self.weighting, "weights": {str(k): v for k, v in self.weights.items()}}


def train_group_counts_from_manifest(manifest: dict) -> dict[int, int] | None:
    """dataset.train_group_counts of a run manifest as {group: count}, or None when absent."""
    counts = (manifest.get("dataset") or {}).get("train_group_counts")
    if not counts:
        return None
    if isinstance(counts, list):
        return {i: int(c) for i, c in enumerate(counts)}
    return {int(k): int(v) for k, v in counts.items()}


def worst_group_accuracy(images: pd.DataFrame, weights: str | dict = "test",
                         train_group_counts: dict | None = None, groups: str | pd.Series = "group",
                         group_names: dict | None = None) -> WorstGroupAccuracy:
    """Worst-group accuracy, and the average accuracy weighted three ways.

    `weights`: "test" weights groups by their sizes among `images` (= plain accuracy); "train" by the
    training set's group shares, given as `train_group_counts` ({group: count}; see
    train_group_counts_from_manifest); a dict {group: weight} uses those weights (normalised).
    """
    per_group = group_accuracy(images, groups=groups, group_names=group_names)
    if per_group.empty:
        raise ValueError("no image has a group, label and prediction; nothing to score")
    acc = dict(zip(per_group["group"], per_group["accuracy"]))
    if isinstance(weights, dict):
        raw, weighting = {int(k): float(v) for k, v in weights.items()}, "custom"
    elif weights == "test":
        raw, weighting = dict(zip(per_group["group"], per_group["n"].astype(float))), "test"
    elif weights == "train":
        if not train_group_counts:
            raise ValueError("weights='train' needs train_group_counts ({group: number of training images}), "
                             "e.g. from the run manifest's dataset.train_group_counts; got none")
        raw, weighting = {int(k): float(v) for k, v in train_group_counts.items()}, "train"
    else:
        raise ValueError(f"weights must be 'test', 'train' or a dict of group -> weight, got {weights!r}")
    if any(v < 0 for v in raw.values()):
        raise ValueError(f"weights must be non-negative, got {raw}")
    absent = [g for g in acc if g not in raw]
    if absent:
        raise ValueError(f"weights cover groups {sorted(raw)} but the images also have groups {absent}")
    raw = {g: w for g, w in raw.items() if g in acc}  # a group the evaluation set lacks cannot be scored
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"weights must not all be zero, got {raw}")
    norm = {g: w / total for g, w in raw.items()}
    worst_row = per_group.sort_values(["accuracy", "group"]).iloc[0]
    return WorstGroupAccuracy(
        worst=float(worst_row["accuracy"]), worst_group=int(worst_row["group"]),
        worst_group_name=str(worst_row["group_name"]),
        average_unweighted=float(per_group["accuracy"].mean()),
        average_weighted=float(sum(norm[g] * acc[g] for g in norm)),
        weighting=weighting, weights=norm, per_group=per_group)


def otsu_threshold(values: np.ndarray, counts: np.ndarray | None = None) -> float:
    """The cut that best splits `values` into two groups (Otsu: largest between-group variance).

    Returns a value halfway between the last value below and the first above the cut; +inf when the
    values cannot be split (fewer than two distinct values), so that nothing lies above it. `counts` (one per
    value) makes it a histogram: value i stands for counts[i] values; only cuts between distinct values are
    tried either way, so the cut is the same (its arithmetic too, where the sums are exact).
    """
    v = np.asarray(values, dtype=float)
    c = np.ones(len(v), dtype="int64") if counts is None else np.asarray(counts, dtype="int64")
    if c.shape != v.shape:
        raise ValueError(f"counts must have one count per value; got {c.shape} for {v.shape}")
    keep = np.isfinite(v) & (c > 0)
    v, c = v[keep], c[keep]
    if counts is None:
        v = np.sort(v)
        if len(v) < 2 or v[0] == v[-1]:
            return float("inf")
        n = len(v)
        csum = np.cumsum(v)
        k = np.arange(1, n)  # split after k values
        w0, w1 = k / n, (n - k) / n
        m0 = csum[:-1] / k
        m1 = (csum[-1] - csum[:-1]) / (n - k)
        between = w0 * w1 * (m0 - m1) ** 2
        between[v[:-1] == v[1:]] = -1  # only cut between distinct values
        i = int(np.argmax(between))
        return float((v[i] + v[i + 1]) / 2)
    u, inverse = np.unique(v, return_inverse=True)
    if len(u) < 2:
        return float("inf")
    m = np.bincount(inverse, weights=c).astype("int64")  # images per distinct value
    n = int(m.sum())
    k = np.cumsum(m)[:-1]  # split after the first j distinct values: k values below
    csum = np.cumsum(u * m)
    w0, w1 = k / n, (n - k) / n
    m0 = csum[:-1] / k
    m1 = (csum[-1] - csum[:-1]) / (n - k)
    i = int(np.argmax(w0 * w1 * (m0 - m1) ** 2))
    return float((u[i] + u[i + 1]) / 2)


def describe_group_words(words: dict, views: dict | None = None) -> str:
    """The words each class is split by, for a caption or a report: "landbird: lake, blue; waterbird*: lake,
    misty (* association view: too few of its images are misread to flag words)"."""
    views = views or {}
    text = "; ".join(f"{c}{'*' if views.get(c) == 'association' else ''}: {', '.join(ws)}" for c, ws in words.items())
    if any(views.get(c) == "association" for c in words):
        text += (" (* association view: words the class's predictions go with, as too few of its images are "
                 "misread to flag words)")
    return text


class GroupInferrer:
    """Infers groups as class x "explanations carry that class's flagged words".

    Given a fitted SpuriousTermScorer, a class's words are its error-view flags, or, when it has none (too
    few of its images are misread), its association-view flags (SpuriousTermScorer.group_words).

    Parameters:
        threshold: "otsu" learns, per class, the cut of the images' spurious share (see
            core.analysis.spurious.spurious_share) with Otsu's method; a float, or a dict class -> float,
            sets it. An image carries its class's flags when its share is above the threshold.
        words_per_class: use the top this many flags of each class (None = all).

    Learned: spurious_words_ (class -> words), word_views_ (class -> "error", "association" or "given": where
    its words came from), thresholds_ (class -> float), classes_, group_names_ (inferred group id -> name).
    Inferred group id = 2 * label + carries (so on Waterbirds a landbird with water words is group 1, as in
    the true groups).
    """

    def __init__(self, threshold: str | float | dict = "otsu", words_per_class: int | None = 5):
        self.threshold = threshold
        self.words_per_class = words_per_class

    def fit(self, run_or_tables: Any, flags: pd.DataFrame | SpuriousTermScorer | dict) -> "GroupInferrer":
        """Learn each class's threshold from the run's images, given the flags to look for."""
        if not (self.threshold == "otsu" or isinstance(self.threshold, (int, float, dict))):
            raise ValueError(f"threshold must be 'otsu', a number or a dict class -> number, got {self.threshold!r}")
        if self.words_per_class is not None and self.words_per_class < 1:
            raise ValueError(f"words_per_class must be >= 1 or None, got {self.words_per_class!r}")
        tables = load_tables(run_or_tables)
        self.classes_ = tables.class_names
        self.spurious_words_, views = self._words(flags)
        self.word_views_ = {c: views.get(c, "given") for c in self.spurious_words_}
        # The images' spurious shares as counts (label, prediction, group, share -> images): no row per image.
        self.share_counts_ = spurious_share_counts(tables, self.spurious_words_)
        counts = self.share_counts_
        self.thresholds_ = {}
        for i, name in enumerate(self.classes_):
            if isinstance(self.threshold, dict):
                self.thresholds_[name] = float(self.threshold.get(name, float("inf")))
            elif self.threshold == "otsu":
                rows = counts[(counts["label"] == i).fillna(False).to_numpy(bool)]
                self.thresholds_[name] = float("inf") if not self.spurious_words_.get(name) else \
                    otsu_threshold(rows["spurious_share"].to_numpy(), rows["n_images"].to_numpy())
            else:
                self.thresholds_[name] = float(self.threshold)
        self.group_names_ = {}
        for i, name in enumerate(self.classes_):
            words = self.spurious_words_.get(name) or []
            listed = "/".join(words[:3]) + ("..." if len(words) > 3 else "")
            self.group_names_[2 * i] = f"{name}, without {listed}" if words else name
            self.group_names_[2 * i + 1] = f"{name}, with {listed}" if words else f"{name} (unused)"
        self._tables = tables
        return self

    def _words(self, flags: Any) -> tuple[dict[str, list[str]], dict[str, str]]:
        """(class -> words, class -> the scorer's view of them; empty for flags given as a table or dict)."""
        k = self.words_per_class
        if isinstance(flags, SpuriousTermScorer):
            return flags.group_words(k)
        if isinstance(flags, dict):
            unknown = [c for c in flags if c not in self.classes_]
            if unknown:
                raise ValueError(f"flags has classes {unknown} that the run lacks; classes: {self.classes_}")
            return {c: list(ws)[:k] if k else list(ws) for c, ws in flags.items() if ws}, {}
        if isinstance(flags, pd.DataFrame):
            missing = [c for c in ("class", "word") if c not in flags]
            if missing:
                raise ValueError(f"flags is missing columns {missing} (expected SpuriousTermScorer.flags_)")
            ordered = flags.sort_values("score", ascending=False, na_position="last") if "score" in flags else flags
            out = {}
            for c, rows in ordered.groupby("class", sort=False):
                words = list(dict.fromkeys(rows["word"]))
                out[str(c)] = words[:k] if k else words
            return out, {}
        raise TypeError("flags must be SpuriousTermScorer.flags_ (a DataFrame), a fitted SpuriousTermScorer or a "
                        f"dict class -> words, got {type(flags).__name__}")

    def transform(self, images: Any = None, words: pd.DataFrame | None = None) -> pd.DataFrame:
        """Per image: image_id, label, spurious_share, carries_spurious, inferred_group, inferred_group_name.

        `images` is a Run, a RunTables or an images DataFrame (its words are then `words`, or those of the
        run given to fit); None means the images seen in fit.
        """
        if not hasattr(self, "thresholds_"):
            raise RuntimeError("this GroupInferrer is not fitted yet; call fit(run, flags) first")
        if images is None:
            tables = self._tables
        elif isinstance(images, pd.DataFrame):
            source = self._tables.words_of(images["image_id"]) if words is None else words
            tables = RunTables(images, source[isin(source["image_id"], images["image_id"])], self._tables.manifest)
            tables = load_tables(tables)
        else:
            tables = load_tables(images)
        share = spurious_share(tables, self.spurious_words_, class_names=self.classes_)
        labels = tables.images["label"]
        threshold = labels.map(lambda v: self.thresholds_.get(self.classes_[int(v)], float("inf"))
                               if pd.notna(v) else float("inf"))
        carries = (share > threshold) & labels.notna()
        group = (2 * labels + carries.astype(int)).astype("Int64")
        return pd.DataFrame({"image_id": tables.images["image_id"].to_numpy(), "label": labels.to_numpy(),
                             "spurious_share": share.to_numpy(), "carries_spurious": carries.to_numpy(),
                             "inferred_group": group.to_numpy(),
                             "inferred_group_name": group.map(lambda g: self.group_names_.get(int(g))
                                                              if pd.notna(g) else None).to_numpy()})

    def predict(self, images: Any = None, words: pd.DataFrame | None = None) -> pd.Series:
        """Inferred group id per image, as a Series indexed by image_id named "inferred_group"."""
        out = self.transform(images, words)
        return pd.Series(out["inferred_group"].to_numpy(), index=pd.Index(out["image_id"], name="image_id"),
                         name="inferred_group")

    def group_counts(self) -> pd.DataFrame:
        """The images seen in fit as counts: label, prediction, group (the true one, NA without), unreadable,
        inferred_group, n_images; what `predict` gives per image, summed (for accuracies and agreement)."""
        if not hasattr(self, "thresholds_"):
            raise RuntimeError("this GroupInferrer is not fitted yet; call fit(run, flags) first")
        counts = self.share_counts_
        labels = counts["label"]
        threshold = labels.map(lambda v: self.thresholds_.get(self.classes_[int(v)], float("inf"))
                               if pd.notna(v) else float("inf")).astype(float)
        carries = (counts["spurious_share"].to_numpy() > threshold.to_numpy()) & labels.notna().to_numpy()
        group = (2 * labels + carries.astype(int)).astype("Int64")
        out = counts.drop(columns="spurious_share").assign(inferred_group=group)
        keys = ["label", "prediction", "group", "unreadable", "inferred_group"]
        return out.groupby(keys, dropna=False, sort=True)["n_images"].sum().reset_index()


@dataclass
class GroupAgreement:
    """How well inferred groups match true ones."""

    accuracy: float  # share of images whose inferred group maps to their true group, best one-to-one mapping
    adjusted_rand: float  # 1 = same partition, ~0 = chance
    n: int
    mapping: dict  # inferred group -> true group

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "adjusted_rand": self.adjusted_rand, "n": self.n,
                "mapping": {str(k): v for k, v in self.mapping.items()}}


def group_agreement(true: Iterable, inferred: Iterable, counts: Iterable | None = None) -> GroupAgreement:
    """Agreement of two group assignments of the same images (pairs with a missing value are dropped).

    Two pandas Series indexed by image_id are aligned on it; otherwise they are paired by position. `counts`
    (paired by position) makes each pair stand for that many images (GroupInferrer.group_counts).
    """
    from scipy.optimize import linear_sum_assignment

    if counts is None and isinstance(true, pd.Series) and isinstance(inferred, pd.Series) \
            and not true.index.equals(inferred.index) and inferred.index.isin(true.index).any():
        true, inferred = true.align(inferred, join="inner")
    t, i = pd.Series(np.asarray(true, dtype=object)), pd.Series(np.asarray(inferred, dtype=object))
    w = pd.Series(np.ones(len(t), dtype="int64") if counts is None else np.asarray(counts, dtype="int64"))
    if len(t) != len(i) or len(w) != len(t):
        raise ValueError(f"true and inferred must have the same length, got {len(t)} and {len(i)}"
                         + ("" if counts is None else f" (and {len(w)} counts)"))
    keep = t.notna() & i.notna() & (w > 0)
    t, i, w = t[keep].astype(int), i[keep].astype(int), w[keep]
    n = int(w.sum())
    if n == 0:
        raise ValueError("true and inferred share no image with both groups known")
    table = pd.crosstab(i, t, values=w, aggfunc="sum").fillna(0).astype("int64")
    rows, cols = linear_sum_assignment(-table.to_numpy())
    matched = int(table.to_numpy()[rows, cols].sum())
    mapping = {int(table.index[r]): int(table.columns[c]) for r, c in zip(rows, cols)}
    return GroupAgreement(accuracy=matched / n, adjusted_rand=adjusted_rand(table.to_numpy().T), n=n,
                          mapping=mapping)


def adjusted_rand(contingency: np.ndarray) -> float:
    """The adjusted Rand index of two partitions from their contingency table (rows: one partition, columns:
    the other, cells: images in both), by sklearn's formula (adjusted_rand_score) in exact integers."""
    c = np.asarray(contingency, dtype="int64")
    n = int(c.sum())
    sum_squares = int((c.astype(object) ** 2).sum())
    n_c, n_k = c.sum(axis=1), c.sum(axis=0)
    tp = sum_squares - n
    fp = int((c.astype(object) @ n_k.astype(object)).sum()) - sum_squares
    fn = int((c.T.astype(object) @ n_c.astype(object)).sum()) - sum_squares
    tn = n * n - fp - fn - sum_squares
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
