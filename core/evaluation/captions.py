"""Caption quality of a run: do its sentences read as English, and do they name the scene and the object?

    ev = evaluate_run("checkpoints/runs/demo-erm-test")
    ev.fluency_nll, ev.reference_nll, ev.scene_accuracy, ev.object_accuracy, ev.by_group
    texplain evaluate RUN [RUN ...] [--format text|json|md]

A translator is only as useful as the sentences it makes the language model write. Four measures, on
a run whose dataset has reference captions (`captions.csv` beside `metadata.csv`, as the demo world):

- fluency: mean per-token negative log-likelihood (nats) of the run's kept sentences under the plain
  language model (no prefix), next to the same for the reference captions of the same images. Garbled
  text ("Agneto Parabola and yell down the page") costs the LM far more nats per token than English.
- scene accuracy: the share of images whose sentences use more words of their true scene than of the
  other. The scene vocabularies are learnt from the reference captions (`CaptionVocabulary`): words far
  more frequent in one scene's captions than in the other's, within each class, so that a bird that
  mostly sits on water in training does not become a "water word".
- object accuracy: the share of images whose sentences name the right kind of object (for Waterbirds:
  a waterbird vs a landbird word). The class vocabularies are learnt the same way (class contrast within
  each scene) and widened with WordNet: a word whose kinds (hypernyms) include one that only one class's
  caption words have ("mallard" and "swan" share "anseriform bird" with the caption word "duck") counts
  for that class. Reported per group, not a target: a biased classifier's features may not carry the
  object at all, which is itself the finding.
- the translator's validation loss (from its checkpoint's config), and example sentences per group.

Everything here is computed from the sentences a run kept (`keep_sentences`: all by default). Scoring every
kept sentence under the LM costs seconds per hundred sentences on a CPU, so fluency scores a fixed random
sample (`max_sentences`, seed 0) and says so.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import paths
from core.store import Run, RunStoreError, resolve_image_path

EVALUATION_FILE = "evaluation.json"  # written beside the run's manifest; the bias report reads it
FORMATS = ("text", "json", "md")
# The targets for the demo translators.
TARGET_FLUENCY_RATIO = 1.15   # generated NLL at most 15% above the references'
TARGET_SCENE_ACCURACY = 0.90
EXAMPLES_PER_GROUP = 8


# --- fluency -------------------------------------------------------------------------------------

def token_nll(lm, texts: list[str], batch_size: int = 32, max_tokens: int = 48) -> pd.DataFrame:
    """Per text: `n_tokens` scored and `nll`, the summed negative log-likelihood (nats) under `lm`.

    Each text is scored after the tokenizer's start token (BOS, else EOS), so its first word counts too;
    EOS is not appended, because the run's sentences stop at `max_new_tokens` mid-phrase and would pay
    for an end they never reached. Texts are batched by length (less padding); empty texts get 0 tokens.
    """
    import torch

    tok = lm.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else start
    ids = [[start] + tok(str(t), add_special_tokens=False).input_ids[:max_tokens] for t in texts]
    nll = np.zeros(len(ids))
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            rows = order[b:b + batch_size]
            T = max(len(ids[i]) for i in rows)
            x = torch.full((len(rows), T), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), T), dtype=torch.long)
            for r, i in enumerate(rows):
                x[r, :len(ids[i])] = torch.tensor(ids[i])
                mask[r, :len(ids[i])] = 1
            logits = lm.model(input_ids=x.to(lm.device), attention_mask=mask.to(lm.device)).logits  # (B, T, V)
            # Position t predicts token t+1; padded targets are masked out.
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), x[:, 1:].to(lm.device),
                                                     reduction="none")  # (B, T-1)
            nll[rows] = (loss.cpu() * mask[:, 1:]).sum(1).double().numpy()
    return pd.DataFrame({"text": list(texts), "n_tokens": [len(i) - 1 for i in ids], "nll": nll})


def mean_token_nll(scores: pd.DataFrame) -> float:
    """Token-weighted mean NLL of a `token_nll` table (nats per token); NaN when nothing was scored."""
    n = scores["n_tokens"].sum()
    return float(scores["nll"].sum() / n) if n else math.nan


def subsample(texts: list[str], limit: int | None, seed: int) -> list[str]:
    if limit is None or len(texts) <= limit:
        return list(texts)
    keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=limit, replace=False))
    return [texts[i] for i in keep]


# --- vocabularies from the reference captions ----------------------------------------------------

def contrast_words(words: pd.Series, values: pd.Series, strata: pd.Series | None = None, ratio: float = 4.0,
                   min_share: float = 0.01) -> dict[Any, list[str]]:
    """{value: words far more frequent in the texts of that value than in those of the other values}.

    `words` holds one set of words per text; `values` the attribute compared (e.g. the scene); `strata`
    an attribute held fixed (e.g. the class). A word belongs to value v when at least `min_share` of
    v's texts use it and, in every stratum where both sides have texts, its share among v's texts is at
    least `ratio` times its share among the others' (a word absent from the others always passes).
    Holding the stratum fixed keeps correlated attributes apart: in a biased training set "duck" is far
    more frequent in water captions, but not among the captions of waterbirds alone.
    """
    if not (len(words) == len(values) and (strata is None or len(strata) == len(words))):
        raise ValueError(f"words, values and strata must have one entry per text; got {len(words)}, "
                         f"{len(values)} and {None if strata is None else len(strata)}")
    if ratio < 1 or not 0 <= min_share < 1:
        raise ValueError(f"ratio must be >= 1 and min_share in [0, 1); got {ratio} and {min_share}")
    frame = pd.DataFrame({"words": list(words), "value": list(values),
                          "stratum": 0 if strata is None else list(strata)}).dropna(subset=["value", "stratum"])
    frame["words"] = frame["words"].map(lambda ws: sorted(set(ws)))  # a text counts once per word
    long = frame.explode("words").dropna(subset=["words"])
    texts = frame.groupby(["value", "stratum"]).size()
    used = long.groupby(["words", "value", "stratum"]).size()
    vocab: dict[Any, list[str]] = {}
    for v in sorted(frame["value"].unique().tolist()):
        n_v = int(texts.loc[v].sum())
        pooled = long[long["value"] == v].groupby("words").size() / n_v
        chosen = []
        for w in pooled[pooled >= min_share].index:
            ok = True
            for s in frame.loc[frame["value"] == v, "stratum"].unique():
                n_in, n_out = texts.get((v, s), 0), texts.xs(s, level="stratum").drop(v, errors="ignore").sum()
                if not n_out:
                    continue
                share_in = used.get((w, v, s), 0) / n_in
                share_out = sum(used.get((w, o, s), 0) for o in texts.xs(s, level="stratum").index if o != v) / n_out
                if share_in < ratio * share_out or share_in == 0:
                    ok = False
                    break
            if ok:
                chosen.append(w)
        vocab[v] = sorted(chosen)
    return vocab


def _kinds(wn, word: str, root) -> set:
    """Every kind (the synset itself and its hypernyms) of `word`'s noun senses that lie under `root`."""
    out = set()
    for s in wn.synsets(word, pos="n"):
        closure = {s} | set(s.closure(lambda x: x.hypernyms() + x.instance_hypernyms()))
        if root is None or root in closure:
            out |= closure
    return out


