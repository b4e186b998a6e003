"""Word extraction and counting: turn the sentences sampled for an image into counts of meaningful words.

    extractor = WordExtractor()
    extractor.words("Two geese swim on a lake.")             # ['goose', 'swim', 'lake']
    extractor.count(["water water lake", "a lake"])           # {'water': (2, 1), 'lake': (2, 2)}
    extractor.unknown_tokens(["a quyvian duck"])              # Counter({'quyvian': 1})

A word is what survives these steps, in order:

1. the sentence is lower-cased and split into runs of letters and digits (`\\w+`);
   a run that holds a digit or an underscore is dropped ("2", "3d", "mp3");
2. English clitics go: possessive "'s" and "'re", "'ve", "'ll", "'d", "'m" are cut
   ("bird's" -> "bird"), and a negated auxiliary goes whole ("don't", "can't": all stop words);
   "'" and "’" both count as apostrophes; hyphenated compounds split ("long-legged" -> long, legged);
3. tokens shorter than `min_length` or in `stop_words` are dropped;
4. the token is looked up in WordNet under the parts of speech allowed by `pos`, nouns first,
   then adjectives, verbs, adverbs; the first part of speech that knows it gives the lemma
   (WordNet's shortest base form: "geese" -> "goose", "waters" -> "water", "bigger" -> "big");
5. the lemma is checked against `stop_words` and `min_length` again ("photos" -> "photo" -> dropped);
6. the vocabulary decides: with `vocabulary="wordnet"` a token WordNet does not know in any part of
   speech is dropped and reported by `unknown_tokens` (the language model invents words).

`WordExtractor` resolves every distinct token once and caches the answer, so WordNet is consulted
only for tokens it has not seen; it caches whole whitespace-delimited chunks of raw text too, so that
most of its work is `str.split` and dictionary look-ups. `NaiveWordExtractor` takes the same steps
word by word with NLTK's tokenizer and no cache: the reference that tests and benchmarks compare against.
"""
from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from itertools import chain

from core import paths as _paths  # noqa: F401  (points NLTK at the project's offline data)

# Caption boilerplate: nearly every sampled sentence says "a photo of ... in the background", so these
# words would top every image's list while saying nothing about the image. Scene words (water, lake,
# sea, forest, tree, grass, sky, ...) are never stop words: they are what reveals a spurious feature.
CAPTION_STOP_WORDS = frozenset({"image", "photo", "photograph", "picture", "background"})
# The generic English list (scikit-learn's, shipped as NLTK's) counts these concrete nouns as stop
# words; a bird's bill, a fire and a mill are things a caption can be about.
CONTENT_WORDS_KEPT = frozenset({"bill", "fire", "mill"})

PARTS_OF_SPEECH = {"noun": "n", "adj": "a", "verb": "v", "adv": "r"}  # in lookup order
VOCABULARIES = ("wordnet",)

# Clitics cut before splitting into words (lookbehind: the apostrophe must touch the word before it).
_CONTRACTION = re.compile(r"\w+['’]t(?!\w)|(?<=\w)['’](?:s|re|ve|ll|d|m)(?!\w)")
_WORD = re.compile(r"\w+")
# Joins one image's sentences (as a chunk of its own) so that one split and one join cover them all.
_SEP = "\x00"
_CLITICS = frozenset({"s", "re", "ve", "ll", "d", "m"})
_APOSTROPHES = ("'", "’")

_stop_words_cache: frozenset[str] | None = None


def default_stop_words() -> frozenset[str]:
    """NLTK's English stop words (scikit-learn's list), plus caption boilerplate, minus a few content words."""
    global _stop_words_cache
    if _stop_words_cache is None:
        from nltk.corpus import stopwords

        base = frozenset(stopwords.words("english"))
        _stop_words_cache = (base | CAPTION_STOP_WORDS) - CONTENT_WORDS_KEPT
    return _stop_words_cache


class _Cache(dict):
    """key -> resolve(key), computed on the first lookup and remembered."""

    __slots__ = ("resolve",)

    def __init__(self, resolve):
        super().__init__()
        self.resolve = resolve

    def __missing__(self, key: str):
        value = self[key] = self.resolve(key)
        return value


