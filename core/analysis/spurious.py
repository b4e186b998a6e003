"""Spurious-term flags in two views: words that go with a class being misread (the error view), and words a
classifier has tied to a class whether or not it has cost accuracy yet (the association view).

The error view: what "flags for class X" means
-----------------------------------------------
A flag listed under class X (column `class`) is a word that is over-represented in the explanations of
X's images that the classifier gets WRONG, compared with X's images it gets RIGHT, and that is not part
of the concept of any class (X, the class those images are misread as, shown in `predicted_as`, or any
other). It is what pulls X's images away from X and toward `predicted_as`. On Waterbirds with an ERM
classifier the flags for "landbird" are water words (water, lake, sea: landbirds misread as waterbirds
are explained with water) and the flags for "waterbird" are land words (tree, forest, grass).

Read from the other side, the same row is a word that drives the classifier toward `predicted_as`:
`flags_for("waterbird", side="toward")` lists the water words. Both readings come from one table.

The association view: flags before the errors show
--------------------------------------------------
A mildly biased classifier misreads only a handful of images, too few to test words on. The association
view asks another question of all the images: which words are over-represented in the explanations of
images predicted as X (`association_by="prediction"`, or labelled X with "label"), relative to images of
the other classes, without describing any class's object? On Waterbirds: water words for waterbird, land
words for landbird. Where the dataset has true groups (class x attribute), each association flag is
confirmed by its share gap between groups of the same class ("water: 41% of sentences for landbird ·
background: water vs 6% for landbird · background: land"): a word that follows the attribute within a
class, rather than the class, is a shortcut. Confirmed flags rank first. `associations_` holds them.

How a word is scored
--------------------
- `z`: weighted log-odds z-score of the word in one set of images vs. another (core.analysis.compare,
  Monroe et al. 2008), over sentence incidences. `score` is this z. Error view: X's misread vs X's read
  right, and `z_toward` (the word also goes with predicting `predicted_as` in general, > 0). Association
  view: images predicted as X vs. the rest.
- Support adapts to the number of images: a flag needs max(min(min_images, max(2, n/2)), min_image_share
  x n) of the n images it is about to use it (misread images in the error view; with 4 misread images,
  2 must use it, with 100, 10); its mean sentence share must be at least `min_share_gap` higher, and z
  must reach `min_z`. The error view needs at least `min_misread` misread images; `notes_` says why a
  class got no flags in a view.
- Concept: words that describe a class's object are never flagged: WordNet synonyms, hyponyms,
  hypernyms and parts of each class name (and of its head noun: "waterbird" -> bird), plus the words a
  user marked core in a `CoreWordList`. Words a user marked spurious for X are always flagged under X.
- Visual meaning (`visual_only`): a flag must name something one can see. A word's most common WordNet
  sense must be a physical thing (a noun under physical entity), a visual property (colour, ...), or an
  adjective tied to one ("misty" -> mist, "wooden" -> wood, "black" -> colour); "great" (most often
  "relatively large" or "very good") and "close" (most often the verb) are not flagged.

`pair_flags_` holds the error view per (class, predicted_as) pair, for multi-class data where one
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

from core.analysis.aggregates import query, share_sums, totals
from core.analysis.compare import log_odds_table
from core.analysis.tables import RunTables, evaluation_split, load_tables

ANNOTATIONS_FILE = "annotations.json"
ALL_CLASSES = "*"  # a CoreWordList class key that applies to every class

FLAG_COLUMNS = ["class", "predicted_as", "rank", "word", "score", "share_wrong", "share_right", "n_wrong",
                "n_right", "images_wrong", "z", "z_toward", "evidence", "example_image_ids", "source"]
ASSOCIATION_COLUMNS = ["class", "rank", "word", "score", "share_class", "share_other", "n_class", "n_other",
                       "images_class", "z", "images_misread", "n_misread", "group_gap", "group_high", "group_low",
                       "share_group_high", "share_group_low", "confirmed", "evidence", "example_image_ids", "source"]
NOTE_COLUMNS = ["class", "view", "n_flags", "reason"]
VIEWS = ("error", "association")

__all__ = ["SpuriousTermScorer", "CoreWordList", "concept_words", "visual_meaning", "flag_examples",
           "spurious_share", "FLAG_COLUMNS", "ASSOCIATION_COLUMNS", "NOTE_COLUMNS", "ANNOTATIONS_FILE",
           "ALL_CLASSES"]


# --- the concept of a class ------------------------------------------------------------------------

def _single_words(lemmas: Iterable[str]) -> set[str]:
    # Multi-word lemmas are skipped on purpose: "sea_gull" must not make "sea" a bird word.
    return {name.lower() for name in lemmas if name.isalpha()}


def _concept_cache_file() -> Path:
    from core import paths

    return paths.ASSETS / "cache" / "concept_words.json"


def _wordnet_stamp() -> str | None:
    """Which WordNet is installed (path, size and mtime of its noun data), without loading it."""
    try:
        import nltk

        import core  # noqa: F401

        data = Path(str(nltk.data.find("corpora/wordnet"))) / "data.noun"
        st = data.stat()
        return f"{data}:{st.st_size}:{st.st_mtime_ns}"
    except (LookupError, OSError, ImportError):
        return None


def _read_cache_file(stamp: str) -> dict:
    try:
        cached = json.loads(_concept_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return cached if isinstance(cached, dict) and cached.get("wordnet") == stamp else {}


def _read_concept_cache(stamp: str) -> dict:
    return _read_cache_file(stamp).get("words", {})


def _write_cache(stamp: str, key: str, entries: dict) -> None:
    path = _concept_cache_file()
    cached = _read_cache_file(stamp)
    cached.update({"wordnet": stamp, key: {**cached.get(key, {}), **entries}})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached))
        os.replace(tmp, path)
    except OSError:  # a read-only checkout still works, it only recomputes
        pass


def _write_concept_cache(stamp: str, class_name: str, words: frozenset[str]) -> None:
    _write_cache(stamp, "words", {class_name: sorted(words)})


@lru_cache(maxsize=4096)
def concept_words(class_name: str, use_wordnet: bool = True, synset: str | None = None) -> frozenset[str]:
    """Words that describe the object of a class: the name, its head noun and, from WordNet, their
    synonyms, hyponyms (kinds of it), hypernyms (what it is a kind of) and parts.

    For a one-word compound like "waterbird" or "landbird" the head is the longest proper suffix that
    WordNet knows ("bird"); the modifier ("water", "land") is deliberately left out. ImageNet-style names
    ("tabby, tabby cat") are split at commas. Without WordNet only the names themselves are returned.

    A name's first WordNet sense is not always the one a dataset means ("primate" is first an archbishop):
    `synset`, a noun synset's id ("n02469914") from a dataset that knows its classes' synsets, replaces
    the name's senses (the name itself stays a concept word).

    Loading WordNet takes ~10 s, which made the dashboard's first page slow; the result for each
    class name is therefore kept in `.assets/cache/concept_words.json`, tied to the installed WordNet.
    """
    if not isinstance(class_name, str) or not class_name.strip():
        raise ValueError(f"class_name must be a non-empty string, got {class_name!r}")
    from core.data.description import is_wnid

    if synset is not None and not is_wnid(synset):
        raise ValueError(f"synset must be a WordNet noun id like 'n02469914', got {synset!r}")
    key = f"{class_name}|{synset}" if synset else class_name
    stamp = _wordnet_stamp() if use_wordnet else None
    if stamp and key in (cached := _read_concept_cache(stamp)):
        return frozenset(cached[key])
    words, from_wordnet = _concept_words(class_name, use_wordnet, synset)
    if stamp and from_wordnet:
        _write_concept_cache(stamp, key, words)
    return words


def _concept_words(class_name: str, use_wordnet: bool, synset: str | None = None) -> tuple[frozenset[str], bool]:
    """concept_words computed afresh, and whether WordNet was used."""
    words: set[str] = set()
    from core.data.description import load_wordnet, wordnet_synset

    wn = load_wordnet() if use_wordnet else None
    if use_wordnet and wn is None:
        warnings.warn("WordNet is not installed; concept words fall back to the class name only")
    for alternative in (a.strip().lower() for a in class_name.split(",")):
        tokens = re.findall(r"[a-z]+", alternative)
        if not tokens:
            continue
        words.add("".join(tokens) if len(tokens) == 1 else tokens[-1])
        words.add(tokens[-1])
        if wn is None:
            continue
        if synset:  # the dataset's sense, not the name's
            if (sense := wordnet_synset(wn, synset)) is None:
                raise ValueError(f"class {class_name!r}: {synset} is no WordNet noun synset")
            words |= _synset_words(sense)
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
        for sense in synsets:
            words |= _synset_words(sense)
    return frozenset(words), wn is not None


def _synset_words(synset) -> set[str]:
    """A sense's lemmas, its hyponyms' (kinds of it), its hypernyms' (what it is a kind of) and parts."""
    words = set(_single_words(synset.lemma_names()))
    for kind in synset.closure(lambda s: s.hyponyms()):
        words |= _single_words(kind.lemma_names())
    for ancestor in (s for path in synset.hypernym_paths() for s in path):
        words |= _single_words(ancestor.lemma_names())
    # Parts of the thing and of its nearest ancestors ("waterfowl" has a bird's wings).
    for near in [synset, *[p[-2] for p in synset.hypernym_paths() if len(p) > 1],
                 *[p[-3] for p in synset.hypernym_paths() if len(p) > 2]]:
        for part in near.part_meronyms() + near.substance_meronyms() + near.member_meronyms():
            words |= _single_words(part.lemma_names())
    return words


