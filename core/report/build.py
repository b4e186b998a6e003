"""Bias reports of a run, as a JSON-able dict, Markdown (for pull requests) or one self-contained HTML file.

    report = build_report(run, compare=other_run)
    Path("report.html").write_text(to_html(report))          # core.report.html; to_markdown: core.report.markdown
    texplain report RUN [--compare RUN2] --format html|json|md [--out FILE]

The report dict (schema version 1; `REPORT_SCHEMA` is its JSON Schema) has these fields:

- schema_version (int), generated_at (ISO time), generator (str)
- run: name, path, status (complete, running, partial or damaged: its shards checked against its
  manifest), created, n_images (all images in the run), evaluation_split (the split every
  number below is computed on: "test" when the run has one, else null = all images), n_evaluated,
  n_unreadable (of those, images that could not be read: counted apart, in no number)
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
  for class X" means in the error view), scorer (its parameters), counts {class: {error, association}}
  (every flag the class has), kept_per_class (null: all of them are listed), by_class {class: [{rank, word,
  predicted_as, score, share_wrong, share_right, n_wrong, n_right, images_wrong (misread images that
  use the word), z, z_toward, evidence, example_image_ids, source}]}, misread [{class, predicted_as,
  n_wrong, n_right, scored}], association {definition, by ("prediction" or "label"), by_class {class:
  [{rank, word, score, share_class, share_other, n_class, n_other, images_class, z, images_misread,
  n_misread, group_gap, group_high, group_low, share_group_high, share_group_low, confirmed, evidence,
  example_image_ids, source}]}}, notes [{class, view, n_flags, reason}] (reason: why a class has no flags
  in a view, else null); a flag whose causal test is stored with the run also has causal {verdict
  ("causal", "correlational only", "too few images"), images, prediction_changed and control_prediction_changed
  {rate, ci95, images}, difference, ratio_to_control, word_share_change, settings} (core.report.evidence)
- top_words: by_class {class: [{word, share, ci_low, ci_high, images_with_word, n_images}]}
- mitigation: the run folder's mitigation.json when present (a list of {method, groups,
  worst_group_before, worst_group_after, average_before, average_after}), else null
- evaluation: the run folder's evaluation.json (caption quality, written by `texplain evaluate`:
  fluency_nll, reference_nll, scene_accuracy, object_accuracy, ...) when present and current, else null
- comparison: null, or for a second run on the same data: run, provenance, accuracy, groups, flags
  (by_class), by ("prediction" when the two runs hold the same words, e.g. a classifier and its last-layer
  fix, else "label"), same_explanations, divergence [{class, jensen_shannon}] and changed_words {class:
  [{word, share_a, share_b, change, z}]} (a = this run, b = the other; changes under 0.05 points left out)
- backgrounds: null, or for a Backgrounds Challenge (ImageNet-9) variation run: the classifier on every
  variation run beside it: variations [{variation, run, images, correct, accuracy, ci_low, ci_high}],
  bg_gap ({gap, low, high, n}: mixed_same - mixed_rand, paired bootstrap) or null, reading (one
  sentence), error_words [{word, share_original, share_mixed_rand_errors, rise, images, z}] (the words
  that rise most from the original photos to the mixed_rand images read wrong), by_class [{variation, class,
  images, correct, accuracy, ci_low, ci_high}] (class x variation groups), worst_cell (the lowest of those
  groups that show the object, or null), notes
- slices: null, or the word slices saved with the run (core.analysis.slices): [{name, words, match,
  min_share, n, n_total, correct, accuracy, ci_low, ci_high, accuracy_rest, confusion [{class,
  predicted_as, images}], per_class, example_image_ids}]
- verdict: absent or null, or the CI gate's verdict (core.report.audit, `texplain audit`): {passed,
  rules [{rule, threshold, value, passed, evidence}]}
- word_map_reliability: null, or the pointing game stored with the run (word_maps.json): scene and object
  {maps, hit_rate, ci95, random_hit_rate, random_ci95, centre_hit_rate, centre_ci95, off_centre}, method (of the
  maps the report draws: gradient or occlusion, core.report.evidence.preferred_method), images, rule,
  seconds_per_map, text
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
from core.analysis.compare import compare_runs, divergence, image_set, same_explanations
from core.analysis.distributions import top_words, word_shares
from core.analysis.groups import (
    GroupInferrer,
    group_accuracy,
    group_agreement,
    train_group_counts_from_manifest,
    worst_group_accuracy,
)
from core.analysis.slices import WordSlice, saved_slices
from core.analysis.spurious import SpuriousTermScorer
from core.analysis.tables import RunTables, evaluation_tables, image_counts, load_tables, scored_images
from core.report.evidence import add_evidence
from core.report.schema import ASSOCIATION_DEFINITION, SCHEMA_VERSION, flags_definition
from core.store import Run, describe_sentences, discover_runs, read_mitigation_records

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
            "seed": settings.get("seed", manifest.get("seed")), "versions": dict(manifest.get("versions") or {}),
            "sentences": describe_sentences(settings, manifest.get("sentences"))}


def _accuracy(images: pd.DataFrame, class_names: list[str]) -> dict:
    """Overall and per-class accuracy of an images table or of a run's cells (rows of n_images images)."""
    scored = scored_images(images)
    if scored.empty:
        return {"overall": None, "n_images": 0, "per_class": []}
    per_class = group_accuracy(scored, groups="label", group_names=dict(enumerate(class_names)))
    per_class = per_class.rename(columns={"group_name": "class"}).drop(columns="group")
    counts = image_counts(scored)
    n, right = int(counts.sum()), int(counts[(scored["label"] == scored["prediction"]).to_numpy(bool)].sum())
    return {"overall": right / n, "n_images": n, "per_class": per_class}


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


