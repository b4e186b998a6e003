"""The second demo's classifier half: how the unmodified ImageNet EfficientNet-Lite0 fares on the mini
ImageNet-9 Backgrounds Challenge, per variation, with intervals and the background gap.

`texplain maintain imagenet9` builds the general caption world and
the mini ImageNet-9 when they are missing or stale, classifies every variation and writes
`classifier_accuracy.json` (per variation: accuracy, 95% Wilson interval, n, per-class accuracy; the
gap mixed_same - mixed_rand with a paired bootstrap interval over the shared foregrounds) and
`predictions.csv` (one row per image and variation) beside it, then prints the table.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core import paths
from core.analysis.stats import paired_gap, wilson_interval
from core.data import imagenet9 as in9
from core.demo.worlds import general as gw
from core.demo.worlds import imagenet9_mini as mini

RESULTS = paths.user_runs() / "imagenet9"


def classify_variations(root: str | Path, classifier="efficientnet-lite0", batch_size: int = 64,
                        variations=in9.VARIATIONS) -> pd.DataFrame:
    """One row per image and variation: image, variation, label, ImageNet top-1, its ImageNet-9 class (-1: none),
    the restricted ImageNet-9 prediction, and whether each is right."""
    import torch

    from core.data.readers import open_dataset
    from core.models.classifier import load_classifier

    clf = load_classifier(classifier)
    if len(clf.class_names) != 1000:
        raise ValueError(f"the ImageNet-9 map needs a 1000-class ImageNet classifier; this one has "
                         f"{len(clf.class_names)} classes")
    clf.eval()
    rows = []
    for variation in variations:
        ds = open_dataset(root, variation=variation)
        expected = [in9.IN9_CLASSES[i] for i in range(len(in9.IN9_CLASSES))]
        if ds.class_names != expected:
            raise ValueError(f"{root}/{variation} has classes {ds.class_names}; ImageNet-9 has {expected}")
        logits = []
        with torch.inference_mode():
            for start in range(0, len(ds), batch_size):
                batch = torch.stack([clf.preprocess(ds.load_image(r)) for r in ds.records[start:start + batch_size]])
                logits.append(clf(batch).float().numpy())
        logits = np.concatenate(logits)
        pred9, pred9r = in9.predict_in9(logits), in9.predict_in9(logits, restrict=True)
        for r, top1, p, pr in zip(ds.records, logits.argmax(1), pred9, pred9r):
            rows.append({"image": Path(r.path).stem, "variation": variation, "label": r.label,
                         "class_name": in9.IN9_CLASSES[r.label], "imagenet_top1": int(top1),
                         "imagenet_top1_name": clf.class_names[int(top1)], "pred_in9": int(p),
                         "pred_in9_restricted": int(pr), "correct": bool(p == r.label),
                         "correct_restricted": bool(pr == r.label)})
    return pd.DataFrame(rows)


def summarize(pred: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy per variation (Wilson intervals, per class) and the background gap, from `classify_variations`."""
    out: dict = {"protocol": "top-1 over ImageNet's 1000 classes mapped to ImageNet-9; outside the nine = wrong "
                             "(Xiao et al.); 'restricted' = argmax over the 370 ImageNet-9 classes only",
                 "variations": {}}
    for variation, g in pred.groupby("variation", sort=False):
        entry = {"n": int(len(g))}
        for col, key in (("correct", "accuracy"), ("correct_restricted", "accuracy_restricted")):
            k = int(g[col].sum())
            lo, hi = wilson_interval(k, len(g))
            entry[key] = {"value": k / len(g), "low": lo, "high": hi}
        entry["per_class"] = {c: float(v) for c, v in g.groupby("class_name", sort=False)["correct"].mean().items()}
        entry["outside_nine"] = float((g["pred_in9"] == -1).mean())
        out["variations"][variation] = entry
    if {"mixed_same", "mixed_rand"} <= set(pred["variation"]):
        pairs = {}
        for col in ("correct", "correct_restricted"):
            wide = pred.pivot(index="image", columns="variation", values=col)
            pairs[col] = paired_gap(wide["mixed_same"].to_numpy(), wide["mixed_rand"].to_numpy(), n_boot, seed)
        out["bg_gap"] = pairs["correct"]
        out["bg_gap_restricted"] = pairs["correct_restricted"]
    return out