# --- does a word name something visible? -------------------------------------------------------------

_PHYSICAL = "physical_entity.n.01"
_VISUAL_PROPERTY = "visual_property.n.01"
# WordNet's lexicographer files for nouns and verbs that name nothing one can see (ideas, feelings, acts,
# relations, amounts, times; thinking, talking, owning, being).
_ABSTRACT_NOUN_FILES = {"noun.act", "noun.attribute", "noun.cognition", "noun.communication", "noun.feeling",
                        "noun.motive", "noun.relation", "noun.state", "noun.time", "noun.quantity",
                        "noun.possession", "noun.process", "noun.Tops"}
_VISIBLE_VERB_FILES = {"verb.motion", "verb.contact", "verb.body", "verb.weather", "verb.consumption"}
_visual_memory: dict[str, bool] = {}
_VISUAL_CACHE_KEY = "visual-v3"  # bump when the rule changes, so cached verdicts of an older rule are not used


def _noun_is_visual(synset) -> bool:
    ancestors = {a.name() for path in synset.hypernym_paths() for a in path}
    if _PHYSICAL in ancestors or _VISUAL_PROPERTY in ancestors:
        return True
    return synset.lexname() not in _ABSTRACT_NOUN_FILES  # a forest (a group of trees), a wave (an event)


def _adjective_is_visual(synset) -> bool:
    """An adjective sense is visual when a noun it is tied to is: its attribute ("black" -> colour), the noun
    it pertains to or derives from ("misty" -> mist, "wooden" -> wood), also through its head adjective."""
    senses = [synset, *synset.similar_tos()] if synset.pos() == "s" else [synset]
    nouns = []
    for sense in senses:
        nouns += sense.attributes()
        for lemma in sense.lemmas():
            related = lemma.pertainyms() + lemma.derivationally_related_forms()
            nouns += [r.synset() for r in related if r.synset().pos() == "n"]
    return any(_noun_is_visual(n) for n in nouns)


