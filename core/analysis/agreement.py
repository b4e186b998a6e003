"""Two classifiers on the same images, image by image: where their predictions flip, the 2x2 agreement table
with McNemar's test, and paired bootstrap intervals on every difference of accuracy.

    ag = agreement(tables_a, tables_b)       # RunTables (or runs) of two classifiers on the same images
    ag.table                                 # a, b ("right"/"wrong"), images
    ag.flips                                 # image_id, path, class, group, predicted_a, predicted_b, direction
    ag.mcnemar                               # {statistic, p_value, method, discordant}
    ag.accuracy_gap, ag.worst_group_gap      # b - a, each {gap, low, high, n} (95% paired bootstrap)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from core.analysis.stats import paired_gap
from core.analysis.tables import load_tables, scored_images

EXACT_BELOW = 25  # discordant pairs under which McNemar's test is the exact binomial one


def mcnemar(a_only: int, b_only: int) -> dict:
    """McNemar's test of "both classifiers are right equally often" from the discordant pairs: `a_only` images
    only A reads right, `b_only` only B. Exact (binomial, two-sided) below EXACT_BELOW pairs, else the
    chi-square with continuity correction."""
    from scipy import stats

    a_only, b_only = int(a_only), int(b_only)
    if a_only < 0 or b_only < 0:
        raise ValueError(f"counts must be >= 0, got {a_only} and {b_only}")
    n = a_only + b_only
    if n == 0:
        return {"statistic": None, "p_value": 1.0, "method": "no discordant pair", "discordant": 0}
    if n < EXACT_BELOW:
        p = stats.binomtest(min(a_only, b_only), n, 0.5).pvalue
        return {"statistic": float(min(a_only, b_only)), "p_value": float(min(1.0, p)), "method": "exact binomial",
                "discordant": n}
    chi2 = (abs(a_only - b_only) - 1) ** 2 / n
    return {"statistic": float(chi2), "p_value": float(stats.chi2.sf(chi2, 1)),
            "method": "chi-square, continuity-corrected", "discordant": n}


def worst_group_gap(right_a: np.ndarray, right_b: np.ndarray, groups: np.ndarray, n_boot: int = 2000,
                    seed: int = 0) -> dict:
    """Worst-group accuracy of b minus a's on the same images, with a paired bootstrap 95% interval (images
    resampled within each group, so every group keeps its size)."""
    right_a, right_b = np.asarray(right_a, float), np.asarray(right_b, float)
    groups = np.asarray(groups)
    names = [g for g in pd.unique(groups) if not pd.isna(g)]
    if not names or right_a.shape != right_b.shape or right_a.shape != groups.shape:
        raise ValueError("worst_group_gap needs outcomes of a and b and a group for every image")
    members = [np.flatnonzero(groups == g) for g in names]

    def worst(x: np.ndarray, picks: list[np.ndarray]) -> float:
        return min(x[p].mean() for p in picks)

    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for i in range(n_boot):
        picks = [m[rng.integers(0, len(m), len(m))] for m in members]
        boots[i] = worst(right_b, picks) - worst(right_a, picks)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"gap": float(worst(right_b, members) - worst(right_a, members)), "low": float(lo), "high": float(hi),
            "n": int(len(groups)), "bootstrap": n_boot}


@dataclass
class Agreement:
    """Classifier A against classifier B on the images both runs scored."""

    table: pd.DataFrame  # a, b, images: the 2x2 table in tidy form
    flips: pd.DataFrame  # the images whose prediction changed between A and B (both ways)
    mcnemar: dict
    accuracy_gap: dict | None  # b - a
    worst_group_gap: dict | None  # b - a, None without groups
    n: int
    group_gaps: pd.DataFrame = field(default_factory=pd.DataFrame)  # per group: accuracy a, b, change, low, high

    def count(self, a: str, b: str) -> int:
        row = self.table[(self.table["a"] == a) & (self.table["b"] == b)]
        return int(row["images"].sum())

    def sentence(self, a_name: str = "A", b_name: str = "B") -> str:
        """The test in one line: how many flipped each way, and whether that could be chance. Where McNemar's test
        and the paired bootstrap interval of the average difference (shown beside it) disagree, which happens near
        p = 0.05, it says the difference is borderline rather than contradict the interval."""
        a_only, b_only = self.count("right", "wrong"), self.count("wrong", "right")
        m = self.mcnemar
        significant = m["p_value"] < 0.05
        verdict = ("the difference is unlikely to be chance" if significant
                   else "a difference this size can be chance")
        gap = self.accuracy_gap
        if gap is not None and (gap["low"] > 0 or gap["high"] < 0) != significant:
            verdict = (f"borderline: the paired bootstrap interval of the average difference "
                       f"({100 * gap['low']:+.1f} to {100 * gap['high']:+.1f} pts) "
                       + ("excludes zero and McNemar's test does not reach 0.05" if not significant
                          else "holds zero while McNemar's test is under 0.05")
                       + "; more images would settle it")
        return (f"{b_only} images only {b_name} reads right, {a_only} only {a_name}: McNemar's test "
                f"({m['method']}) p = {m['p_value']:.3g}, {verdict}.")


def agreement(run_a: Any, run_b: Any, seed: int = 0, id_key: Callable[[pd.Series], pd.Series] | None = None
              ) -> Agreement:
    """Compare two runs of two classifiers on the same images, matched by image_id (or by `id_key(image_id)`:
    core.analysis.backgrounds.photo_ids pairs one photo across ImageNet-9 variations). The flips keep run
    A's image ids."""
    ta, tb = load_tables(run_a), load_tables(run_b)
    a, b = scored_images(ta.images), scored_images(tb.images)
    if id_key is not None:
        a = a.assign(image_id_a=a["image_id"], image_id=id_key(a["image_id"]).to_numpy())
        b = b.assign(image_id=id_key(b["image_id"]).to_numpy())
    a, b = a.drop_duplicates("image_id").set_index("image_id"), b.drop_duplicates("image_id").set_index("image_id")
    shared = a.index.intersection(b.index)
    a, b = a.loc[shared], b.loc[shared]
    right_a = (a["label"] == a["prediction"]).to_numpy()
    right_b = (b["label"] == b["prediction"]).to_numpy()
    word = np.where
    table = (pd.DataFrame({"a": word(right_a, "right", "wrong"), "b": word(right_b, "right", "wrong")})
             .value_counts().rename("images").reset_index())
    full = pd.MultiIndex.from_product([["right", "wrong"], ["right", "wrong"]], names=["a", "b"])
    table = table.set_index(["a", "b"]).reindex(full, fill_value=0).reset_index()
    changed = (a["prediction"] != b["prediction"]).to_numpy()
    names = ta.group_names
    group = a["group"] if "group" in a else pd.Series([None] * len(a), index=a.index)
    flips = pd.DataFrame({
        "image_id": (a["image_id_a"] if "image_id_a" in a else pd.Series(shared, index=shared)).astype(str).to_numpy(),
        "path": a["path"].astype(str).to_numpy(),
        "class": a["label_name"].to_numpy(),
        "group": [names.get(int(g), f"group {int(g)}") if pd.notna(g) else None for g in group],
        "predicted_a": a["prediction_name"].to_numpy(), "predicted_b": b["prediction_name"].to_numpy(),
        "direction": np.select([right_b & ~right_a, right_a & ~right_b], ["fixed by B", "broken by B"],
                               "changed, still wrong")})[changed].reset_index(drop=True)
    order = {"fixed by B": 0, "broken by B": 1, "changed, still wrong": 2}
    flips = flips.sort_values(["direction", "image_id"], key=lambda s: s.map(order) if s.name == "direction" else s,
                              kind="stable").reset_index(drop=True)
    a_only = int((right_a & ~right_b).sum())
    b_only = int((right_b & ~right_a).sum())
    acc_gap = paired_gap(right_b, right_a, seed=seed) if len(shared) else None
    wg_gap, gaps = None, pd.DataFrame(columns=["group", "n", "accuracy_a", "accuracy_b", "change", "low", "high"])
    if len(shared) and group.notna().any():
        known = group.notna().to_numpy()
        wg_gap = worst_group_gap(right_a[known], right_b[known], group.to_numpy()[known], seed=seed)
        rows = []
        for g in sorted(pd.unique(group[known])):
            m = (group == g).to_numpy()
            gap = paired_gap(right_b[m], right_a[m], seed=seed)
            rows.append({"group": names.get(int(g), f"group {int(g)}"), "n": int(m.sum()),
                         "accuracy_a": float(right_a[m].mean()), "accuracy_b": float(right_b[m].mean()),
                         "change": gap["gap"], "low": gap["low"], "high": gap["high"]})
        gaps = pd.DataFrame(rows)
    return Agreement(table, flips, mcnemar(a_only, b_only), acc_gap, wg_gap, int(len(shared)), gaps)
