"""Property-based tests (hypothesis): the dataset readers and the word counter on inputs nobody wrote by hand.

Each property states what must hold for every input: a reader either returns records that match its
file exactly or raises DatasetError naming a value that really is wrong (never another exception, never
a silently wrong record); the word counter's fast path counts exactly what its definition says.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.data import DatasetError, read_caption_csv, read_waterbirds
from core.data.records import is_inside
from core.engine.words import WordExtractor

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- Waterbirds metadata ------------------------------------------------------------------------------------

# Cell values as a user's CSV may hold them, with what each must read as (None: invalid).
BINARY = {0: 0, 1: 1, "0": 0, "1": 1, "1.0": 1, 2: None, "x": None, "": None, "0.5": None, "-1": None}
SPLITS = {0: "train", 1: "val", 2: "test", "0": "train", "2": "test", "train": "train", "val": "val",
          "test": "test", "Test": "test", 3: None, "x": None, "": None, "1.5": None, "validation": None}
FILES = {"a.png": True, "img/b.png": True, "img/sub/../c.png": True, "./d.png": True, "../e.png": False,
         "/etc/passwd": False, "img/../../f.png": False, "img/../g.png": True}

row = st.fixed_dictionaries({"y": st.sampled_from(list(BINARY)), "place": st.sampled_from(list(BINARY)),
                             "split": st.sampled_from(list(SPLITS)), "img_filename": st.sampled_from(list(FILES))})


@SETTINGS
@given(rows=st.lists(row, min_size=1, max_size=8))
def test_waterbirds_reader_accepts_exactly_the_valid_files(rows):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "wb"
        root.mkdir()
        frame = pd.DataFrame(rows)
        frame.insert(0, "img_id", range(len(frame)))
        frame.to_csv(root / "metadata.csv", index=False)
        valid = all(BINARY[r["y"]] is not None and BINARY[r["place"]] is not None and SPLITS[r["split"]] is not None
                    and FILES[r["img_filename"]] for r in rows)
        try:
            ds = read_waterbirds(root, check_files=False)
        except DatasetError as exc:
            assert not valid, f"a valid file was refused: {exc}"
            message = str(exc)
            column = message.split("column '")[1].split("'")[0] if "column '" in message else None
            if column is not None:  # the values it names as bad are bad, and none of the good ones are named
                # The list of bad values only: "... found ['x']" or "... holds ['2'], which ... (it names [...])";
                # empty cells are named by line ("... is empty on lines [2]"), no value to check.
                marker = next((m for m in ("found ", " holds ") if m in message), None)
                if marker is None:
                    assert "is empty on lines" in message, message
                    return
                named = message.split(marker)[1].split("]")[0]
                table = BINARY if column in ("y", "place") else SPLITS
                for value in {str(r[column]) for r in rows}:
                    good = table[next(r[column] for r in rows if str(r[column]) == value)] is not None
                    if good and value != "":
                        assert f"'{value}'" not in named, (value, message)
            else:  # a path outside the folder, or a class index beyond Waterbirds' two classes
                assert "img_filename must be a path inside" in message or "but the labels go up to" in message
            return
        assert valid, f"an invalid file was read: {rows}"
        for record, r in zip(ds.records, rows):
            y, place = BINARY[r["y"]], BINARY[r["place"]]
            assert (record.label, record.place, record.group, record.split) == (y, place, 2 * y + place,
                                                                                 SPLITS[r["split"]])
            assert os.path.normpath(record.path).startswith(str(root) + os.sep)


segment = st.sampled_from(["a", "b", "..", ".", "", "c.png", "..."])


@SETTINGS
@given(parts=st.lists(segment, min_size=1, max_size=6), absolute=st.booleans())
def test_a_path_is_inside_exactly_when_it_resolves_under_the_folder(parts, absolute):
    path = ("/" if absolute else "") + "/".join(parts)
    root = "/data/wb"
    resolved = os.path.normpath(os.path.join(root, path))  # an absolute path replaces the root here
    assert is_inside(path) == (path != "" and (resolved == root or resolved.startswith(root + "/"))), path


# --- caption CSVs --------------------------------------------------------------------------------------------

caption = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"),
                  max_size=40)


@SETTINGS
@given(captions=st.lists(caption, min_size=1, max_size=5))
@example(captions=["NA", "None", "nan", "null", "N/A"])  # pandas reads these as missing by default
@example(captions=["  ", "a, \"quoted\" caption\nover two lines"])
@example(captions=["00", "1e3", "007", "True"])  # text, not numbers: "00" once came back as "0" (found by Hypothesis)
def test_caption_csv_round_trips_every_caption_or_names_the_empty_rows(captions):
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "captions.csv"
        pd.DataFrame({"path": [f"img/{i}.png" for i in range(len(captions))], "caption": captions}).to_csv(
            csv, index=False)
        empty = [i for i, c in enumerate(captions) if not c.strip()]
        try:
            frame = read_caption_csv(csv, check_files=False)
        except DatasetError as exc:
            assert empty, f"captions {captions!r} were refused: {exc}"
            assert f"{len(empty)} rows have no caption (lines {[i + 2 for i in empty][:5]})" in str(exc)
            return
        assert not empty
        assert frame["caption"].tolist() == [c.strip() for c in captions]


# --- the word counter ------------------------------------------------------------------------------------------

VOCABULARY = ["bird", "birds", "Geese", "water", "lake", "the", "a", "isn't", "gull's", "quyvian", "forest",
              "Trees", "running", "2", "3rd", "long-legged", "é", "über"]
word_or_noise = st.one_of(st.sampled_from(VOCABULARY), st.text(alphabet=" \t\n.,;:!?'’-\x00()\"", max_size=3))
sentence = st.lists(word_or_noise, max_size=12).map(" ".join)


@pytest.fixture(scope="module")
def extractor():
    return WordExtractor()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sentences=st.lists(sentence, max_size=6))
def test_count_is_what_words_says_sentence_by_sentence(extractor, sentences):
    counts = extractor.count(sentences)
    per_sentence = [extractor.words(s) for s in sentences]
    expected = {}
    for words in per_sentence:
        for w in words:
            occurrences, in_sentences = expected.get(w, (0, 0))
            expected[w] = (occurrences + 1, in_sentences)
        for w in set(words):
            expected[w] = (expected[w][0], expected[w][1] + 1)
    assert counts == expected
    for word, (occurrences, in_sentences) in counts.items():
        assert 1 <= in_sentences <= min(occurrences, len(sentences))
        assert word == word.lower() and word.isalpha() and len(word) >= extractor.min_length


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sentences=st.lists(sentence, max_size=6), data=st.data())
def test_count_does_not_depend_on_sentence_order_or_batching(extractor, sentences, data):
    shuffled = data.draw(st.permutations(sentences))
    assert extractor.count(shuffled) == extractor.count(sentences)
    assert extractor.count_many([sentences, shuffled]) == [extractor.count(sentences)] * 2
