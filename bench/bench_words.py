"""Benchmark of the word step: cached `WordExtractor` against the word-by-word `NaiveWordExtractor`.

    python -m bench.bench_words            # 20,000 sentences
    python -m bench.bench_words --quick    # 2,000 sentences

Single process, one thread; the fast path reports the best of 3 runs, since the machine may be shared.
WordNet is loaded before the clocks start: loading is a one-off cost per process, not per sentence.
The fast path is timed with a fresh cache (every distinct token looked up once, as at the start of a
run) and with the cache already filled. The naive path is timed on the first 4,000 sentences, and
the counts of both paths are compared there; the command exits non-zero when they differ.
"""
from __future__ import annotations

import argparse
import random
import sys
import time

from core.engine.words import NaiveWordExtractor, WordExtractor

SENTENCES_PER_IMAGE = 32  # what an explain run samples per image by default

BIRDS = ["duck", "ducks", "gull", "seagull", "goose", "geese", "heron", "pelican", "sparrow", "woodpecker",
         "warbler", "tern", "albatross", "flamingo", "flamingos", "cormorant", "owl", "parrot", "crow", "swan",
         "bird", "birds", "hummingbird", "kingfisher", "puffin", "penguin", "eagle", "robin", "finch", "loon"]
SCENES = ["lake", "lakes", "ocean", "sea", "river", "pond", "beach", "shore", "waves", "water", "waters",
          "forest", "woods", "bamboo forest", "field", "meadow", "grass", "trees", "mountain", "hills",
          "marsh", "swamp", "dock", "pier", "boat", "sky", "clouds", "rocks", "sand", "garden", "branch"]
ADJECTIVES = ["small", "large", "white", "black", "brown", "purple", "bright", "dark", "old", "wooden",
              "green", "blue", "calm", "sunny", "misty", "tall", "colorful", "long-legged", "yellow-billed",
              "beautiful", "wet", "sandy", "grassy", "bigger", "tallest", "red"]
VERBS = ["sitting", "standing", "perched", "flying", "swimming", "floating", "walking", "resting", "wading",
         "looking", "sits", "stands", "flies", "swims", "perches"]
PLACES = ["on", "by", "near", "over", "above", "in front of", "next to", "beside", "across"]
EXTRAS = ["in the background", "at sunset", "on a sunny day", "with old wooden planks in the background",
          "with its wings spread", "under a cloudy sky", "and it's looking for food", "in the foreground",
          "with 2 other birds", "with its bill open", "near some reeds and lilies", "at 5 o'clock"]
TEMPLATES = [
    "A photo of a {adj} {bird} {place} a {adj2} {scene} {extra}.",
    "The {bird} is {verb} {place} the {scene}, {extra}.",
    "{Adj} {bird} {verb} {place} the {adj2} {scene}.",
    "An image of two {bird} {verb} {place} a {scene} {extra}!",
    "This {bird}'s feathers are {adj}; it's {verb} {place} the {scene}.",
    "There's a {adj} {bird} {verb} {place} a {adj2} {scene} - {extra}.",
    "A picture of the {made_up} {bird} {place} the {scene} {extra}.",
    "{Bird} {verb} {place} {scene} and {scene2}, don't you think?",
    "A {adj} {made_up} is {verb} {place} the {scene} in \"{made_up2}\" style.",
    "Close-up: the {bird}'s {adj} wings, {verb} {place} the {scene} ({extra}).",
]
SYLLABLES = ["quy", "vi", "an", "zor", "bel", "tra", "ki", "mo", "fen", "lux", "dra", "qui", "pho", "ren",
             "ske", "lor", "vax", "ith", "ub", "olo"]


def made_up_word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))


