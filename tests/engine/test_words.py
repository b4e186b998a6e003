"""Word extraction and counting: what counts as a word, and the fast path agreeing with the naive one."""
import json
import pickle
import random
from collections import Counter

import pandas as pd
import pytest

from core.engine.words import NaiveWordExtractor, WordExtractor, default_stop_words, word_table


@pytest.fixture(scope="module")
def extractor():
    return WordExtractor()


def test_plurals_become_their_lemma(extractor):
    assert extractor.words("Geese") == ["goose"]
    assert extractor.words("birds trees waters bigger") == ["bird", "tree", "water", "big"]


def test_stop_words_numbers_and_punctuation_are_dropped(extractor):
    assert extractor.words("The 2 birds, and 3rd ducks... on 1,000 rocks!") == ["bird", "duck", "rock"]
    assert extractor.words("A photo of an image in the background") == []


def test_scene_words_are_never_stop_words(extractor):
    scene = ["water", "lake", "sea", "forest", "tree", "grass", "sky", "beach", "ocean", "river", "bill"]
    assert not set(scene) & default_stop_words()
    assert extractor.words(" ".join(scene)) == scene


def test_possessives_and_contractions(extractor):
    assert extractor.words("The bird's bill isn't wet; it's the gull’s nest") == ["bird", "bill", "wet", "gull", "nest"]
    assert extractor.words("long-legged heron") == ["long", "legged", "heron"]


def test_made_up_words_are_not_counted_but_reported(extractor):
    sentences = ["A quyvian duck.", "Quyvian zorbel, quyvian!"]
    assert extractor.count(sentences) == {"duck": (1, 1)}
    assert extractor.unknown_tokens(sentences) == Counter({"quyvian": 3, "zorbel": 1})


def test_without_a_vocabulary_made_up_words_count():
    assert WordExtractor(vocabulary=None).count(["a quyvian duck"]) == {"quyvian": (1, 1), "duck": (1, 1)}


def test_a_custom_vocabulary_keeps_only_its_lemmas():
    extractor = WordExtractor(vocabulary={"water", "lake"})
    assert extractor.count(["Waters and lakes near a tree"]) == {"water": (1, 1), "lake": (1, 1)}
    assert extractor.unknown_tokens(["a tree"]) == Counter({"tree": 1})


def test_count_separates_occurrences_from_sentences(extractor):
    assert extractor.count(["water water lake", "lake"]) == {"water": (2, 1), "lake": (2, 2)}
    # Two forms of one lemma in a sentence count once for the sentence.
    assert extractor.count(["bird birds", "a bird"]) == {"bird": (3, 2)}


def test_count_many_counts_each_image_apart(extractor):
    assert extractor.count_many([["a lake"], [], ["a forest", "forest"]]) == [
        {"lake": (1, 1)}, {}, {"forest": (2, 2)}]


def test_pos_keeps_only_the_parts_of_speech_asked_for():
    sentence = "a small bird swims quickly over the blue lake"
    assert WordExtractor().words(sentence) == ["small", "bird", "swim", "quickly", "blue", "lake"]
    assert WordExtractor(pos={"adj"}).words(sentence) == ["small", "blue"]
    assert WordExtractor(pos={"noun"}).words(sentence) == ["small", "bird", "swim", "blue", "lake"]  # a swim
    assert WordExtractor(pos={"adv", "verb"}).words(sentence) == ["small", "bird", "swim", "quickly", "blue"]
    # A real word outside the parts of speech asked for is filtered, not reported as made up.
    assert WordExtractor(pos={"adj"}).unknown_tokens([sentence + " quyvian"]) == Counter({"quyvian": 1})


def test_no_lemmatization_keeps_surface_forms():
    assert WordExtractor(lemmatize=False).words("Geese and birds") == ["geese", "birds"]


def test_empty_input_gives_empty_counts(extractor):
    assert extractor.count([]) == {}
    assert extractor.count(["", "   ", "the and of"]) == {}
    assert extractor.words("") == []
    assert extractor.count_many([]) == []
    assert extractor.unknown_tokens([]) == Counter()


