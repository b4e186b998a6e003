"""What only the dashboard asks of core, in one call each; no Streamlit here, so it is tested without a browser.

One-screen summaries of a run (accuracy, worst group, flags), true vs. inferred groups, mitigation results and
the command that makes them, whether two runs are on the same data, the words of one image, decoding an upload
and drawing a word cloud. Everything returns plain values, DataFrames or small dataclasses, as core does.

    tables, split = evaluation_tables(Run.open(entry.path))
    summary = run_summary(tables, SpuriousTermScorer(split=None).fit(tables))
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import paths
from core.analysis.backgrounds import challenge_root
from core.analysis.groups import (
    GroupAgreement,
    GroupInferrer,
    WorstGroupAccuracy,
    describe_group_words,
    group_accuracy,
    group_agreement,
    train_group_counts_from_manifest,
    worst_group_accuracy,
)
from core.analysis.tables import RunTables, image_counts, scored_images
from core.models.registry import as_checkpoint_folder, relative_to_repo
from core.store import MITIGATION_FILE, RunEntry, dataset_key, describe_gain, read_mitigation_records

DEFAULT_LM = paths.DEFAULT_LM
UPLOAD_TYPES = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")

def _accuracy(images: pd.DataFrame) -> float | None:
    """Accuracy of an images table or of a run's cells (rows of n_images images); None without a scored image."""
    scored = scored_images(images)
    if scored.empty:
        return None
    counts = image_counts(scored)
    return int(counts[(scored["label"] == scored["prediction"]).to_numpy(bool)].sum()) / int(counts.sum())


def run_summary(tables: RunTables, scorer: Any = None, k_flags: int = 3) -> dict:
    """One run on one screen: models, dataset, sample size, accuracy, worst group, top flags per class.

    `tables` are the evaluation tables (see evaluation_tables); `scorer` a SpuriousTermScorer fitted on
    them (or None: no flags). Numbers are fractions; missing ones are None.
    """
    m = tables.manifest or {}
    models, dataset, settings = m.get("models") or {}, m.get("dataset") or {}, m.get("settings") or {}
    images = tables.stats.images  # the run's cells (core.analysis.aggregates): no row per image is read
    per_class = pd.DataFrame()
    if len(scored_images(images)):
        per_class = group_accuracy(scored_images(images), groups="label",
                                   group_names=dict(enumerate(tables.class_names)))
    worst = None
    if "group" in images and images["group"].notna().any() and len(scored_images(images)):
        test = worst_group_accuracy(images, weights="test", group_names=tables.group_names)
        train = None
        counts = train_group_counts_from_manifest(m)
        if counts:
            try:
                train = worst_group_accuracy(images, weights="train", train_group_counts=counts,
                                             group_names=tables.group_names).average_weighted
            except ValueError:
                train = None
        worst = {"accuracy": test.worst, "group": test.worst_group, "group_name": test.worst_group_name,
                 "average_unweighted": test.average_unweighted, "average_train_weighted": train}
    flags, flag_notes = {}, {}
    if scorer is not None and hasattr(scorer, "flags_"):
        flags = {c: ws for c, ws in scorer.flagged_words(k_flags).items()}
        flag_notes = {c: scorer.note_for(c, "error") for c in flags if not flags[c]}
    splits = sorted(images["split"].dropna().unique().tolist()) if "split" in images else []
    return {
        "name": m.get("name") or (tables.run.name if tables.run is not None else "run"),
        "status": m.get("status", "unknown"),
        "classifier": models.get("classifier", "unknown"),
        "translator": models.get("translator", "unknown"),
        "lm": models.get("lm", "unknown"),
        "dataset": dataset.get("name", "unknown"),
        "dataset_kind": dataset.get("kind"),
        "split": dataset.get("split") or (", ".join(splits) if splits else None),
        "class_names": tables.class_names,
        # The dataset's own classes; class_names can hold more that only the classifier predicts.
        "n_dataset_classes": len(dataset.get("class_names") or tables.class_names),
        "n_images": int(image_counts(images).sum()),
        "n_errors": int(image_counts(images)[images["unreadable"].to_numpy(bool)].sum()),
        "sentences_per_image": settings.get("sentences_per_image"),
        "accuracy": _accuracy(images),
        "per_class": per_class,
        "worst_group": worst,
        "flags": flags,
        "no_flags": no_flags_reason(flag_notes) if flags and not any(flags.values()) else None,
        "device": m.get("device"),
        "created": m.get("created"),
        "progress": m.get("progress") or {},
    }


