"""Bias reports of a run, as a JSON-able dict, Markdown (for pull requests) or one self-contained HTML file.

    report = build_report(run, compare=other_run)
    Path("report.html").write_text(to_html(report))          # core.report.html; to_markdown: core.report.markdown
    texplain report RUN [--compare RUN2] --format html|json|md [--out FILE]

The report dict (schema version 1; `REPORT_SCHEMA` is its JSON Schema) has these fields:

- schema_version (int), generated_at (ISO time), generator (str)
- run: name, path, status (complete, running, partial or damaged: its shards checked against its
  manifest), created, n_images (all images in the run), evaluation_split (the split every
  number below is computed on: "test" when the run has one, else null = all images), n_evaluated
- provenance: models {classifier, classifier_identity, translator, lm}, dataset {name, kind, root,
  class_names, group_names, train_group_counts}, settings {sentences_per_image, top_p, temperature,
  max_new_tokens, seed}, seed, versions (package versions) — all copied from the run manifest
- accuracy: overall, n_images, per_class [{class, n, correct, accuracy, ci_low, ci_high}] (Wilson 95%)
- groups: null when the run has no groups at all; else source ("true", or "inferred" when the dataset
  has none), per_group [{group, group_name, n, correct, accuracy, ci_low, ci_high}], worst,
  worst_group, worst_group_name, average_unweighted, average_test_weighted (= plain accuracy),
  average_train_weighted (weighted by the training set's group shares; null without them)
- inferred_groups: groups inferred from the flags (class x "explanations carry the class's flagged
  words"): words, thresholds, per_group, worst, worst_group_name and, when true groups exist,
  agreement {accuracy (best matching), adjusted_rand, n}; null when no class has flags
- flags: the error view and the association view (see core.analysis.spurious). definition (what "flags
  for class X" means in the error view), scorer (its parameters), by_class {class: [{rank, word,
  predicted_as, score, share_wrong, share_right, n_wrong, n_right, images_wrong (misread images that
  use the word), z, z_toward, evidence, example_image_ids, source}]}, misread [{class, predicted_as,
  n_wrong, n_right, scored}], association {definition, by ("prediction" or "label"), by_class {class:
  [{rank, word, score, share_class, share_other, n_class, n_other, images_class, z, images_misread,
  n_misread, group_gap, group_high, group_low, share_group_high, share_group_low, confirmed, evidence,
  example_image_ids, source}]}}, notes [{class, view, n_flags, reason}] (reason: why a class has no flags
  in a view, else null)
- top_words: by_class {class: [{word, share, ci_low, ci_high, images_with_word, n_images}]}
- mitigation: the run folder's mitigation.json when present (a list of {method, groups,
  worst_group_before, worst_group_after, average_before, average_after}), else null
- evaluation: the run folder's evaluation.json (caption quality, written by `texplain evaluate`:
  fluency_nll, reference_nll, scene_accuracy, object_accuracy, ...) when present and current, else null
- comparison: null, or for a second run on the same data: run, provenance, accuracy, groups, flags
  (by_class), divergence [{class, jensen_shannon}] and changed_words {class: [{word, share_a, share_b,
  change, z}]} (a = this run, b = the other)
- backgrounds: null, or for a Backgrounds Challenge (ImageNet-9) variation run: the classifier on every
  variation run beside it: variations [{variation, run, images, correct, accuracy, ci_low, ci_high}],
  bg_gap ({gap, low, high, n}: mixed_same - mixed_rand, paired bootstrap) or null, reading (one
  sentence), error_words [{word, share_original, share_mixed_rand_errors, rise, images, z}] (the words
  that rise most from the original photos to the mixed_rand images read wrong), by_class [{variation, class,
  images, correct, accuracy, ci_low, ci_high}] (class x variation groups), worst_cell (the lowest of those
  groups that show the object, or null), notes
- notes: plain-English remarks (e.g. "groups were inferred: the dataset has none")

Numbers are fractions in [0, 1]; missing numbers are null, never NaN.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.analysis.backgrounds import background_challenge
from core.analysis.compare import compare_runs, divergence, image_set
from core.analysis.distributions import top_words, word_shares
from core.analysis.groups import (GroupInferrer, group_accuracy, group_agreement, train_group_counts_from_manifest,
                                  worst_group_accuracy)
from core.analysis.spurious import SpuriousTermScorer
from core.analysis.tables import RunTables, evaluation_tables, load_tables, scored_images
from core.report.schema import ASSOCIATION_DEFINITION, FLAGS_DEFINITION, SCHEMA_VERSION
from core.store import Run, discover_runs, read_mitigation_records

FORMATS = ("html", "json", "md")


# --- building ----------------------------------------------------------------------------------------

def _clean(value: Any) -> Any:
    """JSON-able copy: numpy scalars to Python, NaN/inf to None, frames to lists of dicts."""
    if isinstance(value, pd.DataFrame):
        return [_clean(r) for r in value.to_dict(orient="records")]
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, np.ndarray, pd.Series)):
        return [_clean(v) for v in (list(value) if not isinstance(value, pd.Series) else value.tolist())]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _open(run: Any) -> Run:
    if isinstance(run, Run):
        return run
    if isinstance(run, (str, Path)):
        return Run.open(run)
    raise TypeError(f"run must be a core.store.Run or a path to a run folder, got {type(run).__name__}")


def _provenance(manifest: dict) -> dict:
    settings = dict(manifest.get("settings") or {})
    dataset = {k: v for k, v in (manifest.get("dataset") or {}).items()
               if k in ("name", "kind", "root", "class_names", "group_names", "train_group_counts")}
    return {"models": dict(manifest.get("models") or {}), "dataset": dataset, "settings": settings,
            "seed": settings.get("seed", manifest.get("seed")), "versions": dict(manifest.get("versions") or {})}


def _accuracy(images: pd.DataFrame, class_names: list[str]) -> dict:
    scored = scored_images(images)
    if scored.empty:
        return {"overall": None, "n_images": 0, "per_class": []}
    per_class = group_accuracy(scored, groups="label", group_names=dict(enumerate(class_names)))
    per_class = per_class.rename(columns={"group_name": "class"}).drop(columns="group")
    overall = float((scored["label"] == scored["prediction"]).mean())
    return {"overall": overall, "n_images": int(len(scored)), "per_class": per_class}


def _group_block(images: pd.DataFrame, groups: Any, names: dict, source: str, train_counts: dict | None) -> dict:
    test = worst_group_accuracy(images, weights="test", groups=groups, group_names=names)
    train = None
    if train_counts and source == "true":
        try:
            train = worst_group_accuracy(images, weights="train", train_group_counts=train_counts, groups=groups,
                                         group_names=names).average_weighted
        except ValueError:
            train = None
    return {"source": source, "per_group": test.per_group, "worst": test.worst, "worst_group": test.worst_group,
            "worst_group_name": test.worst_group_name, "average_unweighted": test.average_unweighted,
            "average_test_weighted": test.average_weighted, "average_train_weighted": train}


def _flags_by_class(scorer: SpuriousTermScorer, k: int) -> dict:
    columns = ["rank", "word", "predicted_as", "score", "share_wrong", "share_right", "n_wrong", "n_right",
               "images_wrong", "z", "z_toward", "evidence", "example_image_ids", "source"]
    return {c: scorer.flags_for(c, k=k)[columns] for c in scorer.classes_}


def _associations_by_class(scorer: SpuriousTermScorer, k: int) -> dict:
    columns = ["rank", "word", "score", "share_class", "share_other", "n_class", "n_other", "images_class", "z",
               "images_misread", "n_misread", "group_gap", "group_high", "group_low", "share_group_high",
               "share_group_low", "confirmed", "evidence", "example_image_ids", "source"]
    return {c: scorer.associations_for(c, k=k)[columns] for c in scorer.classes_}


def _flags_block(scorer: SpuriousTermScorer, k: int) -> dict:
    return {"definition": FLAGS_DEFINITION,
            "scorer": {key: v for key, v in vars(scorer).items()
                       if not key.endswith("_") and not key.startswith("_") and key != "core_words"},
            "by_class": _flags_by_class(scorer, k),
            "misread": scorer.misread_,
            "association": {"definition": ASSOCIATION_DEFINITION, "by": scorer.association_by,
                            "by_class": _associations_by_class(scorer, k)},
            "notes": scorer.notes_}


def _read_mitigation(run: Run, notes: list[str]) -> list | None:
    records, problem = read_mitigation_records(run.path)
    if problem:
        notes.append(f"{problem}; mitigation results left out")
    if records is None:
        return None
    keys = ("method", "groups", "worst_group_before", "worst_group_after", "average_before", "average_after")
    return [{k: r.get(k) for k in keys} | {k: v for k, v in r.items() if k not in keys} for r in records]


def _read_evaluation(run: Run, notes: list[str]) -> dict | None:
    """The caption-quality evaluation saved in the run folder (core.evaluate), or None."""
    from core.evaluation.captions import read_evaluation

    evaluation, problem = read_evaluation(run)
    if problem:
        notes.append(problem)
    return evaluation


def _analyse(run: Run, split: str | None, top_k: int, flags_k: int, notes: list[str],
             train_group_counts: dict | None, scorer_params: dict | None = None
             ) -> tuple[dict, RunTables, SpuriousTermScorer]:
    """The per-run part of a report."""
    tables = load_tables(run)
    manifest = tables.manifest
    names = tables.class_names
    evaluated, split_used = evaluation_tables(tables, split)
    images = evaluated.images

    scorer = SpuriousTermScorer(**{**(scorer_params or {}), "split": None}).fit(evaluated)
    train_counts = train_group_counts if train_group_counts is not None else train_group_counts_from_manifest(manifest)

    has_groups = "group" in images and images["group"].notna().any()
    groups = _group_block(images, "group", tables.group_names, "true", train_counts) if has_groups else None

    inferred = None
    if any(scorer.group_words(5)[0].values()):
        inferrer = GroupInferrer().fit(evaluated, scorer)
        predicted = inferrer.predict()
        block = _group_block(images, predicted, inferrer.group_names_, "inferred", None)
        agreement = None
        if has_groups:
            agreement = group_agreement(images.set_index("image_id")["group"], predicted).to_dict()
            agreement.pop("mapping", None)
        inferred = {"words": inferrer.spurious_words_, "word_views": inferrer.word_views_,
                    "thresholds": inferrer.thresholds_,
                    "per_group": block["per_group"], "worst": block["worst"],
                    "worst_group_name": block["worst_group_name"], "agreement": agreement}
        if groups is None:
            groups = block
            notes.append("The dataset has no group labels: groups were inferred from the flagged words.")
    elif images.empty:
        notes.append("The run has no finished images yet: there is nothing to report.")
    elif not has_groups:
        notes.append("The dataset has no group labels and no word was flagged, so no groups could be inferred.")

    shares = word_shares(evaluated, by="label", min_images=1)
    top = top_words(shares, k=top_k, by="label") if len(shares) else shares
    top_by_class = {c: top[top["label"] == c].drop(columns="label") for c in names if (top["label"] == c).any()}

    part = {
        "provenance": _provenance(manifest),
        "accuracy": _accuracy(images, names),
        "groups": groups,
        "inferred_groups": inferred,
        "flags": _flags_block(scorer, flags_k),
        "top_words": {"by_class": top_by_class},
        "split": split_used, "n_images": int(len(tables.images)), "n_evaluated": int(len(images)),
    }
    if split_used is None and "split" in tables.images and tables.images["split"].nunique() > 1:
        notes.append("The run has no test split: numbers are over all its images.")
    return part, evaluated, scorer


def _backgrounds(run: Run) -> dict | None:
    """A Backgrounds Challenge variation run's classifier on every variation run in the same folder."""
    entries = discover_runs({"runs": run.path.parent})
    entry = next((e for e in entries if Path(e.path).resolve() == Path(run.path).resolve()), None)
    bc = background_challenge(entry, entries) if entry is not None else None
    if bc is None:
        return None
    return {"variations": bc.table.to_dict("records"), "bg_gap": bc.bg_gap, "reading": bc.reading(),
            "error_words": bc.words.to_dict("records"), "by_class": bc.by_class.to_dict("records"),
            "worst_cell": bc.worst_cell(), "notes": bc.notes}


