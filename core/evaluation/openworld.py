"""Does a translator describe what it was not trained on? Scene kinds, false scenes and object superclasses.

A translator that memorised its caption world reads a new scene as the nearest trained one (pale planks become
"a wooden pier by a lake") and calls an unseen object by a trained one ("a cow" for a dog). These measures
use fixed vocabularies, not the training captions' words, so they score held-out scenes and objects that no
caption ever described:

- scene-kind accuracy: the kind (water, grass, forest, sky, sand, snow, wood, flowers, city, indoor, rock,
  plain) whose words the image's sentences use most often is one the image shows;
- false-scene rate, per kind: the share of images that do not show the kind whose sentences name it in at
  least one sentence (water above all: "lake" behind any bird was the demo's first bias). A kind a photo shows
  over a minority of its area (a strip of bay under a skyline) is in some of its crops and not in others: its
  images are left out of that kind's false- and kept-scene rates (rows' optional `partial`);
- superclass accuracy: the object superclass (dog, bird, vehicle, fruit, ...: WordNet's, the most specific
  of SUPERCLASSES) that the sentences' object words name most often is the object's own.

    rows = DataFrame(image, kinds (set of kinds), superclass, counts (word -> (occurrences, sentences)), sentences)
    score_open_world(rows)["scene_kind_accuracy"], ["false_scene_rate"]["water"], ["superclass_accuracy"]
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from core.analysis.stats import wilson_interval
from core.models.gate import linear_probe

SCENE_KINDS = ("water", "grass", "forest", "sky", "sand", "snow", "wood", "flowers", "city", "indoor", "rock",
               "plain")
# The words (lemmas, as core.engine.words.WordExtractor gives them) that name each kind. Fixed by hand, broad on
# purpose: a sentence that says "shore" or "boat" puts water in the picture as surely as one that says "lake".
KIND_WORDS = {
    "water": frozenset({"water", "lake", "sea", "ocean", "river", "pond", "stream", "wave", "waterfall", "creek",
                        "harbor", "harbour", "bay", "shore", "pier", "dock", "jetty", "boat", "underwater", "reef",
                        "lagoon", "marsh", "swamp", "puddle", "brook", "canal", "coast", "seaside", "waterside"}),
    "grass": frozenset({"grass", "grassy", "meadow", "field", "lawn", "pasture", "prairie", "hay", "moss", "turf"}),
    "forest": frozenset({"forest", "tree", "wood", "woods", "woodland", "jungle", "pine", "foliage", "leaf", "branch",
                         "trunk", "bush", "shrub"}),
    "sky": frozenset({"sky", "cloud", "cloudy", "sunset", "sunrise", "dusk", "dawn", "horizon", "sun", "star",
                      "moon", "storm", "overcast"}),
    "sand": frozenset({"sand", "sandy", "beach", "desert", "dune", "gravel", "dirt", "soil", "earth", "mud"}),
    "snow": frozenset({"snow", "snowy", "ice", "icy", "frost", "frozen", "winter", "glacier", "snowfield"}),
    "wood": frozenset({"wooden", "plank", "board", "timber", "parquet", "grain", "log", "deck", "floorboard"}),
    "flowers": frozenset({"flower", "blossom", "petal", "bloom", "daisy", "rose", "tulip", "dandelion", "sunflower",
                          "bouquet", "garden"}),
    "city": frozenset({"city", "building", "street", "road", "bridge", "town", "skyscraper", "tower", "house",
                       "roof", "brick", "concrete", "asphalt", "facade", "urban", "traffic", "sidewalk", "window"}),
    "indoor": frozenset({"room", "wall", "ceiling", "floor", "table", "lamp", "kitchen", "indoors", "indoor",
                         "interior", "shelf", "sofa", "carpet", "curtain", "furniture", "desk"}),
    "rock": frozenset({"rock", "rocky", "stone", "cliff", "mountain", "hill", "boulder", "cave", "canyon", "pebble",
                       "valley", "peak", "slope"}),
    "plain": frozenset({"plain", "empty", "blank", "backdrop", "studio", "uniform", "solid"}),
}
# "wood" is both a material and a forest: as the noun it is a forest word, "wooden" the material.
# Object superclasses, most specific first: a word takes the first one its WordNet noun senses lie under.
SUPERCLASSES = (
    ("dog", "dog.n.01"), ("cat", "feline.n.01"), ("carnivore", "carnivore.n.01"), ("primate", "primate.n.02"),
    ("rodent", "rodent.n.01"), ("hoofed mammal", "ungulate.n.01"), ("mammal", "mammal.n.01"), ("bird", "bird.n.01"),
    ("fish", "fish.n.01"), ("reptile", "reptile.n.01"), ("amphibian", "amphibian.n.03"), ("insect", "insect.n.01"),
    ("invertebrate", "invertebrate.n.01"), ("musical instrument", "musical_instrument.n.01"), ("boat", "vessel.n.02"),
    ("aircraft", "aircraft.n.01"), ("vehicle", "vehicle.n.01"), ("food", "food.n.01"), ("food", "food.n.02"),
    ("plant", "plant.n.02"), ("tool", "tool.n.01"), ("furniture", "furniture.n.01"), ("clothing", "clothing.n.01"),
    ("building", "building.n.01"), ("container", "container.n.01"), ("toy", "plaything.n.01"),
    ("sports equipment", "sports_equipment.n.01"), ("sports equipment", "game_equipment.n.01"),
)
# A word that is both a plant and a food in WordNet ("banana", "carrot": the plant is the first sense) is food:
# in a picture, a banana is fruit on a table far more often than a plant.
PREFERRED = {"plant": "food"}
# Vegetation words name the background, not an object: they never count for a superclass ("grass" and "tree"
# are plants to WordNet). Other scene words can be the object itself (a boat, a house, a table, a rose).
BACKGROUND_WORDS = KIND_WORDS["grass"] | KIND_WORDS["forest"]


def is_scene_word(word: str) -> bool:
    """Does the word name a scene kind (water, lake, forest, sky, ...: KIND_WORDS)?"""
    return any(word.lower() in words for words in KIND_WORDS.values())


def kinds_of(counts: dict) -> dict[str, tuple[int, int]]:
    """kind -> (occurrences of its words, the most sentences any one of its words is in) for an image's counts."""
    out = {}
    for kind, words in KIND_WORDS.items():
        hits = [counts[w] for w in words if w in counts]
        if hits:
            out[kind] = (sum(c for c, _ in hits), max(s for _, s in hits))
    return out


