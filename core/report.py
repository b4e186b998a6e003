"""Bias reports of a run, as a JSON-able dict, Markdown (for pull requests) or one self-contained HTML file.

    report = build_report(run, compare=other_run)
    Path("report.html").write_text(to_html(report))
    python -m core report RUN [--compare RUN2] --format html|json|md [--out FILE]

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
- evaluation: the run folder's evaluation.json (caption quality, written by `python -m core evaluate`:
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
import html
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.analysis.compare import compare_runs, divergence, image_set
from core.analysis.distributions import top_words, word_shares
from core.analysis.groups import (GroupInferrer, describe_group_words, group_accuracy, group_agreement,
                                  train_group_counts_from_manifest, worst_group_accuracy)
from core.analysis.spurious import SpuriousTermScorer
from core.analysis.tables import RunTables, evaluation_split, load_tables, scored_images, select_images
from core.store import Run, RunStoreError, describe_gain, read_mitigation_records

SCHEMA_VERSION = 1
FORMATS = ("html", "json", "md")

FLAGS_DEFINITION = (
    "A flag listed under class X is a word over-represented in the explanations of X's images that the "
    "classifier gets wrong, compared with X's images it gets right, and not part of any class's concept (X's, "
    "the class they are misread as, shown as 'pulls toward', or another). It is what pulls X's images toward "
    "another class: on Waterbirds, water words are flagged under landbird and land words under waterbird. Score = log-odds "
    "z-score (misread vs. read correctly); a flag needs enough misread images that use the word (fewer when "
    "few are misread), and a visual meaning.")
ASSOCIATION_DEFINITION = (
    "The association view lists, under class X, words over-represented in the explanations of images predicted "
    "as X compared with the other images, that describe no class's object: what the classifier ties to X even "
    "where it has not yet cost accuracy. Where the dataset has true groups, a flag is confirmed when its share "
    "differs between two groups of the same class (it follows the attribute, not the class); confirmed flags "
    "rank first.")

_NUM = {"type": ["number", "null"]}
_INT = {"type": ["integer", "null"]}
_STR = {"type": ["string", "null"]}
_GROUP_ROW = {"type": "object", "required": ["group", "group_name", "n", "accuracy", "ci_low", "ci_high"],
              "properties": {"group": {"type": "integer"}, "group_name": {"type": "string"},
                             "n": {"type": "integer"}, "correct": {"type": "integer"}, "accuracy": _NUM,
                             "ci_low": _NUM, "ci_high": _NUM}}
_FLAG_ROW = {"type": "object",
             "required": ["rank", "word", "predicted_as", "score", "share_wrong", "share_right", "n_wrong", "n_right",
                          "z", "evidence", "example_image_ids", "source"],
             "properties": {"rank": {"type": "integer"}, "word": {"type": "string"}, "predicted_as": _STR,
                            "score": _NUM, "share_wrong": _NUM, "share_right": _NUM, "n_wrong": _INT,
                            "n_right": _INT, "images_wrong": _INT, "z": _NUM, "z_toward": _NUM,
                            "evidence": {"type": "string"},
                            "example_image_ids": {"type": "array", "items": {"type": "string"}},
                            "source": {"enum": ["statistics", "user"]}}}
_FLAGS_BY_CLASS = {"type": "object", "additionalProperties": {"type": "array", "items": _FLAG_ROW}}
_ASSOCIATION_ROW = {"type": "object",
                    "required": ["rank", "word", "score", "share_class", "share_other", "images_class", "z",
                                 "images_misread", "n_misread", "group_gap", "confirmed", "evidence"],
                    "properties": {"rank": {"type": "integer"}, "word": {"type": "string"}, "score": _NUM,
                                   "share_class": _NUM, "share_other": _NUM, "n_class": _INT, "n_other": _INT,
                                   "images_class": _INT, "z": _NUM, "images_misread": _INT, "n_misread": _INT,
                                   "group_gap": _NUM, "group_high": _STR, "group_low": _STR,
                                   "share_group_high": _NUM, "share_group_low": _NUM,
                                   "confirmed": {"type": ["boolean", "null"]}, "evidence": {"type": "string"},
                                   "example_image_ids": {"type": "array", "items": {"type": "string"}},
                                   "source": {"enum": ["statistics", "user"]}}}
_ASSOCIATION = {"type": "object", "required": ["definition", "by", "by_class"],
                "properties": {"definition": {"type": "string"}, "by": {"enum": ["prediction", "label"]},
                               "by_class": {"type": "object", "additionalProperties": {
                                   "type": "array", "items": _ASSOCIATION_ROW}}}}
_NOTE_ROW = {"type": "object", "required": ["class", "view", "n_flags", "reason"],
             "properties": {"class": {"type": "string"}, "view": {"enum": ["error", "association"]},
                            "n_flags": {"type": "integer"}, "reason": _STR}}
_ACCURACY = {"type": "object", "required": ["overall", "n_images", "per_class"],
             "properties": {"overall": _NUM, "n_images": {"type": "integer"},
                            "per_class": {"type": "array", "items": {
                                "type": "object", "required": ["class", "n", "accuracy"],
                                "properties": {"class": {"type": "string"}, "n": {"type": "integer"},
                                               "correct": {"type": "integer"}, "accuracy": _NUM,
                                               "ci_low": _NUM, "ci_high": _NUM}}}}}
_GROUPS = {"type": ["object", "null"],
           "required": ["source", "per_group", "worst", "worst_group", "worst_group_name", "average_unweighted",
                        "average_test_weighted", "average_train_weighted"],
           "properties": {"source": {"enum": ["true", "inferred"]},
                          "per_group": {"type": "array", "items": _GROUP_ROW}, "worst": _NUM,
                          "worst_group": {"type": "integer"}, "worst_group_name": {"type": "string"},
                          "average_unweighted": _NUM, "average_test_weighted": _NUM,
                          "average_train_weighted": _NUM}}
_WORD_ROW = {"type": "object", "required": ["word", "share"],
             "properties": {"word": {"type": "string"}, "share": _NUM, "ci_low": _NUM, "ci_high": _NUM,
                            "images_with_word": {"type": "integer"}, "n_images": {"type": "integer"}}}
_MITIGATION_ROW = {"type": "object", "required": ["method"],
                   "properties": {"method": {"type": "string"}, "groups": _STR, "worst_group_before": _NUM,
                                  "worst_group_after": _NUM, "average_before": _NUM, "average_after": _NUM}}
_PROVENANCE = {"type": "object", "required": ["models", "dataset", "settings", "seed", "versions"],
               "properties": {"models": {"type": "object"}, "dataset": {"type": "object"},
                              "settings": {"type": "object"}, "seed": {"type": ["integer", "null"]},
                              "versions": {"type": "object"}}}

REPORT_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "texplain-studio/report/v1",
    "title": "TExplain Studio bias report",
    "type": "object",
    "required": ["schema_version", "generated_at", "generator", "run", "provenance", "accuracy", "groups",
                 "inferred_groups", "flags", "top_words", "mitigation", "comparison", "notes"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "generated_at": {"type": "string"},
        "generator": {"type": "string"},
        "run": {"type": "object", "required": ["name", "path", "status", "n_images", "evaluation_split",
                                               "n_evaluated"],
                "properties": {"name": {"type": "string"}, "path": {"type": "string"}, "status": _STR,
                               "created": _STR, "n_images": {"type": "integer"}, "evaluation_split": _STR,
                               "n_evaluated": {"type": "integer"}}},
        "provenance": _PROVENANCE,
        "accuracy": _ACCURACY,
        "groups": _GROUPS,
        "inferred_groups": {"type": ["object", "null"], "required": ["words", "thresholds", "per_group", "agreement"],
                            "properties": {"words": {"type": "object", "additionalProperties": {
                                "type": "array", "items": {"type": "string"}}},
                                "thresholds": {"type": "object", "additionalProperties": _NUM},
                                "per_group": {"type": "array", "items": _GROUP_ROW},
                                "worst": _NUM, "worst_group_name": _STR,
                                "agreement": {"type": ["object", "null"],
                                              "required": ["accuracy", "adjusted_rand", "n"],
                                              "properties": {"accuracy": _NUM, "adjusted_rand": _NUM,
                                                             "n": {"type": "integer"}}}}},
        "flags": {"type": "object", "required": ["definition", "scorer", "by_class", "misread", "association",
                                                 "notes"],
                  "properties": {"definition": {"type": "string"}, "scorer": {"type": "object"},
                                 "by_class": _FLAGS_BY_CLASS,
                                 "misread": {"type": "array", "items": {"type": "object"}},
                                 "association": _ASSOCIATION,
                                 "notes": {"type": "array", "items": _NOTE_ROW}}},
        "top_words": {"type": "object", "required": ["by_class"],
                      "properties": {"by_class": {"type": "object", "additionalProperties": {
                          "type": "array", "items": _WORD_ROW}}}},
        "mitigation": {"type": ["array", "null"], "items": _MITIGATION_ROW},
        "evaluation": {"type": ["object", "null"]},
        "comparison": {"type": ["object", "null"],
                       "required": ["run", "provenance", "accuracy", "groups", "flags", "divergence", "changed_words"],
                       "properties": {"run": {"type": "object"}, "provenance": _PROVENANCE, "accuracy": _ACCURACY,
                                      "groups": _GROUPS,
                                      "flags": {"type": "object", "properties": {
                                          "by_class": _FLAGS_BY_CLASS, "association": _ASSOCIATION,
                                          "notes": {"type": "array", "items": _NOTE_ROW}}},
                                      "divergence": {"type": "array", "items": {
                                          "type": "object", "required": ["class", "jensen_shannon"],
                                          "properties": {"class": {"type": "string"}, "jensen_shannon": _NUM}}},
                                      "changed_words": {"type": "object", "additionalProperties": {
                                          "type": "array",
                                          "items": {"type": "object", "required": ["word", "change"]}}}}},
        "backgrounds": {"type": ["object", "null"], "required": ["variations", "bg_gap", "reading", "error_words"],
                        "properties": {"variations": {"type": "array", "items": {
                            "type": "object", "required": ["variation", "images", "accuracy"]}},
                            "bg_gap": {"type": ["object", "null"]}, "reading": _STR,
                            "error_words": {"type": "array", "items": {"type": "object", "required": ["word"]}},
                            "by_class": {"type": "array", "items": {
                                "type": "object", "required": ["variation", "class", "images", "accuracy"]}},
                            "worst_cell": {"type": ["object", "null"]}}},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}

__all__ = ["build_report", "to_json", "to_markdown", "to_html", "report_main", "validate_report", "REPORT_SCHEMA",
           "SCHEMA_VERSION", "FLAGS_DEFINITION", "ASSOCIATION_DEFINITION"]


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
    from core.evaluate import read_evaluation

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
    split_used = evaluation_split(tables.images, split)
    images = select_images(tables.images, split=split_used) if split_used else tables.images
    evaluated = RunTables(images, tables.words, manifest, run)

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
    from core import dashboard_api as api

    entries = api.discover_runs({"runs": run.path.parent})
    entry = next((e for e in entries if Path(e.path).resolve() == Path(run.path).resolve()), None)
    bc = api.background_challenge(entry, entries) if entry is not None else None
    if bc is None:
        return None
    return {"variations": bc.table.to_dict("records"), "bg_gap": bc.bg_gap, "reading": bc.reading(),
            "error_words": bc.words.to_dict("records"), "by_class": bc.by_class.to_dict("records"),
            "worst_cell": bc.worst_cell(), "notes": bc.notes}


def _class_variation_rows(cells: list[dict]) -> tuple[list[str], list[list]]:
    """by_class records as a table: one row per class, one accuracy column per variation."""
    variations = list(dict.fromkeys(c["variation"] for c in cells))
    acc = {(c["class"], c["variation"]): c["accuracy"] for c in cells}
    rows = [[cls, *(_pct(acc[(cls, v)]) if (cls, v) in acc else "–" for v in variations)]
            for cls in dict.fromkeys(c["class"] for c in cells)]
    return ["class", *variations], rows


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


def validate_report(report: dict) -> None:
    """Raise ValueError when `report` does not follow REPORT_SCHEMA (jsonschema when installed, else a
    check of the top-level fields and their types)."""
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    if jsonschema is not None:
        try:
            jsonschema.validate(report, REPORT_SCHEMA)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
            raise ValueError(f"report does not follow REPORT_SCHEMA at {where}: {exc.message}") from exc
        return
    if not isinstance(report, dict):
        raise ValueError(f"report must be a dict, got {type(report).__name__}")
    missing = [k for k in REPORT_SCHEMA["required"] if k not in report]
    if missing:
        raise ValueError(f"report is missing fields {missing}")
    if report["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"report schema_version is {report['schema_version']!r}; expected {SCHEMA_VERSION}")


# --- writing -----------------------------------------------------------------------------------------

def to_json(report: dict, path: str | Path | None = None, indent: int = 2) -> str:
    """The report as JSON text (strict: no NaN); written to `path` when given."""
    text = json.dumps(_clean(report), indent=indent, allow_nan=False)
    if path is not None:
        Path(path).write_text(text + "\n")
    return text


def _pct(x: Any, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def _ci(row: dict) -> str:
    return f"{_pct(row.get('ci_low'), 0)}–{_pct(row.get('ci_high'), 0)}" if row.get("ci_low") is not None else ""


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[Any]], align: str | None = None) -> str:
    align = align or "l" * len(header)
    marks = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _settings_line(prov: dict) -> str:
    s = prov.get("settings", {})
    bits = []
    if s.get("sentences_per_image") is not None:
        bits.append(f"{s['sentences_per_image']} sentences per image")
    if s.get("top_p") is not None:
        bits.append(f"top-p {s['top_p']}")
    if s.get("temperature") is not None:
        bits.append(f"temperature {s['temperature']}")
    if s.get("max_new_tokens") is not None:
        bits.append(f"≤ {s['max_new_tokens']} new tokens")
    bits.append(f"seed {prov.get('seed')}")
    return ", ".join(bits)


def _groups_md(groups: dict, title: str) -> list[str]:
    out = [f"## {title}", ""]
    rows = [[("**" + g["group_name"] + "**") if g["group"] == groups["worst_group"] else g["group_name"], g["n"],
             _pct(g["accuracy"]), _ci(g)] for g in groups["per_group"]]
    out += [_md_table(["group", "images", "accuracy", "95% CI"], rows, "lrrl"), ""]
    averages = [f"{_pct(groups['average_test_weighted'])} weighted by this split's group sizes"]
    if groups.get("average_train_weighted") is not None:
        averages.append(f"{_pct(groups['average_train_weighted'])} weighted by training group shares")
    averages.append(f"{_pct(groups['average_unweighted'])} unweighted mean of groups")
    out += [f"**Worst group:** {groups['worst_group_name']}, {_pct(groups['worst'])}. "
            f"**Average accuracy:** {'; '.join(averages)}.", ""]
    return out


def _note(flags_block: dict, cls: str, view: str) -> str | None:
    for n in flags_block.get("notes") or []:
        if n["class"] == cls and n["view"] == view:
            return n["reason"]
    return None


def _no_flags(flags_block: dict, cls: str, view: str) -> str:
    reason = _note(flags_block, cls, view)
    return f"No word flagged: {reason}." if reason else "No word flagged."


def _carry(f: dict) -> str:
    n = f.get("n_wrong")
    return "–" if f.get("images_wrong") is None else f"{f['images_wrong']} / {n}"


def _group_evidence(a: dict) -> str:
    if not a.get("group_high"):
        return "–"
    gap = f"{_pct(a['share_group_high'], 0)} {a['group_high']} vs {_pct(a['share_group_low'], 0)} {a['group_low']}"
    return gap + (" ✔" if a.get("confirmed") else "")


def _flags_md(flags_block: dict) -> list[str]:
    out = []
    for cls, flags in flags_block["by_class"].items():
        out += [f"### Error view: flags for {cls}", ""]
        if not flags:
            out += [_no_flags(flags_block, cls, "error"), ""]
            continue
        rows = [[f["rank"], f"**{f['word']}**", f["predicted_as"] or "–", _pct(f["share_wrong"], 0),
                 _pct(f["share_right"], 0), "–" if f["z"] is None else f"{f['z']:.1f}", _carry(f), f["evidence"]]
                for f in flags]
        out += [_md_table(["#", "word", "pulls toward", "misread", "read right", "z", "misread images using it",
                           "evidence"], rows, "rllrrrrl"), ""]
    assoc = flags_block.get("association")
    if assoc:
        out += ["### Association view", "", f"_{assoc['definition']}_", ""]
        for cls, flags in assoc["by_class"].items():
            out += [f"#### Associated with {cls}", ""]
            if not flags:
                out += [_no_flags(flags_block, cls, "association"), ""]
                continue
            rows = [[a["rank"], f"**{a['word']}**", _pct(a["share_class"], 0), _pct(a["share_other"], 0),
                     "–" if a["z"] is None else f"{a['z']:.1f}", _group_evidence(a),
                     f"{a['images_misread']} / {a['n_misread']}"] for a in flags]
            out += [_md_table(["#", "word", f"predicted {cls}", "other images", "z", "within-class groups",
                               "misread images using it"], rows, "rlrrrlr"), ""]
    return out


def to_markdown(report: dict) -> str:
    """The report as Markdown: tables of accuracy, groups, flags with evidence and top words, then provenance."""
    validate_report(report)
    prov, run = report["provenance"], report["run"]
    models, dataset = prov["models"], prov["dataset"]
    split = run["evaluation_split"] or "all images"
    out = [f"# TExplain bias report: {run['name']}", "",
           f"Classifier **{models.get('classifier', '?')}**, translator {models.get('translator', '?')}, "
           f"language model {models.get('lm', '?')}; dataset **{dataset.get('name', '?')}**, split {split} "
           f"({run['n_evaluated']} images); sampling: {_settings_line(prov)}.", ""]
    for note in report["notes"]:
        out += [f"> {note}", ""]

    acc = report["accuracy"]
    out += ["## Accuracy", ""]
    rows = [[c["class"], c["n"], _pct(c["accuracy"]), _ci(c)] for c in acc["per_class"]]
    rows.append(["**all**", acc["n_images"], f"**{_pct(acc['overall'])}**", ""])
    out += [_md_table(["class", "images", "accuracy", "95% CI"], rows, "lrrl"), ""]

    if report["groups"]:
        title = "Groups" if report["groups"]["source"] == "true" else "Groups (inferred from flagged words)"
        out += _groups_md(report["groups"], title)

    out += ["## Spurious-term flags", "", f"_{report['flags']['definition']}_", ""]
    out += _flags_md(report["flags"])

    inferred = report["inferred_groups"]
    if inferred and report["groups"] and report["groups"]["source"] == "true":
        out += ["## Inferred groups", "",
                "Class × whether an image's explanations carry its class's flagged words: "
                + describe_group_words(inferred["words"], inferred.get("word_views")) + ".", ""]
        rows = [[g["group_name"], g["n"], _pct(g["accuracy"])] for g in inferred["per_group"]]
        out += [_md_table(["inferred group", "images", "accuracy"], rows, "lrr"), ""]
        if inferred["agreement"]:
            a = inferred["agreement"]
            out += [f"Agreement with the true groups: {_pct(a['accuracy'])} of images (best matching), "
                    f"adjusted Rand index {a['adjusted_rand']:.2f}.", ""]

    out += ["## Top words per class", ""]
    for cls, words in report["top_words"]["by_class"].items():
        rows = [[w["word"], _pct(w["share"]), _ci(w), f"{w['images_with_word']} / {w['n_images']}"] for w in words]
        out += [f"### {cls}", "", _md_table(["word", "share", "95% CI", "images"], rows, "lrlr"), ""]

    if report["mitigation"]:
        out += ["## Mitigation", ""]
        rows = [[m["method"], m.get("groups") or "–", m.get("source") or "–",
                 f"{_pct(m.get('worst_group_before'))} → {_pct(m.get('worst_group_after'))}",
                 describe_gain(m), f"{_pct(m.get('average_before'))} → {_pct(m.get('average_after'))}"]
                for m in report["mitigation"]]
        out += [_md_table(["method", "groups", "source", "worst group", "worst-group gain (95% interval)", "average"],
                          rows), ""]

    cmp = report["comparison"]
    if cmp:
        other = cmp["run"]["name"]
        out += [f"## Comparison with {other}", ""]
        rows = [["overall accuracy", _pct(acc["overall"]), _pct(cmp["accuracy"]["overall"])]]
        if report["groups"] and cmp["groups"]:
            rows.append(["worst group", f"{_pct(report['groups']['worst'])} ({report['groups']['worst_group_name']})",
                         f"{_pct(cmp['groups']['worst'])} ({cmp['groups']['worst_group_name']})"])
        for cls in report["flags"]["by_class"]:
            mine = ", ".join(f["word"] for f in report["flags"]["by_class"][cls][:3]) or "–"
            theirs = ", ".join(f["word"] for f in cmp["flags"]["by_class"].get(cls, [])[:3]) or "–"
            rows.append([f"top flags for {cls}", mine, theirs])
        for cls in (report["flags"].get("association") or {}).get("by_class", {}):
            mine = ", ".join(a["word"] for a in report["flags"]["association"]["by_class"][cls][:3]) or "–"
            theirs = ", ".join(a["word"] for a in ((cmp["flags"].get("association") or {}).get("by_class") or {})
                               .get(cls, [])[:3]) or "–"
            rows.append([f"associated with {cls}", mine, theirs])
        out += [_md_table(["", run["name"], other], rows), ""]
        if cmp["divergence"]:
            out += ["Jensen–Shannon divergence of each class's words between the two runs (bits, 0 = same): "
                    + ", ".join(f"{d['class']} {d['jensen_shannon']:.3f}" for d in cmp["divergence"]) + ".", ""]
        for cls, words in cmp["changed_words"].items():
            rows = [[w["word"], _pct(w["share_a"]), _pct(w["share_b"]), f"{100 * w['change']:+.1f} pts"] for w in words]
            out += [f"### Words that changed most for {cls}", "",
                    _md_table(["word", run["name"], other, "change"], rows, "lrrr"), ""]

    bg = report.get("backgrounds")
    if bg:
        out += ["## Background variations (ImageNet-9)", ""]
        rows = [[v["variation"], v["images"], _pct(v["accuracy"]), _ci(v)] for v in bg["variations"]]
        out += [_md_table(["variation", "images", "accuracy", "95% CI"], rows, "lrrl"), ""]
        if bg["bg_gap"]:
            g = bg["bg_gap"]
            out += [f"BG-gap (mixed_same − mixed_rand): **{100 * g['gap']:+.1f} points** (95% paired bootstrap "
                    f"{100 * g['low']:+.1f} to {100 * g['high']:+.1f}, {g['n']} photos). {bg['reading']}", ""]
        if bg["error_words"]:
            rows = [[_md_escape(w["word"]), _pct(w["share_original"]), _pct(w["share_mixed_rand_errors"]),
                     w["images"]] for w in bg["error_words"]]
            out += ["Words that rise from the original photos to the mixed_rand images read wrong:", "",
                    _md_table(["word", "original", "mixed_rand errors", "images"], rows, "lrrr"), ""]
        if bg.get("by_class"):
            header, rows = _class_variation_rows(bg["by_class"])
            out += ["Accuracy per class and variation (each a group):", "",
                    _md_table(header, rows, "l" + "r" * (len(header) - 1)), ""]
            if bg.get("worst_cell"):
                w = bg["worst_cell"]
                out += [f"Worst class × variation: **{w['class']} in {w['variation']}**, {_pct(w['accuracy'])} "
                        f"({w['correct']} of {w['images']}, 95% CI {_ci(w)}).", ""]
        out += [f"> {n}" for n in bg["notes"]] + ([""] if bg["notes"] else [])

    if report.get("evaluation"):
        from core.evaluate import to_markdown as evaluation_markdown

        out += [evaluation_markdown(report["evaluation"]), ""]

    out += ["## Provenance", ""]
    rows = [["run", f"{run['name']} ({run['path']}), status {run['status']}, created {run.get('created')}"],
            *[[f"model: {k}", v] for k, v in models.items()],
            *[[f"dataset: {k}", json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in dataset.items()],
            *[[f"setting: {k}", v] for k, v in prov["settings"].items()],
            ["versions", ", ".join(f"{k} {v}" for k, v in prov["versions"].items()) or "–"],
            ["report", f"schema v{report['schema_version']}, generated {report['generated_at']}"]]
    out += [_md_table(["", "value"], rows), ""]
    return "\n".join(out)


# --- HTML --------------------------------------------------------------------------------------------

_CSS = """
body{font-family:Inter,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:#1f2933;margin:0;
background:#f5f7fa}main{max-width:1100px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:20px;margin:36px 0 8px;border-bottom:1px solid #e6e9ee;
padding-bottom:4px}h3{font-size:16px;margin:20px 0 6px}p.lead{color:#52606d;margin-top:0}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px}th,td{padding:5px 10px;border-bottom:1px solid
#e6e9ee;text-align:left;vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f5f7fa}.worst{color:#c8474b;font-weight:600}.note{background:#fff8e6;border-left:4px solid #e08a2e;
padding:8px 12px;margin:10px 0}.def{color:#52606d;font-style:italic}.kpi{display:inline-block;margin:4px 28px 4px 0}
.kpi b{display:block;font-size:24px}.small{font-size:12px;color:#52606d}
"""


def _esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _html_table(header: list[str], rows: list[list[Any]], numeric: set[int] = frozenset(),
                row_class: list[str] | None = None) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        cells = "".join(f'<td class="num">{_esc(c)}</td>' if j in numeric else f"<td>{_esc(c)}</td>"
                        for j, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def to_html(report: dict) -> str:
    """One self-contained HTML file: interactive Plotly charts (plotly.js inlined once), tables, provenance."""
    from core import plots

    validate_report(report)
    figures: list[str] = []

    def chart(fig) -> str:
        first = not figures
        div = plots.legend_clear_of_titles(fig).to_html(full_html=False, include_plotlyjs=first,
                                                        config={"displaylogo": False, "responsive": True})
        figures.append(div)
        return div

    prov, run, acc = report["provenance"], report["run"], report["accuracy"]
    models, dataset = prov["models"], prov["dataset"]
    split = run["evaluation_split"] or "all images"
    parts = [f"<h1>TExplain bias report: {_esc(run['name'])}</h1>",
             f"<p class='lead'>Classifier <b>{_esc(models.get('classifier'))}</b>, translator "
             f"{_esc(models.get('translator'))}, language model {_esc(models.get('lm'))}; dataset "
             f"<b>{_esc(dataset.get('name'))}</b>, split {_esc(split)} ({run['n_evaluated']} images); sampling: "
             f"{_esc(_settings_line(prov))}.</p>"]
    parts += [f"<div class='note'>{_esc(n)}</div>" for n in report["notes"]]

    kpis = [("overall accuracy", _pct(acc["overall"]))]
    groups = report["groups"]
    if groups:
        kpis.append((f"worst group ({groups['worst_group_name']})", _pct(groups["worst"])))
        if groups.get("average_train_weighted") is not None:
            kpis.append(("average, training-weighted", _pct(groups["average_train_weighted"])))
    parts.append("<div>" + "".join(f"<span class='kpi'><b>{_esc(v)}</b>{_esc(k)}</span>" for k, v in kpis) + "</div>")

    parts.append("<h2>Spurious-term flags</h2>")
    parts.append(f"<p class='def'>{_esc(report['flags']['definition'])}</p>")
    flag_rows = [dict(f, **{"class": c}) for c, fs in report["flags"]["by_class"].items() for f in fs]
    parts.append(chart(plots.flags_chart(pd.DataFrame(flag_rows))))
    for cls, flags in report["flags"]["by_class"].items():
        parts.append(f"<h3>Error view: flags for {_esc(cls)}</h3>")
        if not flags:
            parts.append(f"<p>{_esc(_no_flags(report['flags'], cls, 'error'))}</p>")
            continue
        rows = [[f["rank"], f["word"], f["predicted_as"] or "–", _pct(f["share_wrong"], 0), _pct(f["share_right"], 0),
                 "–" if f["z"] is None else f"{f['z']:.1f}", _carry(f), f["evidence"],
                 ", ".join(f["example_image_ids"])] for f in flags]
        parts.append(_html_table(["#", "word", "pulls toward", "misread", "read right", "z", "misread images using it",
                                  "evidence", "example images"], rows, numeric={0, 3, 4, 5, 6}))
    assoc = report["flags"].get("association")
    if assoc:
        parts.append("<h3>Association view</h3>")
        parts.append(f"<p class='def'>{_esc(assoc['definition'])}</p>")
        for cls, flags in assoc["by_class"].items():
            parts.append(f"<h3>Associated with {_esc(cls)}</h3>")
            if not flags:
                parts.append(f"<p>{_esc(_no_flags(report['flags'], cls, 'association'))}</p>")
                continue
            rows = [[a["rank"], a["word"], _pct(a["share_class"], 0), _pct(a["share_other"], 0),
                     "–" if a["z"] is None else f"{a['z']:.1f}", _group_evidence(a),
                     f"{a['images_misread']} / {a['n_misread']}", a["evidence"]] for a in flags]
            parts.append(_html_table(["#", "word", f"predicted {cls}", "other images", "z", "within-class groups",
                                      "misread images using it", "evidence"], rows, numeric={0, 2, 3, 4, 6}))

    parts.append("<h2>Accuracy</h2>")
    rows = [[c["class"], c["n"], _pct(c["accuracy"]), _ci(c)] for c in acc["per_class"]]
    rows.append(["all", acc["n_images"], _pct(acc["overall"]), ""])
    parts.append(_html_table(["class", "images", "accuracy", "95% CI"], rows, numeric={1, 2}))
    if groups:
        title = "Groups" if groups["source"] == "true" else "Groups (inferred from flagged words)"
        parts.append(f"<h2>{title}</h2>")
        parts.append(chart(plots.group_accuracy_chart(pd.DataFrame(groups["per_group"]), groups["worst_group"],
                                                      groups["average_test_weighted"])))
        averages = [f"{_pct(groups['average_test_weighted'])} weighted by this split's group sizes"]
        if groups.get("average_train_weighted") is not None:
            averages.append(f"{_pct(groups['average_train_weighted'])} weighted by training group shares")
        averages.append(f"{_pct(groups['average_unweighted'])} unweighted")
        parts.append(f"<p><span class='worst'>Worst group: {_esc(groups['worst_group_name'])}, "
                     f"{_pct(groups['worst'])}</span>. Average accuracy: {_esc('; '.join(averages))}.</p>")
    inferred = report["inferred_groups"]
    if inferred and groups and groups["source"] == "true":
        parts.append("<h2>Inferred groups</h2>")
        parts.append("<p>Class × whether an image's explanations carry its class's flagged words ("
                     + _esc(describe_group_words(inferred["words"], inferred.get("word_views"))) + ").</p>")
        parts.append(chart(plots.group_accuracy_chart(pd.DataFrame(inferred["per_group"]),
                                                      title="Accuracy per inferred group")))
        if inferred["agreement"]:
            a = inferred["agreement"]
            parts.append(f"<p>Agreement with the true groups: {_pct(a['accuracy'])} of images (best matching), "
                         f"adjusted Rand index {a['adjusted_rand']:.2f}.</p>")

    parts.append("<h2>Top words per class</h2>")
    word_rows = [dict(w, label=c) for c, ws in report["top_words"]["by_class"].items() for w in ws]
    parts.append(chart(plots.class_words_chart(pd.DataFrame(word_rows), by="label")))

    if report["mitigation"]:
        parts.append("<h2>Mitigation</h2>")
        parts.append(chart(plots.mitigation_chart(pd.DataFrame(report["mitigation"]))))
        rows = [[m["method"], m.get("groups") or "–", m.get("source") or "–", _pct(m.get("worst_group_before")),
                 _pct(m.get("worst_group_after")), describe_gain(m), _pct(m.get("average_before")),
                 _pct(m.get("average_after"))] for m in report["mitigation"]]
        parts.append(_html_table(["method", "groups", "source", "worst group before", "after",
                                  "worst-group gain (95% interval)", "average before", "after"], rows,
                                 numeric={3, 4, 5, 6, 7}))

    cmp = report["comparison"]
    if cmp:
        other = cmp["run"]["name"]
        parts.append(f"<h2>Comparison with {_esc(other)}</h2>")
        rows = [["overall accuracy", _pct(acc["overall"]), _pct(cmp["accuracy"]["overall"])]]
        if groups and cmp["groups"]:
            rows.append(["worst group", f"{_pct(groups['worst'])} ({groups['worst_group_name']})",
                         f"{_pct(cmp['groups']['worst'])} ({cmp['groups']['worst_group_name']})"])
        for cls in report["flags"]["by_class"]:
            rows.append([f"top flags for {cls}",
                         ", ".join(f["word"] for f in report["flags"]["by_class"][cls][:3]) or "–",
                         ", ".join(f["word"] for f in cmp["flags"]["by_class"].get(cls, [])[:3]) or "–"])
        for cls, flags in ((report["flags"].get("association") or {}).get("by_class") or {}).items():
            theirs = ((cmp["flags"].get("association") or {}).get("by_class") or {}).get(cls, [])
            rows.append([f"associated with {cls}", ", ".join(a["word"] for a in flags[:3]) or "–",
                         ", ".join(a["word"] for a in theirs[:3]) or "–"])
        parts.append(_html_table(["", run["name"], other], rows))
        if cmp["divergence"]:
            parts.append("<p>Jensen–Shannon divergence of each class's words between the two runs (bits, 0 = same): "
                         + _esc(", ".join(f"{d['class']} {d['jensen_shannon']:.3f}" for d in cmp["divergence"]))
                         + ".</p>")
        change_rows = [dict(w, label=c) for c, ws in cmp["changed_words"].items() for w in ws]
        parts.append(chart(plots.run_comparison_chart(pd.DataFrame(change_rows), by="label",
                                                      a_name=run["name"], b_name=other)))

    bg = report.get("backgrounds")
    if bg:
        parts.append("<h2>Background variations (ImageNet-9)</h2>")
        parts.append(_html_table(["variation", "images", "accuracy", "95% CI"],
                                 [[v["variation"], v["images"], _pct(v["accuracy"]), _ci(v)] for v in bg["variations"]],
                                 numeric={1, 2}))
        if bg["bg_gap"]:
            g = bg["bg_gap"]
            parts.append(f"<p>BG-gap (mixed_same − mixed_rand): <b>{100 * g['gap']:+.1f} points</b> (95% paired "
                         f"bootstrap {100 * g['low']:+.1f} to {100 * g['high']:+.1f}, {g['n']} photos). "
                         f"{_esc(bg['reading'])}</p>")
        if bg["error_words"]:
            parts.append("<p>Words that rise from the original photos to the mixed_rand images read wrong:</p>")
            parts.append(_html_table(["word", "original", "mixed_rand errors", "images"],
                                     [[w["word"], _pct(w["share_original"]), _pct(w["share_mixed_rand_errors"]),
                                       w["images"]] for w in bg["error_words"]], numeric={1, 2, 3}))
        if bg.get("by_class"):
            header, rows = _class_variation_rows(bg["by_class"])
            parts.append("<p>Accuracy per class and variation (each a group):</p>")
            parts.append(_html_table(header, rows, numeric=set(range(1, len(header)))))
            if bg.get("worst_cell"):
                w = bg["worst_cell"]
                parts.append(f"<p>Worst class × variation: <b>{_esc(w['class'])} in {_esc(w['variation'])}</b>, "
                             f"{_pct(w['accuracy'])} ({w['correct']} of {w['images']}, 95% CI {_ci(w)}).</p>")
            parts.append(chart(plots.class_variation_heatmap(pd.DataFrame(bg["by_class"]), bg.get("worst_cell"))))
        parts += [f"<p class='note'>{_esc(n)}</p>" for n in bg["notes"]]

    if report.get("evaluation"):
        from core.evaluate import to_html as evaluation_html

        parts.append(evaluation_html(report["evaluation"]))

    parts.append("<h2>Provenance</h2>")
    rows = [["run", f"{run['name']} ({run['path']}), status {run['status']}, created {run.get('created')}"],
            *[[f"model: {k}", v] for k, v in models.items()],
            *[[f"dataset: {k}", json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in dataset.items()],
            *[[f"setting: {k}", v] for k, v in prov["settings"].items()],
            ["versions", ", ".join(f"{k} {v}" for k, v in prov["versions"].items()) or "–"],
            ["report", f"schema v{report['schema_version']}, generated {report['generated_at']} "
                       f"by {report['generator']}"]]
    parts.append(_html_table(["", "value"], rows))
    data = to_json(report, indent=None).replace("</", "<\\/")  # JSON that cannot end the script element
    parts.append(f"<script type='application/json' id='texplain-report'>{data}</script>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>TExplain report: {_esc(run['name'])}</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>")


# --- command line ------------------------------------------------------------------------------------

def _resolve_run(value: str) -> Run:
    """A run folder path, or the name of a run under the user's or the shipped runs folder."""
    from core import paths

    candidates = list(dict.fromkeys([Path(value), paths.USER_RUNS / value, paths.SHIPPED_RUNS / value]))
    for path in candidates:
        if (path / "manifest.json").exists():
            return Run.open(path)
    raise RunStoreError(f"no run at {value!r} (looked in {', '.join(str(c) for c in candidates)})")


def report_main(argv: list[str] | None = None) -> int:
    """`python -m core report RUN [--compare RUN2] --format html|json|md [--out FILE]`; returns an exit code.

    The options live in core.commands.report (one CLI tree); this runs that verb.
    """
    from core.cli import main

    return main(["report", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(report_main())