def _most_common(wn, word: str, pos: str | None = None):
    """The word's most common WordNet sense (tagged-corpus counts; WordNet's own order breaks ties)."""
    senses = wn.synsets(word, pos=pos)

    def frequency(s) -> int:
        return sum(lemma.count() for lemma in s.lemmas() if lemma.name().lower() == word)

    return max(senses, key=lambda s: (frequency(s), -senses.index(s))) if senses else None


def _visual_verdict(wn, word: str) -> bool:
    best = _most_common(wn, word)
    if best is None:
        return False
    if _sense_is_visual(best):
        return True
    # A participle of a visible thing looks like it: "striped", "dotted", "checkered" (stripe, dot, checker).
    base = wn.morphy(word, wn.VERB) if word.endswith(("ed", "ing")) else None
    noun = _most_common(wn, base, "n") if base and base != word else None
    return noun is not None and _noun_is_visual(noun)


def _sense_is_visual(best) -> bool:
    if best.pos() == "n":
        return _noun_is_visual(best)
    if best.pos() in ("a", "s"):
        return _adjective_is_visual(best)
    if best.pos() == "v":
        return best.lexname() in _VISIBLE_VERB_FILES  # swim, fly, perch: yes; think, say, own: no
    return False  # adverbs ("nearly", "very") describe how, not what


