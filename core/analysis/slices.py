"""Slices from words: the images whose sentences use a word (or several), their size, accuracy and errors.

A flagged word says what pulls a class toward another; its slice says how much it costs. The slice is an
estimator (scikit-learn style): the constructor keeps the words, `fit` reads a run, learned state ends in `_`.

    s = WordSlice(["water", "lake"]).fit(tables)       # tables: a Run, a run folder or a RunTables
    s.n_, s.accuracy_, (s.ci_low_, s.ci_high_)          # size and accuracy with a 95% Wilson interval
    s.accuracy_rest_                                   # accuracy of the images outside the slice
    s.confusion_                                       # class, predicted_as, images (tidy)
    s.per_class_, s.examples_                          # per true class; example image ids, misread first
    s.compare(other_tables)                            # the same images under a second classifier (paired)
    save_slice(run, s.spec); saved_slices(run, others) # slices kept with a run, reused on runs of the same data
"""
from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from core.analysis.stats import paired_gap, wilson_bounds
from core.analysis.tables import RunTables, isin, load_tables, scored_images

SLICES_FILE = "slices.json"  # beside the run (a shipped run's: under the user's runs, core.store.user_file)
MATCHES = ("any", "all")


@dataclass(frozen=True)
class SliceSpec:
    """What defines a slice: its words, whether an image needs any or all of them, and how many of its
    sentences must use a word (`min_share`: 0 = one sentence is enough)."""

    words: tuple[str, ...]
    match: str = "any"
    min_share: float = 0.0
    name: str = ""

    def __post_init__(self) -> None:
        words = self.words
        if isinstance(words, str):
            words = (words,)
        if not isinstance(words, (list, tuple)) or not words:
            raise ValueError(f"words must be a word or a non-empty list of words, got {self.words!r}")
        cleaned = tuple(dict.fromkeys(str(w).strip().lower() for w in words if str(w).strip()))
        if not cleaned:
            raise ValueError(f"words must hold at least one non-blank word, got {self.words!r}")
        if self.match not in MATCHES:
            raise ValueError(f"match must be one of {MATCHES}, got {self.match!r}")
        if not isinstance(self.min_share, (int, float)) or not 0 <= float(self.min_share) < 1:
            raise ValueError(f"min_share must be a number in [0, 1), got {self.min_share!r}")
        object.__setattr__(self, "words", cleaned)
        object.__setattr__(self, "min_share", float(self.min_share))
        object.__setattr__(self, "name", str(self.name or self.describe()))

    def describe(self) -> str:
        """'water or lake': how a page titles the slice."""
        return f" {'or' if self.match == 'any' else 'and'} ".join(self.words)

    def to_dict(self) -> dict:
        return {"name": self.name, "words": list(self.words), "match": self.match, "min_share": self.min_share}

    @classmethod
    def from_dict(cls, d: dict) -> "SliceSpec":
        if not isinstance(d, dict) or "words" not in d:
            raise ValueError(f"a saved slice must be an object with 'words', got {d!r}")
        return cls(tuple(d["words"]), d.get("match", "any"), d.get("min_share", 0.0), d.get("name", ""))


def slice_membership(tables: RunTables, spec: SliceSpec) -> pd.DataFrame:
    """Per image of `tables`: image_id, in_slice (bool) and, for each of the slice's words, the share of the
    image's sentences that use it."""
    images, words = tables.images, tables.words
    rows = words[isin(words["word"], list(spec.words)) & isin(words["image_id"], images["image_id"])]
    shares = rows.pivot_table(index="image_id", columns="word", values="sentences", aggfunc="sum")
    shares = shares.reindex(index=images["image_id"].to_numpy(), columns=list(spec.words)).fillna(0.0)
    n = images.set_index("image_id")["n_sentences"].astype(float).reindex(shares.index)
    shares = shares.div(n.where(n > 0, np.nan), axis=0).fillna(0.0)
    used = (shares > spec.min_share) if spec.min_share > 0 else (shares > 0)
    inside = used.all(axis=1) if spec.match == "all" else used.any(axis=1)
    out = shares.rename(columns=lambda w: f"share_{w}").reset_index(names="image_id")
    out.insert(1, "in_slice", inside.to_numpy())
    return out


def _accuracy_row(correct: int, n: int) -> dict:
    low, high = wilson_bounds(correct, n)
    return {"n": int(n), "correct": int(correct), "accuracy": correct / n if n else None,
            "ci_low": float(low) if n else None, "ci_high": float(high) if n else None}


