"""The method in one object: classifier features -> translator prefix -> many sampled sentences -> words.

    explainer = Explainer(classifier, translator, lm, ExplainConfig(sentences_per_image=32))
    for e in explainer.explain([Image.open("bird.jpg")]):
        e.prediction_name, e.sentences[:3], e.top_words(10)

`Explainer.explain_batch` is the only classify -> translate -> sample step in the project: `explain`
(images in memory), the stored, resumable `explain_dataset` and its Ray actors all call it, so every
placement computes the same numbers in the same batches.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from torch.profiler import record_function  # named ranges in a profile (bench.gpu_check --profile); no-ops otherwise

from core.device import resolve
from core.engine.config import ExplainConfig, active_gate
from core.engine.sampling import image_key, resolve_batch_rows, sample_accepted, sample_sentences
from core.models.translator import check_compatible


@dataclass
class Explanation:
    """What a classifier's features say about one image."""

    prediction: int
    prediction_name: str
    confidence: float
    probabilities: list[float]  # softmax over the classifier's classes
    sentences: list[str]
    words: dict[str, tuple[int, int]]  # word -> (occurrences, sentences that use it), in order of first use
    # the scene kinds the translator's gate ruled out (core.models.gate): no sentence names them
    ruled_out: tuple[str, ...] = ()

    def top_words(self, k: int = 10) -> list[tuple[str, float]]:
        """The k words used by most sentences, with the share of sentences that use each."""
        n = max(len(self.sentences), 1)
        ranked = sorted(self.words.items(), key=lambda kv: (-kv[1][1], -kv[1][0]))
        return [(word, used / n) for word, (_, used) in ranked[:k]]


