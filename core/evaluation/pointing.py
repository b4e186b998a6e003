"""Is a word map right? The pointing game on images whose object masks are known.

For each image, its most used scene word (water, lake, forest, ...: core.evaluation.openworld.KIND_WORDS) and
its most used object word (a word WordNet places under an object superclass: bird, duck, heron, ...) are mapped
(core.engine.word_map); a scene word's map should peak outside the object, an object word's on it, within a
tolerance of half a cell of the classifier's last feature map (16 px of a 224 px input: a 7 x 7 map cannot say
more; the pointing game of Zhang et al. allows 15 px). The same images with a map's peak drawn uniformly at
random are the baseline, scored in the same run with the same rules.

    rows = pointing_game(items, classifier, translator, lm)   # items: image, mask (over the image), sentences
    summary = score_pointing(rows)
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from core.analysis.stats import wilson_interval
from core.evaluation.openworld import KIND_WORDS, superclass_of

SCENE_WORDS = frozenset().union(*KIND_WORDS.values())


def crop_like_input(mask: np.ndarray, preprocessing) -> np.ndarray:
    """A mask over the original image as the classifier sees it: the shorter side resized to `resize`, then the
    centre `crop` (nearest-neighbour, so it stays boolean)."""
    from PIL import Image

    im = Image.fromarray(mask.astype(np.uint8) * 255)
    w, h = im.size
    s = preprocessing.resize / min(w, h)
    im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.NEAREST)
    w, h = im.size
    c = preprocessing.crop
    left, top = int(round((w - c) / 2)), int(round((h - c) / 2))
    return np.asarray(im.crop((left, top, left + c, top + c))) > 127


def words_to_map(sentences: list[str], extractor, object_superclasses: Iterable[str] | None = None
                 ) -> dict[str, str | None]:
    """{"scene": the scene word most sentences use, "object": the object word most sentences use} (None when
    the sentences have none); `object_superclasses` keeps object words to those superclasses (e.g. {"bird"})."""
    counts = extractor.count(sentences)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))
    keep = set(object_superclasses) if object_superclasses is not None else None
    scene = next((w for w, _ in ranked if w in SCENE_WORDS), None)
    obj = next((w for w, _ in ranked if w not in SCENE_WORDS and superclass_of(w) is not None
                and (keep is None or superclass_of(w) in keep)), None)
    return {"scene": scene, "object": obj}


def near(mask: np.ndarray, tolerance: int) -> np.ndarray:
    """The mask grown by `tolerance` pixels (a disk)."""
    from scipy.ndimage import binary_dilation

    if tolerance <= 0:
        return mask
    r = np.arange(-tolerance, tolerance + 1)
    disk = (r[:, None] ** 2 + r[None, :] ** 2) <= tolerance ** 2
    return binary_dilation(mask, structure=disk)


def pointing_game(items: pd.DataFrame, classifier, translator, lm, extractor=None, object_superclasses=None,
                  seed: int = 0, progress=None, tolerance: int | None = None, method: str = "auto",
                  patches: int = 7) -> pd.DataFrame:
    """One row per (image, word kind): image, kind ("scene" or "object"), word, hit (the map's peak is where the
    word should be), random_hit (a uniformly random peak, the baseline), object_share (of the input crop).
    `items`: image (PIL), image_id, mask (bool array over the image: the object), sentences. `method`, `patches`:
    as core.engine.word_map.word_map's."""
    from core.engine.word_map import word_map

    if extractor is None:
        from core.engine.words import WordExtractor

        extractor = WordExtractor()
    rng = np.random.default_rng(seed)
    tol = tolerance if tolerance is not None else classifier.preprocessing.crop // 14  # half of a 7 x 7 map's cell
    rows = []
    for n, it in enumerate(items.itertuples()):
        mask = crop_like_input(np.asarray(it.mask, dtype=bool), classifier.preprocessing)
        grown = near(mask, tol)
        share = float(mask.mean())
        for kind, word in words_to_map(list(it.sentences), extractor, object_superclasses).items():
            if word is None:
                continue
            peak = word_map(it.image, word, classifier, translator, lm, sentences=list(it.sentences),
                            extractor=extractor, method=method, patches=patches).peak()
            rand = (int(rng.integers(mask.shape[0])), int(rng.integers(mask.shape[1])))
            # An object word may miss by the tolerance; a scene word must not land on the object itself.
            hit = (lambda at: bool(grown[at])) if kind == "object" else (lambda at: not bool(mask[at]))
            rows.append({"image_id": it.image_id, "kind": kind, "word": word, "object_share": round(share, 4),
                         "hit": hit(peak), "random_hit": hit(rand)})
        if progress:
            progress(n + 1, len(items))
    return pd.DataFrame(rows, columns=["image_id", "kind", "word", "object_share", "hit", "random_hit"])


def score_pointing(rows: pd.DataFrame) -> dict:
    """Hit rates per word kind with 95% Wilson intervals, the random baseline's beside them, and the words."""
    out = {"rule": "a scene word's map peaks outside the object, an object word's inside; random: a uniformly "
                   "drawn peak on the same images"}
    for kind, part in rows.groupby("kind"):
        n, k, r = len(part), int(part["hit"].sum()), int(part["random_hit"].sum())
        out[kind] = {"maps": n, "hit_rate": round(k / n, 4), "ci95": [round(x, 4) for x in wilson_interval(k, n)],
                     "random_hit_rate": round(r / n, 4),
                     "random_ci95": [round(x, 4) for x in wilson_interval(r, n)],
                     "words": part["word"].value_counts().head(10).to_dict(),
                     "mean_object_share": round(float(part["object_share"].mean()), 4)}
    return out