def _common_root(wn, words: list[str], coverage: float = 0.8):
    """The most specific noun synset that is a kind of at least `coverage` of the words (e.g. bird.n.01)."""
    counts: dict = {}
    known = 0
    for w in words:
        kinds = _kinds(wn, w, None)
        known += bool(kinds)
        for k in kinds:
            counts[k] = counts.get(k, 0) + 1
    if not known:
        return None
    candidates = [k for k, c in counts.items() if c >= coverage * known]
    return max(candidates, key=lambda k: (k.min_depth(), k.name())) if candidates else None


class ObjectKinds:
    """Which class's kind of object a word names, from caption words per class, widened with WordNet.

    `fit({class: caption words})` finds the common root of the words (the object: bird.n.01; words that
    name the root itself, "bird", are dropped as saying nothing about the class) and gives each kind
    (hypernym) below it to the class whose words fall under it far more often (`ratio`, as in
    `contrast_words`): "anseriform bird" and "aquatic bird" to waterbird, "passerine" and "parrot" to
    landbird, even though the demo's crowned crane (a landbird) is an aquatic bird to WordNet.
    `classify(word)` is the class whose caption words hold the word, else the class of the most specific
    kind of the word that has one ("swan" -> anseriform bird -> waterbird), else None (a tie, or not the
    object: "great", "water").
    """

    def __init__(self, ratio: float = 4.0, coverage: float = 0.8):
        self.ratio = ratio
        self.coverage = coverage

    def fit(self, words_by_class: dict[Any, list[str]]) -> "ObjectKinds":
        from core.data.description import load_wordnet

        wn = load_wordnet()
        if wn is None:
            warnings.warn("WordNet is not installed; object words are read by the caption words alone")
        self.words_ = {c: set(ws) for c, ws in words_by_class.items()}
        every = sorted(set().union(*self.words_.values())) if self.words_ else []
        self.root_ = _common_root(wn, every, self.coverage) if wn is not None else None
        self.kinds_: dict = {}
        if self.root_ is not None:
            # Only words that name a kind of the object count ("dock" may be class-distinctive by accident),
            # and not the object itself.
            self.words_ = {c: {w for w in ws if _kinds(wn, w, self.root_) and self.root_ not in wn.synsets(w, "n")}
                           for c, ws in self.words_.items()}
            below = {c: [_kinds(wn, w, self.root_) for w in ws] for c, ws in self.words_.items()}
            share = {c: {} for c in below}
            for c, kinds in below.items():
                for k in set().union(*kinds) if kinds else ():
                    share[c][k] = sum(k in ks for ks in kinds) / len(kinds)
            for c in share:
                for k, frac in share[c].items():
                    others = max((share[o].get(k, 0.0) for o in share if o != c), default=0.0)
                    if frac >= self.ratio * others:
                        self.kinds_[k] = c
        self._cache: dict[str, Any] = {}
        return self

    def classify(self, word: str):
        if word not in self._cache:
            owners = [c for c, ws in self.words_.items() if word in ws]
            if not owners and self.root_ is not None:
                from core.data.description import load_wordnet

                hits = [k for k in _kinds(load_wordnet(), word, self.root_) if k in self.kinds_]
                if hits:
                    depth = max(k.min_depth() for k in hits)
                    owners = sorted({self.kinds_[k] for k in hits if k.min_depth() == depth}, key=str)
            self._cache[word] = owners[0] if len(owners) == 1 else None
        return self._cache[word]


