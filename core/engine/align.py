"""A translator for a new classifier in minutes: a linear map of its features onto a translated classifier's.

Two ImageNet-trained networks (or a network and its own fine-tuned copy) see an image much alike; their
penultimate features differ mostly by a change of basis. So instead of hours of caption training, fit a
ridge regression from the new classifier's features to the base classifier's on images both see (no
captions: any photos will do), and put it in front of the base classifier's translator:

    translator_new(z_new) = translator_base(W z_new + b)

The regularisation is chosen on held-out images (the share of the base features' variance explained, R²,
is recorded). The result is an aligned translator (core.models.translator: `input_dim`, `base`): only the map
is saved, a few MB, and the base translator is read from its folder.

    aligned = align_translator(new_classifier, base_classifier, base_translator, image_paths, load_rgb)
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from core import paths

RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # times the mean feature variance: from almost none to strong shrinkage


def fit_feature_map(x: torch.Tensor, y: torch.Tensor, ridges: Sequence[float] = RIDGES, holdout: float = 0.15,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """W (d_y, d_x) and b (d_y,) with y ≈ x W^T + b, by ridge regression in float64 on standardised inputs;
    the ridge chosen on a held-out share of the rows, then refit on all. Returns (W, b, info)."""
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x and y must be (n, d) with the same n; got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) < 20:
        raise ValueError(f"fitting a feature map needs at least 20 images; got {len(x)}")
    x, y = x.double(), y.double()
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    n_val = max(1, int(holdout * len(x)))
    val, train = order[:n_val], order[n_val:]

    def solve(rows, ridge):
        mu_x, sd_x = x[rows].mean(0), x[rows].std(0).clamp_min(1e-6)
        xs = (x[rows] - mu_x) / sd_x
        mu_y = y[rows].mean(0)
        a = xs.T @ xs + ridge * len(rows) * torch.eye(x.shape[1], dtype=x.dtype)
        coef = torch.linalg.solve(a, xs.T @ (y[rows] - mu_y))  # (d_x, d_y) on standardised x
        w = (coef / sd_x[:, None]).T  # (d_y, d_x) on raw x
        return w, mu_y - w @ mu_x

    def r2(w, b, rows) -> float:
        pred = x[rows] @ w.T + b
        return float(1 - ((y[rows] - pred) ** 2).sum() / ((y[rows] - y[rows].mean(0)) ** 2).sum())

    scores = {r: r2(*solve(train, r), val) for r in ridges}
    best = max(scores, key=scores.get)
    w, b = solve(torch.arange(len(x)), best)
    return w.float(), b.float(), {"ridge": best, "r2_held_out": round(scores[best], 4),
                                  "r2_by_ridge": {str(k): round(v, 4) for k, v in scores.items()},
                                  "images": len(x), "held_out_images": n_val}


def align_translator(classifier, base_classifier, base_translator, image_paths: Sequence[str | Path],
                     load_image: Callable, base_folder: str | Path | None = None, show_progress: bool = True):
    """An aligned translator for `classifier` (core.models.translator.Translator with an input map), fitted on
    `image_paths` seen by both classifiers. `base_folder`: where `base_translator` was loaded from (default: its
    `source`), recorded so that the aligned translator reads the base weights from there."""
    from core.engine.train import compute_features
    from core.models.translator import Translator, weights_sha256

    base_folder = Path(base_folder or base_translator.source or "")
    if not (base_folder / "config.json").exists():
        raise ValueError("the base translator must be a saved folder (pass base_folder): an aligned translator "
                         "reads its weights from there")
    if base_translator.config.input_dim:
        raise ValueError(f"{base_folder} is itself aligned; align onto a translator trained on captions")
    t0 = time.time()
    files = [str(p) for p in image_paths]
    x = compute_features(classifier, files, load_image, show_progress=show_progress)  # (n, d_new)
    y = compute_features(base_classifier, files, load_image, show_progress=show_progress)  # (n, d_base)
    w, b, info = fit_feature_map(x, y)
    try:  # relative to the repository where it lies inside it: the shipped aligned translators travel with it
        base = str(base_folder.resolve().relative_to(paths.ROOT))
    except ValueError:
        base = str(base_folder.resolve())
    cfg = replace(base_translator.config, input_dim=classifier.feature_dim, base=base,
                  base_sha256=weights_sha256(base_folder), classifier_identity=classifier.identity,
                  classifier_feature_identity=getattr(classifier, "feature_identity", ""),
                  classifier_name=classifier.name,
                  training={"method": "aligned: a ridge map of the classifier's features onto the base classifier's",
                            "base_classifier": base_classifier.name, "base_translator": base, **info,
                            "seconds": round(time.time() - t0, 1)})
    aligned = Translator(cfg)
    state = {k: v for k, v in base_translator.state_dict().items() if not k.startswith("input_map.")}
    aligned.load_state_dict(state, strict=False)
    with torch.no_grad():
        aligned.input_map.weight.copy_(w)
        aligned.input_map.bias.copy_(b)
    return aligned.eval()
