"""Intervals every number in the project is reported with: Wilson score intervals for accuracies and a
paired bootstrap for the difference of two accuracies on the same items."""
from __future__ import annotations

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_bounds(correct, n, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise 95% Wilson score intervals for `correct` successes of `n` trials (arrays or numbers);
    exact at 0 and n, unlike the normal interval, and (0, 1) where n is 0."""
    k = np.asarray(correct, dtype=float)
    n = np.asarray(n, dtype=float)
    m = np.maximum(n, 1)
    p = np.where(n > 0, k / m, 0.0)
    denom = 1 + z * z / m
    centre = (p + z * z / (2 * m)) / denom
    half = z * np.sqrt(p * (1 - p) / m + z * z / (4 * m * m)) / denom
    # Rounding leaves 1 - 1e-16 at k = n; the bound there is exactly 1 (and 0 at k = 0).
    low = np.where((k <= 0) | (n <= 0), 0.0, np.clip(centre - half, 0.0, 1.0))
    high = np.where((k >= n) | (n <= 0), 1.0, np.clip(centre + half, 0.0, 1.0))
    return low, high


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The 95% Wilson score interval for k successes in n trials (n >= 1)."""
    if n <= 0:
        raise ValueError(f"an interval needs at least one trial; got n={n}")
    low, high = wilson_bounds(k, n, z)
    return float(low), float(high)


def paired_gap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """mean(a) - mean(b) for 0/1 outcomes of the same items, with a paired bootstrap 95% interval."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired outcomes must be two 1-d arrays of one length; got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    boots = a[idx].mean(axis=1) - b[idx].mean(axis=1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"gap": float(a.mean() - b.mean()), "low": float(lo), "high": float(hi), "n": int(len(a)),
            "bootstrap": n_boot}