@dataclass
class CaptionVocabulary:
    """Scene and object vocabularies learnt from reference captions (sklearn-style: `fit` learns `*_`).

    `fit(captions)` takes a DataFrame with `caption`, `label` and (optionally) `place` columns.
    """

    ratio: float = 4.0       # a vocabulary word is >= ratio times as frequent on its side (per stratum)
    min_share: float = 0.01  # ... and used by at least this share of its side's captions

    def fit(self, captions: pd.DataFrame, extractor=None) -> "CaptionVocabulary":
        from core.engine.words import WordExtractor

        missing = {"caption", "label"} - set(captions.columns)
        if missing:
            raise ValueError(f"captions needs columns caption and label (and place); missing {sorted(missing)}")
        self.extractor_ = extractor or WordExtractor()
        words = captions["caption"].map(lambda t: sorted(set(self.extractor_.words(t))))
        has_place = "place" in captions.columns and captions["place"].notna().any()
        self.scene_words_ = (contrast_words(words, captions["place"], captions["label"], self.ratio, self.min_share)
                             if has_place else {})
        object_words = contrast_words(words, captions["label"], captions["place"] if has_place else None,
                                      self.ratio, self.min_share)
        self.objects_ = ObjectKinds().fit(object_words)
        self.object_words_ = {c: sorted(ws) for c, ws in self.objects_.words_.items()}
        self.n_captions_ = len(captions)
        return self