def visual_meaning(words: Iterable[str], use_wordnet: bool = True) -> dict[str, bool]:
    """word -> whether its most common WordNet sense names something visible (see the module docstring).

    Without WordNet every word counts as visual (nothing is filtered). Verdicts are kept beside the
    concept words in `.assets/cache/concept_words.json`, so a warm dashboard does not load WordNet.
    """
    words = [w for w in dict.fromkeys(words) if isinstance(w, str)]
    out = {w: _visual_memory[w] for w in words if w in _visual_memory}
    todo = [w for w in words if w not in out]
    if not todo:
        return out
    stamp = _wordnet_stamp() if use_wordnet else None
    if stamp is None:
        return {**out, **{w: True for w in todo}}
    cached = _read_cache_file(stamp).get(_VISUAL_CACHE_KEY, {})
    out.update({w: bool(cached[w]) for w in todo if w in cached})
    todo = [w for w in todo if w not in cached]
    if todo:
        from core.data.description import load_wordnet

        if (wn := load_wordnet()) is None:
            return {**out, **{w: True for w in todo}}
        fresh = {w: _visual_verdict(wn, w) for w in todo}
        _write_cache(stamp, _VISUAL_CACHE_KEY, fresh)
        out.update(fresh)
    _visual_memory.update(out)
    return out


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
    """Flags words that pull a class's images toward another class (error view) and words a classifier has
    tied to a class (association view); see the module docstring.

    Parameters (defaults suit a few dozen to tens of thousands of images):
        split: images to score on; "auto" = the test split when there is one, else all; None = all.
        min_misread: a class needs this many misread images to get error-view flags.
        min_images, min_image_share: a flag needs at least max(min(min_images, max(2, n/2)),
            min_image_share * n) of the n images it is about to use the word (so a word seen in one image
            never wins, and a class with few misread images can still get flags).
        min_share_gap: mean sentence share in the images a flag is about minus in the others, at least; also
            the share gap between groups of one class that confirms an association flag.
        min_z: log-odds z, at least.
        prior_strength: weight of the log-odds prior (see compare_word_sets).
        core_words: a CoreWordList, a path to its JSON, or None = the run's annotations.json (if any).
        use_wordnet: use WordNet for the concept and visual-meaning checks (else user marks and class names).
        n_examples: example image ids per flag.
        association_by: "prediction" (images predicted as the class vs. the rest) or "label".
        visual_only: flag only words whose most common WordNet sense names something visible.

    Learned: classes_, split_, flags_, pair_flags_, scores_ (every scored word with the reason it was or
    was not flagged), pair_scores_, misread_ (per class and pair: n_wrong, n_right, whether scored),
    associations_, association_scores_ (the association view), notes_ (class, view, n_flags, reason: why
    a class has no flags in a view), concept_words_ (class -> WordNet/name concept words), core_words_.
    """

    def __init__(self, split: str | None = "auto", min_misread: int = 3, min_images: int = 5,
                 min_image_share: float = 0.1, min_share_gap: float = 0.05, min_z: float = 2.0,
                 prior_strength: float = 0.1, core_words: CoreWordList | str | Path | None = None,
                 use_wordnet: bool = True, n_examples: int = 3, association_by: str = "prediction",
                 visual_only: bool = True):
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
        self.association_by = association_by
        self.visual_only = visual_only

    def _check_params(self) -> None:
        for name in ("min_misread", "min_images", "n_examples"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0 <= self.min_image_share <= 1:
            raise ValueError(f"min_image_share must be in [0, 1], got {self.min_image_share!r}")
        if not -1 <= self.min_share_gap <= 1:
            raise ValueError(f"min_share_gap must be in [-1, 1], got {self.min_share_gap!r}")
        if not isinstance(self.min_z, (int, float, np.number)) or not math.isfinite(self.min_z):
            raise ValueError(f"min_z must be a finite number, got {self.min_z!r}")
        if self.association_by not in ("prediction", "label"):
            raise ValueError(f"association_by must be 'prediction' or 'label', got {self.association_by!r}")
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

    def needed_images(self, n: int) -> int:
        """How many of n images must use a word for it to be a flag (adapts to small n)."""
        return max(min(self.min_images, max(2, math.ceil(n / 2))), math.ceil(self.min_image_share * n))

    # fitting --------------------------------------------------------------------------------------
    def fit(self, run_or_tables: Any) -> "SpuriousTermScorer":
        """Score every word in both views; keep the flags and the reasons a class has none.

        Every score comes from the run's cells (core.analysis.aggregates: word sums per class, prediction and
        group); only the example images of the flags are fetched by one query."""
        self._check_params()
        tables = load_tables(run_or_tables)
        stats = tables.stats
        self.split_ = evaluation_split(stats.images, self.split)
        if self.split_:
            stats = stats.select([], split=self.split_)
        cells = stats.images
        stats = stats.where((cells["label"].notna() & cells["prediction"].notna()).to_numpy(bool)
                            & (cells["n_sentences"].fillna(0).to_numpy() > 0))
        images = stats.images.assign(label=stats.images["label"].astype(int),
                                     prediction=stats.images["prediction"].astype(int))
        has_groups = "group" in images and images["group"].notna().any()
        names = tables.class_names
        self.classes_ = names
        self.has_groups_ = bool(has_groups)
        self.group_names_ = tables.group_names if has_groups else {}
        self.core_words_ = self._core_list(tables)
        synsets = tables.class_synsets
        self.concept_words_ = {n: concept_words(n, self.use_wordnet, synsets.get(n)) for n in names}
        # One (cell, word) table for every contrast below; contrasts are then masks on label/prediction.
        shares = stats.words
        self._shares = shares.assign(label=shares["label"].astype(int), prediction=shares["prediction"].astype(int))
        self._n_predicted = images.groupby("prediction")["n_images"].sum()
        self._images, self._n_images = images, int(images["n_images"].sum())
        self._tables = tables.select(split=self.split_) if self.split_ else tables
        self._toward_cache: dict[int, pd.DataFrame | None] = {}
        self._owner_maps: dict[str, dict[str, str]] = {}

        class_frames, pair_frames, misread = [], [], []
        for t in sorted(images["label"].unique()):
            t_images = images[images["label"] == t]
            n_right = int(t_images.loc[t_images["prediction"] == t, "n_images"].sum())
            # Classes t's images are taken for, most often first (ties: the one seen first in the run).
            confusers = t_images[t_images["prediction"] != t].groupby("prediction").agg(
                n=("n_images", "sum"), first=("first", "min")).sort_values(["n", "first"], ascending=[False, True])
            confusers = confusers["n"]
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
        present = sorted(set(images["label"]) | set(images["prediction"]))
        self.association_scores_ = self._concat([self._association(int(c)) for c in present], _ASSOC_SCORE_COLUMNS)
        # The images behind every flag, in one query for the flagged words of all three tables.
        flagged = [t.loc[t["flagged"].astype(bool), "word"] for t in (self.scores_, self.pair_scores_,
                                                                      self.association_scores_) if len(t)]
        self._example_rows = example_rows(self._tables, sorted(set(pd.concat(flagged))) if flagged else [],
                                          self.n_examples)
        self.flags_ = self._flags(self.scores_, single_target=False)
        self.pair_flags_ = self._flags(self.pair_scores_, single_target=True)
        self.associations_ = self._association_flags(self.association_scores_)
        self.notes_ = self._notes()
        del self._shares, self._toward_cache, self._n_predicted, self._images, self._n_images, self._owner_maps
        del self._tables, self._example_rows
        return self

    @staticmethod
    def _concat(frames: list[pd.DataFrame], columns: list[str] | None = None) -> pd.DataFrame:
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns or _SCORE_COLUMNS)

    def _toward_table(self, p: int) -> pd.DataFrame | None:
        """Log-odds table of images predicted as p vs. images not predicted as p (None when one side is empty);
        shared by the error view's z_toward and the association view."""
        if p not in self._toward_cache:
            rows = self._shares
            n_pos = int(self._n_predicted.get(p, 0))
            n_neg = self._n_images - n_pos
            table = None
            if n_pos and n_neg:
                mask = (rows["prediction"] == p).to_numpy()
                table = log_odds_table(totals(rows[mask], n_pos), totals(rows[~mask], n_neg),
                                       n_pos, n_neg, prior_strength=self.prior_strength)
            self._toward_cache[p] = table
        return self._toward_cache[p]

    def _toward_z(self, p: int) -> pd.Series:
        """word -> log-odds z of images predicted as p vs. images not predicted as p."""
        table = self._toward_table(p)
        return pd.Series(dtype=float) if table is None else table.set_index("word")["z"]

    def _concept_owner(self, words: pd.Series, own: str) -> pd.Series:
        """Per word, the first class (own class first) whose concept or user core marks hold it, else None."""
        if own not in self._owner_maps:
            owner_of: dict[str, str] = {}
            for c in [own, *[c for c in self.classes_ if c != own]]:
                for w in self.concept_words_.get(c, frozenset()) | self.core_words_.core(c):
                    owner_of.setdefault(w, c)
            self._owner_maps[own] = owner_of
        return words.map(self._owner_maps[own]).astype(object)

    def _not_visual(self, words: pd.Series, candidates: np.ndarray) -> np.ndarray:
        """True where a candidate word has no visual meaning (only candidates are looked up)."""
        out = np.zeros(len(words), dtype=bool)
        if not self.visual_only or not candidates.any():
            return out
        verdict = visual_meaning(words[candidates].tolist(), self.use_wordnet)
        out[candidates] = ~words[candidates].map(verdict).fillna(True).astype(bool).to_numpy()
        return out

    def _contrast(self, t: int, p: int | None, scored: bool) -> pd.DataFrame:
        """Every word of class t's images scored for misread (as p, or as anything) vs. correctly read."""
        names = self.classes_
        t_name = names[t]
        user_spurious = self.core_words_.spurious(t_name)
        rows = self._shares[(self._shares["label"] == t).to_numpy()]
        right_mask = (rows["prediction"] == t).to_numpy()
        wrong_mask = (rows["prediction"] == p).to_numpy() if p is not None else ~right_mask
        images = self._images[self._images["label"] == t]
        n_right = int(images.loc[images["prediction"] == t, "n_images"].sum())
        n_wrong = int(images.loc[images["prediction"] == p, "n_images"].sum()) if p is not None else \
            int(images["n_images"].sum()) - n_right
        if n_wrong == 0 or n_right == 0:
            return pd.DataFrame(columns=_SCORE_COLUMNS)
        wrong_rows = rows[wrong_mask]
        cmp = log_odds_table(totals(wrong_rows, n_wrong), totals(rows[right_mask], n_right),
                             n_wrong, n_right, prior_strength=self.prior_strength)
        cmp = cmp[cmp["images_a"] > 0]  # a flag must appear in misread images
        if p is None:
            # The class the word's misread images were most often taken for.
            counts = wrong_rows.groupby(["word", "prediction"], observed=True)["images"].sum().reset_index(name="n")
            counts = counts[counts["n"] > 0]
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
        owner = self._concept_owner(out["word"], t_name)
        user_core_t = self.core_words_.core(t_name)
        need = self.needed_images(n_wrong)
        is_user_spurious = out["word"].isin(user_spurious)
        conditions = [
            is_user_spurious,
            out["word"].isin(user_core_t),
            owner == t_name,
            (owner == out["predicted_as"]) & owner.notna(),
            owner.notna(),
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
            "describes another class (concept word)",
            f"too few misread images (< {self.min_misread})",
            f"used by fewer than {need} misread images",
            f"share gap below {self.min_share_gap:.0%}",
            f"z below {self.min_z:g}",
            "not linked to predicting that class",
        ]
        out["reason"] = np.select(conditions, reasons, default="flagged")
        no_sight = self._not_visual(out["word"], (out["reason"] == "flagged").to_numpy())
        out.loc[no_sight, "reason"] = "no visual meaning (WordNet)"
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

    def _association(self, c: int) -> pd.DataFrame:
        """Every word scored for images predicted as (or labelled) c vs. the rest, with why it is or is not a flag."""
        names = self.classes_
        c_name = names[c]
        column = self.association_by
        rows, images = self._shares, self._images
        pos_mask = (rows[column] == c).to_numpy()
        in_class = (images[column] == c).to_numpy()
        n_pos, n_neg = int(images["n_images"][in_class].sum()), int(images["n_images"][~in_class].sum())
        if n_pos == 0 or n_neg == 0:
            return pd.DataFrame(columns=_ASSOC_SCORE_COLUMNS)
        if column == "prediction":
            cmp = self._toward_table(c)
        else:
            cmp = log_odds_table(totals(rows[pos_mask], n_pos), totals(rows[~pos_mask], n_neg),
                                 n_pos, n_neg, prior_strength=self.prior_strength)
        cmp = cmp[cmp["images_a"] > 0].reset_index(drop=True)
        # Misread images on the class's side: other classes' images taken for c (by prediction), or c's
        # images taken for something else (by label).
        misread_rows = rows[pos_mask & (rows["label"] != rows["prediction"]).to_numpy()]
        n_misread = int(images["n_images"][in_class & (images["label"] != images["prediction"]).to_numpy()].sum())
        per_word = misread_rows.groupby("word", observed=True)["images"].sum()
        per_word = per_word[per_word > 0]
        per_word.index = per_word.index.astype(str)
        out = pd.DataFrame({
            "class": c_name, "word": cmp["word"], "score": cmp["z"], "share_class": cmp["share_a"],
            "share_other": cmp["share_b"], "n_class": n_pos, "n_other": n_neg, "images_class": cmp["images_a"],
            "z": cmp["z"], "images_misread": cmp["word"].map(per_word).fillna(0).astype(int), "n_misread": n_misread})
        user_spurious = self.core_words_.spurious(c_name)
        owner = self._concept_owner(out["word"], c_name)
        need = self.needed_images(n_pos)
        is_user_spurious = out["word"].isin(user_spurious)
        conditions = [is_user_spurious, owner == c_name, owner.notna(), out["images_class"] < need,
                      (out["share_class"] - out["share_other"]) < self.min_share_gap, out["z"] < self.min_z]
        reasons = ["marked spurious by the user", f"describes {c_name} (concept word)",
                   "describes another class (concept word)", f"used by fewer than {need} images",
                   f"share gap below {self.min_share_gap:.0%}", f"z below {self.min_z:g}"]
        out["reason"] = np.select(conditions, reasons, default="flagged")
        no_sight = self._not_visual(out["word"], (out["reason"] == "flagged").to_numpy())
        out.loc[no_sight, "reason"] = "no visual meaning (WordNet)"
        out["flagged"] = is_user_spurious | (out["reason"] == "flagged")
        out["source"] = np.where(is_user_spurious, "user", "statistics")
        out = pd.concat([out, self._group_gaps(out["word"].where(out["flagged"]).dropna())
                         .reindex(out["word"]).reset_index(drop=True)], axis=1)
        return out.sort_values(["score", "word"], ascending=[False, True], kind="stable").reset_index(drop=True)[
            _ASSOC_SCORE_COLUMNS]

    def _group_gaps(self, words: pd.Series) -> pd.DataFrame:
        """Per word, the largest gap in mean sentence share between two true groups of one class."""
        columns = ["group_gap", "group_high", "group_low", "share_group_high", "share_group_low", "confirmed"]
        empty = pd.DataFrame(columns=columns, index=pd.Index([], name="word"))
        if not self.has_groups_ or words.empty:
            return empty
        images = self._images[self._images["group"].notna()]
        images = images.assign(group=images["group"].astype(int))
        sizes = images.groupby(["label", "group"])["n_images"].sum()
        sizes = sizes[sizes > 0]
        rows = self._shares[self._shares["word"].isin(list(words)) & self._shares["group"].notna()]
        rows = rows.assign(word=rows["word"].astype(str), group=rows["group"].astype(int))
        sums = share_sums(rows, ["word", "label", "group"])["share"]
        # Mean share of every (word, class, group), zeros included: one row per word x group of the images.
        cells = pd.MultiIndex.from_tuples([(w, lab, g) for w in words for lab, g in sizes.index],
                                          names=["word", "label", "group"])
        mean = (sums.reindex(cells, fill_value=0.0).to_numpy() / np.tile(sizes.to_numpy(), len(words)))
        frame = cells.to_frame(index=False).assign(mean=mean)
        by_class = frame.groupby(["word", "label"], sort=False)["mean"]
        frame = frame.assign(n=by_class.transform("size"))
        frame = frame[frame["n"] >= 2]
        if frame.empty:
            return empty
        hi = frame.loc[frame.groupby(["word", "label"], sort=False)["mean"].idxmax()].set_index(["word", "label"])
        lo = frame.loc[frame.groupby(["word", "label"], sort=False)["mean"].idxmin()].set_index(["word", "label"])
        gaps = pd.DataFrame({"group_gap": hi["mean"] - lo["mean"], "hi": hi["group"], "lo": lo["group"],
                             "share_group_high": hi["mean"], "share_group_low": lo["mean"]}).reset_index()
        # Per word, the class whose groups differ most.
        gaps = gaps.sort_values(["group_gap", "label"], ascending=[False, True], kind="stable").drop_duplicates("word")
        name = lambda g: self.group_names_.get(int(g), f"group {int(g)}")  # noqa: E731
        out = pd.DataFrame({"group_gap": gaps["group_gap"].to_numpy(), "group_high": gaps["hi"].map(name).to_numpy(),
                            "group_low": gaps["lo"].map(name).to_numpy(),
                            "share_group_high": gaps["share_group_high"].to_numpy(),
                            "share_group_low": gaps["share_group_low"].to_numpy(),
                            "confirmed": (gaps["group_gap"] >= self.min_share_gap).to_numpy()},
                           index=pd.Index(gaps["word"].to_numpy(), name="word"))
        out["confirmed"] = out["confirmed"].astype(object)
        return out[columns]

    def _association_flags(self, scores: pd.DataFrame) -> pd.DataFrame:
        flags = scores[scores["flagged"].astype(bool)].copy()
        if flags.empty:
            return pd.DataFrame(columns=ASSOCIATION_COLUMNS)
        flags["evidence"] = [self._association_evidence(r) for r in flags.itertuples(index=False)]
        flags["example_image_ids"] = self._association_examples(flags)
        # Confirmed by the true groups first (where there are groups), then by score.
        flags["_unconfirmed"] = flags["confirmed"].map(lambda v: 0 if v is True else 1)
        order = {n: i for i, n in enumerate(self.classes_)}
        flags = flags.assign(_o=flags["class"].map(order)).sort_values(
            ["_o", "_unconfirmed", "score", "word"], ascending=[True, True, False, True], kind="stable")
        flags["rank"] = flags.groupby("class", sort=False).cumcount() + 1
        return flags[ASSOCIATION_COLUMNS].reset_index(drop=True)

    def _association_evidence(self, r: Any) -> str:
        side = "predicted as" if self.association_by == "prediction" else "labelled"
        text = (f"'{r.word}' is in {_pct(r.share_class)} of sentences for images {side} {r[0]}, "
                f"{_pct(r.share_other)} for the other images ({int(r.images_class)} of {int(r.n_class)} images "
                f"use it; {int(r.images_misread)} of {int(r.n_misread)} misread ones)")
        if isinstance(r.group_high, str):
            text += (f"; {_pct(r.share_group_high)} for {r.group_high} vs {_pct(r.share_group_low)} for "
                     f"{r.group_low}" + ("" if r.confirmed is True else " (no clear gap between groups)"))
        return text + (" — marked spurious by the user" if r.source == "user" else "")

    def _association_examples(self, flags: pd.DataFrame) -> list[list[str]]:
        """Per association flag, the class's images that use the word most, misread ones first."""
        names = self.classes_
        rows = self._example_rows
        column = self.association_by
        out = []
        for r in flags.itertuples(index=False):
            c = names.index(r[0])
            sel = rows[(rows[column] == c) & (rows["word"] == r.word)]
            sel = sel.assign(misread=(sel["label"] != sel["prediction"]))
            sel = sel.sort_values(["misread", "share", "image_id"], ascending=[False, False, True])
            sel = sel.head(self.n_examples)
            out.append([str(i) for i in sel["image_id"]])
        return out

    def _notes(self) -> pd.DataFrame:
        """Per class and view: how many flags, and when none, why not."""
        notes = []
        for c in self.classes_:
            n_flags = int((self.flags_["class"] == c).sum())
            reason = None
            m = self.misread_[(self.misread_["class"] == c) & self.misread_["predicted_as"].isna()]
            if n_flags == 0:
                if m.empty or int(m["n_wrong"].iloc[0]) == 0:
                    reason = f"no {c} image is misread on this split, so there is nothing to contrast"
                elif int(m["n_right"].iloc[0]) == 0:
                    reason = f"no {c} image is read right, so misread ones have nothing to be compared with"
                elif not bool(m["scored"].iloc[0]):
                    reason = (f"only {int(m['n_wrong'].iloc[0])} {c} images are misread (needs {self.min_misread} "
                              "to test words); see the association view")
                else:
                    reason = self._strongest_miss(self.scores_, c, f"among the {int(m['n_wrong'].iloc[0])} misread "
                                                                   f"{c} images")
            notes.append({"class": c, "view": "error", "n_flags": n_flags, "reason": reason})
            n_assoc = int((self.associations_["class"] == c).sum())
            reason = None
            if n_assoc == 0:
                side = "predicted as" if self.association_by == "prediction" else "labelled"
                if not (self.association_scores_["class"] == c).any():
                    reason = f"no image is {side} {c}, or every image is"
                else:
                    reason = self._strongest_miss(self.association_scores_, c, f"in images {side} {c}")
            notes.append({"class": c, "view": "association", "n_flags": n_assoc, "reason": reason})
        return pd.DataFrame(notes, columns=NOTE_COLUMNS)

    @staticmethod
    def _strongest_miss(scores: pd.DataFrame, c: str, where: str) -> str:
        rows = scores[(scores["class"] == c) & ~scores["reason"].str.startswith("describes")
                      & ~scores["reason"].str.startswith("marked")]
        if rows.empty:
            return f"no word {where} is over-represented beyond the class's own concept words"
        best = rows.sort_values("score", ascending=False).iloc[0]
        return (f"no word {where} passes the tests; the strongest candidate, '{best['word']}' (z {best['z']:.1f}), "
                f"fails: {best['reason']}")

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
        rows = self._example_rows
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

    def associations_for(self, class_name: str, k: int | None = None) -> pd.DataFrame:
        """Association-view flags of one class: words its predictions (or labels) go with, best first."""
        self._check_fitted()
        if class_name not in self.classes_:
            raise ValueError(f"class_name {class_name!r} is not a class of this run; classes: {self.classes_}")
        rows = self.associations_[self.associations_["class"] == class_name]
        return (rows.head(k) if k else rows).reset_index(drop=True)

    def note_for(self, class_name: str, view: str = "error") -> str | None:
        """Why `class_name` has no flags in `view` ("error" or "association"); None when it has some."""
        self._check_fitted()
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
        rows = self.notes_[(self.notes_["class"] == class_name) & (self.notes_["view"] == view)]
        reason = None if rows.empty else rows["reason"].iloc[0]
        return None if reason is None or (isinstance(reason, float) and math.isnan(reason)) else str(reason)

    def flagged_words(self, k: int | None = None) -> dict[str, list[str]]:
        """class -> its flagged words, best first (the top `k` when given)."""
        self._check_fitted()
        return {c: self.flags_for(c, k=k)["word"].tolist() for c in self.classes_}

    def group_words(self, k: int | None = None) -> tuple[dict[str, list[str]], dict[str, str]]:
        """(class -> the words that split its images into groups, class -> "error" or "association": the view
        they come from). A class's error-view flags when it has some; else its association-view flags, the
        words its predictions go with. A class the classifier rarely misreads here (a held-out split where it
        still gets the minority group right) has no error-view flags, yet its explanations already carry the
        bias: without the fallback its minority group would stay merged with the majority and could not be
        balanced."""
        self._check_fitted()
        errors, words, views = self.flagged_words(k), {}, {}
        for c in self.classes_:
            if errors[c]:
                words[c], views[c] = errors[c], "error"
            else:
                assoc = self.associations_for(c, k=k)["word"].tolist() if hasattr(self, "associations_") else []
                if assoc:
                    words[c], views[c] = assoc, "association"
        return words, views

    def transform(self, run_or_tables: Any, k: int | None = None) -> pd.DataFrame:
        """Per image: how much its explanations use its own class's flagged words (see spurious_share)."""
        self._check_fitted()
        tables = load_tables(run_or_tables)
        share = spurious_share(tables, self.flagged_words(k))
        return tables.images[["image_id", "label"]].assign(spurious_share=share.to_numpy())