class WordExtractor:
    """Split sentences into stop-word-free, lemmatized words known to a vocabulary, and count them.

    Parameters
    ----------
    stop_words : words to drop, checked on the token and on its lemma; None means
        `default_stop_words()`. Pass `()` to keep every word.
    lemmatize : map each word to its WordNet base form ("birds" -> "bird").
    pos : None for any part of speech, or a subset of {"noun", "adj", "verb", "adv"}: keep only words
        WordNet knows as one of these (lemmatized as the first of them, in that order).
    vocabulary : "wordnet" keeps only words WordNet knows; a collection of words keeps only lemmas in
        it; None keeps every word (made-up words included).
    min_length : shortest word kept, in characters.

    The extractor holds no model: it is cheap to build and pickles without its cache. WordNet loads on
    the first unseen token (once per process, ~10 s on a slow CPU).
    """

    def __init__(self, stop_words: Iterable[str] | None = None, lemmatize: bool = True,
                 pos: Iterable[str] | None = None, vocabulary: str | Collection[str] | None = "wordnet",
                 min_length: int = 2):
        if isinstance(stop_words, str):
            raise TypeError("stop_words must be a collection of words, not one string")
        if pos is not None:
            asked = {pos} if isinstance(pos, str) else set(pos)
            if not asked or asked - set(PARTS_OF_SPEECH):
                raise ValueError(f"pos must be None or a non-empty subset of {sorted(PARTS_OF_SPEECH)}; "
                                 f"got {sorted(asked)}")
            pos = tuple(name for name in PARTS_OF_SPEECH if name in asked)  # lookup order, JSON-friendly
        if isinstance(vocabulary, str) and vocabulary not in VOCABULARIES:
            raise ValueError(f"vocabulary must be 'wordnet', None or a collection of words; got {vocabulary!r}")
        if not isinstance(min_length, int) or min_length < 1:
            raise ValueError(f"min_length must be a positive integer; got {min_length!r}")
        self.stop_words = stop_words
        self.lemmatize = lemmatize
        self.pos = pos
        self.vocabulary = vocabulary
        self.min_length = min_length
        self._setup()

    def _setup(self) -> None:
        self._stop = default_stop_words() if self.stop_words is None else frozenset(self.stop_words)
        self._tags = tuple(tag for name, tag in PARTS_OF_SPEECH.items() if self.pos is None or name in self.pos)
        custom_vocabulary = self.vocabulary is not None and not isinstance(self.vocabulary, str)
        self._vocab = frozenset(self.vocabulary) if custom_vocabulary else None
        self._unknown: set[str] = set()
        self._lock = threading.Lock()  # NLTK's lazy WordNet loader is not safe to enter from two threads
        # Two caches: token -> lemma (or None), and whitespace-delimited chunk of raw text -> its words
        # joined by spaces (or None). Whitespace never takes part in case or clitic rules, so a chunk
        # always yields the same words, and splitting on it is far cheaper than any regex.
        self._lemmas = _Cache(self._resolve)
        self._chunks = _Cache(self._resolve_chunk)

    # Pickle the parameters only: the cache and lock are rebuilt in the new process.
    def __getstate__(self) -> dict:
        return self.get_params()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._setup()

    def get_params(self) -> dict:
        """The constructor's arguments, e.g. for a run manifest."""
        return {"stop_words": self.stop_words, "lemmatize": self.lemmatize, "pos": self.pos,
                "vocabulary": self.vocabulary, "min_length": self.min_length}

    def __repr__(self) -> str:
        defaults = {"stop_words": None, "lemmatize": True, "pos": None, "vocabulary": "wordnet", "min_length": 2}
        changed = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults[k])
        return f"{type(self).__name__}({changed})"

    def _resolve(self, token: str) -> str | None:
        """The word `token` counts as, or None; uncached. Records made-up words for `unknown_tokens`."""
        word, unknown = self._classify(token)
        if unknown:
            self._unknown.add(token)
        return word

    def _classify(self, token: str) -> tuple[str | None, bool]:
        """(word or None, whether it was dropped for not being in the vocabulary): steps 3-6."""
        if len(token) < self.min_length or token in self._stop or not token.isalpha():
            return None, False
        lemma = token
        if self.lemmatize or self.pos is not None or self.vocabulary == "wordnet":
            from nltk.corpus import wordnet
            from nltk.stem import WordNetLemmatizer

            with self._lock:
                tag = next((t for t in self._tags if wordnet.morphy(token, t) is not None), None)
                if tag is not None:
                    if self.lemmatize:
                        lemma = WordNetLemmatizer().lemmatize(token, tag)
                elif self.pos is not None:
                    # Dropped either way; only a word WordNet knows in no part of speech is "unknown".
                    other_tags = [t for t in PARTS_OF_SPEECH.values() if t not in self._tags]
                    return None, self.vocabulary == "wordnet" and not any(
                        wordnet.morphy(token, t) is not None for t in other_tags)
                elif self.vocabulary == "wordnet":
                    return None, True
        if self._vocab is not None and lemma not in self._vocab:
            return None, True
        if len(lemma) < self.min_length or lemma in self._stop:
            return None, False
        return lemma, False

    @staticmethod
    def tokens(sentence: str) -> list[str]:
        """Lower-cased `\\w+` runs of `sentence` with clitics removed (steps 1-2), before any filtering."""
        text = sentence.lower()
        if "'" in text or "’" in text:
            text = _CONTRACTION.sub(" ", text)
        return _WORD.findall(text)

    def _resolve_chunk(self, chunk: str) -> str | None:
        """The words of a whitespace-free piece of raw text, joined by spaces, or None."""
        if chunk == _SEP:
            return _SEP
        return " ".join(filter(None, map(self._lemmas.__getitem__, self.tokens(chunk)))) or None

    def words(self, sentence: str) -> list[str]:
        """The words of one sentence, in order, repeats kept."""
        if _SEP in sentence:
            sentence = sentence.replace(_SEP, " ")
        return " ".join(filter(None, map(self._chunks.__getitem__, sentence.split()))).split()

    def count(self, sentences: Sequence[str]) -> dict[str, tuple[int, int]]:
        """word -> (occurrences, sentences that contain it) over one image's sentences.

        Words come in order of first appearance; `sorted(counts.items(), key=lambda kv: -kv[1][0])`
        ranks them.
        """
        sentences = _as_sentences(sentences)
        if not sentences:
            return {}
        text = " \x00 ".join(sentences)
        if text.count(_SEP) != len(sentences) - 1:  # a sentence holds the separator itself
            text = " \x00 ".join(s.replace(_SEP, " ") for s in sentences)
        # One string of words, the separator between sentences; Counter, set and split work in C.
        joined = " ".join(filter(None, map(self._chunks.__getitem__, text.split())))
        per_sentence = list(map(str.split, joined.split(_SEP)))
        occurrences = Counter(chain.from_iterable(per_sentence))
        in_sentences = Counter(chain.from_iterable(map(set, per_sentence)))
        return dict(zip(occurrences, zip(occurrences.values(), map(in_sentences.__getitem__, occurrences))))

    def count_many(self, batch: Sequence[Sequence[str]]) -> list[dict[str, tuple[int, int]]]:
        """`count` for each image's sentences in `batch`."""
        if isinstance(batch, str):
            raise TypeError("batch must be a list of sentence lists (one per image); got a str")
        return [self.count(sentences) for sentences in batch]

    def unknown_tokens(self, sentences: Sequence[str]) -> Counter:
        """Tokens dropped only because the vocabulary does not know them (made-up words), with counts."""
        tokens = list(chain.from_iterable(map(self.tokens, _as_sentences(sentences))))
        for token in tokens:
            self._lemmas[token]  # resolving records the unknown ones
        unknown = self._unknown
        return Counter(t for t in tokens if t in unknown)