class WordSlice:
    """The images whose sentences use `words` (any of them, or all with match="all")."""

    def __init__(self, words: str | Iterable[str], match: str = "any", min_share: float = 0.0, name: str = "",
                 n_examples: int = 8):
        self.words = words
        self.match = match
        self.min_share = min_share
        self.name = name
        self.n_examples = n_examples

    @property
    def spec(self) -> SliceSpec:
        words = (self.words,) if isinstance(self.words, str) else tuple(self.words)
        return SliceSpec(words, self.match, self.min_share, self.name)

    @classmethod
    def from_spec(cls, spec: SliceSpec, n_examples: int = 8) -> "WordSlice":
        return cls(spec.words, spec.match, spec.min_share, spec.name, n_examples)

    def fit(self, run_or_tables: Any) -> "WordSlice":
        spec = self.spec
        tables = load_tables(run_or_tables)
        member = slice_membership(tables, spec)
        images = tables.images.merge(member, on="image_id", how="left")
        inside = images[images["in_slice"].fillna(False).astype(bool)]
        scored, rest = scored_images(inside), scored_images(images[~images["image_id"].isin(inside["image_id"])])
        right = scored["label"] == scored["prediction"]
        self.spec_ = spec
        self.tables_ = tables
        self.image_ids_ = inside["image_id"].astype(str).tolist()
        self.n_total_ = int(len(images))
        self.n_ = int(len(inside))
        row = _accuracy_row(int(right.sum()), int(len(scored)))
        self.n_scored_, self.correct_ = row["n"], row["correct"]
        self.accuracy_, self.ci_low_, self.ci_high_ = row["accuracy"], row["ci_low"], row["ci_high"]
        rest_row = _accuracy_row(int((rest["label"] == rest["prediction"]).sum()), int(len(rest)))
        self.n_rest_, self.accuracy_rest_ = rest_row["n"], rest_row["accuracy"]
        self.confusion_ = (scored.groupby(["label_name", "prediction_name"], observed=True).size()
                           .rename("images").reset_index()
                           .rename(columns={"label_name": "class", "prediction_name": "predicted_as"}))
        per_class = []
        sizes = scored_images(images).groupby("label_name", observed=True).size()
        for cls, part in scored.groupby("label_name", observed=True, sort=False):
            r = _accuracy_row(int((part["label"] == part["prediction"]).sum()), int(len(part)))
            per_class.append({"class": str(cls), **r, "share_of_class": len(part) / max(int(sizes.get(cls, 0)), 1)})
        self.per_class_ = pd.DataFrame(per_class, columns=["class", "n", "correct", "accuracy", "ci_low", "ci_high",
                                                           "share_of_class"])
        strength = inside[[c for c in inside if c.startswith("share_")]].sum(axis=1)
        order = inside.assign(_wrong=(inside["label"] != inside["prediction"]).astype(int), _strength=strength)
        order = order.sort_values(["_wrong", "_strength", "image_id"], ascending=[False, False, True])
        self.examples_ = order["image_id"].astype(str).head(self.n_examples).tolist()
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "spec_"):
            raise RuntimeError("this WordSlice is not fitted yet: call fit(run) first")

    @property
    def summary_(self) -> dict:
        """The slice as one JSON-able record (what the report exports)."""
        self._check_fitted()
        return {**self.spec_.to_dict(), "n": self.n_, "n_total": self.n_total_, "n_scored": self.n_scored_,
                "correct": self.correct_, "accuracy": self.accuracy_, "ci_low": self.ci_low_,
                "ci_high": self.ci_high_, "n_rest": self.n_rest_, "accuracy_rest": self.accuracy_rest_,
                "confusion": self.confusion_.to_dict("records"), "per_class": self.per_class_.to_dict("records"),
                "example_image_ids": list(self.examples_)}

    def compare(self, other: Any, names: tuple[str, str] = ("a", "b"), seed: int = 0) -> pd.DataFrame:
        """The slice's images (as this run defines them) under a second classifier's run of the same images.

        One row per run: run, n (slice images the run holds), correct, accuracy, ci_low, ci_high, and
        n_own_slice (the slice as the other run's own sentences define it). `attrs["gap"]` is accuracy a - b
        on the images both hold, with a paired bootstrap 95% interval (None when they share none).
        """
        self._check_fitted()
        other_tables = load_tables(other)
        own = WordSlice.from_spec(self.spec_).fit(other_tables)
        a = scored_images(self.tables_.images)
        a = a[isin(a["image_id"], self.image_ids_)].set_index("image_id")
        b = scored_images(other_tables.images)
        b = b[isin(b["image_id"], self.image_ids_)].set_index("image_id")
        rows = []
        for name, frame, n_own in ((names[0], a, self.n_), (names[1], b, own.n_)):
            r = _accuracy_row(int((frame["label"] == frame["prediction"]).sum()), int(len(frame)))
            rows.append({"run": name, **r, "n_own_slice": n_own})
        out = pd.DataFrame(rows)
        shared = a.index.intersection(b.index)
        out.attrs["gap"] = None
        if len(shared):
            ra = (a.loc[shared, "label"] == a.loc[shared, "prediction"]).to_numpy()
            rb = (b.loc[shared, "label"] == b.loc[shared, "prediction"]).to_numpy()
            out.attrs["gap"] = paired_gap(ra, rb, seed=seed)
        return out