def named_kind(counts: dict) -> str | None:
    """The kind whose words the sentences use most often (None: no kind word, or a tie)."""
    found = kinds_of(counts)
    if not found:
        return None
    best = max(c for c, _ in found.values())
    top = [k for k, (c, _) in found.items() if c == best]
    return top[0] if len(top) == 1 else None


def kinds_in_a_sentence(sentences: list[str], extractor) -> set[str]:
    """Every kind named in at least one sentence."""
    words = set().union(*(set(extractor.words(s)) for s in sentences)) if sentences else set()
    return {k for k, ws in KIND_WORDS.items() if words & ws}


@lru_cache(maxsize=1)
def _anchors():
    from core.data.description import load_wordnet

    wn = load_wordnet()
    if wn is None:
        raise RuntimeError("WordNet is not available: run `texplain setup`")
    return wn, [(name, wn.synset(s)) for name, s in SUPERCLASSES]


def _mostly_adjective(wn, word: str) -> bool:
    """Whether English uses `word` more as an adjective than as a noun (SemCor counts in WordNet): "green",
    "white", "black" name colours, not the vegetables, egg whites and game pieces their rarer noun senses are."""
    def uses(pos: tuple[str, ...]) -> int:
        return sum(lemma.count() for p in pos for syn in wn.synsets(word, pos=p) for lemma in syn.lemmas()
                   if lemma.name().lower() == word)

    return uses(("a", "s")) > uses(("n",))