def test_any_iterable_of_sentences_is_accepted(extractor):
    assert extractor.count(s for s in ["a lake", "lakes"]) == {"lake": (2, 2)}
    assert extractor.count(pd.Series(["a lake"])) == {"lake": (1, 1)}


def test_settings_are_recorded_as_json():
    params = WordExtractor(pos={"verb", "noun"}, min_length=3).get_params()
    assert json.loads(json.dumps(params)) == {"stop_words": None, "lemmatize": True, "pos": ["noun", "verb"],
                                              "vocabulary": "wordnet", "min_length": 3}


def test_a_string_instead_of_a_list_is_refused(extractor):
    with pytest.raises(TypeError, match="sentences must be a list"):
        extractor.count("a duck on a lake")
    with pytest.raises(TypeError, match="batch"):
        extractor.count_many("a duck on a lake")


@pytest.mark.parametrize("kwargs, message", [
    ({"pos": {"nouns"}}, "pos must be"),
    ({"vocabulary": "english"}, "vocabulary must be"),
    ({"min_length": 0}, "min_length must be"),
])
def test_bad_settings_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WordExtractor(**kwargs)


def test_wordnet_is_consulted_once_per_distinct_token():
    extractor = WordExtractor()
    seen = []
    classify = extractor._classify
    extractor._classify = lambda token: seen.append(token) or classify(token)
    extractor.count_many([["Two birds on a lake.", "Birds, birds: a LAKE!"]] * 50)
    assert sorted(seen) == ["a", "birds", "lake", "on", "two"]


def test_pickled_extractor_counts_the_same(extractor):
    copy = pickle.loads(pickle.dumps(extractor))
    assert copy.get_params() == extractor.get_params()
    assert copy.count(["geese on water"]) == {"goose": (1, 1), "water": (1, 1)}


def test_word_table_matches_the_run_store_columns(extractor):
    table = word_table(["a", "b"], extractor.count_many([["water water lake", "lake"], []]))
    assert list(table.columns) == ["image_id", "word", "count", "sentences"]
    assert table.values.tolist() == [["a", "water", 2, 1], ["a", "lake", 2, 2]]


def varied_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Sentences that stress tokenization: case, punctuation, plurals, numbers, clitics, hyphens, Unicode."""
    pieces = ["A", "photo", "of", "two", "Geese", "birds'", "bird's", "gull’s", "isn't", "don't", "can't",
              "it's", "we'd've", "it's't", "o'clock", "rock'n'roll", "'quoted'", "‘curly’", "long-legged",
              "yellow-billed", "3", "3d", "mp3", "1,000", "2nd", "snake_case", "quyvian", "Zorbelix",
              "lakes", "WATERS", "Forest.", "trees,", "sky!", "grass?", "(reeds)", "\"swan\"", "café",
              "naïve", "Straße", "ΣΟΦΙΑΣ", "the", "and", "bigger", "flying", "swims", "perched", "—", "...",
              "x'sdon't", "'s", "n't", "t", "a\x00b", "\x00", "\t", "\n", "wolves", "mice", "species"]
    rng = random.Random(seed)
    glue = ["", " ", " ", " ", "  ", "-", "'", ",", " '", "\n"]
    sentences = []
    for _ in range(n):
        words = rng.choices(pieces, k=rng.randint(0, 16))
        sentences.append("".join(w + rng.choice(glue) for w in words))
    return sentences


@pytest.mark.parametrize("settings", [{}, {"pos": {"adj", "verb"}}, {"vocabulary": None, "min_length": 1},
                                      {"lemmatize": False, "stop_words": ()}])
def test_fast_path_counts_exactly_like_the_naive_path(settings):
    corpus = varied_corpus()
    fast, naive = WordExtractor(**settings), NaiveWordExtractor(**settings)
    images = [corpus[i:i + 16] for i in range(0, len(corpus), 16)]
    assert fast.count_many(images) == naive.count_many(images)
    assert [fast.words(s) for s in corpus] == [naive.words(s) for s in corpus]
    assert fast.unknown_tokens(corpus) == naive.unknown_tokens(corpus)
    assert any(fast.count_many(images)) and sum(fast.unknown_tokens(corpus).values()) >= (settings == {})