def _flags_by_class(scorer: SpuriousTermScorer, k: int | None) -> dict:
    columns = ["rank", "word", "predicted_as", "score", "share_wrong", "share_right", "n_wrong", "n_right",
               "images_wrong", "z", "z_toward", "evidence", "example_image_ids", "source"]
    return {c: scorer.flags_for(c, k=k)[columns] for c in scorer.classes_}


def _associations_by_class(scorer: SpuriousTermScorer, k: int | None) -> dict:
    columns = ["rank", "word", "score", "share_class", "share_other", "n_class", "n_other", "images_class", "z",
               "images_misread", "n_misread", "group_gap", "group_high", "group_low", "share_group_high",
               "share_group_low", "confirmed", "evidence", "example_image_ids", "source"]
    return {c: scorer.associations_for(c, k=k)[columns] for c in scorer.classes_}


def _flags_block(scorer: SpuriousTermScorer, k: int | None, class_names: list[str]) -> dict:
    # How many flags each class has in all, so an export that keeps fewer says "5 of 13".
    counts = {c: {"error": int((scorer.flags_["class"] == c).sum()),
                  "association": int((scorer.associations_["class"] == c).sum())} for c in scorer.classes_}
    return {"definition": flags_definition(class_names), "counts": counts, "kept_per_class": k,
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
    """The per-run part of a report, from the run's cells (core.analysis.aggregates): nothing is read per image."""
    tables = load_tables(run)
    manifest = tables.manifest
    names = tables.class_names
    evaluated, split_used = evaluation_tables(tables, split)
    images = evaluated.stats.images  # cells: rows of n_images alike images

    scorer = SpuriousTermScorer(**{**(scorer_params or {}), "split": None}).fit(evaluated)
    train_counts = train_group_counts if train_group_counts is not None else train_group_counts_from_manifest(manifest)

    has_groups = "group" in images and images["group"].notna().any()
    groups = _group_block(images, "group", tables.group_names, "true", train_counts) if has_groups else None

    inferred = None
    n_evaluated = int(image_counts(images).sum())
    if any(scorer.group_words(5)[0].values()):
        inferrer = GroupInferrer().fit(evaluated, scorer)
        counts = inferrer.group_counts()
        block = _group_block(counts, "inferred_group", inferrer.group_names_, "inferred", None)
        agreement = None
        if has_groups:
            agreement = group_agreement(counts["group"], counts["inferred_group"], counts["n_images"]).to_dict()
            agreement.pop("mapping", None)
        inferred = {"words": inferrer.spurious_words_, "word_views": inferrer.word_views_,
                    "thresholds": inferrer.thresholds_,
                    "per_group": block["per_group"], "worst": block["worst"],
                    "worst_group_name": block["worst_group_name"], "agreement": agreement}
        if groups is None:
            groups = block
            notes.append("The dataset has no group labels: groups were inferred from the flagged words.")
    elif n_evaluated == 0:
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
        "flags": _flags_block(scorer, flags_k, names),
        "top_words": {"by_class": top_by_class},
        "split": split_used, "n_images": tables.stats.n_images, "n_evaluated": n_evaluated,
        "n_unreadable": n_evaluated - int(image_counts(scored_images(images)).sum()),
    }
    all_cells = tables.stats.images
    if split_used is None and "split" in all_cells and all_cells["split"].nunique() > 1:
        notes.append("The run has no test split: numbers are over all its images.")
    return part, evaluated, scorer


def _slices(run: Run, tables: RunTables, specs: list | None, related: list | None, notes: list[str]) -> list | None:
    """The word slices to export: `specs`, else those saved with the run (and with related runs of the same data)."""
    if specs is None:
        try:
            specs = [s.spec for s in saved_slices(run, related or [])]
        except ValueError as exc:
            notes.append(f"{exc}; slices left out")
            return None
    if not specs:
        return None
    return [WordSlice.from_spec(s).fit(tables).summary_ for s in specs]