class NaiveWordExtractor(WordExtractor):
    """The reference path: NLTK's WordPunct tokenizer and a WordNet lookup for every word, no cache.

    Same parameters and same results as `WordExtractor`, many times slower; it exists to check the
    fast path and to measure it against.
    """

    @staticmethod
    def tokens(sentence: str) -> list[str]:
        from nltk.tokenize import WordPunctTokenizer

        text = sentence.lower()
        # WordPunct yields runs of word characters and runs of punctuation; keep the former.
        spans = [(a, b) for a, b in WordPunctTokenizer().span_tokenize(text) if _WORD.match(text, a)]
        kept = [True] * len(spans)
        claimed = [False] * len(spans)  # already part of a cut contraction, so it cannot start another
        for i in range(1, len(spans)):
            (_, prev_end), (start, end) = spans[i - 1], spans[i]
            if text[prev_end:start] not in _APOSTROPHES:
                continue
            run = text[start:end]
            if run in _CLITICS:
                kept[i], claimed[i] = False, True
            elif run == "t" and not claimed[i - 1]:
                kept[i - 1] = kept[i] = False  # "don't": a negated auxiliary goes whole
                claimed[i - 1] = claimed[i] = True
        return [text[a:b] for (a, b), keep in zip(spans, kept) if keep]

    def words(self, sentence: str) -> list[str]:
        words = []
        for token in self.tokens(sentence):
            word = self._resolve(token)
            if word is not None:
                words.append(word)
        return words

    def count(self, sentences: Sequence[str]) -> dict[str, tuple[int, int]]:
        occurrences: dict[str, int] = {}
        in_sentences: dict[str, int] = {}
        for sentence in _as_sentences(sentences):
            seen = set()
            for word in self.words(sentence):
                occurrences[word] = occurrences.get(word, 0) + 1
                if word not in seen:
                    seen.add(word)
                    in_sentences[word] = in_sentences.get(word, 0) + 1
        return {word: (n, in_sentences[word]) for word, n in occurrences.items()}

    def unknown_tokens(self, sentences: Sequence[str]) -> Counter:
        unknown = Counter()
        for sentence in _as_sentences(sentences):
            for token in self.tokens(sentence):
                if self._classify(token)[1]:
                    unknown[token] += 1
        return unknown


def word_table(image_ids: Sequence, counts: Sequence[dict[str, tuple[int, int]]]):
    """Counts from `count_many` as the run store's words table: image_id, word, count, sentences."""
    import pandas as pd

    if len(image_ids) != len(counts):
        raise ValueError(f"image_ids has {len(image_ids)} entries but counts has {len(counts)}")
    rows = [(image_id, word, n, s) for image_id, c in zip(image_ids, counts) for word, (n, s) in c.items()]
    table = pd.DataFrame(rows, columns=["image_id", "word", "count", "sentences"])
    return table.astype({"word": "string", "count": "int32", "sentences": "int32"})


def _as_sentences(sentences) -> list[str] | tuple[str, ...]:
    # A bare string would be counted character by character without complaint.
    if isinstance(sentences, str):
        raise TypeError("sentences must be a list of strings (one image's sentences); got a single str")
    return sentences if isinstance(sentences, (list, tuple)) else list(sentences)