_SCORE_COLUMNS = ["class", "predicted_as", "word", "score", "share_wrong", "share_right", "n_wrong", "n_right",
                  "images_wrong", "images_right", "z", "z_toward", "delta", "n_wrong_kinds", "reason", "flagged",
                  "source"]
_ASSOC_SCORE_COLUMNS = ["class", "word", "score", "share_class", "share_other", "n_class", "n_other", "images_class",
                        "z", "images_misread", "n_misread", "reason", "flagged", "source", "group_gap", "group_high",
                        "group_low", "share_group_high", "share_group_low", "confirmed"]


def _class_word_pairs(tables: RunTables, words_by_class: dict[str, Iterable[str]],
                      names: list[str] | None = None) -> pd.DataFrame:
    if not isinstance(words_by_class, dict):
        raise TypeError(f"words_by_class must be a dict of class name -> words, got {type(words_by_class).__name__}")
    names = tables.class_names if names is None else list(names)
    unknown = [c for c in words_by_class if c not in names]
    if unknown:
        raise ValueError(f"words_by_class has classes {unknown} that this run does not have; classes: {names}")
    pairs = pd.DataFrame([(names.index(c), str(w)) for c, ws in words_by_class.items() for w in ws],
                         columns=["label", "word"])
    return pairs.drop_duplicates().astype({"label": "int64", "word": object})


