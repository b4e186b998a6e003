"""The Backgrounds Challenge (Xiao et al. 2020) read from runs: one classifier's runs on the ImageNet-9
variations, found among the run folders, and what they say together: accuracy per variation and per
class, the BG-gap (mixed_same - mixed_rand, paired) and the words of the mixed_rand errors.

    entries = discover_runs(run_roots())
    bc = background_challenge(entry, entries)   # None for a run that is no variation
    bc.table, bc.bg_gap, bc.reading(), bc.words
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.analysis.compare import compare_word_sets, image_set
from core.analysis.groups import group_accuracy
from core.analysis.stats import paired_gap
from core.analysis.tables import RunTables, evaluation_tables, scored_images
from core.data.readers import BACKGROUND_VARIATIONS
from core.store import Run, RunEntry, dataset_key

IMAGENET9_FOLDER = re.compile(r"^imagenet9-(?P<variation>[A-Za-z0-9_]+)$")  # shipped: imagenet9-<variation>


def background_variation(entry: RunEntry) -> str | None:
    """The Backgrounds Challenge variation a run explains ("mixed_rand"), or None for any other run.

    The manifest's dataset is the key: a `backgrounds_challenge` dataset's root is its variation folder
    (core.data.readers reads root/<variation>), which holds whatever the run is named; a folder named
    `imagenet9-<variation>` (the shipped runs) is the fallback for a manifest without it.
    """
    if not entry.ok:
        return None
    d = entry.dataset or {}
    if d.get("kind") == "backgrounds_challenge" and d.get("root"):
        return Path(str(d["root"])).name
    m = IMAGENET9_FOLDER.match(entry.folder)
    return m["variation"] if m else None


def classifier_key(entry: RunEntry) -> str | None:
    return entry.models.get("classifier_identity") or entry.models.get("classifier")


def challenge_root(dataset: dict) -> str | None:
    """The folder above a manifest dataset's variation folder (one copy of ImageNet-9), None when the
    dataset is not a Backgrounds Challenge variation or does not say where it is."""
    if dataset.get("kind") != "backgrounds_challenge" or not dataset.get("root"):
        return None
    return str(Path(dataset_key({"dataset": {"root": dataset["root"]}})["root"]).parent)


def variation_pair(run_a: RunEntry, run_b: RunEntry) -> tuple[str, str] | None:
    """(variation of A, variation of B) when both runs explain variations of one Backgrounds Challenge copy:
    the same photos on other backgrounds, whose image ids differ only by the variation folder."""
    va, vb = background_variation(run_a), background_variation(run_b)
    if va is None or vb is None:
        return None
    copy = challenge_root(run_a.dataset or {})
    return (va, vb) if copy is not None and copy == challenge_root(run_b.dataset or {}) else None


def variation_runs(run: RunEntry, entries: list[RunEntry]) -> dict[str, RunEntry]:
    """variation -> run, for `run`'s classifier on `run`'s copy of ImageNet-9 ({} when `run` is not such a run).

    A variation explained twice (a shipped run and your own) keeps the first in `entries` (discover_runs puts
    shipped, complete and newer runs first); `run` itself always stands for its own variation.
    """
    own = background_variation(run)
    if own is None:
        return {}
    found = {own: run}
    for e in entries:
        v = background_variation(e)
        if v is None or v in found or classifier_key(e) != classifier_key(run) \
                or challenge_root(e.dataset or {}) != challenge_root(run.dataset or {}):
            continue
        found[v] = e
    order = {v: i for i, v in enumerate(BACKGROUND_VARIATIONS)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def photo_ids(image_ids: pd.Series) -> pd.Series:
    """"mixed_rand/00_dog/x.JPEG" -> "00_dog/x.JPEG": one photo's id across the variations."""
    return image_ids.astype(str).str.split("/", n=1).str[-1]


@dataclass
class BackgroundChallenge:
    """One classifier on the Backgrounds Challenge variations, from its runs (Xiao et al. 2020).

    `table`: one row per variation: variation, run (folder), images, correct, accuracy, ci_low, ci_high
    (95% Wilson). `bg_gap`: accuracy(mixed_same) - accuracy(mixed_rand) with a 95% paired bootstrap
    interval over the photos both runs hold ({gap, low, high, n}), None unless both runs are there.
    `words`: the words whose share rises most from the original photos to the mixed_rand images the
    classifier gets wrong (see background_challenge); empty without both runs or without errors.
    """

    table: pd.DataFrame
    bg_gap: dict | None
    words: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    # class x variation groups: variation, class, images, correct, accuracy, ci_low, ci_high (Wilson)
    by_class: pd.DataFrame = field(default_factory=pd.DataFrame)

    def worst_cell(self, min_images: int | None = None) -> dict | None:
        """The class x variation group read worst among those that show the object (only_bg_* hold no object,
        so a low accuracy there is the point, not a failure), with at least `min_images` images (None: 5, or
        the largest group's size when every group is smaller)."""
        cells = self.by_class
        if cells.empty:
            return None
        cells = cells[~cells["variation"].astype(str).str.startswith("only_bg")]
        if min_images is None:
            min_images = min(5, int(cells["images"].max())) if len(cells) else 5
        cells = cells[cells["images"] >= min_images]
        if cells.empty:
            return None
        return cells.sort_values(["accuracy", "images"], ascending=[True, False]).iloc[0].to_dict()

    def reading(self) -> str | None:
        """The BG-gap in one plain sentence."""
        g = self.bg_gap
        if g is None:
            return None
        if g["low"] > 0:
            return (f"The classifier is right {100 * g['gap']:.0f} points more often when the background matches "
                    "the object's class than when it is random: it leans on backgrounds.")
        if g["high"] < 0:
            return ("The classifier does better on random backgrounds than on backgrounds of the object's class; "
                    "a background of the class misleads it.")
        return ("No clear reliance on backgrounds: swapping in a random background changes accuracy by no more "
                f"than sampling noise on {g['n']} photos (the interval spans zero).")