def no_flags_reason(notes: dict) -> str:
    """Why no class has a flag, in a few words: too few misread images to test any word, or none stands out."""
    reasons = [str(r) for r in notes.values() if r]

    def too_few(r: str) -> bool:  # core.analysis.spurious' notes for a class with (almost) no misread image
        return "too few misread" in r or "image is misread on this split" in r

    if reasons and all(too_few(r) for r in reasons):
        return "too few misread images to test"
    if any(too_few(r) for r in reasons):
        return "no word pulls a class toward another (some classes have too few misread images to test)"
    return "no word pulls a class toward another"


# --- groups --------------------------------------------------------------------------------------------

@dataclass
class GroupSummary:
    """True groups (when the dataset has them) next to the groups inferred from the flags."""

    true: WorstGroupAccuracy | None
    average_train_weighted: float | None
    inferred: WorstGroupAccuracy | None
    inferred_words: dict
    inferred_thresholds: dict
    agreement: GroupAgreement | None
    crosstab: pd.DataFrame | None  # rows: inferred group names, columns: true group names, image counts
    notes: list[str] = field(default_factory=list)
    inferred_word_views: dict = field(default_factory=dict)  # class -> "error" / "association": its words' view

    @property
    def inferred_words_text(self) -> str:
        return describe_group_words(self.inferred_words, self.inferred_word_views)


def group_summary(tables: RunTables, scorer: Any) -> GroupSummary:
    """Per-group and worst-group accuracy for true and inferred groups, and how well the two agree (from the run's
    cells and the inferred groups' counts: no row per image)."""
    images = tables.stats.images
    notes: list[str] = []
    has_groups = "group" in images and images["group"].notna().any()
    true = train = None
    if has_groups:
        true = worst_group_accuracy(images, weights="test", group_names=tables.group_names)
        counts = train_group_counts_from_manifest(tables.manifest or {})
        if counts:
            try:
                train = worst_group_accuracy(images, weights="train", train_group_counts=counts,
                                             group_names=tables.group_names).average_weighted
            except ValueError as exc:
                notes.append(f"No training-weighted average: {exc}")
        else:
            notes.append("The run's manifest has no training group counts, so the training-weighted average "
                         "cannot be computed.")
    else:
        notes.append("This dataset has no group labels; the groups below are inferred from the flagged words.")
    inferred = agreement = crosstab = None
    words, thresholds, views = {}, {}, {}
    if scorer is not None and any(scorer.group_words(5)[0].values()):
        inferrer = GroupInferrer().fit(tables, scorer)
        counts = inferrer.group_counts()
        words, thresholds, views = inferrer.spurious_words_, inferrer.thresholds_, inferrer.word_views_
        inferred = worst_group_accuracy(counts, weights="test", groups="inferred_group",
                                        group_names=inferrer.group_names_)
        if has_groups:
            agreement = group_agreement(counts["group"], counts["inferred_group"], counts["n_images"])
            both = counts.dropna(subset=["group", "inferred_group"])
            names_t, names_i = tables.group_names, inferrer.group_names_
            crosstab = pd.crosstab(both["inferred_group"].astype(int).map(lambda g: names_i.get(int(g), f"group {g}")),
                                   both["group"].astype(int).map(lambda g: names_t.get(int(g), f"group {g}")),
                                   values=both["n_images"], aggfunc="sum").fillna(0).astype("int64")
            crosstab.index.name, crosstab.columns.name = "inferred group", "true group"
    else:
        notes.append("No word is flagged for any class, so no groups can be inferred from the explanations.")
    return GroupSummary(true, train, inferred, words, thresholds, agreement, crosstab, notes, views)


def read_mitigation(run_path: str | Path) -> tuple[pd.DataFrame | None, str | None]:
    """A run's mitigation results as a DataFrame (None, why not), one row per (source, method, groups).

    "source" is "shipped" (the record that ships with a demo run) or "yours" (your own mitigation run);
    the columns *_low / *_high hold 95% intervals where the record has them (older records do not).
    """
    records, problem = read_mitigation_records(run_path)
    if problem or records is None:
        return None, problem
    if not records:
        return None, f"{Path(run_path) / MITIGATION_FILE} holds no results"
    frame = pd.DataFrame(records)
    for column in ("groups", "worst_group_before", "worst_group_after", "average_before", "average_after"):
        if column not in frame:
            frame[column] = None
    metrics = ("worst_group_before", "worst_group_after", "average_before", "average_after", "worst_group_change",
               "average_change")
    if "worst_group_change" not in frame:
        frame["worst_group_change"] = pd.to_numeric(frame["worst_group_after"], errors="coerce") - \
            pd.to_numeric(frame["worst_group_before"], errors="coerce")
    if "average_change" not in frame:
        frame["average_change"] = pd.to_numeric(frame["average_after"], errors="coerce") - \
            pd.to_numeric(frame["average_before"], errors="coerce")
    intervals = frame["intervals"] if "intervals" in frame else pd.Series([None] * len(frame))
    for column in metrics:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
        bounds = [iv.get(column) if isinstance(iv, dict) else None for iv in intervals]
        frame[f"{column}_low"] = [b[0] if isinstance(b, list) and len(b) == 2 else None for b in bounds]
        frame[f"{column}_high"] = [b[1] if isinstance(b, list) and len(b) == 2 else None for b in bounds]
    frame["label"] = [_mitigation_label(r, len(set(frame["source"])) > 1) for r in frame.to_dict(orient="records")]
    frame["worst_group_gain"] = [describe_gain(r) for r in records]
    return frame, None