# Per image with one of its class's words: the sum over those words of its sentences using each (clipped to n).
_MATCHED = """SELECT w.image_id, CAST(sum(least(greatest(w.sentences, 0), i.n_sentences)) AS BIGINT) AS s
    FROM images_words w JOIN images i ON w.image_id = i.image_id
    JOIN _pairs p ON p.word = CAST(w.word AS VARCHAR) AND p.label = CAST(i.label AS BIGINT)
    WHERE i.n_sentences > 0 GROUP BY w.image_id"""


def _share_of(s: pd.Series, n: pd.Series) -> np.ndarray:
    """min(s / n, 1), and 0 for an image without sentences."""
    s, n = s.fillna(0).to_numpy(dtype=float), n.fillna(0).to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, np.minimum(s / np.where(n > 0, n, 1.0), 1.0), 0.0)


def spurious_share(run_or_tables: Any, words_by_class: dict[str, Iterable[str]],
                   class_names: list[str] | None = None) -> pd.Series:
    """Per image (aligned with the images table), the summed sentence share of its true class's words,
    capped at 1: an upper bound on the share of its sentences that use any of them (0 when none do).

    The sum is of the sentence counts, divided once by the image's number of sentences (the same number as
    summing the words' shares, exactly so with a power-of-two number of sentences). `class_names` name the
    labels (default: the run's)."""
    tables = load_tables(run_or_tables)
    pairs = _class_word_pairs(tables, words_by_class, class_names)
    images = tables.images
    if pairs.empty:
        return pd.Series(0.0, index=images.index, name="spurious_share")
    matched = query(tables, _MATCHED.replace("_pairs", "_pairs_df"), frames={"_pairs_df": pairs})
    per_image = pd.Series(matched["s"].to_numpy(), index=matched["image_id"].astype(str).to_numpy())
    s = images["image_id"].astype(str).map(per_image)
    return pd.Series(_share_of(s, images["n_sentences"].astype("Float64")), index=images.index, name="spurious_share")