@lru_cache(maxsize=50_000)
def superclass_of(word: str) -> str | None:
    """The most specific superclass (SUPERCLASSES) that a noun sense of `word` lies under, by WordNet's sense
    order ("cat": the feline before the tractor); None when no sense does, for a vegetation word, or for a word
    used mostly as an adjective (colours: "green" is not food)."""
    if word in BACKGROUND_WORDS:
        return None
    wn, anchors = _anchors()
    if _mostly_adjective(wn, word):
        return None
    senses = wn.synsets(word.replace(" ", "_"), pos="n")
    if not senses and " " in word:  # "black labrador": its head noun
        return superclass_of(word.rsplit(" ", 1)[-1])
    found = []
    for syn in senses:
        path = set(syn.closure(lambda s: s.hypernyms() + s.instance_hypernyms())) | {syn}
        found += [name for name, anchor in anchors if anchor in path][:1]
    if not found:
        return None
    return PREFERRED[found[0]] if found[0] in PREFERRED and PREFERRED[found[0]] in found else found[0]


def named_superclass(counts: dict) -> str | None:
    """The superclass whose words the sentences use most often (None: none named, or a tie)."""
    hits: dict[str, int] = {}
    for word, (c, _) in counts.items():
        if (sc := superclass_of(word)) is not None:
            hits[sc] = hits.get(sc, 0) + c
    if not hits:
        return None
    best = max(hits.values())
    top = [s for s, h in hits.items() if h == best]
    return top[0] if len(top) == 1 else None


@lru_cache(maxsize=1024)
def superclasses_related(a: str, b: str) -> bool:
    """Whether two superclasses are one, or one lies under the other in WordNet (a dog is a carnivore and a mammal;
    a boat is a vehicle), so that a word of one is no error about an object of the other. Food and plant count
    as related (PREFERRED: WordNet files many fruits under both)."""
    if a == b or {a, b} == {"food", "plant"}:
        return True
    _, anchors = _anchors()
    unknown = {a, b} - {name for name, _ in anchors}
    if unknown:
        raise ValueError(f"unknown superclass {sorted(unknown)[0]!r}: use one of SUPERCLASSES' names")

    def own(name):
        return {syn for n, syn in anchors if n == name}

    def over(name):  # every synset above the superclass's anchors
        return {h for syn in own(name) for h in syn.closure(lambda s: s.hypernyms() + s.instance_hypernyms())}

    return bool(own(a) & over(b) or own(b) & over(a))


def _rate(ok: pd.Series) -> dict:
    n, k = int(len(ok)), int(ok.sum())
    if not n:
        return {"rate": None, "ci95": None, "images": 0}
    return {"rate": round(k / n, 4), "ci95": [round(x, 4) for x in wilson_interval(k, n)], "images": n}