class StageTimer:
    """Wall seconds per pipeline stage, for a run's throughput record (is the sampler waiting on something?),
    each stage also a named range in a torch.profiler trace."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        with record_function(f"texplain.{name}"):
            yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t


def default_image_batch(on_gpu: bool) -> int:
    return 256 if on_gpu else 32


def images_per_call(cfg: ExplainConfig, on_gpu: bool) -> int:
    """Images per `explain_batch` call of a dataset run: a whole number of the sampler's chunks
    (batch_rows // N images) and of the classifier's image batches, so both stages see full batches and
    every placement cuts the stream at the same images."""
    import math

    per_sampler = max(1, (cfg.batch_rows or (32768 if on_gpu else 512)) // cfg.first_round)
    return math.lcm(per_sampler, cfg.image_batch or default_image_batch(on_gpu))


def picklable_preprocess(classifier) -> Callable:
    """The classifier's preprocessing without the model, for decoding processes: its ImageTransform, or
    `preprocess` for a classifier handed in from Python that has none."""
    return getattr(classifier, "image_transform", None) or classifier.preprocess


class Explainer:
    """A classifier, its translator and a language model, placed on the configured device and ready to explain.

    The constructor checks that the translator was trained for this classifier's features and this LM, moves
    the three models to `cfg.device` (CUDA + bf16 where present, else CPU float32) and settles the sizes that
    depend on the device (`cfg.batch_rows` from free GPU memory, `cfg.image_batch`), so a batch that cannot
    fit fails here rather than half-way through a dataset.
    """

    def __init__(self, classifier, translator, lm, cfg: ExplainConfig | None = None, extractor=None):
        check_compatible(translator.config, classifier, lm)
        cfg = cfg or ExplainConfig()
        self.classifier, self.translator, self.lm = classifier, translator, lm
        self.compute = resolve(cfg.device, cfg.dtype)
        classifier.to(self.compute.device)
        translator.to(self.compute.device)
        lm.model.to(self.compute.device, self.compute.dtype)
        on_gpu = self.compute.device.type == "cuda"
        # With auto, a sampler call holds image rounds (min_sentences or round_sentences sequences each).
        per_image = max(cfg.min_sentences, cfg.round_sentences) if cfg.adaptive else cfg.sentences_per_image
        self.cfg = replace(cfg, batch_rows=resolve_batch_rows(lm, translator.config.prefix_length, cfg.max_new_tokens,
                                                              per_image, cfg.batch_rows),
                           image_batch=cfg.image_batch or default_image_batch(on_gpu))
        self._extractor = extractor
        self.gate = active_gate(translator, cfg)  # core.models.gate: screens the sentences, if the translator has one
        self._dtype = next(classifier.parameters()).dtype
        self.stages = StageTimer()

    @property
    def extractor(self):
        if self._extractor is None:  # WordNet loads on first use: explain_batch alone never needs it
            from core.engine.words import WordExtractor

            self._extractor = WordExtractor()
        return self._extractor

    @torch.inference_mode()
    def classify_translate(self, x: torch.Tensor, ruled_out: bool = False):
        """Preprocessed images x (B, 3, H, W) -> softmax probabilities (B, C) on the CPU and prefixes (B, k, d);
        with `ruled_out`, also the scene kinds the gate rules out for each image (empty without a gate)."""
        probs, prefixes, blocked = [], [], []
        with self.stages("classify_translate"):
            for i0 in range(0, len(x), self.cfg.image_batch):
                xb = x[i0:i0 + self.cfg.image_batch].to(self.compute.device, non_blocking=True)
                z, logits = self.classifier.features_and_logits(xb.to(self._dtype))  # (b, D), (b, C)
                probs.append(logits.float().softmax(-1).cpu())
                prefixes.append(self.translator(z.float()))  # (b, k, d)
                if ruled_out and self.gate is not None:
                    blocked += self.gate.blocked(z.float())
        if not ruled_out:
            return torch.cat(probs), torch.cat(prefixes)
        return torch.cat(probs), torch.cat(prefixes), blocked or [frozenset()] * len(x)

    def screen(self, blocked: frozenset[str]):
        """A sentence screen for an image whose features rule out the scene kinds `blocked`: True for a sentence
        that names one of them (drawn again). None when nothing is ruled out."""
        if not blocked:
            return None
        gate, words = self.gate, self.extractor.words
        return lambda sentence: gate.names_blocked(words(sentence), blocked)

    def adaptive_sampler(self):
        """An AdaptiveSampler over this explainer's LM, settings and word counter (sentences_per_image="auto")."""
        from core.engine.adaptive import AdaptiveSampler

        return AdaptiveSampler(self.lm, self.cfg, self.extractor.count, self.cfg.batch_rows)

    @torch.inference_mode()
    def explain_batch(self, x: torch.Tensor, image_ids: Sequence, ruled_out: list | None = None
                      ) -> tuple[torch.Tensor, list[list[str]]]:
        """Preprocessed images x (B, 3, H, W) -> softmax probabilities (B, C) on the CPU and B lists of
        sentences: `cfg.sentences_per_image` each, or with "auto" as many as each image's words need (the
        images of this batch share the sampler's calls). `image_ids` fix each image's random stream (see
        `image_key`). A list passed as `ruled_out` receives the scene kinds the gate ruled out for each image."""
        if len(image_ids) != len(x):
            raise ValueError(f"image_ids has {len(image_ids)} entries for {len(x)} images")
        probs, prefixes, blocked = self.classify_translate(x, ruled_out=True)
        if ruled_out is not None:
            ruled_out += blocked
        screens = [self.screen(b) for b in blocked]
        keys = [image_key(i, self.cfg.seed) for i in image_ids]
        with self.stages("sample"):
            if self.cfg.adaptive:
                sampler = self.adaptive_sampler()
                for i, (prefix, key, screen) in enumerate(zip(prefixes, keys, screens)):
                    sampler.add(i, prefix, key, screen)
                done = sampler.run()
                sentences = [done[i] for i in range(len(keys))]
            elif any(screens):
                sentences, _ = sample_accepted(self.lm, prefixes, self.cfg.sentences_per_image, self.cfg, keys,
                                               screens)
            else:
                sentences = sample_sentences(self.lm, prefixes, self.cfg.sentences_per_image, self.cfg, keys)
        return probs, sentences

    def explain(self, images: Sequence, image_ids: Sequence | None = None) -> list[Explanation]:
        """Explain PIL images in memory: prediction, sentences and word counts per image, nothing stored.

        With the `image_ids` of a run's images and the run's settings, the sentences are those of the run.
        """
        if not len(images):
            return []
        x = torch.stack([self.classifier.preprocess(im) for im in images])
        ids = list(image_ids) if image_ids is not None else list(range(len(images)))
        blocked = []
        probs, sentences = self.explain_batch(x, ids, ruled_out=blocked)
        out = []
        for p, sents, words, off in zip(probs, sentences, self.extractor.count_many(sentences), blocked):
            conf, pred = p.max(-1)
            out.append(Explanation(int(pred), self.classifier.class_names[int(pred)], float(conf), p.tolist(), sents,
                                   words, tuple(sorted(off))))
        return out


@torch.inference_mode()
def classify_images(classifier, images: Sequence, device: torch.device | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL images -> features z (B, D) in float32 and softmax probabilities (B, C), with no translator."""
    p = next(classifier.parameters())
    x = torch.stack([classifier.preprocess(im) for im in images]).to(device or p.device)
    z, logits = classifier.features_and_logits(x.to(p.dtype))
    return z.float(), logits.float().softmax(-1)
