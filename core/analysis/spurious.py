"""Spurious-term flags: words that go with the classifier misreading a class, and are not about the class.

What "flags for class X" means
------------------------------
A flag listed under class X (column `class`) is a word that is over-represented in the explanations of
X's images that the classifier gets WRONG, compared with X's images it gets RIGHT, and that is not part
of the concept of X nor of the class those images are misread as (column `predicted_as`). It is what
pulls X's images away from X and toward `predicted_as`. On Waterbirds with an ERM classifier the flags
for "landbird" are water words (water, lake, sea: landbirds misread as waterbirds are explained with
water) and the flags for "waterbird" are land words (tree, forest, grass).

Read from the other side, the same row is a word that drives the classifier toward `predicted_as`:
`flags_for("waterbird", side="toward")` lists the water words. Both readings come from one table.

How a word is scored
--------------------
For class X, wrong = X's images predicted as another class, right = X's images predicted as X.

- `z`: weighted log-odds z-score of the word in wrong vs. right (core.analysis.compare, Monroe et al.
  2008), over sentence incidences. `score` is this z.
- `z_toward`: the same z for images predicted as `predicted_as` vs. all images not predicted as it: the
  word must also go with predicting that class in general (z_toward > 0).
- Support: the word must be used by at least max(min_images, min_image_share x n_wrong) misread images,
  its mean sentence share must be at least `min_share_gap` higher in wrong than in right, and z must
  reach `min_z`; a class needs at least `min_misread` misread images to get statistical flags.
- Concept: words that describe a class's object are never flagged: WordNet synonyms, hyponyms,
  hypernyms and parts of the class name (and of its head noun: "waterbird" -> bird), plus the words a
  user marked core in a `CoreWordList`. Words a user marked spurious for X are always flagged under X.

`pair_flags_` holds the same table per (class, predicted_as) pair, for multi-class data where one
class is misread as several others. `flag_examples(run, class, word)` returns sentences behind a flag.
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from core.analysis.compare import log_odds_table, totals_from_rows
from core.analysis.distributions import image_share_matrix
from core.analysis.tables import RunTables, evaluation_split, isin, load_tables, select_images

ANNOTATIONS_FILE = "annotations.json"
ALL_CLASSES = "*"  # a CoreWordList class key that applies to every class

FLAG_COLUMNS = ["class", "predicted_as", "rank", "word", "score", "share_wrong", "share_right", "n_wrong",
                "n_right", "images_wrong", "z", "z_toward", "evidence", "example_image_ids", "source"]

__all__ = ["SpuriousTermScorer", "CoreWordList", "concept_words", "flag_examples", "spurious_share",
           "FLAG_COLUMNS", "ANNOTATIONS_FILE", "ALL_CLASSES"]


# --- the concept of a class ------------------------------------------------------------------------

def _wordnet():
    import core  # noqa: F401  (points NLTK at the project's WordNet)
    from nltk.corpus import wordnet as wn

    wn.ensure_loaded()
    return wn


def _single_words(lemmas: Iterable[str]) -> set[str]:
    # Multi-word lemmas are skipped on purpose: "sea_gull" must not make "sea" a bird word.
    return {name.lower() for name in lemmas if name.isalpha()}


def _concept_cache_file() -> Path:
    from core import paths

    return paths.ASSETS / "cache" / "concept_words.json"


def _wordnet_stamp() -> str | None:
    """Which WordNet is installed (path, size and mtime of its noun data), without loading it."""
    try:
        import core  # noqa: F401
        import nltk

        data = Path(str(nltk.data.find("corpora/wordnet"))) / "data.noun"
        st = data.stat()
        return f"{data}:{st.st_size}:{st.st_mtime_ns}"
    except (LookupError, OSError, ImportError):
        return None


def _read_concept_cache(stamp: str) -> dict:
    try:
        cached = json.loads(_concept_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return cached.get("words", {}) if isinstance(cached, dict) and cached.get("wordnet") == stamp else {}


def _write_concept_cache(stamp: str, class_name: str, words: frozenset[str]) -> None:
    path = _concept_cache_file()
    entries = {**_read_concept_cache(stamp), class_name: sorted(words)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"wordnet": stamp, "words": entries}))
        os.replace(tmp, path)
    except OSError:  # a read-only checkout still works, it only recomputes
        pass


@lru_cache(maxsize=4096)
def concept_words(class_name: str, use_wordnet: bool = True) -> frozenset[str]:
    """Words that describe the object of a class: the name, its head noun and, from WordNet, their
    synonyms, hyponyms (kinds of it), hypernyms (what it is a kind of) and parts.

    For a one-word compound like "waterbird" or "landbird" the head is the longest proper suffix that
    WordNet knows ("bird"); the modifier ("water", "land") is deliberately left out. ImageNet-style names
    ("tabby, tabby cat") are split at commas. Without WordNet only the names themselves are returned.

    Loading WordNet takes ~10 s, which made the dashboard's first page slow; the result for each
    class name is therefore kept in `.assets/cache/concept_words.json`, tied to the installed WordNet.
    """
    if not isinstance(class_name, str) or not class_name.strip():
        raise ValueError(f"class_name must be a non-empty string, got {class_name!r}")
    stamp = _wordnet_stamp() if use_wordnet else None
    if stamp and class_name in (cached := _read_concept_cache(stamp)):
        return frozenset(cached[class_name])
    words, from_wordnet = _concept_words(class_name, use_wordnet)
    if stamp and from_wordnet:
        _write_concept_cache(stamp, class_name, words)
    return words


def _concept_words(class_name: str, use_wordnet: bool) -> tuple[frozenset[str], bool]:
    """concept_words computed afresh, and whether WordNet was used."""
    words: set[str] = set()
    try:
        wn = _wordnet() if use_wordnet else None
    except (LookupError, ImportError) as exc:
        warnings.warn(f"WordNet is not available ({exc}); concept words fall back to the class name only")
        wn = None
    for alternative in (a.strip().lower() for a in class_name.split(",")):
        tokens = re.findall(r"[a-z]+", alternative)
        if not tokens:
            continue
        words.add("".join(tokens) if len(tokens) == 1 else tokens[-1])
        words.add(tokens[-1])
        if wn is None:
            continue
        synsets = wn.synsets("_".join(tokens), pos="n")[:1]
        if len(tokens) > 1:
            head = tokens[-1]
        else:
            word = tokens[0]
            head = next((word[i:] for i in range(1, len(word) - 2) if wn.synsets(word[i:], pos="n")), None)
        if head:
            words.add(head)
            synsets += wn.synsets(head, pos="n")[:1]
        for synset in synsets:
            words |= _single_words(synset.lemma_names())
            for kind in synset.closure(lambda s: s.hyponyms()):
                words |= _single_words(kind.lemma_names())
            ancestors = [s for path in synset.hypernym_paths() for s in path]
            for ancestor in ancestors:
                words |= _single_words(ancestor.lemma_names())
            # Parts of the thing and of its nearest ancestors ("waterfowl" has a bird's wings).
            for near in [synset, *[p[-2] for p in synset.hypernym_paths() if len(p) > 1],
                         *[p[-3] for p in synset.hypernym_paths() if len(p) > 2]]:
                for part in near.part_meronyms() + near.substance_meronyms() + near.member_meronyms():
                    words |= _single_words(part.lemma_names())
    return frozenset(words), wn is not None


# --- the user's core / spurious marks ----------------------------------------------------------------

class CoreWordList:
    """Per-class words a user marked as core (never flag) or spurious (always flag), saved as JSON.

    The marks live under the key "core_words" of the JSON file (by default `<run>/annotations.json`), so
    other annotations in the same file are kept. With `autosave` every mark is written at once:

        marks = CoreWordList.for_run(run)
        marks.mark_spurious("landbird", "water")
        marks.mark_core("waterbird", "duck")
        marks.mark_core("*", "photo")          # "*" applies to every class
    """

    KEY = "core_words"
    VERSION = 1

    def __init__(self, path: str | Path | None = None, core: dict | None = None, spurious: dict | None = None,
                 autosave: bool = True):
        self.path = Path(path) if path is not None else None
        self.autosave = autosave
        self._core = {str(c): {self._norm(w) for w in ws} for c, ws in (core or {}).items()}
        self._spurious = {str(c): {self._norm(w) for w in ws} for c, ws in (spurious or {}).items()}

    # construction -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, autosave: bool = True) -> "CoreWordList":
        """The marks stored at `path`, or an empty list bound to it when the file does not exist yet."""
        path = Path(path)
        if not path.exists():
            return cls(path, autosave=autosave)
        try:
            data = json.loads(path.read_text() or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); fix or delete it") from exc
        block = data.get(cls.KEY, {}) if isinstance(data, dict) else {}
        if not isinstance(block, dict):
            raise ValueError(f"{path}: '{cls.KEY}' must be an object with 'core' and 'spurious', got {block!r}")
        return cls(path, block.get("core", {}), block.get("spurious", {}), autosave=autosave)

    @classmethod
    def for_run(cls, run: Any, autosave: bool = True) -> "CoreWordList":
        """The marks saved for a run: its annotations.json, or for a shipped run the user's copy of it.

        A shipped run's folder is tracked by git, so marks made on it are saved under the user's runs
        (core.store.user_file), starting from the marks that ship with it, if any.
        """
        from core.store import user_file

        path = getattr(run, "path", None)
        if path is None:
            raise TypeError(f"run must be a core.store.Run (with a path), got {type(run).__name__}")
        mine, shipped = user_file(path, ANNOTATIONS_FILE), Path(path) / ANNOTATIONS_FILE
        if mine.exists() or not shipped.exists():
            return cls.load(mine, autosave=autosave)
        marks = cls.load(shipped, autosave=autosave)
        marks.path = mine
        return marks

    # marks ----------------------------------------------------------------------------------------
    @staticmethod
    def _norm(word: str) -> str:
        if not isinstance(word, str) or not word.strip():
            raise ValueError(f"word must be a non-empty string, got {word!r}")
        return word.strip().lower()

    @staticmethod
    def _cls(class_name: str) -> str:
        if not isinstance(class_name, str) or not class_name.strip():
            raise ValueError(f"class_name must be a non-empty string (or '*' for all classes), got {class_name!r}")
        return class_name.strip()

    def mark_core(self, class_name: str, word: str) -> None:
        """`word` describes `class_name`'s object: never flag it under that class."""
        c, w = self._cls(class_name), self._norm(word)
        self._spurious.get(c, set()).discard(w)
        self._core.setdefault(c, set()).add(w)
        self._changed()

    def mark_spurious(self, class_name: str, word: str) -> None:
        """`word` is a spurious cue for `class_name`: always flag it under that class."""
        c, w = self._cls(class_name), self._norm(word)
        self._core.get(c, set()).discard(w)
        self._spurious.setdefault(c, set()).add(w)
        self._changed()

    def unmark(self, class_name: str, word: str) -> None:
        """Forget any mark of `word` for `class_name`."""
        c, w = self._cls(class_name), self._norm(word)
        self._core.get(c, set()).discard(w)
        self._spurious.get(c, set()).discard(w)
        self._changed()

    def core(self, class_name: str) -> set[str]:
        """Words marked core for `class_name`, including those marked for every class."""
        return set(self._core.get(class_name, set())) | set(self._core.get(ALL_CLASSES, set()))

    def spurious(self, class_name: str) -> set[str]:
        """Words marked spurious for `class_name`, including those marked for every class."""
        return set(self._spurious.get(class_name, set())) | set(self._spurious.get(ALL_CLASSES, set()))

    def status(self, class_name: str, word: str) -> str | None:
        """"core", "spurious" or None."""
        w = self._norm(word)
        return "core" if w in self.core(class_name) else "spurious" if w in self.spurious(class_name) else None

    def to_dict(self) -> dict:
        return {"schema_version": self.VERSION,
                "core": {c: sorted(ws) for c, ws in sorted(self._core.items()) if ws},
                "spurious": {c: sorted(ws) for c, ws in sorted(self._spurious.items()) if ws}}

    # persistence ----------------------------------------------------------------------------------
    def save(self, path: str | Path | None = None) -> Path:
        """Write the marks (atomically), keeping any other keys already in the file."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("this CoreWordList has no path; pass save(path=...)")
        data = {}
        if target.exists():
            try:
                data = json.loads(target.read_text() or "{}")
            except json.JSONDecodeError:
                data = {}
        data = data if isinstance(data, dict) else {}
        data[self.KEY] = self.to_dict()
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, target)
        self.path = target
        return target

    def _changed(self) -> None:
        if self.autosave and self.path is not None:
            self.save()

    def __repr__(self) -> str:
        n_core = sum(map(len, self._core.values()))
        n_spur = sum(map(len, self._spurious.values()))
        return f"CoreWordList(path={self.path}, core={n_core} words, spurious={n_spur} words)"


# --- the scorer ------------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"


class SpuriousTermScorer:
    """Flags words that pull a class's images toward another class (see the module docstring).

    Parameters (defaults suit a few hundred to tens of thousands of images):
        split: images to score on; "auto" = the test split when there is one, else all; None = all.
        min_misread: a class needs this many misread images to get statistical flags.
        min_images, min_image_share: a flag needs at least max(min_images, min_image_share * n_wrong)
            misread images that use the word (so a word seen in one image never wins).
        min_share_gap: mean sentence share in misread images minus in correctly read ones, at least.
        min_z: log-odds z of misread vs. correctly read, at least.
        prior_strength: weight of the log-odds prior (see compare_word_sets).
        core_words: a CoreWordList, a path to its JSON, or None = the run's annotations.json (if any).
        use_wordnet: use WordNet for the concept check (else only user marks and the class names).
        n_examples: example image ids per flag.

    Learned: classes_, split_, flags_, pair_flags_, scores_ (every scored word with the reason it was or
    was not flagged), pair_scores_, misread_ (per class and pair: n_wrong, n_right, whether scored),
    concept_words_ (class -> WordNet/name concept words), core_words_ (the CoreWordList used).
    """

    def __init__(self, split: str | None = "auto", min_misread: int = 5, min_images: int = 5,
                 min_image_share: float = 0.1, min_share_gap: float = 0.05, min_z: float = 2.0,
                 prior_strength: float = 0.1, core_words: CoreWordList | str | Path | None = None,
                 use_wordnet: bool = True, n_examples: int = 3):
        self.split = split
        self.min_misread = min_misread
        self.min_images = min_images
        self.min_image_share = min_image_share
        self.min_share_gap = min_share_gap
        self.min_z = min_z
        self.prior_strength = prior_strength
        self.core_words = core_words
        self.use_wordnet = use_wordnet
        self.n_examples = n_examples

    def _check_params(self) -> None:
        for name in ("min_misread", "min_images", "n_examples"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0 <= self.min_image_share <= 1:
            raise ValueError(f"min_image_share must be in [0, 1], got {self.min_image_share!r}")
        if not -1 <= self.min_share_gap <= 1:
            raise ValueError(f"min_share_gap must be in [-1, 1], got {self.min_share_gap!r}")
        if not isinstance(self.core_words, (CoreWordList, str, Path, type(None))):
            raise TypeError("core_words must be a CoreWordList, a path to its JSON file or None, "
                            f"got {type(self.core_words).__name__}")

    def _core_list(self, tables: RunTables) -> CoreWordList:
        if isinstance(self.core_words, CoreWordList):
            return self.core_words
        if self.core_words is not None:
            return CoreWordList.load(self.core_words)
        if tables.run is not None:
            return CoreWordList.for_run(tables.run)
        return CoreWordList()

    # fitting --------------------------------------------------------------------------------------
    def fit(self, run_or_tables: Any) -> "SpuriousTermScorer":
        """Score every word of every class's misread images; keep the flags."""
        self._check_params()
        tables = load_tables(run_or_tables)
        self.split_ = evaluation_split(tables.images, self.split)
        images = select_images(tables.images, split=self.split_) if self.split_ else tables.images
        images = images[images["label"].notna() & images["prediction"].notna()
                        & (images["n_sentences"].fillna(0) > 0)]
        images = images.assign(label=images["label"].astype(int), prediction=images["prediction"].astype(int))
        names = tables.class_names
        self.classes_ = names
        self.core_words_ = self._core_list(tables)
        self.concept_words_ = {n: concept_words(n, self.use_wordnet) for n in names}
        words = tables.words[isin(tables.words["image_id"], images["image_id"])]
        # One (image, word) table for every contrast below; contrasts are then masks on label/prediction.
        shares = image_share_matrix(words, images, keep=("label", "prediction"))
        self._shares = shares.assign(word=shares["word"].astype("category"))
        self._n_predicted = images["prediction"].value_counts()
        self._images, self._n_images = images, len(images)
        self._toward_cache: dict[int, pd.Series] = {}

        class_frames, pair_frames, misread = [], [], []
        for t in sorted(images["label"].unique()):
            t_images = images[images["label"] == t]
            n_right = int((t_images["prediction"] == t).sum())
            confusers = t_images.loc[t_images["prediction"] != t, "prediction"].value_counts()
            n_wrong = int(confusers.sum())
            scored = n_wrong >= self.min_misread and n_right >= 1
            misread.append({"class": names[t], "predicted_as": None, "n_wrong": n_wrong, "n_right": n_right,
                            "scored": scored})
            class_frames.append(self._contrast(int(t), None, scored))
            for p, n in confusers.items():
                pair_scored = n >= self.min_misread and n_right >= 1
                misread.append({"class": names[t], "predicted_as": names[p], "n_wrong": int(n),
                                "n_right": n_right, "scored": pair_scored})
                pair_frames.append(self._contrast(int(t), int(p), pair_scored))
        self.misread_ = pd.DataFrame(misread, columns=["class", "predicted_as", "n_wrong", "n_right", "scored"])
        self.scores_ = self._concat(class_frames)
        self.pair_scores_ = self._concat(pair_frames)
        self.flags_ = self._flags(self.scores_, single_target=False)
        self.pair_flags_ = self._flags(self.pair_scores_, single_target=True)
        del self._shares, self._toward_cache, self._n_predicted, self._images, self._n_images
        return self

    @staticmethod
    def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=_SCORE_COLUMNS)

    def _toward_z(self, p: int) -> pd.Series:
        """word -> log-odds z of images predicted as p vs. images not predicted as p."""
        if p not in self._toward_cache:
            rows = self._shares
            n_pos = int(self._n_predicted.get(p, 0))
            n_neg = self._n_images - n_pos
            if n_pos and n_neg:
                mask = (rows["prediction"] == p).to_numpy()
                cmp = log_odds_table(totals_from_rows(rows[mask], n_pos), totals_from_rows(rows[~mask], n_neg),
                                     n_pos, n_neg, prior_strength=self.prior_strength)
                self._toward_cache[p] = cmp.set_index("word")["z"]
            else:
                self._toward_cache[p] = pd.Series(dtype=float)
        return self._toward_cache[p]

    def _contrast(self, t: int, p: int | None, scored: bool) -> pd.DataFrame:
        """Every word of class t's images scored for misread (as p, or as anything) vs. correctly read."""
        names = self.classes_
        t_name = names[t]
        user_spurious = self.core_words_.spurious(t_name)
        rows = self._shares[(self._shares["label"] == t).to_numpy()]
        right_mask = (rows["prediction"] == t).to_numpy()
        wrong_mask = (rows["prediction"] == p).to_numpy() if p is not None else ~right_mask
        images = self._images[self._images["label"] == t]
        n_right = int((images["prediction"] == t).sum())
        n_wrong = int((images["prediction"] == p).sum()) if p is not None else len(images) - n_right
        if n_wrong == 0 or n_right == 0:
            return pd.DataFrame(columns=_SCORE_COLUMNS)
        wrong_rows = rows[wrong_mask]
        cmp = log_odds_table(totals_from_rows(wrong_rows, n_wrong), totals_from_rows(rows[right_mask], n_right),
                             n_wrong, n_right, prior_strength=self.prior_strength)
        cmp = cmp[cmp["images_a"] > 0]  # a flag must appear in misread images
        if p is None:
            # The class the word's misread images were most often taken for.
            counts = wrong_rows.groupby(["word", "prediction"], observed=True).size().reset_index(name="n")
            top = counts.sort_values(["n", "prediction"], ascending=[False, True]).drop_duplicates("word")
            target = cmp["word"].map(pd.Series(top["prediction"].to_numpy(), index=top["word"].astype(str)))
        else:
            target = pd.Series(p, index=cmp.index)
        z_toward = pd.Series(np.nan, index=cmp.index)
        for q in target.dropna().unique():
            sel = target == q
            z_toward[sel] = cmp.loc[sel, "word"].map(self._toward_z(int(q))).to_numpy()
        n_wrong_kinds = int(images.loc[images["prediction"] != t, "prediction"].nunique()) if p is None else 1
        out = pd.DataFrame({
            "class": t_name, "predicted_as": target.map(lambda q: names[int(q)]),
            "word": cmp["word"], "score": cmp["z"], "share_wrong": cmp["share_a"], "share_right": cmp["share_b"],
            "n_wrong": n_wrong, "n_right": n_right, "images_wrong": cmp["images_a"],
            "images_right": cmp["images_b"], "z": cmp["z"], "z_toward": z_toward, "delta": cmp["delta"],
            "n_wrong_kinds": n_wrong_kinds})

        # Why each word is, or is not, a flag; the first reason that applies wins.
        concept_t = self.concept_words_[t_name]
        user_core_t = self.core_words_.core(t_name)
        target_core = {q: self.concept_words_.get(q, frozenset()) | self.core_words_.core(q)
                       for q in out["predicted_as"].dropna().unique()}
        describes_target = np.array([q in target_core and w in target_core[q]
                                     for w, q in zip(out["word"], out["predicted_as"])], dtype=bool)
        need = max(self.min_images, math.ceil(self.min_image_share * n_wrong))
        is_user_spurious = out["word"].isin(user_spurious)
        conditions = [
            is_user_spurious,
            out["word"].isin(user_core_t),
            out["word"].isin(concept_t),
            describes_target,
            pd.Series(not scored, index=out.index),
            out["images_wrong"] < need,
            (out["share_wrong"] - out["share_right"]) < self.min_share_gap,
            out["z"] < self.min_z,
            ~(out["z_toward"] > 0),
        ]
        reasons = [
            "marked spurious by the user",
            "marked core by the user",
            f"describes {t_name} (concept word)",
            "describes the class it is misread as (concept word)",
            f"too few misread images (< {self.min_misread})",
            f"used by fewer than {need} misread images",
            f"share gap below {self.min_share_gap:.0%}",
            f"z below {self.min_z:g}",
            "not linked to predicting that class",
        ]
        out["reason"] = np.select(conditions, reasons, default="flagged")
        out["flagged"] = is_user_spurious | (out["reason"] == "flagged")
        out["source"] = np.where(is_user_spurious, "user", "statistics")
        # User-marked spurious words that no misread image uses are still flagged, with no statistics.
        missing = sorted(user_spurious - set(out["word"]))
        if missing:
            extra = pd.DataFrame({"class": t_name, "predicted_as": names[p] if p is not None else None,
                                  "word": missing, "n_wrong": n_wrong, "n_right": n_right,
                                  "n_wrong_kinds": n_wrong_kinds,
                                  "reason": "marked spurious by the user", "flagged": True, "source": "user"})
            out = pd.concat([out, extra], ignore_index=True)
        return out.sort_values(["score", "word"], ascending=[False, True], na_position="last",
                               kind="stable").reset_index(drop=True)[_SCORE_COLUMNS]

    def _flags(self, scores: pd.DataFrame, single_target: bool) -> pd.DataFrame:
        flags = scores[scores["flagged"].astype(bool)].copy()
        if flags.empty:
            return pd.DataFrame(columns=FLAG_COLUMNS)
        flags["evidence"] = [self._evidence(r, single_target) for r in flags.itertuples(index=False)]
        flags["example_image_ids"] = self._examples(flags)
        flags = flags.sort_values(["class", "score", "word"], ascending=[True, False, True], na_position="last",
                                  kind="stable")
        order = {n: i for i, n in enumerate(self.classes_)}
        flags = flags.assign(_o=flags["class"].map(order)).sort_values("_o", kind="stable").drop(columns="_o")
        flags["rank"] = flags.groupby("class", sort=False).cumcount() + 1
        return flags[FLAG_COLUMNS].reset_index(drop=True)

    @staticmethod
    def _evidence(r: Any, single_target: bool) -> str:
        cls, target = r[0], r[1]
        if pd.isna(r.share_wrong):
            return (f"'{r.word}' was marked spurious for {cls} by the user; no misread {cls} image "
                    "uses it in this run")
        if single_target or r.n_wrong_kinds == 1:
            wrong = f"{cls} images predicted as {target}"
        else:
            wrong = f"{cls} images predicted wrongly (mostly as {target})"
        text = (f"'{r.word}' is in {_pct(r.share_wrong)} of sentences for {wrong}, {_pct(r.share_right)} for "
                f"{cls} images predicted correctly ({int(r.images_wrong)} of {int(r.n_wrong)} misread images "
                "use it)")
        return text + (" — marked spurious by the user" if r.source == "user" else "")

    def _examples(self, flags: pd.DataFrame) -> list[list[str]]:
        """Per flag, the misread images whose explanations use the word most."""
        names = self.classes_
        rows = self._shares[self._shares["word"].isin(flags["word"].tolist())]
        rows = rows[rows["label"] != rows["prediction"]]
        rows = rows.assign(class_name=rows["label"].map(lambda v: names[int(v)]),
                           target=rows["prediction"].map(lambda v: names[int(v)]))
        out = []
        for r in flags.itertuples(index=False):
            sel = rows[(rows["class_name"] == r[0]) & (rows["word"] == r.word)]
            if r.predicted_as is not None and r.n_wrong_kinds == 1:
                sel = sel[sel["target"] == r.predicted_as]
            sel = sel.sort_values(["share", "image_id"], ascending=[False, True]).head(self.n_examples)
            out.append([str(i) for i in sel["image_id"]])
        return out

    # reading --------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "flags_"):
            raise RuntimeError("this SpuriousTermScorer is not fitted yet; call fit(run) first")

    def flags_for(self, class_name: str, side: str = "misread", k: int | None = None) -> pd.DataFrame:
        """Flags of one class. side="misread": words that pull `class_name`'s images away (rows whose
        `class` is it); side="toward": words that pull other classes' images toward it (`predicted_as`)."""
        self._check_fitted()
        if class_name not in self.classes_:
            raise ValueError(f"class_name {class_name!r} is not a class of this run; classes: {self.classes_}")
        if side not in ("misread", "toward"):
            raise ValueError(f"side must be 'misread' or 'toward', got {side!r}")
        column = "class" if side == "misread" else "predicted_as"
        rows = self.flags_[self.flags_[column] == class_name]
        if side == "toward":
            rows = rows.sort_values("score", ascending=False, na_position="last", kind="stable")
        return (rows.head(k) if k else rows).reset_index(drop=True)

    def flagged_words(self, k: int | None = None) -> dict[str, list[str]]:
        """class -> its flagged words, best first (the top `k` when given)."""
        self._check_fitted()
        return {c: self.flags_for(c, k=k)["word"].tolist() for c in self.classes_}

    def transform(self, run_or_tables: Any, k: int | None = None) -> pd.DataFrame:
        """Per image: how much its explanations use its own class's flagged words (see spurious_share)."""
        self._check_fitted()
        tables = load_tables(run_or_tables)
        share = spurious_share(tables, self.flagged_words(k))
        return tables.images[["image_id", "label"]].assign(spurious_share=share.to_numpy())