def score_open_world(rows: pd.DataFrame, extractor=None) -> dict:
    """Scene-kind accuracy, false-scene rates and superclass accuracy of explained images (see the module
    docstring). `rows`: image, kinds (a set of SCENE_KINDS), counts, sentences, and optionally partial (kinds the
    photo shows in part: those images are left out of those kinds' false- and kept-scene rates) and superclass
    (the object's, from `superclass_of` of its name or given) — images without one are left out of it."""
    if extractor is None:
        from core.engine.words import WordExtractor

        extractor = WordExtractor()
    df = rows.copy()
    df["kind_said"] = df["counts"].map(named_kind)
    df["kind_ok"] = [said in kinds if said else False for said, kinds in zip(df["kind_said"], df["kinds"])]
    per_sentence = df["sentences"].map(lambda ss: [kinds_in_a_sentence([x], extractor) for x in ss])
    df["kinds_named"] = per_sentence.map(lambda ks: set().union(*ks))
    out = {"images": int(len(df)), "scene_kind_accuracy": _rate(df["kind_ok"]),
           "rules": {"scene_kind": "the kind whose words the sentences use most often is one the image shows",
                     "false_scene": "share of the images that do not show a kind whose sentences name it in at "
                                    "least one sentence; images whose photo shows the kind in part (some crops "
                                    "show it, some do not) are left out, as they are of kept_scene",
                     "kept_scene": "share of the images that show a kind whose sentences name it in at least one "
                                   "sentence (what a false-scene rate is bought with)",
                     "false_scene_share": "of the images that do not show a kind: the mean share of their "
                                          "sentences that name it, and the share of images where at least a "
                                          "quarter do (one sentence in 16 is a hedge; four is a reading)",
                     "superclass": "the superclass whose words the sentences use most often is the object's"}}
    partial = df["partial"] if "partial" in df else pd.Series([frozenset()] * len(df), index=df.index)
    false, shares, kept, left_out, shown_by_kind = {}, {}, {}, {}, {}
    for kind in SCENE_KINDS:
        shown = shown_by_kind[kind] = df["kinds"].map(lambda ks, k=kind: k in ks)
        in_part = partial.map(lambda ks, k=kind: k in ks) & ~shown
        absent = ~shown & ~in_part
        named = df["kinds_named"].map(lambda ks, k=kind: k in ks)  # in at least one sentence
        if in_part.any():
            left_out[kind] = int(in_part.sum())
        if shown.any():
            kept[kind] = _rate(named[shown])
        if absent.any():
            false[kind] = _rate(named[absent])
            share = per_sentence[absent].map(lambda ks, k=kind: float(np.mean([k in x for x in ks])) if ks else 0.0)
            shares[kind] = {"mean_share": round(float(share.mean()), 4), "quarter_or_more": _rate(share >= 0.25)}
    out["false_scene_rate"] = false
    out["false_scene_share"] = shares
    out["kept_scene_rate"] = kept
    out["shown_in_part"] = left_out  # images left out of each kind's false- and kept-scene rates
    out["by_kind"] = {k: _rate(df.loc[shown, "kind_ok"]) for k, shown in shown_by_kind.items() if shown.any()}
    confusions = df[~df["kind_ok"]].assign(truth=df["kinds"].map(lambda ks: "+".join(sorted(ks))),
                                           said=df["kind_said"].fillna("(none)"))
    out["kind_confusions"] = [{"truth": t, "said": s, "images": int(n)} for (t, s), n in
                              confusions.groupby(["truth", "said"]).size().sort_values(ascending=False)
                              .head(10).items()]
    if "superclass" in df and df["superclass"].map(bool).any():
        # An image of several objects: naming any of their superclasses is right.
        obj = df[df["superclass"].map(bool)].copy()
        obj["superclass"] = obj["superclass"].map(lambda v: frozenset({v}) if isinstance(v, str) else frozenset(v))
        obj["superclass_said"] = obj["counts"].map(named_superclass)
        obj["superclass_ok"] = [said in truth for said, truth in zip(obj["superclass_said"], obj["superclass"])]
        obj["superclass"] = obj["superclass"].map(lambda v: "+".join(sorted(v)))
        out["superclass_accuracy"] = _rate(obj["superclass_ok"])
        out["by_superclass"] = obj.groupby("superclass")["superclass_ok"].agg(["mean", "size"]).round(3) \
            .rename(columns={"mean": "accuracy", "size": "images"}).to_dict(orient="index")
        said = obj[~obj["superclass_ok"]].assign(said=obj["superclass_said"].fillna("(none)"))
        out["superclass_confusions"] = [{"truth": t, "said": s, "images": int(n)} for (t, s), n in
                                        said.groupby(["superclass", "said"]).size().sort_values(ascending=False)
                                        .head(10).items()]
    out["examples"] = [{"image": r.image, "kinds": sorted(r.kinds), "said": r.kind_said,
                        "sentence": r.sentences[0] if len(r.sentences) else ""} for r in df.head(8).itertuples()]
    return out