def _mitigation_label(record: dict, with_source: bool) -> str:
    label = f"{record['method']} ({record['groups']} groups)" if record.get("groups") else str(record["method"])
    return f"{label}, {record['source']}" if with_source and record.get("source") else label


@dataclass
class MitigationLink:
    """Run `after` is run `before`'s classifier fixed by a recorded mitigation (e.g. ERM and ERM fixed)."""

    before: RunEntry
    after: RunEntry
    record: dict  # the mitigation.json entry whose classifier_after is `after`'s classifier

    @property
    def clear_gain(self) -> bool:
        """Whether the worst group clearly improved: its 95% interval lies above zero (the change itself
        when the record has no interval)."""
        r = self.record
        ci = (r.get("intervals") or {}).get("worst_group_change")
        return (ci[0] > 0) if ci else r["worst_group_after"] > r["worst_group_before"]

    @property
    def made_worse(self) -> bool:
        """Whether the fix lowered worst-group accuracy: a result to warn about, never to present as the answer."""
        return self.record["worst_group_after"] < self.record["worst_group_before"] - 0.0005

    def sentence(self) -> str:
        """One line for a page: what was fixed, how, and by how much (with its interval)."""
        r = self.record
        ci = (r.get("intervals") or {}).get("worst_group_change")
        spread = f" (95% interval {100 * ci[0]:+.0f} to {100 * ci[1]:+.0f} pts)" if ci else ""
        if ci and not self.clear_gain:
            spread += ", not clearly better"
        how = {"inferred": "groups inferred from its explanations (no group labels)",
               "true": "the true groups", "class": "classes only"}.get(r.get("groups"), f"{r.get('groups')} groups")
        text = (f"**{self.after.folder}** is **{self.before.folder}**'s classifier with its last layer refit "
                f"({r.get('method')}) on {how}: worst-group accuracy {as_percent(r['worst_group_before'])} → "
                f"{as_percent(r['worst_group_after'])}, {100 * (r['worst_group_after'] - r['worst_group_before']):+.0f}"
                f" pts{spread}; average {as_percent(r['average_before'])} → {as_percent(r['average_after'])}.")
        if self.made_worse:
            text += (" **The fix made the worst group worse: keep the original classifier.** The validation run it "
                     "was fitted on may be too small, or unlike the test images.")
        return text


def mitigation_link(run_a: RunEntry | None, run_b: RunEntry | None) -> MitigationLink | None:
    """The recorded mitigation that turned one run's classifier into the other's, in either direction.

    A rerun of the shipped fix gives the same classifier (DFR is deterministic), so both records match it;
    the user's own is the one shown.
    """
    if run_a is None or run_b is None:
        return None
    for before, after in ((run_a, run_b), (run_b, run_a)):
        target = after.models.get("classifier_identity")
        records, _ = read_mitigation_records(before.path)
        for r in reversed(records or []):  # your own results (listed last) before the shipped ones
            if target and r.get("classifier_after") == target and r.get("worst_group_after") is not None:
                return MitigationLink(before, after, r)
    return None


def explanations_identical(a: RunTables, b: RunTables) -> bool:
    """Whether two runs hold the same words for the same images (core.analysis.compare.same_explanations)."""
    from core.analysis.compare import same_explanations

    return same_explanations(a, b)


def mitigation_per_group(records: pd.DataFrame) -> pd.DataFrame:
    """Per method and group: accuracy before and after (from mitigation.json's per_group_before/after)."""
    rows = []
    for r in records.to_dict(orient="records"):
        before, after = r.get("per_group_before"), r.get("per_group_after")
        if not isinstance(before, dict) or not isinstance(after, dict):
            continue
        names = r.get("group_names") if isinstance(r.get("group_names"), dict) else {}
        label = f"{r['method']} ({r['groups']} groups)" if r.get("groups") else str(r["method"])
        for g in sorted(set(before) | set(after), key=lambda k: (len(str(k)), str(k))):
            b, a = before.get(g), after.get(g)
            rows.append({"method": label, "group": names.get(str(g), f"group {g}"), "before": b, "after": a,
                         "change": None if a is None or b is None else a - b})
    return pd.DataFrame(rows, columns=["method", "group", "before", "after", "change"])