# --- reading a run and its captions ---------------------------------------------------------------

def _open(run) -> Run:
    return run if isinstance(run, Run) else Run.open(run)


def find_captions(run: Run) -> Path:
    """The caption file of a run's dataset: `captions.csv` beside its `metadata.csv`."""
    manifest = run.manifest
    root = (manifest.get("dataset") or {}).get("root")
    if not root:
        raise ValueError(f"run {run.path} records no dataset root; pass captions=FILE (--captions)")
    root = Path(root) if Path(root).is_absolute() else paths.ROOT / root
    csv = root / "captions.csv"
    if not csv.exists():
        raise ValueError(f"run {run.path}: its dataset {root} has no captions.csv, so there is nothing to compare "
                         "its sentences with; pass captions=FILE (--captions) with columns img_filename or path, "
                         "caption")
    return csv


def load_reference_captions(run: Run, captions: str | Path | None = None) -> pd.DataFrame:
    """Every reference caption of the run's dataset with its image's label and place (where known):
    path, caption, label, place, in_run (the image is one of the run's)."""
    from core.data import read_caption_csv
    from core.data.readers import read_waterbirds

    csv = Path(captions) if captions else find_captions(run)
    frame = read_caption_csv(csv, check_files=False)
    frame["path"] = frame["path"].map(lambda p: str(Path(p).resolve()))
    images = run.images()
    images = images.assign(path=[str(resolve_image_path(run.manifest, p).resolve()) for p in images["path"]])
    known = images[["path", "label", "place"]]
    meta = csv.parent / "metadata.csv"
    if meta.exists():  # labels of every captioned image, not only the run's: more captions, better vocabularies
        ds = read_waterbirds(meta, check_files=False).to_frame()
        ds["path"] = ds["path"].map(lambda p: str(Path(p).resolve()))
        known = pd.concat([known, ds[["path", "label", "place"]]]).drop_duplicates("path")
    out = frame.merge(known, on="path", how="inner")
    out["in_run"] = out["path"].isin(set(images["path"]))
    if not out["in_run"].any():
        raise ValueError(f"{csv} has no caption for any image of run {run.path}")
    return out


def translator_val_loss(manifest: dict) -> float | None:
    """The validation loss recorded in the run's translator checkpoint config, when there is one."""
    where = (manifest.get("models") or {}).get("translator")
    if not where:
        return None
    cfg = Path(where) if Path(where).is_absolute() else paths.ROOT / where
    try:
        training = json.loads((cfg / "config.json").read_text()).get("training") or {}
    except (OSError, json.JSONDecodeError):
        return None
    loss = training.get("best_val_loss")
    if loss is None and training.get("history"):
        loss = training["history"][-1].get("val_loss")
    return None if loss is None else float(loss)


# --- the evaluation --------------------------------------------------------------------------------

