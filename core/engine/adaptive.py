"""Adaptive sentences per image (`sentences_per_image="auto"`): sample in rounds, stop an image once its words settle.

Every image gets `min_sentences` first, then `round_sentences` more at a time, up to `max_sentences`; after
each round the stopping rule (`settled`) decides whether the image has said what it has to say:

    RULE: an image stops once every word in at least 10% of its n sentences has a share standard error
          sqrt(p(1-p)/n) below the tolerance, or once its last round moved no word's share by more than it.

The first clause is precision: with the default tolerance 0.125 an image whose words are all in nearly every
sentence or nearly none stops after its first 8, and none goes past 20 (sqrt(.25/20) < 0.125). The second is
convergence: the shares no longer move. A word new to an image moves from 0.

Images that stop leave the sampler's batch at once and images that continue, or new ones, take their rows,
so a sampler call stays full (`AdaptiveSampler`). Sample j of an image is the same sentence whichever call
draws it (counter-based sampling, core.engine.sampling), and the rule reads only the image's own sentences,
so an image's sentences, and how many it gets, do not depend on the batching, the placement or a resumption.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Hashable

import torch

from core.engine.config import ExplainConfig
from core.engine.sampling import MAX_DRAWS, sample_sentences

FREQUENT = 0.10  # words in at least this share of an image's sentences are the ones the rule watches
RULE = ("an image stops once every word in at least 10% of its sentences has a share standard error "
        "sqrt(p(1-p)/n) below the tolerance, or the last round moved no word's share by more than the tolerance")


def shares(counts: dict[str, tuple[int, int]], n: int) -> dict[str, float]:
    """word -> share of the n sentences that use it, from `WordExtractor.count`'s (occurrences, sentences)."""
    return {w: k / n for w, (_, k) in counts.items()} if n else {}


def settled(now: dict[str, float], n: int, before: dict[str, float] | None, tolerance: float) -> bool:
    """The stopping rule (RULE) on an image's word shares after n sentences (`now`) and after the round
    before (`before`; None after the first round)."""
    frequent = [p for p in now.values() if p >= FREQUENT]
    if all((p * (1.0 - p) / n) ** 0.5 < tolerance for p in frequent):
        return True
    if before is None:
        return False
    words = set(now) | set(before)
    return max((abs(now.get(w, 0.0) - before.get(w, 0.0)) for w in words), default=0.0) <= tolerance


def next_round(cfg: ExplainConfig, n: int) -> int:
    """Sentences an image with n so far gets in its next round (0: it is done)."""
    if n == 0:
        return cfg.min_sentences
    return max(0, min(cfg.round_sentences, cfg.max_sentences - n))


def sentences_needed(sentences: list[str], cfg: ExplainConfig, count: Callable[[list[str]], dict]) -> int:
    """How many of an image's first sentences the rule takes, read from more of them than it needs (a fixed run
    of at least max_sentences): what an auto run gives that image, since its sentence j is the fixed run's."""
    if len(sentences) < cfg.max_sentences:
        raise ValueError(f"needs the image's first {cfg.max_sentences} sentences (max_sentences), got {len(sentences)}")
    return count_by_rule(sentences, cfg, count)


def count_by_rule(sentences: list[str], cfg: ExplainConfig, count: Callable[[list[str]], dict]) -> int:
    """The rounds of the rule over `sentences`, read in order: where it stops. It never reads past that point, so
    an auto run's stored sentences (exactly as many as it kept) give back their own count."""
    n, before = 0, None
    while True:
        n += next_round(cfg, n)
        now = shares(count(sentences[:n]), n)
        if n >= cfg.max_sentences or settled(now, n, before, cfg.tolerance):
            return n
        before = now


@dataclass
class _Image:
    tag: Hashable
    prefix: torch.Tensor  # (k, d)
    key: int
    sentences: list[str] = field(default_factory=list)
    shares: dict[str, float] | None = None  # at the last check
    screen: Callable[[str], bool] | None = None  # True for a sentence to draw again (a scene gate's)
    drawn: int = 0  # samples drawn, kept or not: the index of its next one


class AdaptiveSampler:
    """Images in (a prefix and a sampling key each), images out with as many sentences as their words needed.

        sampler = AdaptiveSampler(lm, cfg, extractor.count, batch_rows=512)
        sampler.add("img-1", prefix, key)                 # prefix (k, d)
        while sampler.pending_rows:
            for tag, sentences in sampler.step():         # one sampler call of at most batch_rows sequences
                ...

    A call takes the waiting images' next rounds oldest first (images already under way before new ones), so
    images finish roughly in the order they came, and fills up to `batch_rows` with whatever waits: images
    that stop free their rows for others. `count` is the run's word counter (`WordExtractor.count`), so the
    rule reads the words the run stores.
    """

    def __init__(self, lm, cfg: ExplainConfig, count: Callable[[list[str]], dict], batch_rows: int):
        if not cfg.adaptive:
            raise ValueError("AdaptiveSampler needs sentences_per_image='auto'")
        self.lm, self.cfg, self.count, self.batch_rows = lm, cfg, count, max(1, int(batch_rows))
        self.waiting: deque[_Image] = deque()
        self.calls = self.rows = 0  # sampler calls made and sequences sampled, for a run's throughput record

    def add(self, tag: Hashable, prefix: torch.Tensor, key: int, screen: Callable[[str], bool] | None = None
            ) -> None:
        """`screen`: True for a sentence the image may not keep (core.models.gate); it is drawn again, and the
        rule reads the kept ones, up to MAX_DRAWS times max_sentences draws."""
        self.waiting.append(_Image(tag, prefix, key, screen=screen))

    @property
    def pending_rows(self) -> int:
        """Sequences the waiting images' next rounds need."""
        return sum(next_round(self.cfg, len(im.sentences)) for im in self.waiting)

    def step(self) -> list[tuple[Hashable, list[str]]]:
        """One sampler call over the oldest waiting images' next rounds (at most batch_rows sequences, at least
        one image); returns the images that are done, with all their sentences."""
        take, rows = [], 0
        while self.waiting:
            r = next_round(self.cfg, len(self.waiting[0].sentences))
            if take and rows + r > self.batch_rows:
                break
            take.append(self.waiting.popleft())
            rows += r
        if not take:
            return []
        counts = [next_round(self.cfg, len(im.sentences)) for im in take]
        new = sample_sentences(self.lm, torch.stack([im.prefix for im in take]), counts, self.cfg,
                               keys=[im.key for im in take], first=[im.drawn for im in take])
        self.calls += 1
        self.rows += rows
        done, again = [], []
        for im, c, sents in zip(take, counts, new):
            im.drawn += c
            im.sentences += sents if im.screen is None else [s for s in sents if not im.screen(s)]
            n = len(im.sentences)
            now = shares(self.count(im.sentences), n)
            # A screened image may keep fewer than its round: the rule waits for min_sentences kept.
            spent = im.drawn >= MAX_DRAWS * self.cfg.max_sentences
            ready = n >= self.cfg.min_sentences and settled(now, n, im.shares, self.cfg.tolerance)
            if n >= self.cfg.max_sentences or spent or ready:
                done.append((im.tag, im.sentences))
            else:
                im.shares = now
                again.append(im)
        self.waiting.extendleft(reversed(again))  # under way: ahead of the images not started yet
        return done

    def run(self) -> dict[Hashable, list[str]]:
        """Sample every waiting image to the end: tag -> its sentences."""
        out = {}
        while self.waiting:
            out.update(self.step())
        return out
