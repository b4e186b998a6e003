"""A run's start, rows and end, shared by every placement (this process, or Ray actors).

`start_run` creates or resumes the run folder, checking models, settings and data against it, and cuts
the dataset into fixed shards (the unit of resumption); the row builders turn a prediction and its
sentences into the store's tables in one order, whoever computed them; `end_run` records how it ended.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from core.engine.config import ExplainConfig, active_gate
from core.store import Run, dataset_fingerprint, portable_root


@dataclass
class RunPlan:
    run: Run
    manifest: dict
    ds: object  # the dataset (or its split) being explained
    shards: list[list]  # records per shard, the dataset's order
    done: set[int]  # shards already written (a resumed run skips them)
    todo: list[int]  # shards this call explains

    @property
    def total_images(self) -> int:
        return sum(len(s) for s in self.shards)

    @property
    def done_images(self) -> int:
        return sum(len(self.shards[s]) for s in self.done)

    def items(self) -> list[tuple[int, object]]:
        """(shard, record) of every image still to explain, in the dataset's order."""
        return [(s, r) for s in self.todo for r in self.shards[s]]


def start_run(dataset, split: str | None, classifier, translator, lm, out_dir, cfg: ExplainConfig, name: str | None,
              settings: dict, device: str, extra_manifest: dict | None = None, force: bool = False,
              max_shards: int | None = None, max_images: int | None = None) -> RunPlan:
    """Create or resume the run folder (checking models, settings and data) and pick the shards to do.

    `max_images`: explain a sample of the split, stratified by group (`ImageDataset.sample`, drawn with the
    run's seed). The sample is recorded in the manifest's dataset, so a resumed run takes the same one and a
    run of another sample (or of all images) is refused as other data."""
    ds = dataset.split(split) if split else dataset
    in_split = len(ds.records)
    if max_images is not None:
        ds = ds.sample(max_images, seed=cfg.seed)
    records = list(ds.records)
    if not records:
        raise ValueError(f"dataset {dataset.name!r}{f' split {split!r}' if split else ''} has no images to explain")
    sample = ({"max_images": int(max_images), "of": in_split, "seed": cfg.seed,
               "stratified_by": "group" if any(r.group is not None for r in records) else "class"}
              if len(records) < in_split else None)
    manifest = {
        "name": name or Path(out_dir).name,
        "kind": "explain",
        "models": {"classifier": classifier.name, "classifier_identity": classifier.identity,
                   "classifier_source": portable_root(classifier.source) if classifier.source else None,
                   "translator": portable_root(translator.source) if translator.source else "in-memory",
                   "translator_mapper": translator.config.mapper, "lm": lm.name, "lm_identity": lm.identity,
                   # the gate that screened its sentences (core.models.gate), None where none did
                   "scene_gate": gate.describe() if (gate := active_gate(translator, cfg)) else None,
                   **({"label_space": space.describe()} if (space := getattr(classifier, "label_space", None))
                      else {})},
        "dataset": {"name": dataset.name, "kind": dataset.kind, "root": portable_root(dataset.root), "split": split,
                    "class_names": list(dataset.class_names),
                    **({"class_synsets": list(dataset.class_synsets)} if dataset.class_synsets else {}),
                    "group_names": {str(k): v for k, v in (dataset.group_names or {}).items()} or None,
                    "train_group_counts": train_group_counts(dataset),
                    **({"sample": sample} if sample else {})},
        "settings": settings,
        "device": device,
        "data_fingerprint": dataset_fingerprint(records, ds.root),
        **(extra_manifest or {}),
    }
    run = Run.create(out_dir, manifest, overwrite=force)
    shards = [records[i:i + cfg.shard_size] for i in range(0, len(records), cfg.shard_size)]
    done = run.done_shards()
    todo = [s for s in range(len(shards)) if s not in done]
    if max_shards is not None:
        todo = todo[:max_shards]
    # explained_images moves per block while the run goes (see core.jobs); a resumed run starts from its shards.
    progress = run.manifest.get("progress", {})
    # dataset_notes: what the reader assumed (classes named by Waterbirds' default, files left out), for readers.
    run.update_manifest(status="running", progress={**progress, "total_images": len(records),
                                                    "total_shards": len(shards),
                                                    "explained_images": sum(len(shards[s]) for s in done)},
                        dataset_notes=list(getattr(dataset, "notes", None) or []))
    return RunPlan(run, manifest, ds, shards, done, todo)