@dataclass
class CaptionEvaluation:
    """The caption quality of one run. `per_image` and `by_group` are DataFrames; `to_dict()` is JSON-able."""

    run: str
    path: str
    n_images: int
    sentences_per_image: float      # kept sentences evaluated per image (mean)
    sentences_sampled: int | None   # sampled per image when the run was made
    fluency_nll: float
    reference_nll: float
    n_sentences_scored: int
    n_sentences_kept: int
    n_references_scored: int
    n_references: int
    made_up_share: float            # kept sentences with a word WordNet does not know (invented words, names)
    reference_made_up_share: float
    empty_sentences: int
    scene_accuracy: float | None
    object_accuracy: float | None
    val_loss: float | None
    scene_words: dict
    object_words: dict
    object_root: str | None
    by_group: pd.DataFrame
    per_image: pd.DataFrame
    examples: dict
    lm: str
    seed: int = 0
    notes: list = field(default_factory=list)

    @property
    def fluency_ratio(self) -> float:
        return self.fluency_nll / self.reference_nll if self.reference_nll else math.nan

    def to_dict(self) -> dict:
        def num(x):
            return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(float(x), 4)

        return {
            "run": self.run, "path": self.path, "n_images": self.n_images,
            "sentences_per_image": num(self.sentences_per_image), "sentences_sampled_per_image": self.sentences_sampled,
            "fluency_nll": num(self.fluency_nll), "reference_nll": num(self.reference_nll),
            "fluency_ratio": num(self.fluency_ratio),
            "n_sentences_scored": self.n_sentences_scored, "n_sentences_kept": self.n_sentences_kept,
            "n_references_scored": self.n_references_scored, "n_references": self.n_references,
            "made_up_share": num(self.made_up_share), "reference_made_up_share": num(self.reference_made_up_share),
            "empty_sentences": self.empty_sentences,
            "scene_accuracy": num(self.scene_accuracy), "object_accuracy": num(self.object_accuracy),
            "val_loss": num(self.val_loss),
            "by_group": [{k: (num(v) if isinstance(v, float) else v) for k, v in row.items()}
                         for row in self.by_group.to_dict("records")],
            "targets": {"fluency_ratio_max": TARGET_FLUENCY_RATIO, "scene_accuracy_min": TARGET_SCENE_ACCURACY,
                        "fluency_met": bool(self.fluency_ratio <= TARGET_FLUENCY_RATIO),
                        "scene_met": None if self.scene_accuracy is None
                        else bool(self.scene_accuracy >= TARGET_SCENE_ACCURACY)},
            "scene_words": {str(k): v for k, v in self.scene_words.items()},
            "object_words": {str(k): v for k, v in self.object_words.items()},
            "object_root": self.object_root,
            "examples": self.examples, "lm": self.lm, "seed": self.seed, "notes": list(self.notes),
        }


def made_up_share(extractor, texts: list[str]) -> float:
    """Share of texts with at least one token the extractor's vocabulary (WordNet) does not know."""
    if not texts:
        return math.nan
    return sum(bool(extractor.unknown_tokens([t])) for t in texts) / len(texts)


def _count_hits(words: list[str], vocab: dict) -> dict:
    return {v: sum(w in ws for w in words) for v, ws in vocab.items()}