# --- slices kept with a run ---------------------------------------------------------------------------------

def _run_path(run: Any) -> Path:
    path = getattr(run, "path", run)
    if not isinstance(path, (str, Path)):
        raise TypeError(f"run must be a core.store.Run, a RunEntry or a run folder path, got {type(run).__name__}")
    return Path(path)


def slices_file(run: Any) -> Path:
    """Where a run's saved slices live: its folder, or for a shipped run the user's overlay (never checkpoints/)."""
    from core.store import user_file

    return user_file(_run_path(run), SLICES_FILE)


def _manifest(path: Path) -> dict:
    try:
        m = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}
    return m if isinstance(m, dict) else {}


def read_slices(run: Any) -> list[SliceSpec]:
    """The slices saved with `run` (its own only), oldest first; a ValueError naming the file when it is broken."""
    path = slices_file(run)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
        return [SliceSpec.from_dict(d) for d in (data.get("slices") or [])]
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise ValueError(f"{path} cannot be read as saved slices ({exc}); fix or delete it") from exc


def _write(run: Any, specs: list[SliceSpec]) -> Path:
    from core.store import dataset_key

    path = slices_file(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"schema_version": 1, "dataset": dataset_key(_manifest(_run_path(run))),
            "updated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "slices": [s.to_dict() for s in specs]}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def save_slice(run: Any, spec: SliceSpec) -> Path:
    """Keep `spec` with `run` (replacing a slice of the same name); returns the file."""
    specs = [s for s in read_slices(run) if s.name != spec.name] + [spec]
    return _write(run, specs)


def delete_slice(run: Any, name: str) -> Path:
    """Forget the saved slice called `name`."""
    return _write(run, [s for s in read_slices(run) if s.name != name])


def same_data(manifest_a: dict, manifest_b: dict) -> bool:
    """Whether two runs explain the same dataset (any split): a slice of one applies to the other."""
    from core.store import dataset_key

    a, b = dataset_key(manifest_a), dataset_key(manifest_b)
    return bool(a["root"]) and (a["root"], a["name"], a["class_names"]) == (b["root"], b["name"], b["class_names"])


@dataclass
class SavedSlice:
    spec: SliceSpec
    source: str  # the run folder it was saved with
    own: bool  # saved with this run (else with another run of the same data)


def saved_slices(run: Any, others: Iterable[Any] = ()) -> list[SavedSlice]:
    """The slices saved with `run`, then those saved with any of `others` that explain the same data (a slice
    defined on the validation run applies to the test run and to another classifier's run). A broken file of
    another run is skipped; one of `run` itself raises ValueError."""
    path = _run_path(run)
    out = [SavedSlice(s, path.name, True) for s in read_slices(path)]
    names = {s.spec.name for s in out}
    mine = _manifest(path)
    for other in others:
        other_path = _run_path(other)
        if other_path.resolve() == path.resolve() or not same_data(mine, _manifest(other_path)):
            continue
        try:
            specs = read_slices(other_path)
        except ValueError:
            continue
        for s in specs:
            if s.name not in names:
                names.add(s.name)
                out.append(SavedSlice(s, other_path.name, False))
    return out


def slice_table(slices: Iterable[WordSlice]) -> pd.DataFrame:
    """Fitted slices side by side: name, words, n, accuracy with interval, accuracy of the rest."""
    rows = [{"slice": s.spec_.name, "images": s.n_, "share_of_run": s.n_ / max(s.n_total_, 1),
             "accuracy": s.accuracy_, "ci_low": s.ci_low_, "ci_high": s.ci_high_,
             "accuracy_rest": s.accuracy_rest_} for s in slices]
    return pd.DataFrame(rows, columns=["slice", "images", "share_of_run", "accuracy", "ci_low", "ci_high",
                                       "accuracy_rest"])


__all__ = ["MATCHES", "SLICES_FILE", "SavedSlice", "SliceSpec", "WordSlice", "delete_slice", "read_slices",
           "same_data", "save_slice", "saved_slices", "slice_membership", "slice_table", "slices_file"]
