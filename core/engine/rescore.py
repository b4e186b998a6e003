"""A run for a classifier whose last layer was refit, made from the original run's explanations in seconds.

TExplain explains a classifier through its features z only: the translator maps z to a prefix and the
language model writes from the prefix. A classifier whose head was refit (DFR, core.mitigate) keeps the
features bit for bit, so with the same translator, LM and seed its sentences are the original run's,
word for word (counter-based sampling: they depend on the image id and the seed, not on the batch).
What changes is the predictions. `rescore_run` therefore copies the words and sentences shards and
recomputes only the predictions, instead of sampling every sentence again (hours on a large dataset):

    fixed = load_classifier("runs/classifiers/demo-erm/dfr-inferred")
    run = rescore_run("checkpoints/runs/demo-erm-test", fixed, "runs/demo-erm-fixed-test")

It refuses a classifier with other features: its explanations would differ. tests/test_mitigate.py checks
that the result equals a full `explain_dataset` with the refit classifier.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import torch

from core.store import Run, RunStoreError, portable_root

__all__ = ["rescore_run"]


def _source_feature_identity(manifest: dict) -> str | None:
    """The feature identity of the classifier a run was explained with, as its translator recorded it."""
    from core import paths

    models = manifest.get("models") or {}
    folder = models.get("translator")
    if not folder or folder == "in-memory":
        return None
    folder = Path(folder) if Path(folder).is_absolute() else paths.ROOT / folder
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if config.get("classifier_identity") != models.get("classifier_identity"):
        return None  # the translator was trained for another classifier: its record says nothing here
    return config.get("classifier_feature_identity") or None


def rescore_run(source: str | Path | Run, classifier, out: str | Path, name: str | None = None,
                source_classifier=None, batch_size: int = 32, show_progress: bool = True) -> Run:
    """Write a run of `classifier` at `out` from `source`'s explanations (see the module docstring).

    `source_classifier`: the adapter `source` was explained with, when its translator folder is not at
    hand; either way the two classifiers must have the same `feature_identity`.
    """
    from tqdm.auto import tqdm

    src = source if isinstance(source, Run) else Run.open(source)
    manifest = src.manifest
    if manifest.get("status") != "complete":
        raise RunStoreError(f"{src.path} is {manifest.get('status')!r}; rescore a complete run")
    models = manifest.get("models") or {}
    if source_classifier is not None:
        if source_classifier.identity != models.get("classifier_identity"):
            raise ValueError(f"source_classifier is {source_classifier.identity}; {src.path} was explained with "
                             f"{models.get('classifier_identity')}")
        want = source_classifier.feature_identity
    else:
        want = _source_feature_identity(manifest)
        if want is None:
            raise ValueError(f"cannot tell which features {src.path} was explained with (its translator "
                             f"{models.get('translator')!r} records no feature identity for its classifier); "
                             "pass source_classifier=")
    if classifier.feature_identity != want:
        raise ValueError(f"classifier {classifier.name!r} computes other features ({classifier.feature_identity}) "
                         f"than the run's classifier ({want}): its explanations would differ; explain the dataset "
                         "with it instead (texplain explain)")
    if classifier.class_names != list((manifest.get("dataset") or {}).get("class_names") or classifier.class_names):
        raise ValueError(f"classifier {classifier.name!r} has classes {classifier.class_names}; the run's dataset "
                         f"has {manifest['dataset']['class_names']}")

    new = {k: v for k, v in manifest.items() if k not in ("created", "updated", "finished", "status", "progress",
                                                           "rate_images_per_s", "versions")}
    new["name"] = name or Path(out).name
    new["models"] = {**models, "classifier": classifier.name, "classifier_identity": classifier.identity,
                     "classifier_source": portable_root(classifier.source) if classifier.source else None}
    new["explanations_from"] = {"run": portable_root(src.path),
                                "classifier_identity": models.get("classifier_identity"),
                                "feature_identity": want,
                                "why": "same feature extractor, translator, LM and seed: the same sentences"}
    run = Run.create(out, new)
    param = next(classifier.parameters())  # where and in what dtype the classifier runs
    classifier.eval()
    shards = sorted(int(p.stem.split("-")[1]) for p in (src.path / "images").glob("shard-*.parquet"))
    total = int((manifest.get("progress") or {}).get("total_images") or 0) or None
    t0 = time.time()
    for shard in tqdm(shards, desc=f"rescore {new['name']}", unit="shard", disable=not show_progress):
        if shard in run.done_shards():
            continue
        tables = {t: pd.read_parquet(src.path / t / f"shard-{shard:05d}.parquet") for t in ("images", "words",
                                                                                             "sentences")}
        images = tables["images"].copy()
        ok = images["prediction"].notna().to_numpy()  # images that failed to load stay failed
        rows = images.index[ok]
        for i in range(0, len(rows), batch_size):
            chunk = rows[i:i + batch_size]
            pics = [_load(src, images.at[j, "path"]) for j in chunk]
            x = torch.stack([classifier.preprocess(im) for im in pics]).to(param.device, param.dtype)
            with torch.inference_mode():
                probs = classifier(x).float().softmax(-1).cpu()
            conf, pred = probs.max(-1)
            images.loc[chunk, "prediction"] = pred.numpy()
            images.loc[chunk, "prediction_name"] = [classifier.class_names[int(p)] for p in pred]
            images.loc[chunk, "confidence"] = conf.numpy().astype("float64")
        run.write_shard(shard, images, tables["words"], tables["sentences"], total_images=total)
    if run.done_shards() >= set(shards):
        run.finish(rate_images_per_s=None, rescore_seconds=round(time.time() - t0, 1))
    return run


def _load(run: Run, path: str):
    from core.data import load_rgb

    return load_rgb(run.image_path(path))