def evaluate_run(run, lm=None, captions: str | Path | None = None, max_sentences: int | None = 400,
                 seed: int = 0, vocabulary: CaptionVocabulary | None = None, batch_size: int = 32) -> CaptionEvaluation:
    """Evaluate the kept sentences of `run` (a Run or a run folder) against its dataset's reference captions.

    `lm`: a LanguageModel, a name or folder, or None for the run's own LM. `max_sentences` caps how many
    generated sentences (and as many references) are scored for fluency: a fixed random sample drawn
    with `seed`; None scores all. `vocabulary`: a fitted CaptionVocabulary to reuse (else fitted here).
    """
    from core.models.lm import LanguageModel, load_language_model

    run = _open(run)
    manifest = run.manifest
    if max_sentences is not None and max_sentences < 1:
        raise ValueError(f"max_sentences must be a positive integer or None, got {max_sentences!r}")
    images = run.images()
    sentences = run.sentences()
    if images.empty or sentences.empty:
        raise RunStoreError(f"run {run.path} has no {'images' if images.empty else 'sentences'} to evaluate")
    refs = load_reference_captions(run, captions)
    vocab = vocabulary or CaptionVocabulary().fit(refs)
    extractor = vocab.extractor_
    notes: list[str] = []

    # Fluency: the kept sentences and the run's images' reference captions, under the plain LM.
    if not isinstance(lm, LanguageModel):
        lm = load_language_model(lm or (manifest.get("models") or {}).get("lm") or paths.DEFAULT_LM)
    texts = [t for t in sentences["text"].astype(str) if t.strip()]
    ref_texts = list(refs.loc[refs["in_run"], "caption"])
    if len(texts) < len(sentences):
        notes.append(f"{len(sentences) - len(texts)} empty sentences were left out of the fluency score.")
    gen_scored = subsample(texts, max_sentences, seed)
    ref_scored = subsample(ref_texts, max_sentences, seed)
    if len(gen_scored) < len(texts) or len(ref_scored) < len(ref_texts):
        notes.append(f"Fluency scores a fixed random sample (seed {seed}): {len(gen_scored)} of {len(texts)} "
                     f"generated sentences and {len(ref_scored)} of {len(ref_texts)} reference captions.")
    fluency = mean_token_nll(token_nll(lm, gen_scored, batch_size))
    reference = mean_token_nll(token_nll(lm, ref_scored, batch_size))
    # NLL alone flatters sampled text: the LM scores its own samples (top-p, T < 1) as likely even when
    # they ramble ("1. Not. -1."), so say too how many sentences hold words no dictionary knows.
    made_up, ref_made_up = made_up_share(extractor, texts), made_up_share(extractor, ref_texts)

    # Scene and object words per image, from its kept sentences.
    per_sent = sentences.groupby("image_id")["text"].apply(lambda ts: [w for t in ts for w in extractor.words(str(t))])
    rows = []
    class_names = (manifest.get("dataset") or {}).get("class_names") or []
    group_names = {int(k): v for k, v in ((manifest.get("dataset") or {}).get("group_names") or {}).items()}
    for img in images.itertuples(index=False):
        words = per_sent.get(img.image_id, [])
        n_sent = int((sentences["image_id"] == img.image_id).sum())
        row = {"image_id": img.image_id, "label": int(img.label), "n_sentences": n_sent}
        label_name = class_names[int(img.label)] if int(img.label) < len(class_names) else str(img.label)
        has_group = getattr(img, "group", None) is not None and not pd.isna(img.group)
        row["group"] = group_names.get(int(img.group), str(int(img.group))) if has_group else label_name
        place = getattr(img, "place", None)
        if vocab.scene_words_ and place is not None and not pd.isna(place):
            hits = _count_hits(words, vocab.scene_words_)
            row["place"] = int(place)
            row["scene_true"] = hits.get(int(place), 0)
            row["scene_other"] = sum(h for v, h in hits.items() if v != int(place))
            row["scene_right"] = row["scene_true"] > row["scene_other"]
        kinds = [vocab.objects_.classify(w) for w in words]
        row["object_true"] = sum(k == int(img.label) for k in kinds)
        row["object_other"] = sum(k is not None and k != int(img.label) for k in kinds)
        row["object_right"] = row["object_true"] > row["object_other"]
        rows.append(row)
    per_image = pd.DataFrame(rows)
    per_image = per_image[per_image["n_sentences"] > 0]
    has_scene = "scene_right" in per_image and per_image["scene_right"].notna().any()
    if not has_scene:
        notes.append("Scene accuracy needs images with a place (scene) and captions that tell scenes apart; "
                     "this run has none.")
    agg = {"n_images": ("image_id", "size"), "object_accuracy": ("object_right", "mean")}
    if has_scene:
        agg["scene_accuracy"] = ("scene_right", "mean")
    by_group = per_image.groupby("group", sort=True).agg(**agg).reset_index()

    # Examples: one non-empty sentence from each of up to 8 images of every group (fixed by `seed`).
    rng = np.random.default_rng(seed)
    examples = {}
    nonempty = sentences[sentences["text"].astype(str).str.strip() != ""]
    first = nonempty.sort_values(["image_id", "idx"]).groupby("image_id")["text"].apply(list)
    for g, ids in per_image.groupby("group")["image_id"]:
        ids = [i for i in ids if i in first.index]
        pick = rng.choice(len(ids), size=min(EXAMPLES_PER_GROUP, len(ids)), replace=False)
        examples[str(g)] = [first[ids[i]][int(rng.integers(len(first[ids[i]])))] for i in sorted(pick)]

    def name(c):
        return class_names[c] if isinstance(c, (int, np.integer)) and c < len(class_names) else str(c)

    from core.data.description import value_names_from_groups

    places = value_names_from_groups(class_names, group_names)  # the data's own names ("meadow", "male", ...)
    settings = manifest.get("settings") or {}
    return CaptionEvaluation(
        run=run.name, path=str(run.path), n_images=int(len(per_image)),
        sentences_per_image=float(per_image["n_sentences"].mean()),
        sentences_sampled=settings.get("sentences_per_image"),
        fluency_nll=fluency, reference_nll=reference, made_up_share=made_up, reference_made_up_share=ref_made_up,
        empty_sentences=len(sentences) - len(texts),
        n_sentences_scored=len(gen_scored), n_sentences_kept=len(texts),
        n_references_scored=len(ref_scored), n_references=len(ref_texts),
        scene_accuracy=float(per_image["scene_right"].mean()) if has_scene else None,
        object_accuracy=float(per_image["object_right"].mean()),
        val_loss=translator_val_loss(manifest),
        scene_words={places.get(k, str(k)): v for k, v in vocab.scene_words_.items()},
        object_words={name(k): v for k, v in vocab.object_words_.items()},
        object_root=vocab.objects_.root_.name() if vocab.objects_.root_ is not None else None,
        by_group=by_group, per_image=per_image, examples=examples, lm=lm.name, seed=seed, notes=notes)


