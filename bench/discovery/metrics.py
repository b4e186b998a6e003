"""The benchmark's measures, on plain arrays: what a discovery method is scored by, and how worlds are summed up.

- `hit_at_k`: a cue word among the top k flags of a class, in either view (error or association).
- `precision_at_k`: of the k images a method ranks first within a class, the share that truly are the class's
  minority group (FACTS' and B2T's precision@k); ties at the cut are shared out, so a method that gives every
  image the same score gets the base rate, not a lucky order.
- `auroc`: the probability that a minority image of a class is ranked above a majority image of it (ties: half).
- `ranking_metrics`: both, per class and averaged over the classes.
- `learned`: whether a classifier learned the cue (a minority group at least `margin` under the average and
  under its class's majority group).
- `mean_interval`: a mean over worlds with a bootstrap 95% interval; `hit_rate`: hits over worlds with Wilson's.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from core.analysis.stats import paired_gap, wilson_interval

LEARNED_GAP = 0.15  # test worst-group accuracy this far under the average: the classifier leans on the cue


def hit_at_k(flags: dict[str, list[str]], cue_words: Iterable[str], k: int = 3) -> bool:
    """Whether any of `cue_words` is among the first `k` words of any view in `flags` (view -> ranked words)."""
    cue = {w.lower() for w in cue_words}
    return any(w.lower() in cue for words in flags.values() for w in list(words)[:k])


def precision_at_k(scores, positives, k: int = 10) -> float:
    """Expected share of positives among the top `k` by score, ties at the cut broken at random (exactly)."""
    s, p = np.asarray(scores, dtype=float), np.asarray(positives, dtype=bool)
    if s.shape != p.shape or s.ndim != 1:
        raise ValueError(f"scores and positives must be 1-d and of one length; got {s.shape} and {p.shape}")
    if k < 1 or len(s) == 0:
        raise ValueError(f"precision@k needs k >= 1 and some items; got k={k}, {len(s)} items")
    k = min(k, len(s))
    s = np.where(np.isnan(s), -np.inf, s)
    cut = np.sort(s)[::-1][k - 1]
    above, tied = s > cut, s == cut
    slots = k - int(above.sum())
    expected = p[above].sum() + slots * p[tied].mean()
    return float(expected / k)


def auroc(scores, positives) -> float:
    """Area under the ROC curve of `scores` for `positives` (ties count half); NaN when one side is empty."""
    s, p = np.asarray(scores, dtype=float), np.asarray(positives, dtype=bool)
    if s.shape != p.shape or s.ndim != 1:
        raise ValueError(f"scores and positives must be 1-d and of one length; got {s.shape} and {p.shape}")
    n_pos, n_neg = int(p.sum()), int((~p).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    s = np.where(np.isnan(s), -np.inf, s)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[p].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ranking_metrics(scores, labels, minority, k: int = 10) -> dict:
    """precision@k and AUROC of ranking each class's images by `scores` for its minority group, per class and
    averaged over the classes (a class without minority or majority images is left out of the AUROC mean)."""
    s, y, m = np.asarray(scores, dtype=float), np.asarray(labels), np.asarray(minority, dtype=bool)
    per_class = {}
    for c in np.unique(y):
        sel = y == c
        per_class[int(c)] = {"precision_at_k": precision_at_k(s[sel], m[sel], k), "auroc": auroc(s[sel], m[sel]),
                             "n": int(sel.sum()), "n_minority": int(m[sel].sum())}
    p = [v["precision_at_k"] for v in per_class.values()]
    a = [v["auroc"] for v in per_class.values() if not math.isnan(v["auroc"])]
    return {"precision_at_k": float(np.mean(p)), "auroc": float(np.mean(a)) if a else float("nan"), "k": k,
            "per_class": per_class}


def learned(per_group: dict, margin: float = LEARNED_GAP) -> bool:
    """Whether a classifier leans on the cue, from its test accuracy per group (group = 2 * class + cue value, class
    y's majority value being y): its worst group is at least `margin` under the average of the groups (the rule
    of the benchmark's issue), and that group is a minority group at least `margin` under its own class's
    majority group, so that a class misread whatever its cue (objects the classifier cannot tell apart) does not
    count as a cue the classifier learned."""
    acc = {int(g): float(a) for g, a in per_group.items()}
    if set(acc) != {0, 1, 2, 3}:
        raise ValueError(f"per_group needs the four groups 0-3 of a two-class world; got {sorted(acc)}")
    worst, average = min(acc.values()), float(np.mean(list(acc.values())))
    minority = [g for g in (1, 2) if acc[g] == worst]
    return bool(average - worst >= margin and any(acc[3 * (g // 2)] - worst >= margin for g in minority))


def mean_interval(values: Iterable[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean over worlds (NaN left out) with a bootstrap 95% interval; n = how many values it rests on."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if len(v) == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    rng = np.random.default_rng(seed)
    boots = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"mean": float(v.mean()), "low": float(lo), "high": float(hi), "n": int(len(v))}


def hit_rate(hits: Iterable[bool]) -> dict:
    """Share of hits with a Wilson 95% interval."""
    h = [bool(x) for x in hits]
    if not h:
        return {"rate": None, "low": None, "high": None, "hits": 0, "n": 0}
    lo, hi = wilson_interval(sum(h), len(h))
    return {"rate": sum(h) / len(h), "low": lo, "high": hi, "hits": sum(h), "n": len(h)}


def paired_difference(a: Iterable[float], b: Iterable[float], seed: int = 0) -> dict | None:
    """mean(a - b) over worlds where both are known, with a paired bootstrap 95% interval (core.analysis.stats)."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and not (math.isnan(x) or math.isnan(y))]
    if not pairs:
        return None
    x, y = np.array(pairs, dtype=float).T
    return paired_gap(x, y, seed=seed)