def mitigation_blocker(run: RunEntry) -> str | None:
    """Why no mitigation can start from `run` at all (not merely: its val run is missing yet), or None."""
    from core.models.registry import builtin_refusal

    if reason := builtin_refusal(run.models.get("classifier_identity")):
        return reason[0].upper() + reason[1:] + "."
    if not run.dataset.get("split"):
        return (f"Mitigation refits the last layer on a **validation** split and scores it on a test split; "
                f"**{run.dataset.get('name', 'this dataset')}** is one set without splits, so there is nothing to "
                "fit on. Give the dataset train/val/test splits (folders or a metadata CSV) to mitigate.")
    return None


def mitigation_pairs(run: RunEntry, entries: list[RunEntry]) -> tuple[RunEntry | None, RunEntry | None]:
    """(validation run, test run) of `run`'s classifier on `run`'s dataset: what a mitigation reads."""
    def same_model(e: RunEntry) -> bool:
        return (e.ok and e.models.get("classifier") == run.models.get("classifier")
                and dataset_key({"dataset": e.dataset})["root"] == dataset_key({"dataset": run.dataset})["root"])

    candidates = [e for e in entries if same_model(e)]
    val = run if run.dataset.get("split") == "val" else next(
        (e for e in candidates if e.dataset.get("split") == "val"), None)
    test = run if run.dataset.get("split") == "test" else next(
        (e for e in candidates if e.dataset.get("split") == "test"), None)
    return val, test


def mitigate_argv(val: RunEntry, test: RunEntry | None, method: str = "dfr", groups: str = "all") -> list[str]:
    """The arguments of `texplain mitigate` for a validation run (and a test run)."""
    argv = ["mitigate", relative_to_repo(val.path)] + (["--test-run", relative_to_repo(test.path)] if test else [])
    return argv + ["--method", method, "--groups", groups]


def mitigate_command(run: RunEntry, entries: list[RunEntry]) -> str:
    """The `texplain mitigate` command for a run: it reads a validation run and scores on the test run."""
    val, test = mitigation_pairs(run, entries)
    if val is None:
        return f"texplain mitigate RUN_VAL --test-run {relative_to_repo(run.path)} --method all"
    return "texplain " + " ".join(mitigate_argv(val, test, "all"))


# --- comparing two runs ----------------------------------------------------------------------------------

def dataset_mismatch(manifest_a: dict, manifest_b: dict, name_a: str = "run A", name_b: str = "run B") -> str | None:
    """Why two runs are not on the same data (dataset root, split or classes differ), or None."""
    a, b = dataset_key(manifest_a), dataset_key(manifest_b)
    problems = []
    copy = challenge_root(manifest_a.get("dataset") or {})
    if copy is not None and copy == challenge_root(manifest_b.get("dataset") or {}):
        # Two variations of one Backgrounds Challenge copy: the same photos on other backgrounds, which is
        # the comparison that experiment is about (what the new backgrounds put into the words).
        a, b = {**a, "root": copy, "name": None}, {**b, "root": copy, "name": None}
    if a["root"] != b["root"] or a["name"] != b["name"]:
        problems.append(f"{name_a} is on dataset {a['name']!r} ({a['root']}), {name_b} on {b['name']!r} ({b['root']})")
    if a["split"] != b["split"]:
        problems.append(f"{name_a} explains the {a['split'] or 'whole'} split, "
                        f"{name_b} the {b['split'] or 'whole'} split")
    if a["class_names"] != b["class_names"]:
        problems.append(f"their classes differ ({a['class_names']} vs {b['class_names']})")
    if not problems:
        return None
    return "; ".join(problems) + ". Compare two classifiers explained on the same images."


# --- words of one image ------------------------------------------------------------------------------------

def counts_frame(counts: dict, n_sentences: int) -> pd.DataFrame:
    """word -> (occurrences, sentences) counts (WordExtractor.count) as rows word, share, count, sentences."""
    rows = [(w, s / max(n_sentences, 1), int(c), int(s)) for w, (c, s) in counts.items()]
    frame = pd.DataFrame(rows, columns=["word", "share", "count", "sentences"])
    return frame.sort_values(["share", "count", "word"], ascending=[False, False, True]).reset_index(drop=True)


def image_word_shares(tables: RunTables, image_id: str) -> pd.DataFrame:
    """The stored words of one image: word, share (of its sentences), count, sentences; largest first (its rows
    only are read from a run's store)."""
    row = tables.images_of([image_id])
    if row.empty:
        raise ValueError(f"image {image_id!r} is not in this run")
    n = int(row["n_sentences"].fillna(0).iloc[0])
    words = tables.words_of([image_id])
    counts = {str(w): (int(c), int(s)) for w, c, s in zip(words["word"], words["count"], words["sentences"])}
    return counts_frame(counts, n)


