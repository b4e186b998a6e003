"""A 2-D map of a run's images in its classifier's feature space, computed once and stored with the run.

Runs keep words, not features, so the map runs the run's own classifier over its images again (no translator,
no language model: about as long as classifying them), projects the features to 2-D with UMAP (umap-learn;
scikit-learn's t-SNE when it is not installed, PCA for a handful of images) and writes a small Parquet file
beside the run (a shipped run's goes to the user's overlay, never into checkpoints/). core.analysis.images
reads it; nothing there loads a model.

    table = build_feature_map(run, progress=lambda done, total, stage: print(stage, done, total))
    # image_id, x, y: one row per readable image; table.attrs["method"]: "umap", "tsne" or "pca"
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

FEATURE_MAP_FILE = "feature_map.parquet"
METHODS = ("umap", "tsne", "pca")
Progress = Callable[[int, int, str], None]  # (done, total, what is happening)


def feature_map_file(run_path: str | Path) -> Path:
    """Where a run's feature map lives: its folder, or for a shipped run the user's overlay."""
    from core.store import user_file

    return user_file(Path(run_path), FEATURE_MAP_FILE)


def run_classifier(run: Any):
    """The classifier that made `run` (from its manifest: core.models.registry), on the default device."""
    from core.device import resolve
    from core.models.classifier import load_classifier
    from core.models.registry import run_model_sources

    sources = run_model_sources(run.manifest)
    classifier = load_classifier(sources.classifier)
    return classifier.to(resolve().device).eval()


def image_features(run: Any, classifier: Any = None, batch_size: int = 32, progress: Progress | None = None
                   ) -> tuple[list[str], np.ndarray, list[str]]:
    """(image ids, features (N, D) float32, problems) for every image of `run` that still reads; images the
    run recorded as unreadable, or that no longer read, are left out and named in `problems`."""
    import torch

    from core.data.images import load_rgb
    from core.engine.explainer import classify_images
    from core.errors import DatasetError

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    classifier = classifier if classifier is not None else run_classifier(run)
    images = run.images()
    if "error" in images:
        images = images[images["error"].isna() | (images["error"].astype(str) == "")]
    ids, feats, problems = [], [], []
    total = len(images)
    rows = list(zip(images["image_id"].astype(str), images["path"].astype(str)))
    for start in range(0, total, batch_size):
        batch, batch_ids = [], []
        for image_id, path in rows[start:start + batch_size]:
            try:
                batch.append(load_rgb(run.image_path(path)))
                batch_ids.append(image_id)
            except DatasetError as exc:
                problems.append(f"{image_id}: {exc}")
        if batch:
            with torch.inference_mode():
                z, _ = classify_images(classifier, batch)  # (B, D)
            feats.append(z.cpu().numpy().astype(np.float32))
            ids += batch_ids
        if progress is not None:
            progress(min(start + batch_size, total), total, "features")
    dim = feats[0].shape[1] if feats else 0
    return ids, (np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)), problems


def project_2d(features: np.ndarray, method: str = "umap", seed: int = 0) -> tuple[np.ndarray, str]:
    """(N, D) features -> ((N, 2) coordinates, the method used). UMAP with cosine distances (umap-learn), t-SNE
    when umap-learn is not installed, PCA below 10 images (neither is meaningful there)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"a map needs at least 2 images' features as an (N, D) array, got shape {x.shape}")
    x = x - x.mean(axis=0)
    if len(x) < 10 or method == "pca":
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2, random_state=seed).fit_transform(x) if x.shape[1] >= 2 else np.c_[x, np.zeros(len(x))]
        return xy.astype(np.float32), "pca"
    if method == "umap":
        try:
            import umap
        except ImportError:
            method = "tsne"
        else:
            reducer = umap.UMAP(n_neighbors=min(15, len(x) - 1), min_dist=0.1, metric="cosine", random_state=seed,
                                n_jobs=1)  # a seed fixes the layout; umap runs it on one thread then
            return reducer.fit_transform(x).astype(np.float32), "umap"
    from sklearn.manifold import TSNE

    xy = TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), random_state=seed, init="pca").fit_transform(x)
    return xy.astype(np.float32), "tsne"


def build_feature_map(run: Any, classifier: Any = None, method: str = "umap", batch_size: int = 32,
                      progress: Progress | None = None, seed: int = 0) -> pd.DataFrame:
    """Compute `run`'s feature map and store it (feature_map_file); returns image_id, x, y with attrs method,
    n_features and problems. `run`: a core.store.Run or a run folder."""
    from core.store import Run

    run = run if isinstance(run, Run) else Run.open(run)
    ids, features, problems = image_features(run, classifier, batch_size, progress)
    if progress is not None:
        progress(0, 1, "projecting")
    xy, used = project_2d(features, method, seed)
    table = pd.DataFrame({"image_id": ids, "x": xy[:, 0], "y": xy[:, 1]})
    path = feature_map_file(run.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    meta = {"method": used, "n_features": str(features.shape[1]), "seed": str(seed),
            "classifier": str((run.manifest.get("models") or {}).get("classifier_identity", "")),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    pq.write_table(arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                                  **{f"texplain.{k}": v for k, v in meta.items()}}), tmp)
    tmp.replace(path)
    if progress is not None:
        progress(1, 1, "done")
    table.attrs.update(method=used, n_features=int(features.shape[1]), problems=problems, path=str(path))
    return table