# --- writing ---------------------------------------------------------------------------------------

def _f(x, digits=2) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _mark(ok) -> str:
    return "" if ok is None else (" (target met)" if ok else " (target missed)")


def summary_lines(d: dict) -> list[tuple[str, str]]:
    """(measure, value) pairs of an evaluation dict, for the text, Markdown and HTML outputs."""
    t = d["targets"]
    sampled = f" of {d['sentences_sampled_per_image']} sampled" if d.get("sentences_sampled_per_image") else ""
    return [
        ("sentences evaluated",
         f"{d['sentences_per_image']:g} per image (the kept ones{sampled}), {d['n_images']} images"),
        ("fluency (NLL, nats/token)", f"{_f(d['fluency_nll'])} generated vs {_f(d['reference_nll'])} reference "
                                      f"captions: ratio {_f(d['fluency_ratio'])}, "
                                      f"target ≤ {t['fluency_ratio_max']:.2f}"
                                      f"{_mark(t['fluency_met'])}; scored {d['n_sentences_scored']} of "
                                      f"{d['n_sentences_kept']} sentences, {d['n_references_scored']} of "
                                      f"{d['n_references']} captions, LM {d['lm']}"),
        ("words no dictionary knows", f"in {_pct(d.get('made_up_share'))} of the sentences vs "
                                      f"{_pct(d.get('reference_made_up_share'))} of the captions; "
                                      f"{d.get('empty_sentences', 0)} empty sentences"),
        ("scene accuracy", f"{_pct(d['scene_accuracy'])}, target ≥ {_pct(t['scene_accuracy_min'])}"
                           f"{_mark(t['scene_met'])}"),
        ("object accuracy", f"{_pct(d['object_accuracy'])} (reported, not a target)"),
        ("translator validation loss", _f(d["val_loss"])),
    ]