def background_challenge(run: RunEntry, entries: list[RunEntry], k_words: int = 10,
                         min_images: int = 2) -> BackgroundChallenge | None:
    """Accuracy per variation, the BG-gap and the words of mixed_rand errors for `run`'s classifier.

    None when `run` is not a Backgrounds Challenge run. Each run is read on its evaluation split (see
    evaluation_tables). The words compare the mixed_rand images read wrong with the same photos in the
    original run (all original images when the ids do not pair): same objects, other backgrounds, so what
    rises is what the new backgrounds put into the features ("grass", "water"). Columns: word,
    share_original, share_mixed_rand_errors, rise, images (mixed_rand errors using the word), z (the
    weighted log-odds of core.analysis.compare_word_sets), largest rise first, only words that rise.
    """
    runs = variation_runs(run, entries)
    if not runs:
        return None
    tables = {v: evaluation_tables(Run.open(e.path))[0] for v, e in runs.items()}
    per_run = [t.images.assign(variation_code=i) for i, t in enumerate(tables.values())]
    table = group_accuracy(pd.concat(per_run, ignore_index=True), groups="variation_code",
                           group_names=dict(enumerate(tables)))
    table = table.rename(columns={"group_name": "variation", "n": "images"}).drop(columns="group")
    table.insert(1, "run", table["variation"].map(lambda v: runs[v].folder))
    # An unfinished run's accuracy covers the images explained so far: marked, and said in a note.
    table.insert(2, "status", table["variation"].map(lambda v: runs[v].status))
    by_class = _class_variation_accuracy(tables)
    notes = [f"{v} ({e.folder}) is {e.status}: {e.health or 'its numbers cover the images explained so far.'}"
             for v, e in runs.items() if e.status != "complete"]
    bg_gap = None
    if {"mixed_same", "mixed_rand"} <= set(tables):
        outcome = {}
        for v in ("mixed_same", "mixed_rand"):
            scored = scored_images(tables[v].images)
            outcome[v] = pd.Series((scored["label"] == scored["prediction"]).to_numpy(dtype=float),
                                   index=photo_ids(scored["image_id"]))
        shared = outcome["mixed_same"].index.intersection(outcome["mixed_rand"].index)
        if len(shared):
            bg_gap = paired_gap(outcome["mixed_same"].loc[shared].to_numpy(),
                                outcome["mixed_rand"].loc[shared].to_numpy())
            accuracy = table.set_index("variation")["accuracy"]
            if len(shared) < max(len(outcome["mixed_same"]), len(outcome["mixed_rand"])):
                notes.append(f"Only {len(shared)} photos are in both the mixed_same and the mixed_rand run; the "
                             "BG-gap's interval is computed on them.")
            bg_gap["gap"] = float(accuracy["mixed_same"] - accuracy["mixed_rand"])
        else:
            notes.append("The mixed_same and mixed_rand runs share no photo, so the BG-gap has no paired interval.")
    words = pd.DataFrame(columns=["word", "share_original", "share_mixed_rand_errors", "rise", "images", "z"])
    if {"original", "mixed_rand"} <= set(tables):
        errors = image_set(tables["mixed_rand"], name="mixed_rand, read wrong", outcome="wrong")
        original = tables["original"].images
        same = original[photo_ids(original["image_id"]).isin(set(photo_ids(errors.images["image_id"])))]
        before = image_set(tables["original"], name="original", images=same if len(same) else original)
        if errors.n_images and before.n_images:
            cmp = compare_word_sets(errors, before, min_images=min_images)
            cmp["rise"] = cmp["share_a"] - cmp["share_b"]
            cmp = cmp[cmp["rise"] > 0].sort_values(["rise", "word"], ascending=[False, True]).head(k_words)
            words = pd.DataFrame({"word": cmp["word"], "share_original": cmp["share_b"],
                                  "share_mixed_rand_errors": cmp["share_a"], "rise": cmp["rise"],
                                  "images": cmp["images_a"], "z": cmp["z"]}).reset_index(drop=True)
        elif not errors.n_images:
            notes.append("The classifier reads every mixed_rand image right: no errors to explain.")
    return BackgroundChallenge(table, bg_gap, words, notes, by_class)


def _class_variation_accuracy(tables: dict[str, RunTables]) -> pd.DataFrame:
    """Accuracy of every class in every variation (one group per class x variation), with Wilson intervals."""
    columns = ["variation", "class", "images", "correct", "accuracy", "ci_low", "ci_high"]
    frames = []
    for v, t in tables.items():
        images = scored_images(t.images)
        names = images["label"].astype(int).map(lambda c, names=t.class_names: names[c] if c < len(names) else str(c))
        frames.append(images.assign(variation=v, class_name=names))
    images = pd.concat(frames, ignore_index=True)
    if images.empty:
        return pd.DataFrame(columns=columns)
    cells = pd.Series(list(zip(images["variation"], images["class_name"])))
    codes, cell_names = pd.factorize(cells)  # in order of appearance: variations as given, classes as read
    acc = group_accuracy(images.assign(cell=codes), groups="cell")
    acc["variation"] = acc["group"].map(lambda g: cell_names[g][0])
    acc["class"] = acc["group"].map(lambda g: cell_names[g][1])
    return acc.rename(columns={"n": "images"})[columns].reset_index(drop=True)
