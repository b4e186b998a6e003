"""Is a word map right? The pointing game on images whose object masks are known.

For each image, its most used scene word (water, lake, forest, ...: core.evaluation.openworld.KIND_WORDS) and
its most used object word (a word WordNet places under an object superclass: bird, duck, heron, ...) are mapped
(core.engine.word_map). Each word has its region: an object word the object, a scene word the scene around it
(the rest of the image). As in the pointing game of Zhang et al., a map's peak is a hit when it lies within a
tolerance of its word's region, here half a cell of the classifier's last feature map (16 px of a 224 px input: a
7 x 7 map cannot say more; Zhang et al. allow 15 px), for either kind alike; the strict rate (on the region
itself) is reported beside it. A flat map (no part of the image makes the word any likelier) has no peak: a miss.
Two baselines are scored on the same images by the same rules: a peak drawn uniformly at random, and the centre of
the crop (TorchRay's "center" method): where objects sit near the middle, as a photographer or a world builder puts
them, pointing at the centre already finds most of them, and a map is worth what it adds to that.

    rows = pointing_game(items, classifier, translator, lm)   # items: image, mask (over the image), sentences
    summary = score_pointing(rows)
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
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


def distance_to(region: np.ndarray) -> np.ndarray:
    """Each pixel's distance, in pixels, to the nearest pixel of `region` (0 inside it; inf for an empty region)."""
    from scipy.ndimage import distance_transform_edt

    if not region.any():
        return np.full(region.shape, np.inf)
    return distance_transform_edt(~region)


RULE = ("the pointing game: a map's peak is a hit within {tol} px of its word's region (an object word's: the "
        "object; a scene word's: the scene around it), strict on the region itself; a flat map is a miss; random: a "
        "uniformly drawn peak on the same images, by the same rules; centre: the crop's centre as the peak")


def default_tolerance(preprocessing) -> int:
    """Half of a 7 x 7 feature map's cell of the input crop, in pixels (16 of 224): the pointing game's default."""
    return preprocessing.crop // 14


def regions(item, preprocessing, extractor, object_superclasses=None) -> list[tuple[str, str, np.ndarray, float]]:
    """(kind, word, each pixel's distance to the word's region, the object's share of the crop) for each word kind
    that an item's sentences use; `item`: a row with mask (over the image) and sentences."""
    mask = crop_like_input(np.asarray(item.mask, dtype=bool), preprocessing)
    away = {"object": distance_to(mask), "scene": distance_to(~mask)}
    return [(kind, word, away[kind], float(mask.mean()))
            for kind, word in words_to_map(list(item.sentences), extractor, object_superclasses).items()
            if word is not None]


def centre_baseline(items: pd.DataFrame, preprocessing, extractor=None, object_superclasses=None,
                    tolerance: int | None = None) -> dict:
    """{kind: centre_hit_rate, centre_ci95, centre_strict_hit_rate, maps}: the crop's centre as every map's peak, on
    the images and words pointing_game would map (no map is drawn: seconds). For games stored before the centre was
    scored beside them."""
    if extractor is None:
        from core.engine.words import WordExtractor

        extractor = WordExtractor()
    tol = tolerance if tolerance is not None else default_tolerance(preprocessing)
    rows = [{"kind": kind, **_centre(away, tol)} for it in items.itertuples()
            for kind, _, away, _ in regions(it, preprocessing, extractor, object_superclasses)]
    out = {}
    for kind, part in pd.DataFrame(rows, columns=["kind", "centre_distance", "centre_hit", "centre_strict_hit"]
                                   ).groupby("kind"):
        out[kind] = {"maps": len(part), **_centre_rates(part)}
    return out