def format_table(summary: dict) -> str:
    lines = [f"{'variation':<12} {'n':>5}  {'accuracy (95% CI)':<24} {'restricted to IN-9 (95% CI)':<28} outside-9"]
    for v, e in summary["variations"].items():
        a, r = e["accuracy"], e["accuracy_restricted"]
        lines.append(f"{v:<12} {e['n']:>5}  {a['value']:6.1%} ({a['low']:.1%}-{a['high']:.1%}){'':<5} "
                     f"{r['value']:6.1%} ({r['low']:.1%}-{r['high']:.1%}){'':<9} {e['outside_nine']:6.1%}")
    for key, label in (("bg_gap", "BG-gap"), ("bg_gap_restricted", "BG-gap (restricted)")):
        if key in summary:
            g = summary[key]
            lines.append(f"{label} (mixed_same - mixed_rand): {g['gap']:+.1%} "
                         f"(95% paired bootstrap {g['low']:+.1%} to {g['high']:+.1%}, n={g['n']})")
    return "\n".join(lines)


def run_experiment(root: str | Path = mini.IMAGENET9_MINI, out_dir: str | Path = RESULTS,
                   classifier="efficientnet-lite0", verbose: bool = True) -> dict:
    t0 = time.time()
    pred = classify_variations(root, classifier)
    summary = summarize(pred)
    world = Path(root) / "world.json"  # the mini world's settings; a real ImageNet-9 copy has none
    settings = json.loads(world.read_text()).get("settings") if world.exists() else None
    summary |= {"dataset": str(root), "dataset_settings": settings, "classifier": str(classifier),
                "seconds": round(time.time() - t0, 1)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pred.to_csv(out_dir / "predictions.csv", index=False)
    (out_dir / "classifier_accuracy.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    if verbose:
        print(format_table(summary))
        print(f"[imagenet9] classified {len(pred)} images in {summary['seconds']} s -> {out_dir}", flush=True)
    return summary


# --- the explaining half: a general translator for the unmodified classifier, explanations per variation ---

GENERAL_TRANSLATOR = paths.CHECKPOINTS / "translators" / "general"
# The shipped general translator's recipe, in two parts. First (trained on a lent H200 from a training pack,
# bf16 autocast: 151 steps per epoch; the lease's time ended in epoch 8 of the 10-epoch cosine schedule,
# and the validation loss was lowest after epoch 4, the epoch kept). On two CPU cores this is hours; it
# runs only when the translator is missing.
GENERAL_RECIPE = {"epochs": 10, "batch_size": 64, "lr": 1e-3, "warmup_steps": 100, "save_every": 50}
# Then a refinement for the plain backgrounds, its weak point (their colours, a word in a caption, weigh
# little in the caption loss): one-epoch stages from the translator above, each on every plain-background
# pair and as many photo pairs (general_refine_pairs), at a lower learning rate; bf16 autocast, ~10
# minutes a stage on a 2-core CPU with bf16 units. The stages were chosen by the val split's scene accuracy.
GENERAL_REFINE = {"epochs": 1, "batch_size": 64, "lr": 3e-4, "warmup_steps": 10, "save_every": 20,
                  "autocast_bf16": True}
GENERAL_REFINE_STAGES = 1
RUN_PREFIX = "imagenet9-"  # shipped runs: checkpoints/runs/imagenet9-<variation>


def general_translator_data(classifier, world: str | Path = gw.GENERAL_WORLD, views=None):
    """The general world's captions as training data (core.train.caption_pairs: four views per training image)."""
    from core.data import load_rgb
    from core.engine.train import VIEWS, caption_pairs

    return caption_pairs(classifier, gw.read_general_world(world), load_rgb, views=views or VIEWS, name=str(world))


def general_train_scenes(world: str | Path = gw.GENERAL_WORLD) -> np.ndarray:
    """The scene of each of general_translator_data's training pairs (its captions' order)."""
    world = Path(world)
    train = gw.read_general_world(world).query("split == 'train'").reset_index(drop=True)
    meta = pd.read_csv(world / "metadata.csv")
    scene = dict(zip((str(world / f) for f in meta["img_filename"]), meta["scene"]))
    return train["path"].map(scene).to_numpy()


def general_refine_pairs(world: str | Path = gw.GENERAL_WORLD, seed: int = 0, scenes=None) -> np.ndarray:
    """Indices into general_translator_data's training pairs for the refinement: every pair whose image is on
    a plain background and as many of the rest, drawn once with `seed` (sorted). `scenes`:
    general_train_scenes(world), when the caller has it."""
    scenes = general_train_scenes(world) if scenes is None else scenes
    plain = pd.Series(scenes).str.startswith(gw.PLAIN_PREFIX).to_numpy()
    photos = np.flatnonzero(~plain)
    drawn = np.random.default_rng(seed).choice(photos, min(int(plain.sum()), len(photos)), replace=False)
    return np.sort(np.concatenate([np.flatnonzero(plain), drawn]))


def train_general_translator(classifier, lm, out: str | Path = GENERAL_TRANSLATOR, world: str | Path = gw.GENERAL_WORLD,
                             cfg=None, work: str | Path | None = None, views=None,
                             refine_stages: int = GENERAL_REFINE_STAGES, refine_cfg=None):
    """Train (or resume) the general translator for `classifier` on the general world, then refine it
    (refine_general_translator, `refine_stages` stages); saved float16 to `out`."""
    import torch

    from core.demo.waterbirds import read_selection
    from core.engine.config import TrainConfig
    from core.engine.train import train_translator
    from core.models.translator import Translator

    data = general_translator_data(classifier, world, views)
    train_z, train_caps, val_z, val_caps = data
    cfg = cfg or TrainConfig(**GENERAL_RECIPE, **read_selection())
    work = Path(work or paths.ASSETS / "train" / "translator-general")
    tr = train_translator(classifier, lm, train_z, train_caps, work, val_z, val_caps, cfg,
                          data_info={"captions": f"general world {Path(world).name}", "train_pairs": len(train_caps),
                                     "val_pairs": len(val_caps)})
    if refine_stages:
        first = work / "first" / "translator"
        tr.save_pretrained(first, dtype=torch.float16)
        return refine_general_translator(classifier, lm, first, out, world, refine_stages, refine_cfg, work, data)
    tr.save_pretrained(out, dtype=torch.float16)
    return Translator.from_pretrained(out, classifier, lm)


def refine_general_translator(classifier, lm, start: str | Path, out: str | Path = GENERAL_TRANSLATOR,
                              world: str | Path = gw.GENERAL_WORLD, stages: int = GENERAL_REFINE_STAGES, cfg=None,
                              work: str | Path | None = None, data=None):
    """The refinement of a saved general translator `start`: `stages` one-epoch stages (`cfg`, default
    GENERAL_REFINE) on general_refine_pairs, each from the last's float16 weights (resumable: a stage
    already trained under `work` is not trained again); the last saved float16 to `out`.
    `data`: general_translator_data's tuple, when the caller has it."""
    from dataclasses import replace

    import torch

    from core.engine.config import TrainConfig
    from core.engine.train import train_translator
    from core.models.translator import Translator

    train_z, train_caps, val_z, val_caps = data or general_translator_data(classifier, world)
    all_scenes = general_train_scenes(world)
    keep = general_refine_pairs(world, scenes=all_scenes)
    z, caps = train_z[keep], [train_caps[i] for i in keep]
    scenes = all_scenes[keep]
    emphasis = [gw.scene_span(c, sc) for c, sc in zip(caps, scenes)]  # used where cfg.emphasis_weight != 1
    if cfg is None:  # the start's shape: a warm start must match it
        shape = Translator.from_pretrained(start, classifier, lm).config
        cfg = TrainConfig(**GENERAL_REFINE, **{k: getattr(shape, k) for k in ("prefix_length", "mapper", "mlp_hidden",
                                                                                "normalize_features")})
    work = Path(work or paths.ASSETS / "train" / "translator-general")
    previous = Path(start)
    for stage in range(1, stages + 1):
        folder = work / f"refine-{stage}"
        tr = train_translator(classifier, lm, z, caps, folder, val_z, val_caps, replace(cfg, init_from=str(previous)),
                              data_info={"captions": f"general world {Path(world).name}", "train_pairs": len(caps),
                                         "val_pairs": len(val_caps), "refine_stage": stage,
                                         "pairs": "every plain-background pair and as many photo pairs",
                                         **({"emphasis": "the scene description's tokens"}
                                            if cfg.emphasis_weight != 1 else {})},
                              train_emphasis=emphasis)
        previous = folder / "translator"
        tr.save_pretrained(previous, dtype=torch.float16)
    Translator.from_pretrained(previous, classifier, lm).save_pretrained(out, dtype=torch.float16)
    return Translator.from_pretrained(out, classifier, lm)


GENERAL_EVALUATION = GENERAL_TRANSLATOR / "evaluation.json"


def update_evaluation(out: str | Path = GENERAL_EVALUATION, **parts) -> None:
    """Write `parts` into the general translator's evaluation file, keeping what other steps wrote there
    (general-evaluation and imagenet9-runs each own some of its keys)."""
    out = Path(out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**doc, **parts}, indent=2) + "\n")


