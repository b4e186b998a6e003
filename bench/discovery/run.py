"""One world through a tier, and the suite's table: does TExplain find the planted cue, and better than the rest?

Per world (tier "linear"):
1. features of every image from the frozen ImageNet EfficientNet-Lite0 (cached), and a linear head trained on the
   biased train split (logistic regression, the same C for every world) put into a copy of the classifier, so
   that the shipped general translator explains it directly (a head changes no feature);
2. the val and test images explained once, with the project's engine (`core.engine.pipeline.explain_dataset`,
   N sentences each; resumable runs under .assets/discovery/runs): sentences depend on the features only;
3. discovery on the val run with the true groups withheld: the project's flags (`SpuriousTermScorer`, both
   views, default rules) and inferred groups (`GroupInferrer`, default rules) from TExplain's sentences and from
   each baseline's text; the mixture and random words as in `bench.discovery.baselines`;
4. scoring on the test run: hit@3 (a cue word in the top 3 flags, error or association view, of the class
   holding the classifier's worst test group), precision@10 and AUROC of ranking each class's test images by
   the share of their sentences using the class's inferred-group words (the mixture: slice probability)
   against the true minority groups, and the test worst-group accuracy after DFR on the val images
   (`LastLayerReweighting`, default settings) balanced over each method's inferred groups, next to DFR on
   the true groups and on the classes alone.

Tier "finetune": the same with a classifier fine-tuned on the world (`core.engine.finetune`, defaults) and its
translator from the fast path (`core.demo.auto_translator.build_fast_translator`: a ridge map onto the general
translator); hours of CPU for the suite, so run on at most a couple of worlds.

No setting depends on the world. A world counts toward hit@3 only when its classifier learned the cue
(metrics.learned: test worst-group accuracy at least 15 points under the average, that group a minority group
15 points under its class's majority group).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from bench.discovery import metrics as M
from bench.discovery import worlds as W
from bench.discovery.baselines import CaptionLookup, MixtureSlices, first_sentences, random_words
from core import paths

RUNS = W.DISCOVERY / "runs"
CACHE = W.DISCOVERY / "cache"
RESULTS = W.DISCOVERY / "results"
CLASSIFIERS = W.DISCOVERY / "classifiers"
TRANSLATORS = W.DISCOVERY / "translators"
BANK = W.DISCOVERY / "caption-bank"
JSON_OUT = paths.ROOT / "bench" / "results"
GENERAL_TRANSLATOR = paths.CHECKPOINTS / "translators" / "general"
TIERS = ("linear", "finetune")
METHODS = ("texplain", "one_sentence", "caption_lookup", "mixture", "random_words")
TEXT_METHODS = ("texplain", "one_sentence", "caption_lookup")  # flags from text by the project's scorer
RESULT_VERSION = 1  # bump when a world's result changes for the same inputs


@dataclass(frozen=True)
class BenchSettings:
    sentences: int = 8          # N sampled sentences per image (the one-sentence baseline uses the first)
    head_C: float = 1.0         # the linear head's inverse L2 strength (sklearn LogisticRegression)
    bank_images: int = 1600     # general-world composites rendered for the caption lookup (train split used)
    mixture_components: int = 8
    k_precision: int = 10
    k_hit: int = 3
    learned_gap: float = M.LEARNED_GAP
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def say(msg: str) -> None:
    print(f"[discovery] {msg}", flush=True)


# --- models, loaded once -----------------------------------------------------------------------------------------

class Models:
    """The language model, the ImageNet classifier and the word extractor, loaded on first use."""

    def __init__(self):
        self._lm = self._base = self._extractor = None

    @property
    def lm(self):
        if self._lm is None:
            from core.models.lm import load_language_model

            self._lm = load_language_model()
        return self._lm

    @property
    def base(self):
        if self._base is None:
            from core.models.classifier import load_classifier

            self._base = load_classifier("efficientnet-lite0").eval()
        return self._base

    @property
    def extractor(self):
        if self._extractor is None:
            from core.engine.words import WordExtractor

            self._extractor = WordExtractor()
        return self._extractor


# --- features ----------------------------------------------------------------------------------------------------

def cached_features(adapter, files: list[str], ids: list[str], cache: Path, desc: str,
                    salt: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(features, logits) of the images, kept in `cache` (an .npz keyed by the classifier's identity, the ids and
    `salt`: what the images were made from, e.g. their world's settings)."""
    from core.mitigation.methods import features_and_logits

    key = hashlib.sha256(("\n".join(ids) + adapter.identity + salt).encode()).hexdigest()[:16]
    if cache.exists():
        data = np.load(cache)
        if str(data["key"]) == key:
            return data["z"], data["logits"]
    z, logits = features_and_logits(adapter, files, desc=desc, show_progress=False)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, z=z, logits=logits, key=key)
    os.replace(tmp, cache)
    return z, logits