def sentence_summary(run: Run) -> dict | None:
    """How many sentences the run's explained images got: {images, total, mean, min, max} (None before any).
    With sentences_per_image="auto" they differ from image to image; the images table's n_sentences holds each."""
    images = run.images()
    if images.empty or "n_sentences" not in images:
        return None
    n = images.loc[images["error"].isna(), "n_sentences"] if "error" in images else images["n_sentences"]
    if n.empty:
        return None
    return {"images": int(len(n)), "total": int(n.sum()), "mean": round(float(n.mean()), 2), "min": int(n.min()),
            "max": int(n.max())}


def end_run(run: Run, n_shards: int, stopped: bool, **fields) -> None:
    progress = run.manifest.get("progress") or {}
    # Images explained but not yet in a shard are redone on resume: from now on only the shards count.
    run.update_manifest(progress={**progress, "explained_images": progress.get("done_images", 0)}, **fields)
    if n_shards:  # (not when giving up on a failure: the disk may be what failed)
        run.update_manifest(sentences=sentence_summary(run))
    if stopped:
        run.update_manifest(status="stopped")
    elif len(run.done_shards()) == n_shards:
        run.finish()
    else:
        run.update_manifest(status="partial")


def abandon_run(run: Run, exc: BaseException) -> None:
    """Record that a run ended on `exc` (Ctrl-C: "stopped", anything else: "failed") and give up its lock, as far
    as the disk allows: its written shards stay, and the same call resumes after them."""
    from core.errors import RunStoreError

    try:
        end_run(run, 0, True)
        if not isinstance(exc, KeyboardInterrupt):
            run.update_manifest(status="failed")
    except (OSError, RunStoreError):  # a full disk may refuse even the manifest: the lock at least goes
        run.unlock()


def relative_path(path: Path, root: Path) -> str:
    # Paths relative to the dataset root keep a run valid when the data or the repo moves.
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def train_group_counts(dataset) -> dict | None:
    try:
        train = [r for r in dataset.records if r.split == "train" and r.group is not None]
    except AttributeError:
        return None
    if not train:
        return None
    counts: dict[str, int] = {}
    for r in train:
        counts[str(r.group)] = counts.get(str(r.group), 0) + 1
    return counts


def explained_rows(r, prediction: int, confidence: float, sentences: list[str], counts: dict, ds,
                   class_names: Sequence[str], keep_sentences: int | None) -> tuple[dict, list[dict], list[dict]]:
    """One explained image's rows: its images row, its words rows (from `counts`, word -> (occurrences,
    sentences using it)) and its first `keep_sentences` sentences (None: all)."""
    image = prediction_row(r, prediction, confidence, len(sentences), ds, class_names)
    words = [{"image_id": r.image_id, "word": w, "count": c, "sentences": k} for w, (c, k) in counts.items()]
    kept = [{"image_id": r.image_id, "idx": j, "text": t} for j, t in enumerate(sentences[:keep_sentences])]
    return image, words, kept


def prediction_row(r, pred: int, conf: float, n_sentences: int, ds, class_names: Sequence[str]) -> dict:
    return {"image_id": r.image_id, "path": relative_path(r.path, ds.root), "split": r.split,
            "label": int(r.label), "label_name": ds.class_names[r.label] if r.label is not None else None,
            "prediction": pred, "prediction_name": class_names[pred],
            "confidence": conf, "group": r.group, "place": r.place, "n_sentences": n_sentences}


def failed_image_row(r, err: str, ds) -> dict:
    return {"image_id": r.image_id, "path": relative_path(r.path, ds.root), "split": r.split,
            "label": int(r.label), "label_name": ds.class_names[r.label], "prediction": None, "prediction_name": None,
            "confidence": None, "group": r.group, "place": r.place, "n_sentences": 0, "error": err}


def shard_tables(image_rows: list[dict], word_rows: list[dict],
                 sent_rows: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    images_df = pd.DataFrame(image_rows)
    if "error" not in images_df:
        images_df["error"] = None
    images_df = images_df.astype({"label": "int64", "n_sentences": "int64", "group": "Int64", "place": "Int64",
                                  "prediction": "Int64", "confidence": "float64"})
    words_df = pd.DataFrame(word_rows, columns=["image_id", "word", "count", "sentences"]).astype(
        {"count": "int32", "sentences": "int32"})
    sents_df = pd.DataFrame(sent_rows, columns=["image_id", "idx", "text"]).astype({"idx": "int32"})
    return images_df, words_df, sents_df