def to_text(d: dict) -> str:
    out = [f"{d['run']}  ({d['path']})"]
    out += [f"  {k:<28}{v}" for k, v in summary_lines(d)]
    out.append("  per group:")
    for g in d["by_group"]:
        out.append(f"    {g['group']:<22} {g['n_images']:>4} images  scene {_pct(g.get('scene_accuracy'))}"
                   f"  object {_pct(g.get('object_accuracy'))}")
    out.append("  scene words: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in d["scene_words"].items()))
    out.append(f"  object words ({d['object_root'] or 'no common kind'}): "
               + "; ".join(f"{k}: {', '.join(v)}" for k, v in d["object_words"].items()))
    for n in d["notes"]:
        out.append(f"  note: {n}")
    for g, sents in d["examples"].items():
        out.append(f"  examples, {g}:")
        out += [f"    - {s}" for s in sents]
    return "\n".join(out)


def to_markdown(d: dict, level: int = 2) -> str:
    h = "#" * level
    out = [f"{h} Caption quality: {d['run']}", "", "| measure | value |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in summary_lines(d)]
    out += ["", "| group | images | scene accuracy | object accuracy |", "| --- | ---: | ---: | ---: |"]
    out += [f"| {g['group']} | {g['n_images']} | {_pct(g.get('scene_accuracy'))} | {_pct(g.get('object_accuracy'))} |"
            for g in d["by_group"]]
    out += ["", "Scene words: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in d["scene_words"].items()) + ".", ""]
    out += [f"> {n}" for n in d["notes"]] + ([""] if d["notes"] else [])
    for g, sents in d["examples"].items():
        out += [f"{h}# Examples: {g}", ""] + [f"- {s.replace('|', '/')}" for s in sents] + [""]
    return "\n".join(out)


def to_html(d: dict) -> str:
    """A self-contained HTML fragment (a section of the bias report)."""
    import html

    e = html.escape
    rows = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in summary_lines(d))
    groups = "".join(f"<tr><td>{e(str(g['group']))}</td><td class='num'>{g['n_images']}</td><td class='num'>"
                     f"{_pct(g.get('scene_accuracy'))}</td><td class='num'>{_pct(g.get('object_accuracy'))}</td></tr>"
                     for g in d["by_group"])
    ex = "".join(f"<h3>Examples: {e(g)}</h3><ul>" + "".join(f"<li>{e(s)}</li>" for s in sents) + "</ul>"
                 for g, sents in d["examples"].items())
    notes = "".join(f"<div class='note'>{e(n)}</div>" for n in d["notes"])
    return (f"<h2>Caption quality</h2>{notes}<table><tbody>{rows}</tbody></table>"
            "<table><thead><tr><th>group</th><th>images</th><th>scene accuracy</th><th>object accuracy</th></tr>"
            f"</thead><tbody>{groups}</tbody></table>{ex}")


def save_evaluation(run: Run, d: dict) -> Path:
    """Write `d` for the run, stamped with the run's state so a later re-explained run shows it stale.

    Into the run folder, or for a shipped demo run the user's overlay (core.store.user_file): evaluating
    the demo never changes the tracked checkpoints/.
    """
    from core.store import user_file

    m = run.manifest
    stamp = {"run_updated": m.get("updated"), "run_done_images": (m.get("progress") or {}).get("done_images")}
    out = user_file(run.path, EVALUATION_FILE)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps({**d, **stamp}, indent=2, allow_nan=False) + "\n")
    tmp.replace(out)
    return out


def read_evaluation(run: Run) -> tuple[dict | None, str | None]:
    """The run's saved evaluation, yours before a shipped one: (dict, None); (None, None) when there is none;
    (None, why) when it cannot be used (unreadable, or the run changed since it was written)."""
    from core.store import run_files

    found = run_files(run.path, EVALUATION_FILE)
    path = found.get("yours") or found.get("shipped")
    if path is None:
        return None, None
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return None, f"{path} is not valid JSON ({exc})"
    m = run.manifest
    if d.get("run_updated") != m.get("updated") or d.get("run_done_images") != (m.get("progress") or {}).get(
            "done_images"):
        return None, f"{path} was written for an earlier state of the run; run `texplain evaluate {run.path}`"
    if not all(k in d for k in ("fluency_nll", "reference_nll", "scene_accuracy", "object_accuracy")):
        return None, f"{path} lacks the evaluation's fields; run `texplain evaluate {run.path}` again"
    return d, None