def mitigation_cautions(records: list[dict]) -> list[str]:
    """A sentence for every fix that lowered worst-group accuracy, and why a fix fitted on a validation run may:
    never let a worse classifier read as the answer."""
    out = []
    for r in records:
        before, after = r.get("worst_group_before"), r.get("worst_group_after")
        if before is None or after is None or after >= before - 0.0005:
            continue
        details = r.get("details") or {}
        val = details.get("run_val")
        n_val = details.get("val_images")
        why = ("the validation run it was fitted on may be too small" + (f" ({n_val} images)" if n_val else "")
               + " or unlike the test images (another mix of objects or backgrounds per class)")
        label = f"{r.get('method')} ({r.get('groups')} groups)" if r.get("groups") else str(r.get("method"))
        out.append(f"The fix {label} makes worst-group accuracy worse: {100 * before:.0f}% → {100 * after:.0f}% "
                   f"({100 * (after - before):+.0f} points). Do not ship it: {why}"
                   + (f"; it was fitted on {val}" if val else "") + ". Keep the original classifier.")
    return out


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


def build_report(run: Any, compare: Any = None, split: str | None = "auto", top_k: int = 10,
                 flags_k: int | None = None, train_group_counts: dict | None = None,
                 scorer_params: dict | None = None, slices: list | None = None, related: list | None = None) -> dict:
    """The bias report of `run` (a Run or a run folder), optionally compared with a second run.

    `split`: "auto" = the test split when the run has one, else all images; a split name; or None = all.
    `top_k` words per class and `flags_k` flags per class (in each view; None = every flag, as the dashboard
    shows them) are kept; flags.counts says how many each class has in all. `slices`: SliceSpecs to export
    (None: those saved with the run and, from `related` run folders of the same data, theirs). `train_group_counts`
    ({group: count}) overrides the manifest's dataset.train_group_counts for the training-weighted average.
    `scorer_params` go to SpuriousTermScorer (e.g. {"min_misread": 3, "min_z": 1.5}).
    The result is JSON-able and follows REPORT_SCHEMA (see the module docstring).
    """
    if top_k < 1 or (flags_k is not None and flags_k < 1):
        raise ValueError(f"top_k and flags_k must be >= 1 (flags_k None: all), got {top_k} and {flags_k}")
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
                "evaluation_split": part["split"], "n_evaluated": part["n_evaluated"],
                "n_unreadable": part["n_unreadable"]},
        **{k: part[k] for k in ("provenance", "accuracy", "groups", "inferred_groups", "flags", "top_words")},
        "mitigation": _read_mitigation(run, notes),
        "evaluation": _read_evaluation(run, notes),
        "comparison": None,
        "backgrounds": _backgrounds(run),
        "slices": _slices(run, tables, slices, related, notes),
        "notes": notes,
    }
    if part["n_unreadable"]:
        notes.append(f"{part['n_unreadable']} of the {part['n_evaluated']} images could not be read when the run was "
                     "made: they are counted apart and left out of every number.")
    for caution in (mitigation_cautions(report["mitigation"]) if report["mitigation"] else []):
        notes.append(caution)
    if compare is not None:
        other = _open(compare)
        other_notes: list[str] = [f"the run is {other.health().describe()}"] if other.health().describe() else []
        other_part, other_tables, _ = _analyse(other, split, top_k, flags_k, other_notes, train_group_counts,
                                               scorer_params)
        # Two classifiers with the same features (a last layer refit) share every word: per true class nothing
        # changes (a table of +0.0 in alphabetical order); per predicted class, what each one calls a class does.
        same = same_explanations(tables, other_tables)
        by = "prediction" if same else "label"
        changes = compare_runs(tables, other_tables, by=by, min_images=3)
        changes = changes[changes["change"].abs() >= 0.0005]  # a change that rounds to +0.0 points says nothing
        names = tables.class_names
        divergences = []
        for c in names:
            key = {by: c}
            try:
                d = divergence(image_set(tables, **key), image_set(other_tables, **key))
            except ValueError:  # a class one of the runs does not have
                continue
            divergences.append({"class": c, "jensen_shannon": d.jensen_shannon})
        changed = {c: changes[changes[by] == c].head(top_k)[["word", "share_a", "share_b", "change", "z"]]
                   for c in dict.fromkeys(changes[by])}
        if same:
            notes.append(f"{run.name} and {other.name} explain every image with the same words (same features, "
                         "translator and language model): the comparison is per predicted class, what each "
                         "classifier calls a class.")
        if changes.attrs.get("shared_images", 0) == 0:
            notes.append(f"{other.name} shares no image id with {run.name}: "
                         "the comparison is between different images.")
        report["comparison"] = {
            "run": {"name": other.name, "path": str(other.path), "n_evaluated": other_part["n_evaluated"]},
            "provenance": other_part["provenance"], "accuracy": other_part["accuracy"],
            "groups": other_part["groups"],
            "flags": {k: other_part["flags"][k] for k in ("by_class", "association", "notes")},
            "by": by, "same_explanations": same, "divergence": divergences, "changed_words": changed}
        notes.extend(f"{other.name}: {n}" for n in other_notes)
    return add_evidence(_clean(report))


def to_json(report: dict, path: str | Path | None = None, indent: int = 2) -> str:
    """The report as JSON text (strict: no NaN); written to `path` when given."""
    text = json.dumps(_clean(report), indent=indent, allow_nan=False)
    if path is not None:
        Path(path).write_text(text + "\n")
    return text