def image_set_choices(tables: RunTables) -> dict[str, dict]:
    """Named image sets to compare (label -> keywords of core.analysis.compare.image_set)."""
    images = tables.stats.images  # the run's cells: the same labels, predictions and groups
    names = tables.class_names
    present = set(images["label"].dropna().astype(int)) | set(images["prediction"].dropna().astype(int))
    out: dict[str, dict] = {}
    for i, c in enumerate(names):
        if i in present:
            out[f"class {c}"] = {"label": c}
    if "group" in images and images["group"].notna().any():
        for g in sorted(images["group"].dropna().astype(int).unique()):
            out[f"group {tables.group_names.get(int(g), g)}"] = {"group": int(g)}
    for i, c in enumerate(names):
        if i in present:
            out[f"{c}, read correctly"] = {"label": c, "outcome": "correct"}
            out[f"{c}, misread"] = {"label": c, "outcome": "wrong"}
    for i, c in enumerate(names):
        if i in present:
            out[f"predicted {c}"] = {"prediction": c}
    return out


@dataclass
class SetComparison:
    """Two named image sets of a run, compared word by word (see core.analysis.compare)."""

    table: pd.DataFrame  # compare_word_sets: word, shares, z, ...
    n_a: int
    n_b: int
    jensen_shannon: float | None
    note: str | None = None  # why the divergence is missing, or why nothing was compared


def compare_sets(tables: RunTables, name_a: str, name_b: str, min_images: int = 3) -> SetComparison:
    """Compare two of `image_set_choices(tables)` by name (an empty set gives an empty table and a note)."""
    from core.analysis import compare_word_sets, divergence, image_set

    choices = image_set_choices(tables)
    set_a = image_set(tables, name=name_a, **choices[name_a])
    set_b = image_set(tables, name=name_b, **choices[name_b])
    if set_a.n_images == 0 or set_b.n_images == 0:
        empty = name_a if set_a.n_images == 0 else name_b
        return SetComparison(pd.DataFrame(), set_a.n_images, set_b.n_images, None,
                             f"'{empty}' has no images in this run: nothing to compare.")
    table = compare_word_sets(set_a, set_b, min_images=min_images)
    try:
        js, note = divergence(set_a, set_b).jensen_shannon, None
    except ValueError as exc:
        js, note = None, str(exc)
    return SetComparison(table, set_a.n_images, set_b.n_images, js, note)


# --- the Backgrounds Challenge: one classifier's runs on the ImageNet-9 variations ----------------------------

def general_translator_tip(models: dict) -> str | None:
    """How far to trust a run's words (`models`: its manifest's), from its translator's evaluation.json
    (`texplain maintain general-evaluation` and `imagenet9-runs`); None when there is no such evaluation."""
    folder = as_checkpoint_folder((models or {}).get("translator"))
    try:
        ev = json.loads((folder / "evaluation.json").read_text()) if folder is not None else None
    except (OSError, ValueError):
        return None
    if not isinstance(ev, dict) or ev.get("scene_accuracy_photos") is None:
        return None
    text = (f"The general translator names **backgrounds** better than **objects**. On {ev.get('unseen_stamps')} "
            f"stamps it never saw in training, it names the photo background for "
            f"{as_percent(ev['scene_accuracy_photos'])} of the images but a plain background's colour for only "
            f"{as_percent(ev.get('scene_accuracy_plain'))}.")
    plain = ev.get("background_called_plain") or {}
    if plain.get("plain_scenes") is not None:
        text += (f" It does see that a background is plain (most sentences say so for "
                 f"{as_percent(plain['plain_scenes'])} of the plain backgrounds, "
                 f"{as_percent(plain.get('photo_scenes'))} of the photos); it is the colour it gets wrong")
        slips = [f"{_plain_colour(c['truth'])} as {_plain_colour(c['said'])}" for c in ev.get("scene_confusions") or []
                 if _plain_colour(c.get("truth")) and _plain_colour(c.get("said"))][:2]
        text += f", mostly by a shade ({' and '.join(slips)})." if slips else "."
        probe = (ev.get("feature_probe") or {}).get("plain_colour_accuracy")
        if probe is not None:
            text += (f" A linear probe of the classifier's features names the colour for only {as_percent(probe)}: "
                     "the classifier itself keeps little of it.")
    only_fg = (ev.get("imagenet9_superclass_words") or {}).get("only_fg") or {}
    if only_fg.get("right_superclass_unseen_per_stamp") is not None:
        text += (f" Shown an unseen object alone (only_fg), it names the right ImageNet-9 class "
                 f"{as_percent(only_fg['right_superclass_unseen_per_stamp'])} of the time (per stamp).")
        never = [c for c, v in (only_fg.get("by_class") or {}).items() if v == 0]
        if never:  # e.g. a class no training caption names: the translator has no word for it
            text += f" It never names {', '.join(never)} right there."
    return text + f" Read the scene words first (`{relative_to_repo(folder / 'evaluation.json')}`)."


