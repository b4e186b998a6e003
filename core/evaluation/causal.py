"""Does the classifier use what a flag names? Remove the word's region and see what changes.

A flag is a correlation: "lake" is over-represented in the sentences of landbirds read as waterbirds. To test
it, for each image of the class whose sentences use the word: the word's map (core.engine.word_map) selects
its region (the top `share` of the map; none where the map is flat), the region is filled (blurred, or the
preprocessing's mean colour), and the image is classified and explained again (same sampling stream). The control
removes a rectangle of the same area at a random place. A flag whose region changes the prediction significantly
more often than the control (a paired bootstrap interval of the difference above zero) is **causal**; otherwise
**correlational only**.

A blurred scene is still the same scene, and where the scene fills most of the image a random rectangle removes
as much of it as the word's region does. `fill="swap"` asks the counterfactual instead: the region takes the same
pixels of another image of the class whose sentences lack the word (a landbird's land where the water was; for a
scene word, every word of its kind: no lake either), and the control fills the *same* region from an image of the
class whose sentences use the word (other water): the act of pasting, the region and the class are the same, only
what the word names differs. With `region="scene"` the region is the whole scene, everything but the object (the
top `object_share` of the predicted class's Grad-CAM), and each donor's own object is kept out of what is pasted:
the test for a scene word, which on the Waterbirds demo's truth calls water causal where removal cannot.

    result = verify_flag(run, "landbird", "lake", classifier, translator, lm)
    result.verdict, result.summary()
    texplain verify RUN --class landbird --word lake

Results are stored with the run (causal.json; shipped runs: under runs/.shipped/), one record per image, so an
interrupted test resumes where it stopped.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from core.analysis.stats import paired_gap, wilson_interval
from core.store import CAUSAL_FILE

RESULT_FILE = CAUSAL_FILE
FILLS = ("blur", "mean", "swap")
MAP_METHODS = ("auto", "gradient", "occlusion")
REGIONS = ("map", "scene")
MIN_IMAGES = 5  # fewer and the intervals say nothing


@dataclass
class CausalSettings:
    share: float = 0.2     # of the map's pixels removed: the word's region
    fill: str = "blur"     # "blur" (a strong Gaussian blur of the image), "mean" (the preprocessing's mean) or
    #                        "swap" (another image of the class without the word; control: one with it)
    seed: int = 0          # the control rectangles'
    max_images: int | None = None
    predicted: str | None = None  # only the class's images predicted as this class (a flag's misread images)
    map_method: str = "auto"  # the word map's: core.engine.word_map's "auto", "gradient" or "occlusion"
    region: str = "map"    # "map": the word map's top `share`; "scene": all but the object (swap only)
    object_share: float = 0.15  # region "scene": the object is the top of the predicted class's Grad-CAM

    def __post_init__(self):
        if not 0 < self.share < 1:
            raise ValueError(f"share must be in (0, 1), got {self.share}")
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill!r}")
        if self.map_method not in MAP_METHODS:
            raise ValueError(f"map_method must be one of {MAP_METHODS}, got {self.map_method!r}")
        if self.region not in REGIONS:
            raise ValueError(f"region must be one of {REGIONS}, got {self.region!r}")
        if self.region == "scene" and self.fill != "swap":
            raise ValueError("region 'scene' swaps the whole scene for another image's: it needs fill 'swap' (a "
                             "blurred or grey scene, against a random rectangle of most of the image, tells nothing)")

    def key(self, class_name: str, word: str) -> str:
        only = f"|predicted={self.predicted}" if self.predicted is not None else ""
        how = f"|map={self.map_method}" if self.map_method != "auto" else ""  # keys stored before it stay valid
        where = f"|scene={self.object_share}" if self.region == "scene" else ""
        return f"{class_name}|{word}|share={self.share}|fill={self.fill}|seed={self.seed}{only}{how}{where}"


@dataclass
class CausalResult:
    class_name: str
    word: str
    settings: dict
    rows: list[dict] = field(default_factory=list)  # per image: changed, control_changed, shares

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def summary(self) -> dict:
        df = self.frame
        n = len(df)
        out = {"class": self.class_name, "word": self.word, "images": n, **self.settings}
        if n == 0:
            return {**out, "verdict": "no image of the class uses the word"}

        def rate(col):
            k = int(df[col].sum())
            return {"rate": round(k / n, 4), "ci95": [round(x, 4) for x in wilson_interval(k, n)], "images": k}

        out["prediction_changed"] = rate("changed")
        out["control_prediction_changed"] = rate("control_changed")
        if "right_after" in df:  # did removing the region make predictions right (a misread fixed) or wrong?
            out["right_after"] = rate("right_after")
            out["control_right_after"] = rate("control_right_after")
        gap = paired_gap(df["changed"].to_numpy(float), df["control_changed"].to_numpy(float))
        out["difference"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in gap.items()}
        c = out["control_prediction_changed"]["rate"]
        out["ratio_to_control"] = round(out["prediction_changed"]["rate"] / c, 2) if c else None
        for col in ("share_before", "share_after", "share_control"):
            out[f"mean_{col}"] = round(float(df[col].mean()), 4)
        moved = paired_gap(df["share_after"].to_numpy(float), df["share_before"].to_numpy(float))
        out["word_share_change"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in moved.items()}
        out["verdict"] = self.verdict
        return out

    @property
    def verdict(self) -> str:
        df = self.frame
        if len(df) < MIN_IMAGES:
            return "too few images"
        gap = paired_gap(df["changed"].to_numpy(float), df["control_changed"].to_numpy(float))
        return "causal" if gap["low"] > 0 else "correlational only"


def fill_region(x: torch.Tensor, region: np.ndarray, fill: str) -> torch.Tensor:
    """x (3, H, W), preprocessed, with the pixels of `region` (H, W) replaced by a blur of x or by 0 (the
    preprocessing's mean colour)."""
    m = torch.from_numpy(region).to(x.device)[None]
    if fill == "mean":
        return torch.where(m, torch.zeros_like(x), x)
    from core.engine.word_map import blurred

    return torch.where(m, blurred(x), x)


def object_region(classifier, x: torch.Tensor, share: float, occlusion=None) -> np.ndarray:
    """Where the object is, estimated: the top `share` of the Grad-CAM of the classifier's prediction for `x`
    (3, H, W, preprocessed), or, without a spatial feature map, of how much hiding each part of the input lowers the
    predicted class's probability (`occlusion`: core.engine.word_map.Occlusion). On the Waterbirds demo's ERM
    classifier the Grad-CAM's top 15% holds 61% of the bird."""
    from core.engine.word_map import Occlusion, class_map, occlusion_map, to_crop, top_share

    heat = class_map(x, classifier)
    if heat is None:
        p = next(classifier.parameters())
        x = x.to(p.device, p.dtype)
        with torch.inference_mode():
            probs = torch.softmax(classifier.features_and_logits(x[None])[1].float(), -1)[0]
        k = int(probs.argmax())

        def prob(xs):
            return torch.softmax(classifier.features_and_logits(xs)[1].float(), -1)[:, k]

        heat = to_crop(occlusion_map(x, prob, float(probs[k]), occlusion or Occlusion()), x.shape[-2:])
    return top_share(heat, share)


def swap_region(x: torch.Tensor, region: np.ndarray, donor: torch.Tensor) -> torch.Tensor:
    """x (3, H, W), preprocessed, with the pixels of `region` taken from `donor` (another image, preprocessed alike)."""
    return torch.where(torch.from_numpy(region).to(x.device)[None], donor.to(x.device, x.dtype), x)


def kindred_words(word: str) -> frozenset:
    """The word and, for a scene word, every word of its kind (core.evaluation.openworld.KIND_WORDS): water, lake,
    pond, ... name the same thing."""
    from core.evaluation.openworld import KIND_WORDS

    return frozenset({word}).union(*(ws for ws in KIND_WORDS.values() if word in ws))


def donor_pools(of_class: pd.DataFrame, used: set, class_name: str, word: str,
                named: set | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The class's images whose sentences name none of what the word names (`named`: the images that do; default
    `used`), and those that use the word: where a swap takes its pixels."""
    named = used if named is None else named | used
    without, with_ = of_class[~of_class["image_id"].isin(named)], of_class[of_class["image_id"].isin(used)]
    if without.empty or len(with_) < 2:
        raise ValueError(f"fill 'swap' needs {class_name} images whose sentences lack {word!r} and at least two that "
                         f"use it (one to test, another for the control): {len(without)} lack it, {len(with_)} use "
                         "it; use fill 'blur' or 'mean'")
    return without, with_


def random_rectangle(rng: np.random.Generator, shape: tuple[int, int], area: int) -> np.ndarray:
    """A rectangle of about `area` pixels (aspect ratio 1:2 to 2:1) at a uniformly random place."""
    H, W = shape
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    h = int(np.clip(round(np.sqrt(area * aspect)), 1, H))
    w = int(np.clip(round(area / h), 1, W))
    top, left = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    out = np.zeros(shape, dtype=bool)
    out[top:top + h, left:left + w] = True
    return out


def _share(sentences: list[str], word: str, extractor) -> float:
    return float(np.mean([word in extractor.words(s) for s in sentences])) if sentences else 0.0


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def verify_flag(run, class_name: str, word: str, classifier, translator, lm, settings: CausalSettings | None = None,
                cfg=None, extractor=None, progress=None, store: bool = True, out: str | Path | None = None,
                region_for=None, region_name: str = "given") -> CausalResult:
    """The causal test of (class, word) on a run's images (see the module docstring). Stored in `out` (default:
    causal.json of the run, or of its overlay for a shipped run). `region_for(image, sentences)`: the region to
    remove as a boolean mask over the classifier's input crop, instead of the word map's top `share` (e.g. a
    segmentation of what the word names), stored under `region_name` (one name per kind of region)."""
    from core.data import load_rgb
    from core.engine.config import ExplainConfig
    from core.engine.explainer import Explainer
    from core.engine.word_map import word_map
    from core.store import Run, user_file

    run = run if isinstance(run, Run) else Run.open(run)
    settings = settings or CausalSettings()
    if extractor is None:
        from core.engine.words import WordExtractor

        extractor = WordExtractor()
    word = word.strip().lower()
    m = run.manifest
    names = list((m.get("dataset") or {}).get("class_names") or [])
    if class_name not in names:
        raise ValueError(f"{class_name!r} is not a class of run {run.name}; its classes are {names}")
    s = m.get("settings") or {}
    cfg = cfg or ExplainConfig(**{k: s[k] for k in ("sentences_per_image", "top_p", "temperature", "max_new_tokens",
                                                    "seed") if k in s})
    images = run.images()
    images = images[(images["label"] == names.index(class_name)) & images["prediction"].notna()]
    of_class = images
    if settings.predicted is not None:
        if settings.predicted not in names:
            raise ValueError(f"{settings.predicted!r} is not a class of run {run.name}; its classes are {names}")
        images = images[images["prediction"] == names.index(settings.predicted)]
    used = set(run.query("SELECT DISTINCT image_id FROM words WHERE word = ?", [word])["image_id"])
    images = images[images["image_id"].isin(used)].sort_values("image_id")
    if settings.max_images is not None:
        images = images.head(settings.max_images)
    path = Path(out) if out is not None else user_file(run.path, RESULT_FILE)
    key = settings.key(class_name, word) + (f"|region={region_name}" if region_for is not None else "")
    stored = _load(path).get(key, {}).get("rows", [])
    done = {r["image_id"] for r in stored}
    result = CausalResult(class_name, word, asdict(settings), list(stored))
    if images.empty:
        return result
    donors = None
    if settings.fill == "swap":
        # A donor "without water" must not show a lake either: a scene word's kind-mates are kept out of its pool.
        kin = sorted(kindred_words(word))
        named = set(run.query(f"SELECT DISTINCT image_id FROM words WHERE word IN ({', '.join('?' * len(kin))})",
                              kin)["image_id"])
        donors = donor_pools(of_class, used, class_name, word, named)

        @lru_cache(maxsize=64)  # few donors serve many images: read each, and find its object, once
        def donor(path):
            px = classifier.preprocess(load_rgb(run.image_path(path)))
            # A scene is swapped for the donor's scene alone: its own object stays out of what is pasted, or a
            # landbird pasted beside the image's bird would pull toward landbird whatever the scene.
            obj = object_region(classifier, px, settings.object_share) if settings.region == "scene" \
                else np.zeros(px.shape[-2:], dtype=bool)
            return px, obj

    explainer = Explainer(classifier, translator, lm, cfg, extractor)
    sentences = run.sentences(list(images["image_id"])).groupby("image_id")["text"].agg(list)
    rng = np.random.default_rng(settings.seed)
    t0 = time.time()
    for n, r in enumerate(images.itertuples()):
        # One control draw per image whether or not it is done, so a resumed test draws what a whole one would.
        control_seed = int(rng.integers(2**31))
        if r.image_id in done:
            continue
        image = load_rgb(run.image_path(r.path))
        sents = sentences.get(r.image_id, [])
        x = classifier.preprocess(image)
        if region_for is None and settings.region == "scene":
            region, how = ~object_region(classifier, x, settings.object_share), "scene"
        elif region_for is None:
            wm = word_map(image, word, classifier, translator, lm, sentences=sents, extractor=extractor,
                          method=settings.map_method)
            # A flat map points nowhere: the word has no region, so nothing is removed (a top share of a flat map
            # would be its top-left corner, ties broken by position).
            region = np.zeros(x.shape[-2:], dtype=bool) if wm.flat else wm.top_share(settings.share)
            how = "flat" if wm.flat else wm.method
        else:
            region, how = np.asarray(region_for(image, sents), dtype=bool), region_name
        extra = {}
        if not region.any():
            # Nothing is removed (a flat map, an empty given region): the image is the run's own, in both arms, so
            # its prediction and sentences stand; re-explaining it twice would only spend time.
            pred, sampled = [int(r.prediction)] * 2, [sents, sents]
        else:
            if donors is None:
                control = random_rectangle(np.random.default_rng(control_seed), region.shape, int(region.sum()))
                batch = torch.stack([fill_region(x, region, settings.fill), fill_region(x, control, settings.fill)])
            else:  # the same region from an image without the word, and (the control) from one with it
                pick = np.random.default_rng(control_seed)
                without, with_ = donors[0], donors[1][donors[1]["image_id"] != r.image_id]
                a, b = without.iloc[int(pick.integers(len(without)))], with_.iloc[int(pick.integers(len(with_)))]
                (pa, oa), (pb, ob) = donor(a["path"]), donor(b["path"])
                batch = torch.stack([swap_region(x, region & ~oa, pa), swap_region(x, region & ~ob, pb)])
                extra = {"donor": a["image_id"], "control_donor": b["image_id"]}
            probs, sampled = explainer.explain_batch(batch, [r.image_id, r.image_id])
            pred = probs.argmax(-1).tolist()
        result.rows.append({"image_id": r.image_id, "prediction": int(r.prediction), "after": pred[0],
                            "control_after": pred[1], "changed": pred[0] != int(r.prediction),
                            "control_changed": pred[1] != int(r.prediction), "label": int(r.label),
                            "right_after": pred[0] == int(r.label), "control_right_after": pred[1] == int(r.label),
                            "share_before": _share(sents, word, extractor),
                            "share_after": _share(sampled[0], word, extractor),
                            "share_control": _share(sampled[1], word, extractor),
                            "region_share": round(float(region.mean()), 4), "map": how, **extra})
        if store:
            _save(path, key, result)
        if progress:
            progress(n + 1, len(images), time.time() - t0)
    return result


def _save(path: Path, key: str, result: CausalResult) -> None:
    doc = _load(path)
    doc[key] = {"class": result.class_name, "word": result.word, "settings": result.settings, "rows": result.rows,
                "summary": result.summary()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    tmp.replace(path)


def read_causal(run_path) -> dict:
    """Every causal test stored for a run: {key: {class, word, settings, rows, summary}} (yours over shipped)."""
    from core.store import run_files

    found = run_files(run_path, RESULT_FILE)
    doc = {}
    for origin in ("shipped", "yours"):
        if origin in found:
            doc.update(_load(found[origin]))
    return doc