def _plurality(counts: dict, vocab: dict) -> object | None:
    """The value whose vocabulary words occur most often in the image's sentences; None for no hit or a tie.

    Occurrences, not presence: TExplain reads an image by its most frequent words, and a colour named once
    in 16 sentences should not weigh as much as one named in every sentence. With two values this is
    core.evaluate.evaluate_run's rule (true scene words more frequent than the other scene's).
    A tie goes to the value whose vocabulary the sentences cover most fully: a name nested in another
    (plain *blue* in *light blue*, and in the words of three photo scenes with a blue sky) can only tie,
    and "an empty blue backdrop" in every sentence is plain blue, not unreadable. Still tied: None.
    `counts`: word -> (occurrences, sentences), as core.words.WordExtractor.count gives them."""
    hits = {v: sum(counts[w][0] for w in ws if w in counts) for v, ws in vocab.items()}
    best = max(hits.values(), default=0)
    top = [v for v, h in hits.items() if h == best]
    if best > 0 and len(top) > 1:
        cover = {v: sum(w in counts for w in vocab[v]) / len(vocab[v]) for v in top}
        top = [v for v in top if cover[v] == max(cover.values())]
    return top[0] if best > 0 and len(top) == 1 else None


_PLAIN_SAID = re.compile(r"\b(plain|empty)\b", re.IGNORECASE)