def caption_corpus(n: int, seed: int = 0) -> list[str]:
    """`n` caption-like sentences like those the language model writes, made-up words included."""
    rng = random.Random(seed)
    # Most invented words recur (the model repeats its inventions); one sentence in ten brings a new one.
    made_up_pool = [made_up_word(rng) for _ in range(300)]
    sentences = []
    for _ in range(n):
        pick = {"adj": rng.choice(ADJECTIVES), "adj2": rng.choice(ADJECTIVES), "bird": rng.choice(BIRDS),
                "scene": rng.choice(SCENES), "scene2": rng.choice(SCENES), "verb": rng.choice(VERBS),
                "place": rng.choice(PLACES), "extra": rng.choice(EXTRAS),
                "made_up": made_up_word(rng) if rng.random() < 0.1 else rng.choice(made_up_pool),
                "made_up2": rng.choice(made_up_pool)}
        pick["Adj"], pick["Bird"] = pick["adj"].capitalize(), pick["bird"].capitalize()
        sentence = rng.choice(TEMPLATES).format(**pick)
        sentences.append(sentence.upper() if rng.random() < 0.01 else sentence)
    return sentences


def by_image(sentences: list[str]) -> list[list[str]]:
    return [sentences[i:i + SENTENCES_PER_IMAGE] for i in range(0, len(sentences), SENTENCES_PER_IMAGE)]


def _best_of(repeats: int, make_fn, arg) -> tuple[float, object]:
    """Shortest wall time of `make_fn()(arg)` over `repeats` runs (others share this machine), and a result."""
    best = float("inf")
    for _ in range(repeats):
        fn = make_fn()
        start = time.perf_counter()
        result = fn(arg)
        best = min(best, time.perf_counter() - start)
    return best, result


def run(quick: bool = False) -> dict:
    """Time both paths on one corpus; the figures, and whether their counts agree."""
    n_sentences = 2_000 if quick else 20_000
    n_naive = 1_000 if quick else 4_000  # the naive path is timed on the first images only
    repeats = 1 if quick else 3
    corpus = caption_corpus(n_sentences)
    images = by_image(corpus)
    naive_images = images[: max(1, n_naive // SENTENCES_PER_IMAGE)]
    n_naive = sum(map(len, naive_images))

    warm_up = time.perf_counter()
    WordExtractor().words("geese")  # loads WordNet once for the whole process
    wordnet_load_s = time.perf_counter() - warm_up

    naive_s, naive_counts = _best_of(1, lambda: NaiveWordExtractor().count_many, naive_images)
    cold_s, fast_counts = _best_of(repeats, lambda: WordExtractor().count_many, images)  # a new cache each time
    fast = WordExtractor()
    fast.count_many(images)
    warm_s, warm_counts = _best_of(repeats, lambda: fast.count_many, images)

    identical = fast_counts[: len(naive_images)] == naive_counts and warm_counts == fast_counts
    naive_rate = n_naive / naive_s
    return {
        "sentences": n_sentences,
        "images": len(images),
        "naive_sentences": n_naive,
        "distinct_tokens": len(fast._lemmas),
        "distinct_chunks": len(fast._chunks),
        "wordnet_load_s": wordnet_load_s,
        "naive_sentences_per_s": naive_rate,
        "fast_cold_sentences_per_s": n_sentences / cold_s,
        "fast_warm_sentences_per_s": n_sentences / warm_s,
        "speedup_cold": n_sentences / cold_s / naive_rate,
        "speedup_warm": n_sentences / warm_s / naive_rate,
        "counts_identical": identical,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 2,000-sentence corpus")
    r = run(quick=parser.parse_args(argv).quick)
    print(f"word step: {r['sentences']:,} sentences in {r['images']:,} images of {SENTENCES_PER_IMAGE}, "
          f"{r['distinct_tokens']:,} distinct tokens; WordNet loaded in {r['wordnet_load_s']:.1f} s (not timed)")
    print(f"{'path':<22}{'sentences/s':>14}{'vs naive':>10}")
    print(f"{'naive (' + format(r['naive_sentences'], ',') + ')':<22}{r['naive_sentences_per_s']:>14,.0f}{1:>9.1f}x")
    print(f"{'fast, fresh cache':<22}{r['fast_cold_sentences_per_s']:>14,.0f}{r['speedup_cold']:>9.1f}x")
    print(f"{'fast, warm cache':<22}{r['fast_warm_sentences_per_s']:>14,.0f}{r['speedup_warm']:>9.1f}x")
    print("counts identical" if r["counts_identical"] else "COUNTS DIFFER between the naive and the fast path")
    return 0 if r["counts_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
