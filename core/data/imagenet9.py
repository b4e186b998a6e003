"""ImageNet-9 (Xiao et al. 2020, the Backgrounds Challenge): its nine classes, their WordNet synsets and the
map from ImageNet's 1,000 classes; what a reader and a classifier need to know about the benchmark.

The nine classes and their ImageNet index ranges are those of the Backgrounds Challenge release
(MadryLab/backgrounds_challenge, `in_to_in9.json` and `in9_classes.txt`): each class is a WordNet
synset (dog n02084071, bird n01503061, wheeled vehicle n04576211, reptile n01661091, carnivore
n02075296, insect n02159955, musical instrument n03800933, primate n02469914, fish n02512053) and
takes the ImageNet classes under it; 370 of the 1,000 classes belong to one of the nine, the rest to
none. Their evaluation takes the classifier's top-1 over all 1,000 classes and maps it; a prediction
outside the nine counts as wrong. `predict_in9` does that; `restrict=True` instead takes the argmax
over the 370 only (a softer reading, reported beside it). The mini ImageNet-9 the demo builds lives in
core.demo.worlds.imagenet9_mini.
"""
from __future__ import annotations

import numpy as np

# The variations the mini ImageNet-9 is built in (the release has more: core.data.readers.BACKGROUND_VARIATIONS).
VARIATIONS = ("original", "only_fg", "only_bg_t", "mixed_same", "mixed_rand")

# Folder names as in the release: "00_dog" ... "08_fish".
IN9_CLASSES = ("dog", "bird", "vehicle", "reptile", "carnivore", "insect", "instrument", "primate", "fish")
# Each class's WordNet noun synset (offsets as in the module docstring).
IN9_SYNSET_OFFSETS = {"dog": 2084071, "bird": 1503061, "vehicle": 4576211, "reptile": 1661091, "carnivore": 2075296,
                      "insect": 2159955, "instrument": 3800933, "primate": 2469914, "fish": 2512053}
IN9_SYNSETS = tuple(f"n{IN9_SYNSET_OFFSETS[c]:08d}" for c in IN9_CLASSES)  # as wnids, in IN9_CLASSES' order
IN9_RANGES: dict[str, tuple[tuple[int, int], ...]] = {  # ImageNet class indices, inclusive
    "dog": ((151, 170), (173, 268)),
    "bird": ((7, 24), (87, 100), (127, 146)),
    "vehicle": ((407, 408), (428, 428), (436, 436), (444, 444), (468, 468), (511, 511), (547, 547), (555, 555),
                (561, 561), (565, 565), (569, 569), (573, 573), (586, 586), (603, 603), (609, 609), (612, 612),
                (627, 627), (656, 656), (661, 661), (665, 665), (670, 671), (675, 675), (690, 690), (705, 705),
                (717, 717), (734, 734), (751, 751), (757, 757), (791, 791), (802, 803), (817, 817), (820, 820),
                (829, 829), (847, 847), (864, 864), (866, 867), (870, 870), (880, 880)),
    "reptile": ((33, 68),),
    "carnivore": ((269, 280), (286, 299), (356, 362), (387, 388)),
    "insect": ((300, 326),),
    "instrument": ((401, 402), (420, 420), (432, 432), (486, 486), (494, 494), (513, 513), (541, 541),
                   (546, 546), (558, 558), (566, 566), (577, 577), (579, 579), (593, 594), (641, 642),
                   (683, 684), (687, 687), (699, 699), (776, 776), (822, 822), (875, 875), (881, 881),
                   (889, 889)),
    "primate": ((365, 384),),
    "fish": ((0, 6), (389, 397)),
}


def in9_folder(label: int) -> str:
    return f"{label:02d}_{IN9_CLASSES[label]}"


def imagenet_to_in9() -> np.ndarray:
    """(1000,) int: the ImageNet-9 class of each ImageNet class, -1 for the 630 that belong to none."""
    out = np.full(1000, -1, dtype=np.int64)
    for label, name in enumerate(IN9_CLASSES):
        for lo, hi in IN9_RANGES[name]:
            if (out[lo:hi + 1] != -1).any():
                raise AssertionError(f"ImageNet-9 ranges overlap at {name} {lo}-{hi}")
            out[lo:hi + 1] = label
    return out


def predict_in9(logits, restrict: bool = False) -> np.ndarray:
    """ImageNet-9 predictions from (N, 1000) ImageNet logits: the top-1 class mapped to the nine (-1 when it
    is none of them, as in Xiao et al.'s evaluation), or with `restrict` the best of the 370 that are."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != 1000:
        raise ValueError(f"logits must be (N, 1000) ImageNet scores; got shape {logits.shape}")
    mapping = imagenet_to_in9()
    if restrict:
        logits = np.where(mapping[None, :] >= 0, logits, -np.inf)
    return mapping[logits.argmax(axis=1)]


def in9_superclasses() -> dict[str, list[int]]:
    """{ImageNet-9 class: its ImageNet class indices} (the ranges), in IN9_CLASSES' order."""
    mapping = imagenet_to_in9()
    return {name: np.flatnonzero(mapping == k).tolist() for k, name in enumerate(IN9_CLASSES)}