_SCORE_COLUMNS = ["class", "predicted_as", "word", "score", "share_wrong", "share_right", "n_wrong", "n_right",
                  "images_wrong", "images_right", "z", "z_toward", "delta", "n_wrong_kinds", "reason", "flagged",
                  "source"]


def spurious_share(run_or_tables: Any, words_by_class: dict[str, Iterable[str]]) -> pd.Series:
    """Per image (aligned with the images table), the summed sentence share of its true class's words,
    capped at 1: an upper bound on the share of its sentences that use any of them (0 when none do)."""
    tables = load_tables(run_or_tables)
    if not isinstance(words_by_class, dict):
        raise TypeError(f"words_by_class must be a dict of class name -> words, got {type(words_by_class).__name__}")
    names = tables.class_names
    unknown = [c for c in words_by_class if c not in names]
    if unknown:
        raise ValueError(f"words_by_class has classes {unknown} that this run does not have; classes: {names}")
    pairs = pd.DataFrame([(names.index(c), w) for c, ws in words_by_class.items() for w in ws],
                         columns=["label", "word"])
    images = tables.images
    if pairs.empty:
        return pd.Series(0.0, index=images.index, name="spurious_share")
    rows = image_share_matrix(tables.words, images, keep=("label",))
    rows = rows.merge(pairs, on=["label", "word"], how="inner")
    per_image = rows.groupby("image_id")["share"].sum().clip(upper=1.0)
    return images["image_id"].map(per_image).fillna(0.0).rename("spurious_share")