def _confusions(df: pd.DataFrame, truth: str, said: str, top: int = 10) -> list[dict]:
    """The most frequent wrong readings: [{truth, said, images}], "said" None when no value won."""
    wrong = df[df[said] != df[truth]]
    counts = wrong.assign(**{said: wrong[said].fillna("(none)")}).groupby([truth, said]).size()
    counts = counts.sort_values(ascending=False)
    return [{"truth": t, "said": None if s == "(none)" else s, "images": int(n)}
            for (t, s), n in counts.head(top).items()]


def _object_kind(category) -> str:
    """A stamp's object kind, the first two levels of its category ("animals/mammals/cats" -> "animals/mammals")."""
    return "/".join(str(category).split("/")[:2])


SCENE_VOCABULARY_RULE = ("a scene's words: those in at least 5% of its training captions and at least 4 times as "
                         "frequent there as in the other scenes' captions, kept to the words of its own descriptions")


def general_vocabularies(world: str | Path = gw.GENERAL_WORLD, scene_words_from_descriptions: bool = True
                         ) -> tuple[dict, dict]:
    """(scene vocabulary, object-kind vocabulary) learnt from the world's training captions
    (core.evaluate.contrast_words: words far more frequent in one value's captions than in the rest).

    A scene's words are kept to those of its own descriptions (gw.SCENES): a caption is a stamp's caption
    and a scene's description, and contrast alone lets chance pairings in. In the 4,000-image world the
    cow stamps fell on light grey, fruit on white and a lion on yellow more often than elsewhere, which
    made "cow", "fruit" and "lion" scene words: every cow the translator saw read as light grey."""
    from core.engine.words import WordExtractor
    from core.evaluation.captions import contrast_words

    world = Path(world)
    meta = pd.read_csv(world / "metadata.csv")
    meta["kind"] = meta["category"].map(_object_kind)
    caps = pd.read_csv(world / "captions.csv").merge(meta[["img_filename", "scene", "kind"]], on="img_filename")
    ex = WordExtractor()
    train = caps[caps["split"] == "train"]
    words = train["caption"].map(lambda c: set(ex.words(c)))
    scenes = contrast_words(words, train["scene"], ratio=4.0, min_share=0.05)
    if scene_words_from_descriptions:
        said = {n: {w for d in sc.descriptions for w in ex.words(d)} for n, sc in gw.SCENES.items()}
        scenes = {n: [w for w in ws if n not in said or w in said[n]] for n, ws in scenes.items()}
    return scenes, contrast_words(words, train["kind"], ratio=4.0, min_share=0.05)