def _plain_colour(scene) -> str | None:
    """"plain-light-grey" -> "light grey"; None for a photo scene (the general world's scene names)."""
    from core.demo.worlds.general import PLAIN_PREFIX

    if not isinstance(scene, str) or not scene.startswith(PLAIN_PREFIX):
        return None
    return scene[len(PLAIN_PREFIX):].replace("-", " ")


def small_worst_group(wga: WorstGroupAccuracy, min_images: int = 10) -> str | None:
    """A warning when the worst group is too small to read much into (its accuracy is the worst partly
    because small groups scatter most), with its size and 95% Wilson interval; None otherwise."""
    row = wga.per_group[wga.per_group["group"] == wga.worst_group]
    if row.empty or int(row["n"].iloc[0]) >= min_images:
        return None
    r = row.iloc[0]
    return (f"The worst group, {r['group_name']}, holds only {int(r['n'])} image{'s' if int(r['n']) != 1 else ''} "
            f"({int(r['correct'])} right; 95% interval {as_percent(r['ci_low'])} to {as_percent(r['ci_high'])}): the "
            "smallest groups scatter most, so read the chart's intervals rather than this one number.")


# --- uploads and pictures ---------------------------------------------------------------------------------------

BACKGROUND = (255, 255, 255)  # what a transparent upload is laid on: a photo's white page, not black
_OBJECT_ADDRESS = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def flatten_alpha(data: bytes, background: tuple[int, int, int] = BACKGROUND) -> bytes:
    """An image with transparency laid on `background` (PNG bytes); other bytes come back as they are.

    Dropping the alpha channel leaves whatever colour the transparent pixels happen to hold (often black, or
    the ghost of an erased background), which the classifier then reads as the scene.
    """
    import io

    from PIL import Image

    from core.data.images import MAX_IMAGE_PIXELS

    try:
        with Image.open(io.BytesIO(data)) as im:
            transparent = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
            if not transparent or im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:
                return data  # decode_rgb refuses (or reads) it with the dataset rules
            rgba = im.convert("RGBA")
    except Exception:  # not an image: decode_rgb says so
        return data
    flat = Image.new("RGB", rgba.size, background)
    flat.paste(rgba, mask=rgba.getchannel("A"))
    out = io.BytesIO()
    flat.save(out, format="PNG")
    return out.getvalue()


def decode_image(data: bytes, name: str = "the upload"):
    """Bytes of an image file -> an RGB PIL image; a clear ValueError when it is not a readable image.

    The same rules as a dataset's images (core.data.images): size limits, 16-bit pixels scaled; transparent
    pixels are laid on white first (flatten_alpha).
    """
    from core.data.images import ImageDecodeError, decode_rgb

    if not data:
        raise ValueError(f"{name} is empty (0 bytes). Upload a PNG, JPEG, WebP or BMP image.")
    try:
        return decode_rgb(flatten_alpha(data), name)
    except ImageDecodeError as exc:
        message = _OBJECT_ADDRESS.sub("", str(exc))  # Pillow names its file object: "<_io.BytesIO object at 0x…>"
        reason = message.removeprefix(f"cannot read {name}: ")
        what = f"{name} is not an image TExplain can read ({reason})" if reason != message else message
        raise ValueError(f"{what}. Upload a PNG, JPEG, WebP or BMP photo.") from exc


def thumbnail_uri(path: str | Path, size: int = 72) -> str | None:
    """A small JPEG of an image file as a data: URI (for a table's image column); None when it cannot be read."""
    import base64
    import io

    from core.data import DatasetError, load_rgb

    try:
        im = load_rgb(path)
    except DatasetError:
        return None
    im.thumbnail((size, size))
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def word_cloud_image(frequencies: dict[str, float], width: int = 640, height: int = 320, seed: int = 0):
    """A word cloud (PIL image) of word -> weight, in the dashboard's blues and oranges."""
    from wordcloud import WordCloud

    freqs = {str(w): float(v) for w, v in frequencies.items() if v and v > 0}
    if not freqs:
        raise ValueError("there are no words to draw")
    palette = ["#3b6fb6", "#e08a2e", "#4a9c6d", "#8e6bb8", "#1f2933"]

    def colour(word, font_size, position, orientation, random_state=None, **kwargs):
        return palette[(len(word) + int(font_size)) % len(palette)]

    cloud = WordCloud(width=width, height=height, background_color="white", prefer_horizontal=0.95,
                      random_state=seed, color_func=colour, max_words=60, margin=4)
    return cloud.generate_from_frequencies(freqs).to_image()