def build_report(run: Any, compare: Any = None, split: str | None = "auto", top_k: int = 10, flags_k: int = 5,
                 train_group_counts: dict | None = None, scorer_params: dict | None = None) -> dict:
    """The bias report of `run` (a Run or a run folder), optionally compared with a second run.

    `split`: "auto" = the test split when the run has one, else all images; a split name; or None = all.
    `top_k` words per class and `flags_k` flags per class (in each view) are kept. `train_group_counts`
    ({group: count}) overrides the manifest's dataset.train_group_counts for the training-weighted average.
    `scorer_params` go to SpuriousTermScorer (e.g. {"min_misread": 3, "min_z": 1.5}).
    The result is JSON-able and follows REPORT_SCHEMA (see the module docstring).
    """
    if top_k < 1 or flags_k < 1:
        raise ValueError(f"top_k and flags_k must be >= 1, got {top_k} and {flags_k}")
    if scorer_params is not None and not isinstance(scorer_params, dict):
        raise TypeError(f"scorer_params must be a dict of SpuriousTermScorer parameters, got "
                        f"{type(scorer_params).__name__}")
    unknown = sorted(set(scorer_params or {}) - set(vars(SpuriousTermScorer())) - {"split"})
    if unknown:
        raise ValueError(f"scorer_params has unknown parameters {unknown}; SpuriousTermScorer takes "
                         f"{sorted(vars(SpuriousTermScorer()))}")
    run = _open(run)
    health = run.health()  # the shards against the manifest: a partial or damaged run says so up front
    notes: list[str] = [f"This run is {health.describe()}"] if health.describe() else []
    part, tables, _ = _analyse(run, split, top_k, flags_k, notes, train_group_counts, scorer_params)
    manifest = tables.manifest
    report = {
        "schema_version": SCHEMA_VERSION,
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "generator": "TExplain Studio (core.report)",
        "run": {"name": run.name, "path": str(run.path), "status": health.status,
                "created": manifest.get("created"), "n_images": part["n_images"],
                "evaluation_split": part["split"], "n_evaluated": part["n_evaluated"]},
        **{k: part[k] for k in ("provenance", "accuracy", "groups", "inferred_groups", "flags", "top_words")},
        "mitigation": _read_mitigation(run, notes),
        "evaluation": _read_evaluation(run, notes),
        "comparison": None,
        "backgrounds": _backgrounds(run),
        "notes": notes,
    }
    if compare is not None:
        other = _open(compare)
        other_notes: list[str] = [f"the run is {other.health().describe()}"] if other.health().describe() else []
        other_part, other_tables, _ = _analyse(other, split, top_k, flags_k, other_notes, train_group_counts,
                                               scorer_params)
        changes = compare_runs(tables, other_tables, by="label", min_images=3)
        names = tables.class_names
        divergences = []
        for c in names:
            try:
                d = divergence(image_set(tables, label=c), image_set(other_tables, label=c))
            except ValueError:  # a class one of the runs does not have
                continue
            divergences.append({"class": c, "jensen_shannon": d.jensen_shannon})
        changed = {c: changes[changes["label"] == c].head(top_k)[["word", "share_a", "share_b", "change", "z"]]
                   for c in dict.fromkeys(changes["label"])}
        if changes.attrs.get("shared_images", 0) == 0:
            notes.append(f"{other.name} shares no image id with {run.name}: "
                         "the comparison is between different images.")
        report["comparison"] = {
            "run": {"name": other.name, "path": str(other.path), "n_evaluated": other_part["n_evaluated"]},
            "provenance": other_part["provenance"], "accuracy": other_part["accuracy"],
            "groups": other_part["groups"],
            "flags": {k: other_part["flags"][k] for k in ("by_class", "association", "notes")},
            "divergence": divergences, "changed_words": changed}
        notes.extend(f"{other.name}: {n}" for n in other_notes)
    return _clean(report)


def to_json(report: dict, path: str | Path | None = None, indent: int = 2) -> str:
    """The report as JSON text (strict: no NaN); written to `path` when given."""
    text = json.dumps(_clean(report), indent=indent, allow_nan=False)
    if path is not None:
        Path(path).write_text(text + "\n")
    return text