def explain_general_split(classifier, translator, lm, world: str | Path = gw.GENERAL_WORLD, split: str = "test",
                          limit: int | None = None, cfg=None) -> pd.DataFrame:
    """The translator's sentences on the world's `split` (or `limit` images spread over it): one row per image
    with image, stamp, scene, kind, sentences and counts (WordExtractor.count)."""
    from core.data import load_rgb
    from core.engine.config import ExplainConfig
    from core.engine.explainer import Explainer

    world = Path(world)
    meta = pd.read_csv(world / "metadata.csv")
    meta["kind"] = meta["category"].map(_object_kind)
    test = meta[meta["split"] == split].sort_values("img_filename")
    if limit is not None:  # spread over the split: every k-th image
        test = test.iloc[np.linspace(0, len(test) - 1, min(limit, len(test))).round().astype(int)]
    cfg = cfg or ExplainConfig(sentences_per_image=16, seed=0)
    explainer, rows = Explainer(classifier, translator, lm, cfg), []
    for i in range(0, len(test), 16):
        part = test.iloc[i:i + 16]
        out = explainer.explain([load_rgb(world / f) for f in part["img_filename"]], list(part["img_filename"]))
        for (_, r), res in zip(part.iterrows(), out):
            rows.append({"image": r["img_filename"], "stamp": r["stamp"], "scene": r["scene"], "kind": r["kind"],
                         "sentences": res.sentences, "counts": res.words})
    return pd.DataFrame(rows)


def score_general_split(explained: pd.DataFrame, scene_vocab: dict, kind_vocab: dict, split: str = "test",
                        sentences_per_image: int | None = None, n_scenes: int | None = None,
                        n_kinds: int | None = None) -> dict:
    """Scene and object-kind accuracy of explain_general_split's rows, each image read as the value whose
    words its sentences use most often (_plurality), with 95% Wilson intervals; photo and plain scenes apart."""
    df = explained.assign(scene_said=explained["counts"].map(lambda c: _plurality(c, scene_vocab)),
                          kind_said=explained["counts"].map(lambda c: _plurality(c, kind_vocab)))
    df["scene_ok"], df["kind_ok"] = df["scene_said"] == df["scene"], df["kind_said"] == df["kind"]
    plain = df["scene"].astype(str).str.startswith(gw.PLAIN_PREFIX)
    # Whether most sentences call the background plain or empty: does the translator see *that* a background
    # is plain, apart from which colour it says?
    calls_plain = df["sentences"].map(lambda ss: bool(ss) and np.mean([bool(_PLAIN_SAID.search(t)) for t in ss]) > 0.5)
    return {"split": split, "images": len(df), "unseen_stamps": int(df["stamp"].nunique()),
            "sentences_per_image": sentences_per_image,
            "rule": "the value whose vocabulary words occur most often in the image's sentences (ties: the one "
                    "whose vocabulary they cover most fully, else none)",
            "scene_accuracy": round(float(df["scene_ok"].mean()), 4),
            "scene_accuracy_ci95": [round(x, 4) for x in wilson_interval(int(df["scene_ok"].sum()), len(df))],
            "scene_accuracy_photos": round(float(df.loc[~plain, "scene_ok"].mean()), 4) if (~plain).any() else None,
            "scene_accuracy_plain": round(float(df.loc[plain, "scene_ok"].mean()), 4) if plain.any() else None,
            "object_kind_accuracy": round(float(df["kind_ok"].mean()), 4),
            "background_called_plain": {
                "rule": "share of images most of whose sentences call the background plain or empty",
                "plain_scenes": round(float(calls_plain[plain].mean()), 4) if plain.any() else None,
                "photo_scenes": round(float(calls_plain[~plain].mean()), 4) if (~plain).any() else None},
            "chance": {"scene": round(1 / max(1, n_scenes or len(scene_vocab)), 4),
                       "object_kind": round(1 / max(1, n_kinds or len(kind_vocab)), 4)},
            "vocabulary_sizes": {"scene": {k: len(v) for k, v in scene_vocab.items()},
                                 "object_kind": {k: len(v) for k, v in kind_vocab.items()}},
            "by_kind": df.groupby("kind")["kind_ok"].mean().round(3).to_dict(),
            "by_scene": df.groupby("scene")["scene_ok"].mean().round(3).to_dict(),
            "scene_confusions": _confusions(df, "scene", "scene_said"),
            "examples": [{"image": r.image, "scene": r.scene, "kind": r.kind,
                          "example": r.sentences[0] if r.sentences else ""} for r in df.head(12).itertuples()]}