def spurious_share_counts(run_or_tables: Any, words_by_class: dict[str, Iterable[str]]) -> pd.DataFrame:
    """`spurious_share` as counts: images per (label, prediction, group, unreadable, spurious_share), label,
    prediction and group as in the images table (NA where missing); what GroupInferrer needs, without a row per
    image."""
    from core.analysis.aggregates import image_key_sql

    tables = load_tables(run_or_tables)
    pairs = _class_word_pairs(tables, words_by_class)
    if pairs.empty:
        pairs = pd.DataFrame({"label": pd.Series(dtype="int64"), "word": pd.Series(dtype=object)})
    keys, unreadable = image_key_sql(tables, ["label", "prediction", "group", "n_sentences"])
    sql = f"""WITH m AS ({_MATCHED.replace("_pairs", "_pairs_df")})
        SELECT {keys}, {unreadable} AS unreadable, coalesce(m.s, 0) AS s, CAST(count(*) AS BIGINT) AS n_images
        FROM images i LEFT JOIN m ON i.image_id = m.image_id GROUP BY ALL"""
    rows = query(tables, sql, frames={"_pairs_df": pairs})
    for column in ("label", "prediction", "group", "n_sentences"):
        rows[column] = rows[column].astype("Int64")
    rows["unreadable"] = rows["unreadable"].astype(bool)
    rows["spurious_share"] = _share_of(rows["s"], rows["n_sentences"].astype("Float64"))
    out = rows.groupby(["label", "prediction", "group", "unreadable", "spurious_share"], dropna=False,
                       sort=True)["n_images"].sum().reset_index()
    return out


