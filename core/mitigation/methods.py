"""Robustness fixes that produce a new classifier: last-layer reweighting (DFR) and MaskTune, and their evaluation.

Two estimators, each leaving the classifier it was given untouched and its fixed copy in `adapter_`:

- `LastLayerReweighting` (DFR, Kirichenko et al. 2022): retrain only the last linear layer on the
  classifier's penultimate features of held-out images (the validation split), group-balanced. The groups
  are the ones inferred from the explanations (core.analysis.GroupInferrer: class x "explanations carry
  the class's flagged words"), which is the point of TExplain, or the dataset's true groups as a reference.
- `MaskTune` (Asgari et al. 2022; the TExplain paper's mitigation): GradCAM of the classifier on each
  training image, mask the most attended region (above mean + 2 std of the map), fine-tune briefly (one
  epoch) on the masked images, so the classifier has to look beyond what it leaned on.

`evaluate_mitigation` scores a before/after pair on the test split with TRUE groups (always the yardstick),
and `write_mitigation_json` records the results as `mitigation.json` in a run folder, which the dashboard
and the report read.

    dfr = LastLayerReweighting().fit(clf, val_images, val_labels, inferred_groups)
    result = evaluate_mitigation(clf, dfr.adapter_, test_images, test_labels, test_groups,
                                 method="dfr", group_source="inferred")
    write_mitigation_json(test_run.path, [result])
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from core.models.classifier import ClassifierAdapter
from core.models.gradcam import cam_masks, lite_gradcam
from core.store import MITIGATION_FILE, user_file  # one name for the file, shared with its readers

GROUP_SOURCES = ("inferred", "true", "class", "none")  # "class": balanced over classes only (a control);
# "none": a method that uses no groups (MaskTune)
DFR_CS = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)  # the C grid of the DFR paper

__all__ = ["LastLayerReweighting", "MaskTune", "MitigationResult", "evaluate_mitigation", "bootstrap_intervals",
           "write_mitigation_json", "read_mitigation_json", "mitigation_json_path", "results_table",
           "features_and_logits", "clone_adapter", "mask_image", "MITIGATION_FILE"]


# --- shared pieces -------------------------------------------------------------------------------------

def clone_adapter(adapter, name: str | None = None):
    """An independent copy of a ClassifierAdapter (weights included), optionally renamed.

    A plain deepcopy is not enough: the adapter's feature hook is a closure over the original adapter,
    so the copy's hook would keep writing into the original. The copy drops those hooks and gets its own.
    """
    from core.models.classifier import ClassifierAdapter

    if not isinstance(adapter, ClassifierAdapter):
        raise TypeError(f"adapter must be a ClassifierAdapter, got {type(adapter).__name__}")
    module = copy.deepcopy(adapter.module)
    for sub in module.modules():
        for hooks in (sub._forward_pre_hooks, sub._forward_hooks):
            for key, fn in list(hooks.items()):
                if getattr(fn, "__qualname__", "").startswith("ClassifierAdapter."):
                    del hooks[key]
    return ClassifierAdapter(module, adapter.class_names, adapter.arch, copy.deepcopy(adapter.preprocessing),
                             adapter.feature_layer, name=name or adapter.name, backend=adapter.backend)


def _as_batches(adapter, images, batch_size: int):
    """Yield input batches: PIL images / paths are preprocessed, a tensor is sliced as it is."""
    if isinstance(images, torch.Tensor):
        for i in range(0, len(images), batch_size):
            yield images[i:i + batch_size]
        return
    from core.data import load_rgb

    for i in range(0, len(images), batch_size):
        chunk = [im if isinstance(im, Image.Image) else load_rgb(im) for im in images[i:i + batch_size]]
        yield torch.stack([adapter.preprocess(im) for im in chunk])


@torch.inference_mode()
def features_and_logits(adapter, images, batch_size: int = 32, desc: str = "features",
                        show_progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features and logits of a classifier for PIL images, image paths or an input tensor.

    Returns float32 arrays (N, D) and (N, C).
    """
    if not isinstance(adapter, ClassifierAdapter):
        raise TypeError(f"adapter must be a ClassifierAdapter, got {type(adapter).__name__}")
    n = len(images)
    if n == 0:
        raise ValueError("images is empty; nothing to compute features for")
    adapter.eval()
    device = next(adapter.module.parameters()).device
    zs, ls = [], []
    for x in tqdm(_as_batches(adapter, images, batch_size), total=-(-n // batch_size), desc=desc, unit="batch",
                  leave=False, disable=not show_progress):
        z, logits = adapter.features_and_logits(x.to(device))
        zs.append(z.float().cpu())
        ls.append(logits.float().cpu())
    return torch.cat(zs).numpy(), torch.cat(ls).numpy()


def _check_lengths(n: int, **arrays) -> None:
    for name, values in arrays.items():
        if values is not None and len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries; expected one per image ({n})")


def _group_array(groups, n: int, name: str = "groups") -> np.ndarray:
    """Groups as a float array with NaN for unknown (None, pd.NA)."""
    if isinstance(groups, pd.Series):
        groups = groups.to_numpy(dtype=object)
    g = pd.to_numeric(pd.Series(list(groups), dtype=object), errors="coerce").to_numpy(dtype=float)
    _check_lengths(n, **{name: g})
    return g


def _worst_and_average(pred: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    correct = pred == labels
    per = [correct[groups == g].mean() for g in np.unique(groups)]
    return float(min(per)), float(correct.mean())


# --- last-layer reweighting (DFR) ------------------------------------------------------------------------

class LastLayerReweighting:
    """Deep Feature Reweighting: a new last layer fitted group-balanced on held-out images' features.

    Parameters:
        penalty: "l1" (as in DFR) or "l2", on standardized features.
        Cs: inverse regularization strengths tried; the one with the best cross-validated worst-group
            accuracy (within the given images) wins, ties going to the higher average, then the smaller C.
        balance: "subsample" (DFR: each fit sees the same number of images from every group, the size of
            the smallest group), "weights" (all images, each group weighted to the same total), or "auto":
            subsample when the smallest group has at least `min_subsample` images, else weights. Inferred
            groups are often lopsided (3 images in a group would leave 12 images per fit).
        min_subsample: the smallest group size for which "auto" subsamples.
        n_resamples: balanced resamples per fit; the fits' coefficients are averaged (DFR uses 10).
        cv_folds: folds, stratified by group, to choose C; 1 or a single C skips the search.
        batch_size: images per forward pass when features are computed here.
        seed: seeds the folds and the resamples.

    Learned: balance_ ("subsample" or "weights": what "auto" chose), C_, cv_scores_ (DataFrame: C and the
    cross-validated worst_group and average accuracy), group_counts_ (group -> images), scaler_
    (StandardScaler), estimator_ (a LogisticRegression holding the averaged coefficients, on standardized
    features), coef_/intercept_ (the same on raw features, what the head holds), adapter_ (a copy of the
    classifier with the new head).
    """

    def __init__(self, penalty: str = "l1", Cs: Sequence[float] = DFR_CS, balance: str = "auto",
                 min_subsample: int = 20, n_resamples: int = 10, cv_folds: int = 3, batch_size: int = 32,
                 seed: int = 0):
        self.penalty = penalty
        self.Cs = Cs
        self.balance = balance
        self.min_subsample = min_subsample
        self.n_resamples = n_resamples
        self.cv_folds = cv_folds
        self.batch_size = batch_size
        self.seed = seed

    def _check_params(self) -> None:
        if self.penalty not in ("l1", "l2"):
            raise ValueError(f"penalty must be 'l1' or 'l2', got {self.penalty!r}")
        if self.balance not in ("auto", "subsample", "weights"):
            raise ValueError(f"balance must be 'auto', 'subsample' or 'weights', got {self.balance!r}")
        if not len(self.Cs) or any(not np.isfinite(c) or c <= 0 for c in self.Cs):
            raise ValueError(f"Cs must be a non-empty list of positive numbers, got {list(self.Cs)!r}")
        for name in ("n_resamples", "cv_folds", "batch_size", "min_subsample"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

    def _logistic(self, C: float, n_classes: int, seed: int):
        from sklearn.linear_model import LogisticRegression

        if self.penalty == "l1":
            solver = "liblinear" if n_classes == 2 else "saga"
            return LogisticRegression(C=C, l1_ratio=1.0, solver=solver, max_iter=1000, random_state=seed)
        return LogisticRegression(C=C, l1_ratio=0.0, solver="lbfgs", max_iter=1000, random_state=seed)

    def _fit_averaged(self, X: np.ndarray, y: np.ndarray, g: np.ndarray, C: float, n_classes: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients (K', D) and intercepts (K',) averaged over balanced resamples."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        present = np.unique(g)
        counts = {k: int((g == k).sum()) for k in present}
        coefs, intercepts = [], []
        for r in range(self.n_resamples):
            if self.balance_ == "subsample":
                m = min(counts.values())
                idx = np.concatenate([rng.choice(np.flatnonzero(g == k), m, replace=False) for k in present])
                weight = None
            else:
                idx = np.arange(len(y))
                weight = np.array([1.0 / counts[k] for k in g]) * len(y) / len(present)
            if len(np.unique(y[idx])) < n_classes:
                raise ValueError(f"a balanced resample holds only classes {sorted(np.unique(y[idx]))} of "
                                 f"{n_classes}; every class needs images in the groups given")
            clf = self._logistic(C, n_classes, int(rng.integers(2 ** 31)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(X[idx], y[idx], sample_weight=weight)
            coefs.append(clf.coef_)
            intercepts.append(clf.intercept_)
            if self.balance_ == "weights" and r == 0:
                break  # one weighted fit on all images: resampling would repeat it
        return np.mean(coefs, axis=0), np.mean(intercepts, axis=0)

    def _cross_validate(self, X, y, g, n_classes, rng, show_progress: bool = True) -> pd.DataFrame:
        from sklearn.model_selection import StratifiedKFold

        smallest = min(int((g == k).sum()) for k in np.unique(g))
        folds = min(self.cv_folds, smallest)
        rows = []
        if folds < 2 or len(self.Cs) == 1:
            return pd.DataFrame({"C": list(self.Cs), "worst_group": np.nan, "average": np.nan, "folds": 0})
        split = list(StratifiedKFold(folds, shuffle=True, random_state=self.seed).split(X, g))
        for C in tqdm(list(self.Cs), desc="DFR: choose C", unit="C", leave=False, disable=not show_progress):
            worst, avg = [], []
            for train, held in split:
                coef, b = self._fit_averaged(X[train], y[train], g[train], C, n_classes, rng)
                pred = _predict_linear(X[held], coef, b)
                w, a = _worst_and_average(pred, y[held], g[held])
                worst.append(w)
                avg.append(a)
            rows.append({"C": C, "worst_group": float(np.mean(worst)), "average": float(np.mean(avg)),
                         "folds": folds})
        return pd.DataFrame(rows)

    def fit(self, adapter, images=None, labels=None, groups=None, features: np.ndarray | None = None,
            show_progress: bool = True) -> "LastLayerReweighting":
        """Fit a group-balanced last layer on held-out images and write it into a copy of `adapter`.

        `images`: PIL images, image paths or an input tensor (features are computed with the adapter), or
        pass `features` (N, D) already computed with it. `labels`: class index per image. `groups`: group
        id per image (images whose group is unknown are left out).
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        self._check_params()
        if not isinstance(adapter, ClassifierAdapter):
            raise TypeError(f"adapter must be a ClassifierAdapter, got {type(adapter).__name__}")
        if adapter.feature_layer is not None:
            raise ValueError(f"last-layer reweighting needs the penultimate features (the input of the last "
                             f"linear layer); this adapter reads {adapter.feature_layer!r}")
        if features is None:
            if images is None:
                raise ValueError("pass images (or features computed with this adapter)")
            features = features_and_logits(adapter, images, self.batch_size, desc="DFR features",
                                           show_progress=show_progress)[0]
        X = np.asarray(features, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != adapter.fc.in_features:
            raise ValueError(f"features has shape {X.shape}; the classifier's last layer takes "
                             f"{adapter.fc.in_features} features per image")
        if labels is None or groups is None:
            raise ValueError("labels and groups are required (one per image)")
        y = np.asarray(labels, dtype=float)
        _check_lengths(len(X), labels=y)
        g = _group_array(groups, len(X))
        keep = np.isfinite(g) & np.isfinite(y)
        if keep.sum() < 2:
            raise ValueError(f"only {int(keep.sum())} images have both a label and a group; nothing to fit")
        X, y, g = X[keep], y[keep].astype(int), g[keep].astype(int)
        n_classes = adapter.fc.out_features
        missing = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
        if missing:
            raise ValueError(f"labels lack classes {missing} of the classifier's {n_classes}; "
                             "reweighting needs images of every class")
        self.group_counts_ = {int(k): int((g == k).sum()) for k in np.unique(g)}
        self.balance_ = self.balance
        if self.balance == "auto":
            self.balance_ = "subsample" if min(self.group_counts_.values()) >= self.min_subsample else "weights"
        rng = np.random.default_rng(self.seed)
        self.scaler_ = StandardScaler().fit(X)  # on every held-out image, as in DFR
        Xs = self.scaler_.transform(X)
        self.cv_scores_ = self._cross_validate(Xs, y, g, n_classes, rng, show_progress)
        scored = self.cv_scores_.dropna(subset=["worst_group"])
        if scored.empty:
            self.C_ = float(self.Cs[0])
        else:
            best = scored.sort_values(["worst_group", "average", "C"], ascending=[False, False, True]).iloc[0]
            self.C_ = float(best["C"])
        coef, intercept = self._fit_averaged(Xs, y, g, self.C_, n_classes, rng)
        self.estimator_ = LogisticRegression(C=self.C_)
        self.estimator_.coef_, self.estimator_.intercept_ = coef, intercept
        self.estimator_.classes_ = np.arange(n_classes)
        self.estimator_.n_features_in_ = X.shape[1]
        # Undo the standardization: w.(x - mu)/s + b = (w/s).x + (b - w.mu/s).
        scale = self.scaler_.scale_
        self.coef_ = coef / scale
        self.intercept_ = intercept - (coef * self.scaler_.mean_ / scale).sum(axis=1)
        self.adapter_ = clone_adapter(adapter)
        write_head(self.adapter_, self.coef_, self.intercept_)
        self.train_worst_group_, self.train_average_ = _worst_and_average(self.predict(features=X), y, g)
        return self

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """The fitted model's decision on raw features: (N,) for two classes (as sklearn), else (N, K)."""
        self._check_fitted()
        return self.estimator_.decision_function(self.scaler_.transform(np.asarray(features, dtype=np.float64)))

    def predict(self, features: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return self.estimator_.predict(self.scaler_.transform(np.asarray(features, dtype=np.float64)))

    def _check_fitted(self) -> None:
        if not hasattr(self, "estimator_"):
            raise RuntimeError("this LastLayerReweighting is not fitted yet; call fit(adapter, images, labels, groups)")

    def summary(self) -> dict:
        self._check_fitted()
        return {"C": self.C_, "penalty": self.penalty, "balance": self.balance_, "n_resamples": self.n_resamples,
                "group_counts": {str(k): v for k, v in self.group_counts_.items()},
                "nonzero_weights": int((np.abs(self.coef_) > 0).any(axis=0).sum()),
                "fit_worst_group": round(self.train_worst_group_, 4), "fit_average": round(self.train_average_, 4),
                "cv": self.cv_scores_.round(4).to_dict("records")}


def _predict_linear(X: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    scores = X @ coef.T + intercept
    return (scores[:, 0] > 0).astype(int) if coef.shape[0] == 1 else scores.argmax(1)


@torch.no_grad()
def write_head(adapter, coef: np.ndarray, intercept: np.ndarray) -> None:
    """Put a linear model into the adapter's last layer and refresh its identity.

    A binary model (one row of coefficients, sklearn-style) becomes logits (-d/2, +d/2), so that
    logit[1] - logit[0] is the model's decision d and the softmax equals its predict_proba.
    """
    fc = adapter.fc
    coef, intercept = np.atleast_2d(coef), np.atleast_1d(intercept)
    if coef.shape[0] == 1 and fc.out_features == 2:
        coef, intercept = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    if coef.shape != tuple(fc.weight.shape):
        raise ValueError(f"coefficients have shape {coef.shape}; the classifier's last layer is "
                         f"{tuple(fc.weight.shape)}")
    fc.weight.copy_(torch.as_tensor(coef, dtype=fc.weight.dtype))
    if fc.bias is None:
        raise ValueError("the classifier's last layer has no bias; reweighting needs one")
    fc.bias.copy_(torch.as_tensor(intercept, dtype=fc.bias.dtype))
    adapter.refresh_identity()


# --- masking ----------------------------------------------------------------------------------

def _resized_size(width: int, height: int, resize: int) -> tuple[int, int]:
    # torchvision's Resize(int): the shorter side becomes `resize`, the longer keeps the aspect ratio.
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def mask_image(image: Image.Image, mask, preprocessing, fill: str | tuple = "mean") -> Image.Image:
    """Paint `fill` over the pixels of `image` that `mask` marks, where `mask` is (crop, crop) in the
    coordinates of the preprocessed input (resize the shorter side, centre crop).

    fill "mean" is the preprocessing mean colour, which the classifier sees as 0 after normalization
    (MaskTune multiplies the normalized input by the mask); or an RGB tuple.
    """
    image = image.convert("RGB")
    mask = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool)
    crop = preprocessing.crop
    if mask.shape != (crop, crop):
        raise ValueError(f"mask has shape {mask.shape}; expected ({crop}, {crop}), the classifier's input size")
    w, h = image.size
    rw, rh = _resized_size(w, h, preprocessing.resize)
    top, left = int(round((rh - crop) / 2.0)), int(round((rw - crop) / 2.0))
    canvas = np.zeros((max(rh, crop), max(rw, crop)), dtype=np.uint8)
    canvas[max(top, 0):max(top, 0) + crop, max(left, 0):max(left, 0) + crop] = mask * 255
    canvas = canvas[:rh, :rw]
    full = Image.fromarray(canvas).resize((w, h), Image.NEAREST)
    if isinstance(fill, str):
        if fill != "mean":
            raise ValueError(f"fill must be 'mean' or an RGB tuple, got {fill!r}")
        fill = tuple(int(round(m * 255)) for m in preprocessing.mean)
    return Image.composite(Image.new("RGB", (w, h), tuple(fill)), image, full)


# --- MaskTune ---------------------------------------------------------------------------------------------

class MaskTune:
    """MaskTune: mask what the classifier attends to on each training image, then fine-tune briefly.

    Parameters:
        threshold_std: a pixel is masked when its upsampled GradCAM exceeds the image's mean + this many std.
        target: "prediction" (GradCAM of each image's predicted class) or "label" (of its true class).
        fill: "mean" (neutral after normalization) or an RGB tuple.
        epochs, lr, batch_size, train_from_block, flips, seed: the fine-tuning (core.engine.finetune: blocks
            before `train_from_block` stay frozen). MaskTune keeps the ERM training's settings and runs one epoch.
        cam_batch_size: images per GradCAM pass.

    Learned: masks_ (N, crop, crop) bool, masked_share_ (share of each image's input masked),
    history_ (fine-tuning history), adapter_ (the fine-tuned copy of the classifier).
    """

    def __init__(self, threshold_std: float = 2.0, target: str = "prediction", fill: str | tuple = "mean",
                 epochs: int = 1, lr: float = 1e-3, batch_size: int = 32, train_from_block: int = 12,
                 flips: bool = True, seed: int = 0, cam_batch_size: int = 32):
        self.threshold_std = threshold_std
        self.target = target
        self.fill = fill
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.train_from_block = train_from_block
        self.flips = flips
        self.seed = seed
        self.cam_batch_size = cam_batch_size

    def _check_params(self) -> None:
        if self.target not in ("prediction", "label"):
            raise ValueError(f"target must be 'prediction' or 'label', got {self.target!r}")
        if not np.isfinite(self.threshold_std):
            raise ValueError(f"threshold_std must be a number, got {self.threshold_std!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")

    def compute_masks(self, adapter, images: Sequence, labels=None, show_progress: bool = True) -> torch.Tensor:
        """GradCAM masks (N, crop, crop) of `adapter` on PIL images (EfficientNet-Lite0: tail-only backward)."""
        from core.data import load_rgb

        crop = adapter.preprocessing.crop
        device = next(adapter.module.parameters()).device
        out = []
        bs = self.cam_batch_size
        for i in tqdm(range(0, len(images), bs), desc="MaskTune: GradCAM", unit="batch", leave=False,
                      disable=not show_progress):
            chunk = [im if isinstance(im, Image.Image) else load_rgb(im) for im in images[i:i + bs]]
            x = torch.stack([adapter.preprocess(im) for im in chunk]).to(device)
            target = None if self.target == "prediction" else torch.as_tensor(np.asarray(labels[i:i + bs])).long()
            if adapter.backend == "efficientnet_lite":
                cams, _ = lite_gradcam(adapter, x, target)
            else:
                raise NotImplementedError("MaskTune fine-tunes EfficientNet-Lite0 adapters (core.finetune); for "
                                          "another classifier, compute masks with gradcam(model, layer, x)")
            out.append(cam_masks(cams.cpu(), crop, self.threshold_std))
        return torch.cat(out)

    def masked_images(self, adapter, images: Sequence, masks=None) -> list[Image.Image]:
        """The images as the fine-tuning sees them (default: with the masks learned in fit)."""
        from core.data import load_rgb

        masks = self.masks_ if masks is None else masks
        _check_lengths(len(images), masks=masks)
        return [mask_image(im if isinstance(im, Image.Image) else load_rgb(im), m, adapter.preprocessing, self.fill)
                for im, m in zip(images, masks)]

    def fit(self, adapter, images: Sequence, labels, masks=None, show_progress: bool = True) -> "MaskTune":
        """Mask each training image where `adapter` looks, fine-tune a copy of it on them: `adapter_`.

        `masks` (N, crop, crop) from `compute_masks` may be passed to skip the GradCAM pass.
        """
        from core.engine.config import FinetuneConfig
        from core.engine.finetune import finetune

        self._check_params()
        if not isinstance(adapter, ClassifierAdapter):
            raise TypeError(f"adapter must be a ClassifierAdapter, got {type(adapter).__name__}")
        if adapter.backend != "efficientnet_lite":
            raise NotImplementedError(f"MaskTune fine-tunes EfficientNet-Lite0 adapters (core.finetune); this one "
                                      f"is {adapter.backend!r}")
        if len(images) == 0:
            raise ValueError("images is empty; MaskTune needs the training images")
        y = np.array(labels, dtype=int)  # a writable copy: finetune makes a tensor of it
        _check_lengths(len(images), labels=y)
        if masks is None:
            masks = self.compute_masks(adapter, images, y, show_progress)
        masks = torch.as_tensor(np.asarray(masks.cpu() if isinstance(masks, torch.Tensor) else masks, dtype=bool))
        crop = adapter.preprocessing.crop
        if masks.shape != (len(images), crop, crop):
            raise ValueError(f"masks has shape {tuple(masks.shape)}; expected ({len(images)}, {crop}, {crop})")
        self.masks_ = masks
        self.masked_share_ = self.masks_.float().mean((1, 2)).numpy()
        masked = self.masked_images(adapter, images)
        self.adapter_ = clone_adapter(adapter)
        cfg = FinetuneConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                             train_from_block=self.train_from_block, sampling="erm", select="last", flips=self.flips,
                             seed=self.seed)
        out = finetune(self.adapter_, masked, y, np.zeros(len(y), dtype=int), cfg, show_progress=show_progress)
        self.history_ = out["history"]
        return self

    def summary(self) -> dict:
        if not hasattr(self, "adapter_"):
            raise RuntimeError("this MaskTune is not fitted yet; call fit(adapter, images, labels)")
        return {"threshold_std": self.threshold_std, "target": self.target, "epochs": self.epochs, "lr": self.lr,
                "train_from_block": self.train_from_block, "n_images": int(len(self.masks_)),
                "masked_share_mean": round(float(self.masked_share_.mean()), 4), "history": self.history_}


# --- evaluation and mitigation.json -----------------------------------------------------------------------

@dataclass
class MitigationResult:
    """Worst-group and average accuracy of a classifier before and after a fix, on true groups."""

    method: str  # "dfr", "masktune", ...
    groups: str  # the groups the fix used: "inferred", "true", "class" (control) or "none"
    worst_group_before: float
    worst_group_after: float
    average_before: float  # accuracy over all evaluated images
    average_after: float
    per_group_before: dict  # group id (str) -> accuracy
    per_group_after: dict
    checkpoint: str | None = None  # folder of the new classifier
    notes: str = ""
    group_names: dict = field(default_factory=dict)  # group id (str) -> name
    group_sizes: dict = field(default_factory=dict)  # group id (str) -> evaluated images
    worst_group_name_before: str = ""
    worst_group_name_after: str = ""
    n_images: int = 0
    split: str = "test"
    classifier_before: str = ""  # identities
    classifier_after: str = ""
    details: dict = field(default_factory=dict)  # the fit: chosen C, group agreement, masked share, ...
    # 95% intervals [low, high] of worst_group_before/after, average_before/after and of the changes
    # worst_group_change / average_change (paired bootstrap; see bootstrap_intervals)
    intervals: dict = field(default_factory=dict)
    # Why this fix should not be taken ("" when nothing is wrong): it lowers worst-group accuracy, and the
    # reasons it may (core.mitigation.pipeline.why_worse). Readers show it instead of presenting the fix.
    warning: str = ""

    @property
    def worst_group_change(self) -> float:
        return self.worst_group_after - self.worst_group_before

    @property
    def average_change(self) -> float:
        return self.average_after - self.average_before

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MitigationResult":
        known = {f for f in cls.__dataclass_fields__}
        missing = [k for k in ("method", "groups", "worst_group_before", "worst_group_after", "average_before",
                               "average_after", "per_group_before", "per_group_after") if k not in d]
        if missing:
            raise ValueError(f"a mitigation entry lacks {missing}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def table(self) -> pd.DataFrame:
        """Per group: group, group_name, n, before, after, change."""
        keys = sorted(set(self.per_group_before) | set(self.per_group_after), key=lambda k: (len(k), k))
        rows = [{"group": k, "group_name": self.group_names.get(k, f"group {k}"), "n": self.group_sizes.get(k),
                 "before": self.per_group_before.get(k), "after": self.per_group_after.get(k)} for k in keys]
        out = pd.DataFrame(rows, columns=["group", "group_name", "n", "before", "after"])
        out["change"] = out["after"] - out["before"]
        return out


def _predictions(model, images, batch_size: int, desc: str, show_progress: bool) -> tuple[np.ndarray, str]:
    """Predicted classes from an adapter (run on images) or from given logits (N, C) / classes (N,)."""
    if isinstance(model, ClassifierAdapter):
        if images is None:
            raise ValueError("images are needed to evaluate a classifier (or pass its logits)")
        return features_and_logits(model, images, batch_size, desc, show_progress)[1].argmax(1), model.identity
    arr = np.asarray(model.detach().cpu() if isinstance(model, torch.Tensor) else model)
    if arr.ndim == 2:
        return arr.argmax(1), ""
    if arr.ndim == 1:
        return arr.astype(int), ""
    raise TypeError("before/after must be a ClassifierAdapter, logits (N, C) or predicted classes (N,); "
                    f"got an array of shape {arr.shape}")


def bootstrap_intervals(labels, pred_before, pred_after, groups, n_boot: int = 2000, level: float = 0.95,
                        seed: int = 0) -> dict:
    """95% intervals of worst-group and average accuracy before and after a fix, and of their changes.

    A paired bootstrap, stratified by true group: each replicate redraws the images of every group (its
    size kept, as the test split was built) and scores both classifiers on the same draw, so the interval
    of a change reflects that before and after are measured on the same images.
    """
    y, g = np.asarray(labels), np.asarray(groups, dtype=float)
    right = {"before": np.asarray(pred_before) == y, "after": np.asarray(pred_after) == y}
    rng = np.random.default_rng(seed)
    present = [k for k in np.unique(g[~np.isnan(g)])]
    sizes = np.array([(g == k).sum() for k in present])
    per_group = {key: [] for key in right}  # per key: (n_boot, groups) accuracies
    for k in present:
        members = np.flatnonzero(g == k)
        draw = members[rng.integers(0, len(members), size=(n_boot, len(members)))]  # (n_boot, n_k)
        for key, r in right.items():
            per_group[key].append(r[draw].mean(1))
    stats = {}
    for key in right:
        acc = np.stack(per_group[key], 1)  # (n_boot, groups)
        stats[f"worst_group_{key}"] = acc.min(1)
        stats[f"average_{key}"] = acc @ sizes / sizes.sum()
    stats["worst_group_change"] = stats["worst_group_after"] - stats["worst_group_before"]
    stats["average_change"] = stats["average_after"] - stats["average_before"]
    tail = (1 - level) / 2
    return {name: [round(float(np.quantile(v, tail)), 4), round(float(np.quantile(v, 1 - tail)), 4)]
            for name, v in stats.items()}


def evaluate_mitigation(before, after, images=None, labels=None, groups=None, *, method: str = "",
                        group_source: str = "true", group_names: dict | None = None, checkpoint: str | None = None,
                        notes: str = "", details: dict | None = None, split: str = "test", batch_size: int = 32,
                        show_progress: bool = True) -> MitigationResult:
    """Worst-group and average accuracy before and after a fix, on the given (test) images and TRUE groups.

    `before`/`after`: ClassifierAdapters (run on `images`: PIL images, paths or an input tensor), or their
    logits (N, C) or predicted classes (N,) already computed. `groups`: the true group of each image;
    `group_source` records which groups the fix itself used ("inferred", "true", "class" or "none").
    """
    from core.analysis.groups import worst_group_accuracy

    if group_source not in GROUP_SOURCES:
        raise ValueError(f"group_source must be one of {GROUP_SOURCES}, got {group_source!r}")
    if labels is None or groups is None:
        raise ValueError("labels and groups (the true groups of the evaluated images) are required")
    y = np.asarray(labels)
    g = _group_array(groups, len(y), "groups (true)")
    if np.isnan(g).all():
        raise ValueError("no evaluated image has a true group; the yardstick needs the dataset's groups")
    if images is not None:
        _check_lengths(len(y), images=images)
    pred_before, id_before = _predictions(before, images, batch_size, "evaluate (before)", show_progress)
    pred_after, id_after = _predictions(after, images, batch_size, "evaluate (after)", show_progress)
    _check_lengths(len(y), **{"before's predictions": pred_before, "after's predictions": pred_after})
    names = {int(k): str(v) for k, v in (group_names or {}).items()}
    scores = {}
    for key, pred in (("before", pred_before), ("after", pred_after)):
        frame = pd.DataFrame({"image_id": np.arange(len(y)).astype(str), "label": y, "prediction": pred,
                              "group": pd.array([None if np.isnan(v) else int(v) for v in g], dtype="Int64")})
        scores[key] = worst_group_accuracy(frame, weights="test", group_names=names)
    per = {k: {str(int(r.group)): float(r.accuracy) for r in s.per_group.itertuples()} for k, s in scores.items()}
    sizes = {str(int(r.group)): int(r.n) for r in scores["before"].per_group.itertuples()}
    named = {str(int(r.group)): str(r.group_name) for r in scores["before"].per_group.itertuples()}
    return MitigationResult(
        method=method, groups=group_source,
        worst_group_before=scores["before"].worst, worst_group_after=scores["after"].worst,
        average_before=scores["before"].average_weighted, average_after=scores["after"].average_weighted,
        per_group_before=per["before"], per_group_after=per["after"], checkpoint=checkpoint, notes=notes,
        group_names=named, group_sizes=sizes, worst_group_name_before=scores["before"].worst_group_name,
        worst_group_name_after=scores["after"].worst_group_name, n_images=int(sum(sizes.values())), split=split,
        classifier_before=id_before, classifier_after=id_after, details=dict(details or {}),
        intervals=bootstrap_intervals(y, pred_before, pred_after, g))


def results_table(results: Sequence[MitigationResult]) -> pd.DataFrame:
    """One row per result: method, groups, worst-group and average accuracy before/after, checkpoint."""
    cols = ["method", "groups", "worst_group_before", "worst_group_after", "average_before", "average_after",
            "checkpoint"]
    return pd.DataFrame([{c: getattr(r, c) for c in cols} for r in results], columns=cols)


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def mitigation_json_path(run_folder: str | Path, into_shipped: bool = False) -> Path:
    """Where a run's mitigation.json is written: the run folder, or for a shipped demo run the user's overlay
    (core.store.user_file) unless `into_shipped` (a demo rebuild) says to write into checkpoints/."""
    folder = Path(run_folder)
    return folder / MITIGATION_FILE if into_shipped else user_file(folder, MITIGATION_FILE)


def read_mitigation_json(run_folder: str | Path, into_shipped: bool = False) -> list[MitigationResult]:
    """The results recorded for a run ([] when there are none), from where `write_mitigation_json` puts them."""
    path = mitigation_json_path(run_folder, into_shipped)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(f"{path} must hold a list of results, got {type(data).__name__}")
    return [MitigationResult.from_dict(d) for d in data]


def write_mitigation_json(run_folder: str | Path, results: Sequence[MitigationResult | dict],
                          merge: bool = True, into_shipped: bool = False) -> Path:
    """Write results to the run's mitigation.json (see mitigation_json_path); with `merge`, earlier entries
    of other (method, groups) stay."""
    folder = Path(run_folder)
    if not folder.is_dir():
        raise ValueError(f"run_folder {folder} is not a folder")
    new = [r if isinstance(r, MitigationResult) else MitigationResult.from_dict(r) for r in results]
    keys = {(r.method, r.groups) for r in new}
    old = [r for r in read_mitigation_json(folder, into_shipped) if (r.method, r.groups) not in keys] if merge else []
    path = mitigation_json_path(folder, into_shipped)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_json_safe([r.to_dict() for r in old + new]), indent=2))
    os.replace(tmp, path)
    return path