def scene_probe(classifier, world: str | Path = gw.GENERAL_WORLD, split: str = "test", batch_size: int = 32,
                strengths=(0.1, 1.0, 10.0)) -> dict:
    """How much of the scene the classifier's features hold, whatever the translator: a logistic-regression
    probe trained on the features of the world's training images to name their scene (its inverse
    regularisation C chosen on the val split from `strengths`), scored on `split` (unseen stamps): over
    all scenes, and, each with its own probe, over the photo backgrounds and over the plain colours.

    The translator can only say what the features carry, so its scene accuracy next to the probe's tells
    a weak translator (far below the probe) from features that lose the scene (both low)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from core.data import load_rgb
    from core.engine.explainer import classify_images

    world = Path(world)
    meta = pd.read_csv(world / "metadata.csv")
    meta = meta[meta["split"].isin(["train", "val", split])].reset_index(drop=True)
    device = next(classifier.parameters()).device
    feats = []
    for i in range(0, len(meta), batch_size):
        z, _ = classify_images(classifier, [load_rgb(world / f) for f in meta["img_filename"].iloc[i:i + batch_size]],
                               device)
        feats.append(z.float().cpu().numpy())
    z, scene = np.concatenate(feats), meta["scene"].to_numpy()
    part = {k: (meta["split"] == k).to_numpy() for k in ("train", "val", split)}
    plain = meta["scene"].astype(str).str.startswith(gw.PLAIN_PREFIX).to_numpy()

    def probe(rows) -> dict:
        fits = []
        for c in strengths:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = LogisticRegression(max_iter=3000, C=c).fit(z[part["train"] & rows], scene[part["train"] & rows])
            val = part["val"] & rows
            fits.append(((model.predict(z[val]) == scene[val]).mean() if val.any() else 0.0, c, model))
        _, c, model = max(fits, key=lambda f: f[0])  # the first of equals: the strongest regularisation
        test = part[split] & rows
        return {"accuracy": round(float((model.predict(z[test]) == scene[test]).mean()), 4) if test.any() else None,
                "C": c}

    every, photos, colours = probe(np.ones_like(plain)), probe(~plain), probe(plain)
    return {"split": split, "images": int(part[split].sum()), "features": int(z.shape[1]),
            "model": "logistic regression on the classifier's features, trained on the training images, C chosen "
                     "on the val split",
            "scene_accuracy": every["accuracy"], "photo_scene_accuracy": photos["accuracy"],
            "plain_colour_accuracy": colours["accuracy"], "C": {"all": every["C"], "photos": photos["C"],
                                                               "plain": colours["C"]}}


def evaluate_general_translator(classifier, translator, lm, world: str | Path = gw.GENERAL_WORLD,
                                split: str = "test", limit: int | None = None, cfg=None,
                                more_sentences: int | None = 32) -> dict:
    """Does the general translator describe objects and backgrounds it never saw? On the world's `split`
    (its stamps are not in training): the share of images whose sentences name their true scene, and
    their true object category (`animals/birds`, `food/fruit`, ...), by the words of the training captions
    that tell the values apart (general_vocabularies), read by the most frequent ones (score_general_split).

    `more_sentences` (> cfg's sentences per image) scores that many too, under the key `more_sentences`:
    one run samples them all, and its first `cfg.sentences_per_image` sentences are exactly those of a run
    of that many (counter-based sampling), so the smaller score costs no second run."""
    from dataclasses import replace

    from core.engine.config import ExplainConfig
    from core.engine.words import WordExtractor

    cfg = cfg or ExplainConfig(sentences_per_image=16, seed=0)
    n = cfg.sentences_per_image
    more = more_sentences if more_sentences and more_sentences > n else None
    scene_vocab, kind_vocab = general_vocabularies(world)
    explained = explain_general_split(classifier, translator, lm, world, split, limit,
                                      replace(cfg, sentences_per_image=more) if more else cfg)
    meta = pd.read_csv(Path(world) / "metadata.csv")
    sizes = {"n_scenes": meta["scene"].nunique(), "n_kinds": meta["category"].map(_object_kind).nunique()}
    first = explained
    if more:
        sentences = explained["sentences"].map(lambda ss: ss[:n])
        first = explained.assign(sentences=sentences, counts=WordExtractor().count_many(list(sentences)))
    out = score_general_split(first, scene_vocab, kind_vocab, split, n, **sizes)
    out["scene_vocabulary"] = SCENE_VOCABULARY_RULE
    if more:
        full = score_general_split(explained, scene_vocab, kind_vocab, split, more, **sizes)
        out["more_sentences"] = {k: full[k] for k in ("sentences_per_image", "scene_accuracy", "scene_accuracy_ci95",
                                                      "scene_accuracy_photos", "scene_accuracy_plain",
                                                      "object_kind_accuracy")}
    return out


def superclass_of_words(words) -> dict[str, str]:
    """{word: ImageNet-9 class} for the words WordNet places under one of the nine synsets, by the word's
    most common noun sense that lies under one ("cat": the feline before the Caterpillar tractor) and
    the most specific synset ("terrier" is a dog, not a carnivore); other words are left out."""
    from nltk.corpus import wordnet as wn

    roots = {wn.synset_from_pos_and_offset("n", off): name for name, off in in9.IN9_SYNSET_OFFSETS.items()}
    out = {}
    for w in set(words):
        for syn in wn.synsets(w, pos="n"):  # WordNet lists senses by frequency
            path = set(syn.closure(lambda x: x.hypernyms())) | {syn}
            hits = [roots[r] for r in roots if r in path]
            if hits:
                out[w] = "dog" if "dog" in hits else hits[0]  # dogs are carnivores too; ImageNet-9 keeps them apart
                break
    return out


def superclass_word_accuracy(run, stamps_seen: set | None = None, plan: str | Path | None = None) -> dict:
    """Per image of an ImageNet-9 run: do its sentences name its class? The share of images whose
    sentences use words of the right class more often than of any other class, overall and on the
    stamps the general translator never saw in training (`stamps_seen`: the general world's train stamps)."""
    from core.store import Run

    run = Run.open(run) if isinstance(run, (str, Path)) else run
    images, words = run.images(), run.words()
    sup = superclass_of_words(words["word"].unique())
    words = words.assign(cls=words["word"].map(sup)).dropna(subset=["cls"])
    per = words.groupby(["image_id", "cls"])["sentences"].sum().unstack(fill_value=0)
    plan_df = pd.read_csv(plan or mini.IMAGENET9_MINI / "in9_plan.csv")
    stamp_of = dict(zip(plan_df["image"], plan_df["stamp"]))
    rows = []
    for r in images.itertuples():
        hits = per.loc[r.image_id] if r.image_id in per.index else pd.Series(dtype=float)
        best = hits[hits == hits.max()].index.tolist() if len(hits) and hits.max() > 0 else []
        truth = in9.IN9_CLASSES[int(r.label)]
        stamp = stamp_of.get(Path(r.image_id).stem)
        rows.append({"image_id": r.image_id, "class": truth, "stamp": stamp,
                     "unseen": None if stamps_seen is None else stamp not in stamps_seen,
                     "right": best == [truth], "named": bool(hits.get(truth, 0) > 0)})
    df = pd.DataFrame(rows)
    out = {"images": len(df), "right_superclass": round(float(df["right"].mean()), 4),
           "names_its_superclass": round(float(df["named"].mean()), 4),
           "by_class": df.groupby("class")["right"].mean().round(3).to_dict()}
    if stamps_seen is not None:
        unseen = df[df["unseen"]]
        # Per stamp as well as per photo: the mini ImageNet-9 draws photos per class, so one stamp can fill a
        # class (all 20 dog photos are the one dog stamp) and weigh as much as every other unseen stamp together.
        by_stamp = unseen.groupby("stamp")["right"].mean()
        out.update({"unseen_images": len(unseen), "unseen_stamps": int(unseen["stamp"].nunique()),
                    "right_superclass_unseen": round(float(unseen["right"].mean()), 4) if len(unseen) else None,
                    "right_superclass_unseen_per_stamp": round(float(by_stamp.mean()), 4) if len(unseen) else None,
                    "unseen_by_stamp": {k: {"class": unseen.loc[unseen["stamp"] == k, "class"].iloc[0],
                                            "images": int((unseen["stamp"] == k).sum()), "right": round(float(v), 3)}
                                        for k, v in by_stamp.items()}})
    return out


def record_superclass_words(runs_root: str | Path = paths.SHIPPED_RUNS, world: str | Path = gw.GENERAL_WORLD,
                            out: str | Path = GENERAL_EVALUATION, prefix: str = RUN_PREFIX) -> dict:
    """`superclass_word_accuracy` of every shipped variation run (`<prefix><variation>`), added to the
    translator's evaluation `out` (the stamps the general translator saw in training are the general world's
    train split)."""
    meta = pd.read_csv(Path(world) / "metadata.csv")
    seen = set(meta.loc[meta["split"] == "train", "stamp"])
    res = {v: superclass_word_accuracy(Path(runs_root) / f"{prefix}{v}", seen)
           for v in in9.VARIATIONS if (Path(runs_root) / f"{prefix}{v}" / "manifest.json").exists()}
    update_evaluation(out, imagenet9_superclass_words=res)
    return res


# Explaining is the CPU's slow step (about 0.4 images/s on two cores at 16 sentences): 20 images per class
# and variation keep the shipped runs to 900 images, enough for per-class word shares.
RUN_PER_CLASS = 20


def explain_variations(classifier, translator, lm, root: str | Path = mini.IMAGENET9_MINI,
                       out_root: str | Path = paths.SHIPPED_RUNS, cfg=None, variations=in9.VARIATIONS,
                       force: bool = False, per_class: int | None = RUN_PER_CLASS, prefix: str = RUN_PREFIX,
                       name_suffix: str = "") -> dict:
    """One run per variation, `out_root/<prefix><variation>`, of `classifier` read as ImageNet-9: the
    first `per_class` images of each class (by id; the same images in every variation), or all."""
    from dataclasses import replace

    from core.data.readers import open_dataset
    from core.engine.config import ExplainConfig
    from core.engine.pipeline import explain_dataset

    cfg = cfg or ExplainConfig(sentences_per_image=16, seed=0)
    runs = {}
    for variation in variations:
        ds = open_dataset(root, variation=variation)
        if per_class is not None:
            taken: dict[int, int] = {}
            keep = []
            for r in sorted(ds.records, key=lambda r: r.image_id):
                if taken.get(r.label, 0) < per_class:
                    taken[r.label] = taken.get(r.label, 0) + 1
                    keep.append(r)
            ds = replace(ds, records=keep)
        runs[variation] = explain_dataset(ds, classifier, translator, lm, Path(out_root) / f"{prefix}{variation}",
                                          cfg, name=f"ImageNet-9 {variation}{name_suffix}", force=force)
    return runs


def build(step: str = "imagenet9", force: bool = False, n_per_class: int = 50, n_images: int = 4000,
          out_dir: str | Path = RESULTS, dataset: str | Path | None = None) -> int:
    """`general-world`: build the caption world; `imagenet9`: the caption world, the mini ImageNet-9 and the
    classifier experiment (on `dataset`, an ImageNet-9 copy such as the real Backgrounds Challenge, instead
    when given); `general-translator`: the general translator for the unmodified classifier;
    `general-evaluation`: its sentences on unseen stamps scored; `imagenet9-runs`: every variation explained
    with it (each build skipped when current)."""
    if step == "imagenet9" and dataset is not None:
        run_experiment(dataset, out_dir)
        return 0
    gw.build_general_world(n_images=n_images, force=force)
    if step == "general-world":
        return 0
    root = mini.build_imagenet9_mini(n_per_class=n_per_class, force=force)
    if step == "imagenet9":
        run_experiment(root, out_dir)
        return 0
    from core.models import load_classifier, load_language_model
    from core.models.translator import Translator

    base, lm = load_classifier("efficientnet-lite0"), load_language_model()
    if step == "general-translator" or not (GENERAL_TRANSLATOR / "config.json").exists():
        if (GENERAL_TRANSLATOR / "config.json").exists() and not force:
            print(f"translator general: exists ({GENERAL_TRANSLATOR})")
        else:
            tr = train_general_translator(base, lm)
            print(f"translator general: val loss {tr.config.training.get('best_val_loss')} -> {GENERAL_TRANSLATOR}")
    if step == "general-evaluation":
        if GENERAL_EVALUATION.exists() and not force:
            print(f"general translator evaluation: exists ({GENERAL_EVALUATION})")
        else:
            tr = Translator.from_pretrained(GENERAL_TRANSLATOR, base, lm)
            ev = evaluate_general_translator(base, tr, lm)
            probe = scene_probe(base)
            update_evaluation(**ev, feature_probe=probe)  # keeps imagenet9_superclass_words (imagenet9-runs')
            print(f"general translator on {ev['images']} images of {ev['unseen_stamps']} unseen stamps: scene "
                  f"{ev['scene_accuracy']:.1%} (photos {ev['scene_accuracy_photos']:.1%}, plain colours "
                  f"{ev['scene_accuracy_plain']:.1%}; a linear probe of the classifier's features: "
                  f"{probe['photo_scene_accuracy']:.1%} and {probe['plain_colour_accuracy']:.1%}), object kind "
                  f"{ev['object_kind_accuracy']:.1%} -> {GENERAL_EVALUATION}")
    if step == "imagenet9-runs":
        tr = Translator.from_pretrained(GENERAL_TRANSLATOR, base, lm)
        explain_variations(mini.in9_classifier(base), tr, lm, root, force=force)
        record_superclass_words()
    return 0