def example_rows(run_or_tables: Any, words: list[str], n: int) -> pd.DataFrame:
    """The images behind flags: for each (label, prediction, word) of `words`, the `n` images whose sentences use
    the word most (share, then image id): image_id, word, label, prediction, share. Every flag's examples are
    among them (they are the top of some of these partitions). Fetched by one query, cached per run."""
    columns = ["image_id", "word", "label", "prediction", "share"]
    tables = load_tables(run_or_tables)
    if not words:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    sql = f"""SELECT image_id, word, label, prediction, share FROM (
        SELECT i.image_id, CAST(w.word AS VARCHAR) AS word, CAST(i.label AS BIGINT) AS label,
               CAST(i.prediction AS BIGINT) AS prediction,
               CAST(least(greatest(w.sentences, 0), i.n_sentences) AS DOUBLE) / CAST(i.n_sentences AS DOUBLE) AS share
        FROM images_words w JOIN images i ON w.image_id = i.image_id
        WHERE CAST(w.word AS VARCHAR) IN (SELECT word FROM _wanted_df) AND i.n_sentences > 0
              AND i.label IS NOT NULL AND i.prediction IS NOT NULL)
        QUALIFY row_number() OVER (PARTITION BY label, prediction, word ORDER BY share DESC, image_id) <= {int(n)}"""
    wanted = pd.DataFrame({"word": pd.Series(sorted(set(map(str, words))), dtype=object)})

    def fetch() -> pd.DataFrame:
        rows = query(tables, sql, frames={"_wanted_df": wanted})
        return rows.sort_values(["label", "prediction", "word", "share", "image_id"],
                                ascending=[True, True, True, False, True]).reset_index(drop=True)

    if tables.in_store:
        from core.store.cache import cached_frame

        return cached_frame(tables.run, "examples", {"filters": tables.filters, "words": wanted["word"].tolist(),
                                                     "n": int(n)}, fetch)
    return fetch()


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
    columns = ["image_id", "label_name", "prediction_name", "outcome", "idx", "text"]
    c = names.index(class_name)
    misread = "AND i.prediction IS DISTINCT FROM i.label" if misread_only else ""
    # The images of the class that use the word, misread ones first, then by share (as many as can give k
    # sentences: each image's sentences are a sample that may not hold the word).
    rows = query(tables, f"""
        SELECT i.image_id, i.label IS DISTINCT FROM i.prediction AS misread,
               CAST(w.sentences AS DOUBLE) / CAST(i.n_sentences AS DOUBLE) AS share
        FROM images_words w JOIN images i ON w.image_id = i.image_id
        WHERE CAST(w.word AS VARCHAR) = ? AND i.label = {c} AND i.n_sentences > 0 {misread}
        ORDER BY misread DESC, least(greatest(share, 0.0), 1.0) DESC, i.image_id LIMIT {max(4 * k, 20)}""", [word])
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rank = {i: n for n, i in enumerate(rows["image_id"])}
    sentences = tables.run.sentences(list(rank))
    pattern = re.compile(rf"\b{re.escape(word)}(?:s|es)?\b", re.IGNORECASE)
    sentences = sentences[sentences["text"].astype(str).str.contains(pattern)]
    if sentences.empty:
        return pd.DataFrame(columns=columns)
    sentences = sentences.assign(_rank=sentences["image_id"].map(rank))
    sentences["_nth"] = sentences.sort_values(["_rank", "idx"]).groupby("image_id").cumcount()
    sentences = sentences.sort_values(["_nth", "_rank", "idx"]).head(k)
    info = tables.images_of(sentences["image_id"].unique()).drop_duplicates("image_id").set_index("image_id")
    out = sentences.assign(
        label_name=sentences["image_id"].map(info["label_name"]) if "label_name" in info else class_name,
        prediction_name=sentences["image_id"].map(info["prediction_name"]) if "prediction_name" in info else None,
        outcome=np.where(sentences["image_id"].map(info["label"]) == sentences["image_id"].map(info["prediction"]),
                         "correct", "wrong"))
    return out[columns].reset_index(drop=True)