def feature_probe(train_z: np.ndarray, train_shown: np.ndarray, test_z: np.ndarray, test_shown: np.ndarray,
                  at_recall: float | None = None, max_false: float = 0.15, seed: int = 0) -> dict:
    """How well a linear read of the classifier's own features tells a kind from its absence on held-out images: a
    reference for a translator, which reads the same features (it is no bound: a translator is a deeper reader,
    trained on more captions).

    A logistic probe (standardised features, its strength chosen by 3-fold cross-validation on the training
    images) learns the kind from the training images' features and scores the held-out ones: its AUC, the recall
    it keeps with no more than `max_false` of the images without the kind flagged, and the share it flags when it
    keeps `at_recall` of those with it (a translator's kept-scene rate), so that a translator's false rate can be
    read beside the probe's at the same recall."""
    from sklearn.metrics import roc_auc_score, roc_curve

    train_shown, test_shown = np.asarray(train_shown, bool), np.asarray(test_shown, bool)
    for name, y in (("training", train_shown), ("held-out", test_shown)):
        if y.all() or not y.any():
            raise ValueError(f"a feature probe needs {name} images with and without the kind; "
                             f"all {len(y)} are {'with' if y.any() else 'without'} it")
    probe = linear_probe("roc_auc", seed)
    p = probe.fit(np.asarray(train_z), train_shown).predict_proba(np.asarray(test_z))[:, 1]
    false, recall, _ = roc_curve(test_shown, p)
    out = {"auc": round(float(roc_auc_score(test_shown, p)), 4), "max_false": max_false,
           "recall_at_max_false": round(float(recall[false <= max_false].max()), 4),
           "C": float(np.ravel(probe[-1].C_)[0]), "images": int(len(test_shown)), "with_kind": int(test_shown.sum()),
           "training_images": int(len(train_shown))}
    if at_recall is not None:
        out["at_recall"] = round(float(at_recall), 4)
        out["false_at_recall"] = round(float(false[recall >= at_recall].min()), 4)
    return out


def superclass_probe(train_z: np.ndarray, train_superclass, test_z: np.ndarray, test_superclasses,
                     seed: int = 0, neighbours: tuple[int, ...] = (1, 20)) -> dict:
    """How often a linear read of the classifier's own features gives an unseen object's superclass: a reference
    for a translator's superclass accuracy. A multinomial logistic probe (standardised features, strength by 3-fold
    cross-validation) learns the superclass of training images that show one object of a known superclass
    (`train_superclass`: the name or None); a held-out image is right when the probe's top superclass is one of its
    objects' (`test_superclasses`: a set each). Beside it, always naming the commonest training superclass, and
    the superclass of the nearest training image (cosine) or the commonest among the `neighbours` nearest: how a
    reader that looks up known objects does, which is how a translator trained on their captions names an unseen
    one."""
    from sklearn.neighbors import KNeighborsClassifier

    keep = np.array([bool(c) for c in train_superclass])
    labels = np.array([c for c in train_superclass if c])
    if len(set(labels)) < 2 or not len(test_superclasses):
        raise ValueError(f"a superclass probe needs training images of two superclasses or more and held-out images; "
                         f"got {len(set(labels))} superclasses and {len(test_superclasses)} held-out images")
    probe = linear_probe("accuracy", seed)
    said = probe.fit(np.asarray(train_z)[keep], labels).predict(np.asarray(test_z))
    truth = [set(t) for t in test_superclasses]
    common = pd.Series(labels).value_counts().index[0]
    nearest = {}
    for k in neighbours:
        knn = KNeighborsClassifier(n_neighbors=min(k, int(keep.sum())), metric="cosine")
        near = knn.fit(np.asarray(train_z)[keep], labels).predict(np.asarray(test_z))
        nearest[str(k)] = _rate(pd.Series([s in t for s, t in zip(near, truth)]))
    return {"accuracy": _rate(pd.Series([s in t for s, t in zip(said, truth)])),
            "commonest": {"superclass": str(common), "accuracy": _rate(pd.Series([common in t for t in truth]))},
            "nearest_neighbours": nearest,
            "C": float(np.ravel(probe[-1].C_)[0]), "training_images": int(keep.sum()),
            "superclasses": int(len(set(labels)))}


def chance_rates(kinds: pd.Series) -> dict:
    """What a reader that names one kind at random would score on these images (a floor to read accuracy by)."""
    return {"scene_kind_accuracy": round(float(np.mean([len(ks) / len(SCENE_KINDS) for ks in kinds])), 4)}