def flag_examples(run: Any, class_name: str, word: str, k: int = 5, misread_only: bool = False) -> pd.DataFrame:
    """Up to `k` sampled sentences that use `word`, from images of `class_name` (misread images first,
    one sentence per image before a second one from the same image).

    Columns: image_id, label_name, prediction_name, outcome, idx, text. Needs a Run (or RunTables made
    from one): sentences are read from its store. `misread_only` keeps only misread images.
    """
    tables = load_tables(run)
    if tables.run is None:
        raise TypeError("flag_examples needs a core.store.Run (sentences live in its store), got tables only")
    if not isinstance(word, str) or not word.strip():
        raise ValueError(f"word must be a non-empty string, got {word!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    names = tables.class_names
    if class_name not in names:
        raise ValueError(f"class_name {class_name!r} is not a class of this run; classes: {names}")
    word = word.strip().lower()
    images = tables.images[tables.images["label"] == names.index(class_name)]
    if misread_only:
        images = images[images["prediction"] != images["label"]]
    rows = image_share_matrix(tables.words[tables.words["word"] == word], images, keep=("label", "prediction"))
    columns = ["image_id", "label_name", "prediction_name", "outcome", "idx", "text"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.assign(misread=rows["label"] != rows["prediction"])
    rows = rows.sort_values(["misread", "share", "image_id"], ascending=[False, False, True]).head(max(4 * k, 20))
    rank = {i: n for n, i in enumerate(rows["image_id"])}
    sentences = tables.run.sentences(list(rank))
    pattern = re.compile(rf"\b{re.escape(word)}(?:s|es)?\b", re.IGNORECASE)
    sentences = sentences[sentences["text"].astype(str).str.contains(pattern)]
    if sentences.empty:
        return pd.DataFrame(columns=columns)
    sentences = sentences.assign(_rank=sentences["image_id"].map(rank))
    sentences["_nth"] = sentences.sort_values(["_rank", "idx"]).groupby("image_id").cumcount()
    sentences = sentences.sort_values(["_nth", "_rank", "idx"]).head(k)
    info = images.set_index("image_id")
    out = sentences.assign(
        label_name=sentences["image_id"].map(info["label_name"]) if "label_name" in info else class_name,
        prediction_name=sentences["image_id"].map(info["prediction_name"]) if "prediction_name" in info else None,
        outcome=np.where(sentences["image_id"].map(info["label"]) == sentences["image_id"].map(info["prediction"]),
                         "correct", "wrong"))
    return out[columns].reset_index(drop=True)