# --- new runs ------------------------------------------------------------------------------------------------------

def describe_dataset(dataset) -> dict:
    """What a user should see before explaining a dataset: kind, size per split, classes, groups (and, for the
    Backgrounds Challenge, its variation folders)."""
    frame = dataset.to_frame()
    per_split = frame.groupby("split").size().reindex(dataset.splits).astype(int).to_dict()
    out = {"name": dataset.name, "kind": dataset.kind, "root": str(dataset.root), "n_images": len(frame),
           "splits": per_split, "class_names": list(dataset.class_names),
           "group_names": dict(dataset.group_names or {})}
    if dataset.kind == "backgrounds_challenge":
        from core.data.readers import background_variations

        out["variations"] = background_variations(Path(dataset.root).parent)
    return out


def classes_note(classifier, dataset) -> str | None:
    """How a run of `classifier` on `dataset` counts its predictions in the dataset's classes (None: they are
    its own classes); ClassifierLoadError when they cannot be (core.models.label_space)."""
    from core.models.label_space import dataset_label_space

    space = dataset_label_space(classifier, dataset)
    return None if space is None else f"The classifier's {len(classifier.class_names)} classes are {space.describe()}."


def duration_text(seconds: float) -> str:
    """90 -> "about 2 min"; 5400 -> "about 1 h 30 min"."""
    if seconds < 60:
        return "under a minute"
    minutes = int(round(seconds / 60))
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"


def check_run_name(name: str, root: str | Path) -> Path:
    """The folder a new run named `name` goes to under `root`; ValueError for a name that cannot be one."""
    if not isinstance(name, str) or not RUN_NAME.match(name.strip()):
        raise ValueError(f"run name {name!r} must start with a letter or digit and use only letters, digits, "
                         "'.', '_' and '-' (at most 80 characters)")
    return Path(root) / name.strip()


def default_run_name(dataset_name: str, classifier: str, split: str | None) -> str:
    """A run name from its parts, e.g. "waterbirds-mini-erm-test"."""
    parts = [dataset_name, Path(str(classifier)).name, split or "all"]
    name = "-".join(re.sub(r"[^A-Za-z0-9._-]+", "-", str(p)).strip("-.") for p in parts if p)
    return name[:80] or "run"


def top_share(words: pd.DataFrame, k: int = 60) -> dict[str, float]:
    """word -> share for the `k` largest shares of a words frame (for a word cloud)."""
    top = words.nlargest(k, "share")
    return dict(zip(top["word"].astype(str), top["share"].astype(float)))


def as_percent(x: Any, digits: int = 0) -> str:
    """0.583 -> "58%"; None or NaN -> "–"."""
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{100 * float(x):.{digits}f}%"


# --- word maps and causal tests (Explain an image, Spurious terms) ----------------------------------------------

MAP_METHODS = {  # how a word map was computed, for a caption (core.engine.word_map)
    "gradient": "gradient: the word's log-probability in the image's own sentences, differentiated with respect to "
                "the classifier's last feature map and weighted Grad-CAM style",
    "occlusion": "occlusion: patches of the image (7 x 7) hidden one at a time, scored by how much less likely the "
                 "word becomes; asked for, chosen first where this run's pointing game found it clearly better, or the "
                 "only map of a classifier without a spatial feature map"}


@dataclass
class WordMapView:
    """A word's map over one image, next to the Grad-CAM of a class, drawn for a page (PIL images over the part of
    the image the classifier sees)."""

    word: str
    method: str  # "gradient" or "occlusion"
    word_picture: Any
    class_picture: Any | None  # None: the classifier has no spatial feature map for a Grad-CAM
    sentences: int  # of the image's sentences, those that use the word
    peak: tuple[float, float] | None  # (row, column) of the map's peak, as fractions of the crop; None: a flat map


def run_image(run_path: str | Path, image_id: str):
    """One of a run's images (a PIL image), by its id; ValueError when the run has no such image."""
    from core.data import load_rgb
    from core.store import Run

    run = Run.open(run_path)
    images = run.images()
    found = images.loc[images["image_id"].astype(str) == str(image_id), "path"]
    if found.empty:
        raise ValueError(f"image {image_id!r} is not in run {run.name}")
    return load_rgb(run.image_path(str(found.iloc[0])))


