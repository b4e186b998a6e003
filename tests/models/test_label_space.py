"""A classifier whose classes are not the dataset's is read in the dataset's classes before a run (an ImageNet
classifier on ImageNet-9 or on ImageNet class folders), or refused with a reason: scoring its ImageNet
indices against the dataset's labels would report every prediction wrong."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import imagenet9 as in9
from core.data.readers import open_dataset
from core.errors import ClassifierLoadError
from core.models.classifier import Preprocessing, from_module, imagenet_class_names
from core.models.label_space import dataset_label_space, imagenet_wnids, read_in_dataset_classes
from tests import tiny


def _imagenet_toy(seed: int = 0):
    """A toy classifier with ImageNet's 1,000 classes (random weights: its top-1 is anything)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 8),
                              torch.nn.ReLU(), torch.nn.Linear(8, 1000))
    return from_module(net, imagenet_class_names(), preprocessing=Preprocessing(resize=32, crop=32),
                       name="toy-imagenet")


def _as_array(space) -> np.ndarray:
    out = np.full(1000, -1)
    for k, idx in enumerate(space.superclasses.values()):
        out[idx] = k
    return out


def test_imagenet_wnids_are_in_class_order():
    wnids = imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000 and wnids[0] == "n01440764" and wnids == sorted(wnids)


def test_wordnet_reading_agrees_with_the_imagenet9_ranges_where_they_place_a_class():
    """The nine synsets read by WordNet put every ImageNet class Xiao et al.'s ranges place in the same class
    (terriers under "dog", not "carnivore"); they also take 16 the contiguous ranges skip (grouse, peafowl,
    quail, partridge; the whippet and the Italian greyhound; ...). The Backgrounds Challenge keeps the ranges."""
    toy = _imagenet_toy()
    ds = SimpleNamespace(class_names=list(in9.IN9_CLASSES), class_synsets=list(in9.IN9_SYNSETS), kind="image_folder")
    space = dataset_label_space(toy, ds)
    assert space.rule == "wordnet" and space.other == "none of these 9"
    wordnet, ranges = _as_array(space), in9.imagenet_to_in9()
    placed = ranges >= 0
    assert (wordnet[placed] == ranges[placed]).all()
    extra = np.flatnonzero((wordnet >= 0) & ~placed)
    assert len(extra) == 16 and {80, 84, 171, 172} <= set(extra)  # black grouse, peafowl, the two sighthounds
    assert [in9.IN9_CLASSES[wordnet[i]] for i in (84, 172)] == ["bird", "dog"]
    challenge = dataset_label_space(toy, SimpleNamespace(class_names=list(in9.IN9_CLASSES),
                                                         kind="backgrounds_challenge"))
    assert challenge.rule == "imagenet9" and challenge.other == "none of the nine"
    assert (_as_array(challenge) == ranges).all()


def test_an_imagenet_classifier_explains_imagenet_class_folders_in_their_classes(tmp_path, tiny_lm):
    """End to end: three ImageNet classes in wnid folders, named and mapped by WordNet; every prediction is the
    classifier's own top-1 read in the three (or "none of these 3"), and the manifest says how."""
    from core.engine.config import ExplainConfig
    from core.engine.pipeline import explain_dataset
    from core.models.translator import Translator, TranslatorConfig
    from core.store import Run

    root = tmp_path / "imagenet"
    rng = np.random.default_rng(0)
    for wnid in ("n01440764", "n02012849", "n03126707"):  # tench, crane (the bird), crane (the machine)
        for i in range(3):
            path = root / "val" / wnid / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path)
    ds = open_dataset(root)
    toy = _imagenet_toy()
    clf = read_in_dataset_classes(toy, ds)
    assert clf.class_names == ["tench", "crane (n02012849)", "crane (n03126707)", "none of these 3"]
    assert clf.label_space.superclasses == {"tench": [0], "crane (n02012849)": [134], "crane (n03126707)": [517]}
    cfg = TranslatorConfig(feature_dim=toy.feature_dim, hidden_size=tiny_lm.hidden_size, prefix_length=2,
                           classifier_identity=toy.identity, classifier_feature_identity=toy.feature_identity,
                           lm_identity=tiny_lm.identity)
    run = explain_dataset(ds, toy, Translator(cfg).eval(), tiny_lm, tmp_path / "run",
                          ExplainConfig(sentences_per_image=2, max_new_tokens=3, device="cpu"), show_progress=False)
    images = Run.open(run.path).images().sort_values("image_id")
    x = torch.stack([toy.preprocess(Image.open(root / p).convert("RGB")) for p in images["path"]])
    top1 = toy(x).argmax(1).tolist()
    expected = [{0: "tench", 134: "crane (n02012849)", 517: "crane (n03126707)"}.get(t, "none of these 3")
                for t in top1]
    assert images["prediction_name"].tolist() == expected
    assert images["label_name"].tolist() == ["tench"] * 3 + ["crane (n02012849)"] * 3 + ["crane (n03126707)"] * 3
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert "by WordNet" in manifest["models"]["label_space"] and manifest["dataset"]["class_synsets"][0] == "n01440764"
    assert manifest["models"]["classifier"] == "toy-imagenet (as 3 dataset classes)"