def linear_head(z: np.ndarray, y: np.ndarray, C: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A logistic-regression head on raw features (coef (1, D), intercept (1,)): ERM on the biased train split."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(z, y)
    return clf.coef_, clf.intercept_


def probabilities(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# --- text -> word tables ------------------------------------------------------------------------------------------

def word_table(sentences: dict[str, list[str]], extractor) -> pd.DataFrame:
    """The run store's words table (image_id, word, count, sentences) for sentences given per image."""
    rows = [(i, w, occ, used) for i, sents in sentences.items() for w, (occ, used) in extractor.count(sents).items()]
    return pd.DataFrame(rows, columns=["image_id", "word", "count", "sentences"])


def blind_tables(images: pd.DataFrame, words: pd.DataFrame, classes: list[str], n_sentences: int | None = None):
    """RunTables of these images without their true groups (discovery must not see them)."""
    from core.analysis.tables import RunTables, isin

    im = images.drop(columns=[c for c in ("group", "place", "group_name") if c in images]).reset_index(drop=True)
    if n_sentences is not None:
        im = im.assign(n_sentences=n_sentences)
    return RunTables(im, words[isin(words["image_id"], im["image_id"])].reset_index(drop=True),
                     {"dataset": {"class_names": list(classes)}})


# --- scoring one method --------------------------------------------------------------------------------------------

@dataclass
class Eval:
    """What every method is scored on: the val (discovery) and test images, their features and predictions."""
    classes: list[str]
    cue_words: list[str]
    adapter: object          # the classifier (its head is what DFR replaces)
    val: pd.DataFrame        # image_id, label, prediction, group (true), prob1, in run order
    test: pd.DataFrame
    z_val: np.ndarray
    z_test: np.ndarray
    affected: int            # the class holding the classifier's worst test group
    settings: BenchSettings


def worst_group(pred, labels, groups) -> dict:
    from core.analysis.groups import worst_group_accuracy

    frame = pd.DataFrame({"image_id": [str(i) for i in range(len(labels))], "label": labels, "prediction": pred,
                          "group": groups})
    wga = worst_group_accuracy(frame)
    row = wga.per_group.set_index("group").loc[wga.worst_group]
    return {"worst": wga.worst, "worst_group": wga.worst_group, "average": wga.average_unweighted,
            "accuracy": float((np.asarray(pred) == np.asarray(labels)).mean()),
            "worst_low": float(row["ci_low"]), "worst_high": float(row["ci_high"]),
            "per_group": {str(int(g)): float(a) for g, a in zip(wga.per_group["group"], wga.per_group["accuracy"])}}


def dfr(ev: Eval, groups_val) -> dict:
    """Test worst-group accuracy (true groups) after DFR on the val images balanced over `groups_val`."""
    from core.mitigation.methods import LastLayerReweighting

    groups_val = np.asarray(groups_val, dtype=float)
    try:
        fit = LastLayerReweighting(seed=ev.settings.seed).fit(
            ev.adapter, features=ev.z_val, labels=ev.val["label"].to_numpy(), groups=groups_val, show_progress=False)
    except ValueError as exc:  # e.g. a group holding one class only
        return {"error": str(exc)}
    out = worst_group(fit.predict(ev.z_test), ev.test["label"].to_numpy(), ev.test["group"].to_numpy())
    out["groups_used"] = {str(int(k)): v for k, v in fit.group_counts_.items()}
    return out


def agreement(ev: Eval, groups_val) -> dict:
    from core.analysis.groups import group_agreement

    a = group_agreement(pd.Series(ev.val["group"].to_numpy()), pd.Series(np.asarray(groups_val)))
    return {"accuracy": a.accuracy, "adjusted_rand": a.adjusted_rand}


def ranking(ev: Eval, scores) -> dict:
    minority = (ev.test["group"].to_numpy() % 2) != ev.test["label"].to_numpy()
    return M.ranking_metrics(np.asarray(scores, dtype=float), ev.test["label"].to_numpy(), minority,
                             ev.settings.k_precision)


def score_text(ev: Eval, val_t, test_t) -> dict:
    """The project's flags and inferred groups from a method's text, scored on every measure."""
    from core.analysis import GroupInferrer, SpuriousTermScorer
    from core.analysis.spurious import spurious_share

    scorer = SpuriousTermScorer(split=None).fit(val_t)
    inferrer = GroupInferrer().fit(val_t, scorer)
    k = ev.settings.k_hit
    top = {c: {"error": scorer.flags_for(c, k=k)["word"].tolist(),
               "association": scorer.associations_for(c, k=k)["word"].tolist()} for c in ev.classes}
    out = _score_words(ev, val_t, test_t, inferrer, spurious_share)
    out["top_flags"] = top
    out["hit_by_class"] = {c: M.hit_at_k(top[c], ev.cue_words, k) for c in ev.classes}
    out["hit"] = out["hit_by_class"][ev.classes[ev.affected]]
    out["views"] = inferrer.word_views_
    return out


def score_given_words(ev: Eval, val_t, test_t, words: dict[str, list[str]]) -> dict:
    from core.analysis import GroupInferrer
    from core.analysis.spurious import spurious_share

    inferrer = GroupInferrer().fit(val_t, words)
    k = ev.settings.k_hit
    out = _score_words(ev, val_t, test_t, inferrer, spurious_share)
    out["top_flags"] = {c: {"random": ws[:k]} for c, ws in words.items()}
    out["hit_by_class"] = {c: M.hit_at_k({"random": words[c]}, ev.cue_words, k) for c in ev.classes}
    out["hit"] = out["hit_by_class"][ev.classes[ev.affected]]
    return out


def _score_words(ev: Eval, val_t, test_t, inferrer, spurious_share) -> dict:
    words = {c: list(ws) for c, ws in inferrer.spurious_words_.items()}
    share = spurious_share(test_t, words) if words else pd.Series(0.0, index=test_t.images.index)
    order = pd.Series(share.to_numpy(), index=test_t.images["image_id"].astype(str))
    scores = order.reindex(ev.test["image_id"].astype(str)).fillna(0.0).to_numpy()
    groups_val = inferrer.predict().reindex(ev.val["image_id"].astype(str)).to_numpy()
    return {"group_words": words, **ranking(ev, scores), "agreement": agreement(ev, groups_val),
            "dfr": dfr(ev, groups_val)}


def score_mixture(ev: Eval) -> dict:
    s = ev.settings
    mix = MixtureSlices(s.mixture_components, seed=s.seed).fit(ev.z_val, ev.val["label"], ev.val["prediction"],
                                                               ev.val["prob1"])
    scores = mix.score(ev.z_test, ev.test["label"], ev.test["prob1"])
    groups_val = mix.groups(ev.z_val, ev.val["label"], ev.val["prob1"])
    return {**ranking(ev, scores), "agreement": agreement(ev, groups_val), "dfr": dfr(ev, groups_val),
            "slice_error_rate": {ev.classes[c]: r for c, r in mix.error_.items()}}


# --- the caption bank for the lookup baseline ---------------------------------------------------------------------

def caption_bank(settings: BenchSettings) -> tuple[list[str], list[str], list[list[str]]]:
    """(image files, ids, captions per image) of the general caption world's train split, rendered once."""
    from core.demo.worlds.general import build_general_world

    root = build_general_world(BANK, seed=0, n_images=settings.bank_images, verbose=False)
    caps = pd.read_csv(root / "captions.csv")
    caps = caps[caps["split"] == "train"]
    by_image = caps.groupby("img_filename", sort=True)["caption"].apply(list)
    return [str(root / f) for f in by_image.index], list(by_image.index), list(by_image.to_numpy())


# --- one world ----------------------------------------------------------------------------------------------------

def run_world(spec: W.WorldSpec, tier: str, models: Models, settings: BenchSettings, force: bool = False,
              explain_unlearned: bool = False) -> dict:
    """Everything for one world and tier (see the module docstring). A world whose classifier did not learn its cue
    stops after the classifier (nothing to discover; it does not count toward hit@3) unless `explain_unlearned`."""
    from core.data import open_dataset
    from core.engine.config import ExplainConfig
    from core.engine.pipeline import explain_dataset
    from core.models.translator import Translator

    t0, seconds = time.time(), {}
    root = W.WORLDS / spec.name
    world = W.read_world(root)
    world_key = _world_key(world)
    ds = open_dataset(root)
    frame = ds.to_frame()
    frame["image_id"] = frame["image_id"].astype(str)
    classes = list(ds.class_names)

    # 1. the classifier
    if tier == "linear":
        from core.mitigation.methods import write_head
        from core.models.classifier import efficientnet_lite0

        z_all, _ = cached_features(models.base, frame["path"].tolist(), frame["image_id"].tolist(),
                                   CACHE / spec.name / "lite0.npz", f"{spec.name} features", salt=world_key)
        train = (frame["split"] == "train").to_numpy()
        coef, intercept = linear_head(z_all[train], frame.loc[train, "label"].to_numpy(), settings.head_C,
                                      settings.seed)
        adapter = efficientnet_lite0(num_classes=2, class_names=classes, name=f"discovery-{spec.name}-linear")
        write_head(adapter, coef, intercept)
        adapter.eval()
        logits_all = np.hstack([-(z_all @ coef.T + intercept) / 2, (z_all @ coef.T + intercept) / 2])
        translator_folder = GENERAL_TRANSLATOR
    else:
        from core.demo.auto_translator import build_fast_translator
        from core.engine.config import FinetuneConfig
        from core.engine.finetune import finetune_classifier
        from core.models.classifier import from_pretrained

        folder = CLASSIFIERS / spec.name
        if not (folder / "config.json").exists() or force:
            t = time.time()
            finetune_classifier(ds, folder, FinetuneConfig(seed=settings.seed), name=f"discovery-{spec.name}-ft",
                                show_progress=False)
            seconds["finetune"] = round(time.time() - t, 1)
        adapter = from_pretrained(folder).eval()
        z_all, logits_all = cached_features(adapter, frame["path"].tolist(), frame["image_id"].tolist(),
                                            CACHE / spec.name / "finetune.npz", f"{spec.name} features (finetuned)",
                                            salt=world_key)
        translator_folder = TRANSLATORS / spec.name
        if not (translator_folder / "config.json").exists():
            t = time.time()
            say(f"{spec.name}: building the fast-path translator (ridge map onto the general translator)")
            build_fast_translator(adapter, models.lm, translator_folder, show_progress=False)
            seconds["fast_translator"] = round(time.time() - t, 1)
    seconds["classifier"] = round(time.time() - t0, 1)
    prob_all = probabilities(logits_all)
    frame["prediction"] = logits_all.argmax(1)
    frame["prob1"] = prob_all[:, 1]
    test_f = frame[frame["split"] == "test"]
    erm = worst_group(test_f["prediction"].to_numpy(), test_f["label"].to_numpy(), test_f["group"].to_numpy())
    is_learned = M.learned(erm["per_group"], settings.learned_gap)
    say(f"{spec.name} [{tier}]: test accuracy {erm['accuracy']:.1%}, worst group {erm['worst']:.1%} "
        f"(group {erm['worst_group']}), gap {erm['average'] - erm['worst']:+.1%} -> "
        f"{'learned the cue' if is_learned else 'did not learn the cue'}")
    record = {"world": spec.name, "kind": spec.cue.kind, "tier": tier, "classes": classes, "cue": world["cue"],
              "cue_words": world["cue_words"], "train_correlation": world["train_correlation"],
              "counts": world["counts"], "classifier": {"identity": adapter.identity, **erm, "learned": is_learned},
              "methods": None, "seconds": seconds, "load_average": os.getloadavg()}
    if not is_learned and not explain_unlearned:
        seconds["total"] = round(time.time() - t0, 1)
        return {**record, "skipped": "the classifier did not learn the cue, so there is nothing to discover; "
                                     "not explained (--all-worlds explains it)"}

    # 2. explanations, once per split (resumable)
    t = time.time()
    translator = Translator.from_pretrained(translator_folder, adapter, models.lm)
    cfg = ExplainConfig(sentences_per_image=settings.sentences, seed=settings.seed)
    runs = {}
    for split in ("val", "test"):
        out = RUNS / f"{spec.name}-{tier}-n{settings.sentences}-{split}"
        runs[split] = explain_dataset(ds, adapter, translator, models.lm, out, cfg, split=split,
                                      name=f"discovery {spec.name} {tier} ({split})", show_progress=False,
                                      extra_manifest={"benchmark": "bench.discovery", "world": spec.name,
                                                      "tier": tier})
    seconds["explain"] = round(time.time() - t, 1)
    throughput = {s: (r.manifest.get("throughput") or {}).get("sentences_per_s") for s, r in runs.items()}

    # 3. discovery on val, scoring on test
    t = time.time()
    by_id = frame.set_index("image_id")
    val_ids = [str(i) for i in runs["val"].images()["image_id"]]
    test_ids = [str(i) for i in runs["test"].images()["image_id"]]
    cols = ["label", "prediction", "group", "prob1"]
    val_f, test_f = by_id.loc[val_ids, cols].reset_index(), by_id.loc[test_ids, cols].reset_index()
    pos = {i: n for n, i in enumerate(frame["image_id"])}
    z_val, z_test = z_all[[pos[i] for i in val_ids]], z_all[[pos[i] for i in test_ids]]
    run_pred = {s: r.images().set_index(r.images()["image_id"].astype(str))["prediction"] for s, r in runs.items()}
    same = float(np.mean([run_pred["test"][i] == by_id.loc[i, "prediction"] for i in test_ids]))
    worst_g = int(erm["worst_group"])
    ev = Eval(classes, world["cue_words"], adapter, val_f, test_f, z_val, z_test, worst_g // 2, settings)

    run_images = {s: r.images().assign(image_id=lambda d: d["image_id"].astype(str)) for s, r in runs.items()}
    for s, im in run_images.items():  # the head's own predictions (the run's, up to float rounding)
        im["prediction"] = im["image_id"].map(by_id["prediction"]).astype(int)
    words = {s: r.words().assign(image_id=lambda d: d["image_id"].astype(str)) for s, r in runs.items()}
    results = {}
    results["texplain"] = score_text(ev, blind_tables(run_images["val"], words["val"], classes),
                                     blind_tables(run_images["test"], words["test"], classes))
    firsts = {s: word_table(first_sentences(r.sentences().assign(image_id=lambda d: d["image_id"].astype(str))),
                            models.extractor) for s, r in runs.items()}
    results["one_sentence"] = score_text(ev, blind_tables(run_images["val"], firsts["val"], classes, 1),
                                         blind_tables(run_images["test"], firsts["test"], classes, 1))
    bank_files, bank_ids, bank_captions = caption_bank(settings)
    bank_z, _ = cached_features(adapter, bank_files, bank_ids, CACHE / f"bank-{tier}-{_feature_key(adapter)}.npz",
                                "caption bank features", salt=f"bank-{settings.bank_images}")
    lookup = CaptionLookup().fit(bank_z, bank_captions)
    looked = {}
    for s, ids, z in (("val", val_ids, z_val), ("test", test_ids, z_test)):
        looked[s] = word_table(dict(zip(ids, lookup.sentences(z, settings.sentences))), models.extractor)
    n = settings.sentences
    results["caption_lookup"] = score_text(ev, blind_tables(run_images["val"], looked["val"], classes, n),
                                           blind_tables(run_images["test"], looked["test"], classes, n))
    results["mixture"] = score_mixture(ev)
    rand = random_words(words["val"], classes, seed=settings.seed + zlib.crc32(spec.name.encode()))
    results["random_words"] = score_given_words(ev, blind_tables(run_images["val"], words["val"], classes),
                                                blind_tables(run_images["test"], words["test"], classes), rand)
    controls = {"true": dfr(ev, val_f["group"].to_numpy()), "class": dfr(ev, val_f["label"].to_numpy())}
    seconds["analysis"] = round(time.time() - t, 1)
    seconds["total"] = round(time.time() - t0, 1)
    return {**record, "affected_class": classes[ev.affected], "run_agrees_with_head": same,
            "runs": {s: _rel(r.path) for s, r in runs.items()}, "methods": results, "dfr_controls": controls,
            "explain_sentences_per_s": throughput, "load_average": os.getloadavg()}


def _rel(path: Path) -> str:
    path = Path(path)
    return str(path.relative_to(paths.ROOT)) if path.is_relative_to(paths.ROOT) else str(path)


def _feature_key(adapter) -> str:
    return hashlib.sha256((getattr(adapter, "feature_identity", "") or adapter.identity).encode()).hexdigest()[:8]


def _world_key(world: dict) -> str:
    """What a built world's images follow from: its version, settings and spec."""
    made_of = {k: world.get(k) for k in ("version", "settings", "spec")}
    return hashlib.sha256(json.dumps(made_of, sort_keys=True).encode()).hexdigest()[:12]


def world_result(spec: W.WorldSpec, tier: str, models: Models, settings: BenchSettings, force: bool = False,
                 explain_unlearned: bool = False) -> dict:
    """run_world, kept on disk: a world already scored with the same settings, world and version is read back."""
    key = f"{RESULT_VERSION}-{settings.key()}-{_world_key(W.read_world(W.WORLDS / spec.name))}"
    path = RESULTS / tier / f"{spec.name}.json"
    if path.exists() and not force:
        cached = json.loads(path.read_text())
        if cached.get("key") == key and (cached.get("methods") is not None or not explain_unlearned):
            say(f"{spec.name} [{tier}]: scored before ({_rel(path)})")
            return cached
    result = {"key": key, **run_world(spec, tier, models, settings, force, explain_unlearned)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    return result


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON: {type(o).__name__}")


# --- the suite ----------------------------------------------------------------------------------------------------

def _dfr_worst(res: dict, method: str) -> float | None:
    d = res["methods"][method]["dfr"] if method in res["methods"] else res["dfr_controls"][method]
    return d.get("worst")


def summarize(results: list[dict], settings: BenchSettings) -> dict:
    """Per cue kind and overall: hit@3 (learned worlds), precision@10, AUROC and DFR worst-group accuracy of every
    method (learned worlds; all worlds in `all_worlds`), with intervals, and TExplain against one sentence."""
    def block(rs: list[dict]) -> dict:
        out = {"worlds": [r["world"] for r in rs], "n": len(rs)}
        for m in METHODS:
            out[m] = {"precision_at_k": M.mean_interval(r["methods"][m]["precision_at_k"] for r in rs),
                      "auroc": M.mean_interval(r["methods"][m]["auroc"] for r in rs),
                      "dfr_worst": M.mean_interval(_dfr_worst(r, m) for r in rs)}
            if m != "mixture":
                out[m]["hit_at_k"] = M.hit_rate(r["methods"][m]["hit"] for r in rs)
        out["erm_worst"] = M.mean_interval(r["classifier"]["worst"] for r in rs)
        out["erm_average"] = M.mean_interval(r["classifier"]["average"] for r in rs)
        for c in ("true", "class"):
            out[f"dfr_{c}_worst"] = M.mean_interval(_dfr_worst(r, c) for r in rs)
        return out

    scored = [r for r in results if r.get("methods")]
    learned = [r for r in scored if r["classifier"]["learned"]]
    kinds = {}
    for kind in W.KINDS:
        rs = [r for r in scored if r["kind"] == kind]
        worlds = [r for r in results if r["kind"] == kind]
        if worlds:
            kinds[kind] = {"learned": block([r for r in rs if r["classifier"]["learned"]]), "all": block(rs),
                           "n_worlds": len(worlds), "classifiers": [_classifier_line(r) for r in worlds]}
    overall = {"learned": block(learned), "all": block(scored), "n_worlds": len(results)}
    many_vs_one = {}
    for name, rs in (("learned", learned), ("all", scored)):
        many_vs_one[name] = {
            measure: M.paired_difference([r["methods"]["texplain"][measure] for r in rs],
                                         [r["methods"]["one_sentence"][measure] for r in rs])
            for measure in ("precision_at_k", "auroc")}
    best_baseline = None
    if learned:
        means = {m: overall["learned"][m]["precision_at_k"]["mean"] for m in METHODS if m != "texplain"}
        best_baseline = max((m for m in means if means[m] is not None), key=lambda m: means[m], default=None)
    hit = overall["learned"]["texplain"]["hit_at_k"]
    p_t = overall["learned"]["texplain"]["precision_at_k"]["mean"]
    p_b = overall["learned"][best_baseline]["precision_at_k"]["mean"] if best_baseline else None
    targets = {"hit_at_3_at_least_80pct": None if hit["rate"] is None else hit["rate"] >= 0.8,
               "precision_at_10_at_least_best_baseline": None if p_t is None or p_b is None else p_t >= p_b,
               "best_baseline": best_baseline}
    return {"settings": asdict(settings), "n_worlds": len(results), "n_learned": len(learned), "n_scored": len(scored),
            "kinds": kinds, "overall": overall, "texplain_minus_one_sentence": many_vs_one, "targets": targets}


def _classifier_line(r: dict) -> dict:
    c = r["classifier"]
    return {"world": r["world"], "accuracy": c["accuracy"], "worst": c["worst"], "average": c["average"],
            "gap": c["average"] - c["worst"], "learned": c["learned"], "per_group": c["per_group"]}


def _fmt(x, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{100 * x:.0f}" if pct else f"{x:.2f}"


def _mi(d: dict, pct: bool = True) -> str:
    if d["mean"] is None:
        return "—"
    return f"{_fmt(d['mean'], pct)} [{_fmt(d['low'], pct)}–{_fmt(d['high'], pct)}]"


def _hit(d: dict) -> str:
    return "—" if d["rate"] is None else f"{d['hits']}/{d['n']}"


SHORT = {"texplain": "TEx", "one_sentence": "N=1", "caption_lookup": "lookup", "mixture": "GMM", "random_words": "rand"}


def world_table(results: list[dict]) -> str:
    head = ("| world | cue | ERM acc / worst | learned | affected class: TExplain top flags (error; association) "
            "| hit@3 TEx/N=1/lookup/rand | P@10 TEx/N=1/lookup/GMM/rand | AUROC TEx/N=1/lookup/GMM/rand "
            "| DFR worst: TEx/GMM/true/class |")
    lines = [head, "|" + "---|" * 9]
    for r in results:
        m, c = r["methods"], r["classifier"]
        if not m:
            lines.append(f"| {r['world']} | {r['cue']['values'][0]} / {r['cue']['values'][1]} | "
                         f"{_fmt(c['accuracy'])} / {_fmt(c['worst'])} | {'yes' if c['learned'] else 'no'} | "
                         "not explained: nothing learned to discover | | | | |")
            continue
        top = m["texplain"]["top_flags"][r["affected_class"]]
        flags = f"{r['affected_class']}: {', '.join(top['error']) or '—'}; {', '.join(top['association']) or '—'}"
        hits = "/".join("✔" if m[k]["hit"] else "·" for k in ("texplain", "one_sentence", "caption_lookup",
                                                               "random_words"))
        p = "/".join(_fmt(m[k]["precision_at_k"]) for k in METHODS)
        a = "/".join(_fmt(m[k]["auroc"], False) for k in METHODS)
        d = "/".join(_fmt(_dfr_worst(r, k)) for k in ("texplain", "mixture", "true", "class"))
        lines.append(f"| {r['world']} | {r['cue']['values'][0]} / {r['cue']['values'][1]} | "
                     f"{_fmt(c['accuracy'])} / {_fmt(c['worst'])} | {'yes' if c['learned'] else 'no'} | {flags} | "
                     f"{hits} | {p} | {a} | {d} |")
    return "\n".join(lines)


HIT_METHODS = ("texplain", "one_sentence", "caption_lookup", "random_words")


def kind_table(summary: dict, which: str = "learned") -> str:
    """Means per cue kind over its `which` worlds; the last row, all kinds, with 95% intervals over worlds."""
    def cell(d: dict, pct: bool, interval: bool) -> str:
        return _mi(d, pct) if interval else _fmt(d["mean"], pct)

    lines = ["| cue kind | worlds (learned/all) | hit@3 TEx | N=1 | lookup | rand | P@10 TEx | N=1 | lookup | GMM | "
             "rand | AUROC TEx | N=1 | lookup | GMM | rand | worst group: ERM | DFR on TEx groups | DFR on GMM groups "
             "| DFR on true groups |", "|" + "---|" * 20]
    for kind, v in [*summary["kinds"].items(), ("**all**", summary["overall"])]:
        b, iv = v[which], kind == "**all**"
        cells = [kind, f"{v['learned']['n']}/{v['n_worlds']}"]
        cells += [_hit(b[m]["hit_at_k"]) for m in HIT_METHODS]
        cells += [cell(b[m]["precision_at_k"], True, iv) for m in METHODS]
        cells += [cell(b[m]["auroc"], False, iv) for m in METHODS]
        cells += [cell(d, True, iv) for d in (b["erm_worst"], b["texplain"]["dfr_worst"], b["mixture"]["dfr_worst"],
                                               b["dfr_true_worst"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_suite(names: list[str] | None = None, tier: str = "linear", settings: BenchSettings | None = None,
              force: bool = False, json_out: str | Path | None = None, max_worlds: int | None = None,
              explain_unlearned: bool = False) -> dict:
    """Build what is missing, run every world of the tier, print the tables and write the JSON."""
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
    settings = settings or BenchSettings()
    specs = [W.SUITE_BY_NAME[n] for n in names] if names else list(W.SUITE)
    if max_worlds is not None and len(specs) > max_worlds:
        say(f"tier {tier}: {len(specs)} worlds asked, running the first {max_worlds} (--max-worlds)")
        specs = specs[:max_worlds]
    specs = interleave_kinds(specs)
    t0, load0 = time.time(), os.getloadavg()
    W.build_suite([s.name for s in specs])
    out = Path(json_out) if json_out else JSON_OUT / f"discovery-{tier}.json"
    models, results = Models(), []
    for i, spec in enumerate(specs, 1):
        say(f"({i}/{len(specs)}) {spec.name} [{tier}], {time.time() - t0:.0f} s so far")
        results.append(world_result(spec, tier, models, settings, force, explain_unlearned))
        summary = _suite_summary(results, settings, t0, load0, pending=[s.name for s in specs[i:]])
        _write_json(out, tier, summary, results)  # after every world: an interrupted run still leaves its table
    summary = _suite_summary(results, settings, t0, load0, pending=[])
    print("\nPer world (tier %s, N=%d sentences):\n" % (tier, settings.sentences) + world_table(results))
    print("\nPer cue kind, learned worlds (means; [95%% bootstrap interval over worlds] on the last row):\n"
          + kind_table(summary))
    print("\n" + verdict(summary))
    _write_json(out, tier, summary, results)
    say(f"wrote {out}")
    return {"summary": summary, "worlds": results, "json": str(out)}


def verdict(summary: dict) -> str:
    """The targets and TExplain minus one sentence (paired over learned worlds, 95% bootstrap interval)."""
    t = summary["targets"]
    lines = [f"Targets: hit@3 >= 80% over learned worlds: {t['hit_at_3_at_least_80pct']}; TExplain P@10 >= best "
             f"baseline ({t['best_baseline']}): {t['precision_at_10_at_least_best_baseline']}. "
             f"{summary['n_learned']}/{summary['n_worlds']} worlds learned their cue"
             + (f"; {summary['seconds']:.0f} s." if "seconds" in summary else ".")]
    for measure, pct in (("precision_at_k", True), ("auroc", False)):
        d = summary["texplain_minus_one_sentence"]["learned"][measure]
        if d:
            scale = 100 if pct else 1
            lines.append(f"TExplain (N={summary['settings']['sentences']}) minus one sentence, {measure}: "
                         f"{scale * d['gap']:+.{0 if pct else 2}f} [{scale * d['low']:+.{0 if pct else 2}f}, "
                         f"{scale * d['high']:+.{0 if pct else 2}f}] over {d['n']} learned worlds")
    if summary.get("pending"):
        lines.append(f"Not run: {', '.join(summary['pending'])}")
    return "\n".join(lines)


def interleave_kinds(specs: list[W.WorldSpec]) -> list[W.WorldSpec]:
    """The worlds one cue kind at a time (first world of every kind, then the second, ...), so that a run cut short
    has covered as many kinds as it could; worlds of a kind keep their order."""
    seen: dict[str, int] = {}
    rank = []
    for s in specs:
        seen[s.cue.kind] = seen.get(s.cue.kind, -1) + 1
        rank.append(seen[s.cue.kind])
    return [s for _, s in sorted(zip(rank, specs), key=lambda p: p[0])]


def _suite_summary(results: list[dict], settings: BenchSettings, t0: float, load0, pending: list[str]) -> dict:
    summary = summarize(results, settings)
    summary["seconds"] = round(time.time() - t0, 1)
    summary["load_average"] = {"start": load0, "end": os.getloadavg(), "cpus": os.cpu_count()}
    rates = [v for r in results for v in (r.get("explain_sentences_per_s") or {}).values() if v]
    summary["explain_sentences_per_s"] = float(np.median(rates)) if rates else None
    summary["pending"] = pending  # worlds of the run not reached (yet)
    return summary


def _write_json(out: Path, tier: str, summary: dict, results: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"tier": tier, "summary": summary, "worlds": results}, indent=1,
                              default=_json_default) + "\n")
    os.replace(tmp, out)


def replace_settings(settings: BenchSettings, **kw) -> BenchSettings:
    return replace(settings, **{k: v for k, v in kw.items() if v is not None})