def word_map_view(run_path: str | Path, image_id: str, word: str, cam=None, preprocessing=None,
                  opacity: float = 0.5, method: str = "auto") -> WordMapView | None:
    """The stored map of `word` over a run's image (core.report.evidence), drawn by `method` ("auto" or
    "occlusion"), with the class map `cam` ((H, W) over `preprocessing`'s crop, or None) beside it; None when the
    word's map was never computed."""
    from core.report.evidence import overlay, stored_map, stored_picture

    wm = stored_map(run_path, image_id, word, method)
    picture = stored_picture(run_path, image_id, word, opacity, method) if wm is not None else None
    if picture is None:
        return None
    class_picture = overlay(run_image(run_path, image_id), cam, preprocessing, opacity) if cam is not None else None
    h, w = wm.heatmap.shape
    peak = wm.peak()
    return WordMapView(wm.word, wm.method, picture, class_picture, wm.sentences,
                       None if peak is None else (peak[0] / max(h - 1, 1), peak[1] / max(w - 1, 1)))


def where_in(peak: tuple[float, float]) -> str:
    """(row, column) fractions -> "the upper left", "the centre", "the right", ... of an image."""
    row, col = peak
    v = "upper " if row < 1 / 3 else "lower " if row > 2 / 3 else ""
    h = "left" if col < 1 / 3 else "right" if col > 2 / 3 else ""
    return f"the {(v + h).strip() or 'centre'}" if h or not v else f"the {v.strip()} middle"


def seconds_per_map(run_path: str | Path, method: str = "auto") -> float | None:
    """Seconds one word map took when the run's maps were measured (word_maps.json), by `method`, or None."""
    from core.report.evidence import map_reliability, measured

    value = (measured(map_reliability(run_path), method) or {}).get("seconds_per_map")
    return float(value) if isinstance(value, (int, float)) else None


def causal_tests(run_path: str | Path, class_name: str | None = None, word: str | None = None) -> pd.DataFrame:
    """The causal tests stored for a run (core.evaluation.causal.read_causal), one row each: class, word, predicted,
    images, verdict, changed / control (rates) with their 95% intervals, ratio, share_before, share_after, share,
    fill, key and record (core.report.evidence.causal_record); optionally only those of `class_name` and `word`.
    Tests of another region than the word's map are left out."""
    from core.evaluation.causal import read_causal
    from core.report.evidence import causal_record

    rows = []
    for key, e in read_causal(run_path).items():
        if "|region=" in key or (class_name is not None and e.get("class") != class_name) \
                or (word is not None and e.get("word") != word):
            continue
        s, st = e.get("summary") or {}, e.get("settings") or {}
        p, c = s.get("prediction_changed") or {}, s.get("control_prediction_changed") or {}
        rows.append({"class": e.get("class"), "word": e.get("word"), "predicted": st.get("predicted"),
                     "images": int(s.get("images") or 0), "verdict": s.get("verdict"),
                     "changed": p.get("rate"), "changed_ci": p.get("ci95"),
                     "control": c.get("rate"), "control_ci": c.get("ci95"), "ratio": s.get("ratio_to_control"),
                     "share_before": s.get("mean_share_before"), "share_after": s.get("mean_share_after"),
                     "share": st.get("share"), "fill": st.get("fill"), "region": st.get("region") or "map",
                     "max_images": st.get("max_images"), "key": key, "record": causal_record(e)})
    columns = ["class", "word", "predicted", "images", "verdict", "changed", "changed_ci", "control", "control_ci",
               "ratio", "share_before", "share_after", "share", "fill", "region", "max_images", "key", "record"]
    return pd.DataFrame(rows, columns=columns)


def causal_verdicts(run_path: str | Path, flags: pd.DataFrame) -> list[str]:
    """For each flag row (class, word, predicted_as when the view has it): the verdict of its stored causal test
    (core.report.evidence.causal_for), or "" when it was never tested."""
    from core.evaluation.causal import read_causal
    from core.report.evidence import causal_for

    tests = read_causal(run_path)
    if not tests:
        return [""] * len(flags)
    out = []
    for r in flags.to_dict(orient="records"):
        predicted = r.get("predicted_as") if "predicted_as" in r else r["class"]
        record = causal_for(tests, r["class"], r["word"], predicted if isinstance(predicted, str) else None)
        out.append(record["verdict"] if record else "")
    return out


def causal_candidates(tables: RunTables, class_name: str, word: str, predicted: str | None = None) -> int:
    """How many images a causal test of (class_name, word) would run on: the class's images (read as `predicted`,
    when given) whose sentences use the word, as core.evaluation.causal.verify_flag selects them."""
    from core.analysis.aggregates import query

    names = list(tables.class_names)
    if class_name not in names or (predicted is not None and predicted not in names):
        return 0
    # One query over the run's store (or the in-memory tables): a million-image run is not read into memory.
    read_as = f" AND prediction = {names.index(predicted)}" if predicted is not None else ""
    found = query(tables, f"""SELECT count(*) AS n FROM images WHERE label = {names.index(class_name)}
        AND prediction IS NOT NULL{read_as}
        AND image_id IN (SELECT image_id FROM images_words WHERE CAST(word AS VARCHAR) = ?)""", [str(word)])
    return int(found["n"].iloc[0])