def test_classes_match_by_name_by_position_for_placeholders_or_not_at_all():
    ds = SimpleNamespace(class_names=["landbird", "waterbird"], class_synsets=None, kind="metadata_csv")

    def clf(names):
        return from_module(tiny.TinyNet(n_classes=len(names)), names, name="tinynet")

    assert dataset_label_space(clf(["landbird", "waterbird"]), ds) is None
    assert dataset_label_space(clf(["class_0", "class_1"]), ds) is None  # no names of its own: by position
    swapped = dataset_label_space(clf(["Waterbird", "landbird"]), ds)
    assert swapped.rule == "names" and swapped.superclasses == {"landbird": [1], "waterbird": [0]}
    wrapped = read_in_dataset_classes(clf(["Waterbird", "landbird"]), ds)
    assert wrapped.class_names == ["landbird", "waterbird"]  # every class covered: no "none of these"
    with pytest.raises(ClassifierLoadError, match=r"2 of the dataset's classes are none of the classifier's"):
        dataset_label_space(clf(["cat", "dog"]), ds)
    with pytest.raises(ClassifierLoadError, match=r"predicts 1000 classes.*\"synsets\".*texplain finetune"):
        dataset_label_space(_imagenet_toy(), ds)
    sky = SimpleNamespace(class_names=["cloud", "tench"], class_synsets=["n09247410", "n01440764"],
                          kind="image_folder")
    with pytest.raises(ClassifierLoadError, match=r"no ImageNet class lies under the synset of \[.cloud.\]"):
        dataset_label_space(_imagenet_toy(), sky)


def test_builtin_for_knows_the_unmodified_classifier_by_its_weights_and_mitigation_says_why_not():
    """A run of the built-in classifier (read in a dataset's classes or not) is known by its weights' hash; a
    checkpoint fine-tuned from it shares only the architecture prefix and is not mistaken for it. Mitigating
    such a run is refused with what to do, not 'cannot find the classifier'."""
    from core.models.classifier import builtin_for, load_classifier
    from core.models.registry import resolve_run_classifier as resolve_run_classifier

    ident = load_classifier("efficientnet-lite0").identity
    assert builtin_for(ident) == "efficientnet-lite0"
    assert builtin_for(f"{ident}>superclasses:40ae8102") == "efficientnet-lite0"
    assert builtin_for("efficientnet-lite0:61e21c40e4e6") is None  # the demo's fine-tuned ERM classifier
    assert builtin_for(None) is None and builtin_for("tinynet:abc") is None
    manifest = {"models": {"classifier": "efficientnet-lite0 (ImageNet-9)",
                           "classifier_identity": f"{ident}>superclasses:40ae8102"}}
    with pytest.raises(ValueError, match="unmodified built-in 'efficientnet-lite0' read in the dataset's classes"):
        resolve_run_classifier(manifest)