def _centre(away: np.ndarray, tol: float) -> dict:
    d = float(away[away.shape[0] // 2, away.shape[1] // 2])
    return {"centre_distance": round(d, 1), "centre_hit": d <= tol, "centre_strict_hit": d == 0}


def _rate(hits: pd.Series) -> tuple[float, list[float]]:
    n, k = len(hits), int(hits.sum())
    return round(k / n, 4), [round(x, 4) for x in wilson_interval(k, n)]


def _centre_rates(part: pd.DataFrame) -> dict:
    (c, cci), (cs, _) = _rate(part["centre_hit"]), _rate(part["centre_strict_hit"])
    return {"centre_hit_rate": c, "centre_ci95": cci, "centre_strict_hit_rate": cs}


def pointing_game(items: pd.DataFrame, classifier, translator, lm, extractor=None, object_superclasses=None,
                  seed: int = 0, progress=None, tolerance: int | None = None, method: str = "auto",
                  occlusion=None, checkpoint: str | Path | None = None) -> pd.DataFrame:
    """One row per (image, word kind): image, kind ("scene" or "object"), word, object_share (of the input crop),
    peak (row, column; None for a flat map), distance (px from the peak to the word's region: 0 on it, NaN for a
    flat map), hit (distance within `tolerance`), strict_hit (on the region), and the same for a uniformly random
    peak (random_distance, random_hit, random_strict_hit: the baseline). `items`: image (PIL), image_id, mask (bool
    array over the image: the object), sentences. `tolerance`: pixels (default half a 7 x 7 map's cell of the
    input crop). `method`, `occlusion`: as core.engine.word_map.word_map's. `checkpoint`: a file that keeps each
    image's rows as they are done (JSON lines), so that a stopped game resumes where it was, to the same rows; one
    written with other settings is started over."""
    from core.engine.word_map import word_map

    if extractor is None:
        from core.engine.words import WordExtractor

        extractor = WordExtractor()
    rng = np.random.default_rng(seed)
    tol = tolerance if tolerance is not None else default_tolerance(classifier.preprocessing)
    settings = {"method": method, "occlusion": asdict(occlusion) if occlusion is not None else None, "seed": seed,
                "tolerance": tol, "object_superclasses": sorted(object_superclasses or []),
                "classifier": classifier.identity, "images": [str(i) for i in items["image_id"]]}
    done = _resume(checkpoint, settings)
    rows = []
    for n, it in enumerate(items.itertuples()):
        if str(it.image_id) in done:
            # Rows kept before the centre was scored get it now: it needs the mask, not the map.
            kept = done[str(it.image_id)]
            centres = {} if all("centre_hit" in r for r in kept) else {
                kind: _centre(away, tol) for kind, _, away, _ in
                regions(it, classifier.preprocessing, extractor, object_superclasses)}
            rows += [{**centres.get(r["kind"], {}), **r} for r in kept]
            side = classifier.preprocessing.crop  # the input crop, the masks' shape
            for _ in kept:
                rng.integers(side), rng.integers(side)  # the draws its random peaks took: later images' stay the same
            if progress:
                progress(n + 1, len(items))
            continue
        first = len(rows)
        for kind, word, away, share in regions(it, classifier.preprocessing, extractor, object_superclasses):
            peak = word_map(it.image, word, classifier, translator, lm, sentences=list(it.sentences),
                            extractor=extractor, method=method, occlusion=occlusion).peak()
            rand = (int(rng.integers(away.shape[0])), int(rng.integers(away.shape[1])))
            d = float(away[peak]) if peak is not None else float("nan")
            rd = float(away[rand])
            rows.append({"image_id": it.image_id, "kind": kind, "word": word, "object_share": round(share, 4),
                         "peak": peak, "distance": round(d, 1), "hit": d <= tol, "strict_hit": d == 0,
                         "random_distance": round(rd, 1), "random_hit": rd <= tol, "random_strict_hit": rd == 0,
                         **_centre(away, tol)})
        if checkpoint is not None:
            with open(checkpoint, "a") as f:
                f.write(json.dumps({"image_id": str(it.image_id), "rows": rows[first:]}, default=_plain) + "\n")
        if progress:
            progress(n + 1, len(items))
    out = pd.DataFrame(rows, columns=COLUMNS)
    out.attrs["tolerance"] = tol
    return out


def _plain(v):
    return v.item() if isinstance(v, np.generic) else str(v)


def _resume(checkpoint, settings: dict) -> dict[str, list[dict]]:
    """{image_id: its rows} from a checkpoint written with these settings; otherwise a new checkpoint, empty."""
    if checkpoint is None:
        return {}
    path, done = Path(checkpoint), {}
    lines = path.read_text().splitlines() if path.is_file() else []
    if lines and json.loads(lines[0]) == {"settings": settings}:
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the line a stop cut short
                break
            done[entry["image_id"]] = [{**r, "peak": tuple(r["peak"]) if r["peak"] is not None else None}
                                       for r in entry["rows"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x, default=_plain) + "\n" for x in
                            [{"settings": settings}] + [{"image_id": i, "rows": r} for i, r in done.items()]))
    return done


COLUMNS = ["image_id", "kind", "word", "object_share", "peak", "distance", "hit", "strict_hit", "random_distance",
           "random_hit", "random_strict_hit", "centre_distance", "centre_hit", "centre_strict_hit"]


def score_pointing(rows: pd.DataFrame, tolerance: int | None = None) -> dict:
    """Hit rates per word kind with 95% Wilson intervals (within the tolerance, and strict), the random and centre
    baselines' beside them, flat maps, the words, and (`off_centre`) the hit rate where the centre misses the word's
    region. `tolerance`: the rows' (pointing_game's) unless given."""
    tol = tolerance if tolerance is not None else rows.attrs.get("tolerance")
    out = {"rule": RULE.format(tol=tol if tol is not None else "the tolerance"), "tolerance_px": tol}
    for kind, part in rows.groupby("kind"):
        (h, ci), (rh, rci) = _rate(part["hit"]), _rate(part["random_hit"])
        out[kind] = {"maps": len(part), "hit_rate": h, "ci95": ci, "random_hit_rate": rh, "random_ci95": rci,
                     "words": part["word"].value_counts().head(10).to_dict(),
                     "mean_object_share": round(float(part["object_share"].mean()), 4)}
        if "strict_hit" in part:
            (sh, sci), (rsh, _) = _rate(part["strict_hit"]), _rate(part["random_strict_hit"])
            out[kind].update({"strict_hit_rate": sh, "strict_ci95": sci, "random_strict_hit_rate": rsh,
                              "flat_maps": int(part["distance"].isna().sum())})
        if "centre_hit" in part and part["centre_hit"].notna().all():
            out[kind].update(_centre_rates(part))
            # Where the centre misses the word's region (an object away from the middle), a map has to find it.
            off = part[~part["centre_hit"].astype(bool)]
            if len(off):
                (oh, oci), (orh, _) = _rate(off["hit"]), _rate(off["random_hit"])
                out[kind]["off_centre"] = {"maps": len(off), "hit_rate": oh, "ci95": oci, "random_hit_rate": orh}
    return out
