"""A second planted-bias world, built by the test: cups and plates on wooden tables or striped tablecloths.

In training 95% of the plates lie on a striped tablecloth and 95% of the cups stand on a wooden table, so a
small CNN learns the tablecloth. The world is written as a user would write it (Waterbirds' metadata.csv
format with a `class_name` column and a `table` attribute column) and must come out with its own names.

The explaining step here is a stand-in for the translator + language model (tests/test_engine.py covers
those): each test image is "explained" by the captions of its nearest training images in the classifier's
feature space, so the sentences say what the features encode. Everything after that is the product's own
code: the run store, word counting, the spurious-term scorer and the report.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from PIL import Image, ImageDraw

from core.analysis import SpuriousTermScorer
from core.data import open_dataset
from core.engine.words import WordExtractor
from core.report import build_report, to_markdown
from core.store import IMAGE_COLUMNS, Run

CLASSES = ["cup", "plate"]
TABLES = ["striped", "wooden"]  # the planted cue: striped tablecloths go with plates in training
SIZE = 32
# (class, table) -> number of images per split; test is unbalanced on purpose: only 2 cups on stripes.
COUNTS = {"train": {("cup", "wooden"): 57, ("cup", "striped"): 3, ("plate", "striped"): 57, ("plate", "wooden"): 3},
          "test": {("cup", "wooden"): 24, ("cup", "striped"): 2, ("plate", "striped"): 14, ("plate", "wooden"): 14}}
SPLIT_CODE = {"train": 0, "test": 2}


def draw(obj: str, table: str, rng: np.random.Generator) -> Image.Image:
    """A 32x32 picture: a wooden table (brown grain) or a red-striped cloth, with a cup or a plate on it."""
    y = np.arange(SIZE)[:, None]
    if table == "striped":
        base = np.where((y // 3) % 2 == 0, np.array([210, 40, 40]), np.array([235, 235, 235]))
        arr = np.broadcast_to(base, (SIZE, SIZE, 3)).astype(float)
    else:
        arr = np.broadcast_to(np.array([140, 90, 45]), (SIZE, SIZE, 3)).astype(float).copy()
    arr = np.clip(arr + rng.normal(0, 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr)
    d = ImageDraw.Draw(im)
    cx, cy = SIZE // 2 + int(rng.integers(-3, 4)), SIZE // 2 + int(rng.integers(-3, 4))
    if obj == "cup":  # a tall white mug with a handle
        d.rectangle([cx - 4, cy - 7, cx + 4, cy + 7], fill=(250, 250, 250))
        d.ellipse([cx + 3, cy - 3, cx + 8, cy + 3], outline=(250, 250, 250), width=2)
    else:  # a wide flat white dish with a rim
        d.ellipse([cx - 11, cy - 5, cx + 11, cy + 5], fill=(245, 245, 235), outline=(200, 200, 190))
    return im


def captions(obj: str, table: str) -> list[str]:
    place = "a striped tablecloth" if table == "striped" else "a wooden table"
    return [f"a white {obj} on {place}", f"a photo of a {obj} standing on {place} in a kitchen"]


def make_world(root) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for split, counts in COUNTS.items():
        for (obj, table), n in counts.items():
            for j in range(n):
                name = f"img/{split}-{obj}-{table}-{j:02d}.png"
                draw(obj, table, rng).save(root / name)
                rows.append({"img_filename": name, "y": CLASSES.index(obj), "split": SPLIT_CODE[split],
                             "class_name": obj, "table": table})
    meta = pd.DataFrame(rows)
    meta.to_csv(root / "metadata.csv", index=False)
    return meta


class SmallNet(nn.Module):
    """Two convolutions and a linear head: enough to see a cup's shape, and far more easily the cloth."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        return self.fc(self.body(x))


def train_classifier(dataset):
    from core.models.classifier import Preprocessing, from_module

    torch.manual_seed(0)
    clf = from_module(SmallNet(), dataset.class_names, preprocessing=Preprocessing(resize=SIZE, crop=SIZE),
                      name="smallnet-erm")
    train = dataset.split("train").records
    x = torch.stack([clf.preprocess(dataset.load_image(r)) for r in train])
    y = torch.tensor([r.label for r in train])
    opt = torch.optim.Adam(clf.module.parameters(), lr=1e-2)
    clf.module.train()
    for _ in range(60):  # full batch: a few seconds on a CPU
        loss = nn.functional.cross_entropy(clf.module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.module.eval()
    return clf


def explain_by_retrieval(dataset, clf, out, k: int = 8) -> Run:
    """A run of the test split whose sentences are the captions of each image's k nearest training images."""
    def features(records):
        x = torch.stack([clf.preprocess(dataset.load_image(r)) for r in records])
        with torch.no_grad():
            z = clf.features(x)
            return nn.functional.normalize(z, dim=1), clf.head(z).softmax(-1)

    train, test = dataset.split("train").records, dataset.split("test").records
    z_train, _ = features(train)
    z_test, probs = features(test)
    train_caps = [captions(dataset.class_names[r.label], dataset.attribute.values[r.place]) for r in train]
    nearest = (z_test @ z_train.T).topk(k, dim=1).indices
    extractor = WordExtractor()
    images, words, sentences = [], [], []
    for r, p, idx in zip(test, probs, nearest.tolist()):
        sents = [train_caps[i][j % 2] for j, i in enumerate(idx)]
        conf, pred = p.max(-1)
        images.append({"image_id": r.image_id, "path": str(r.path), "split": r.split, "label": r.label,
                       "label_name": dataset.class_names[r.label], "prediction": int(pred),
                       "prediction_name": dataset.class_names[int(pred)], "confidence": float(conf),
                       "group": r.group, "place": r.place, "n_sentences": len(sents), "error": None})
        words += [{"image_id": r.image_id, "word": w, "count": c, "sentences": s}
                  for w, (c, s) in extractor.count(sents).items()]
        sentences += [{"image_id": r.image_id, "idx": j, "text": t} for j, t in enumerate(sents)]
    run = Run.create(out, {"name": "tableware erm (test)", "kind": "explain",
                           "models": {"classifier": clf.name, "translator": "nearest training captions"},
                           "dataset": {"name": dataset.name, "kind": dataset.kind, "root": str(dataset.root),
                                       "split": "test", "class_names": dataset.class_names,
                                       "group_names": {str(g): n for g, n in dataset.group_names.items()}},
                           "settings": {"sentences_per_image": k, "seed": 0}})
    images = pd.DataFrame(images, columns=IMAGE_COLUMNS).astype({"group": "Int64", "place": "Int64"})
    run.write_shard(0, images, pd.DataFrame(words), pd.DataFrame(sentences), total_images=len(images))
    run.finish()
    return run


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tableware")
    make_world(root / "tableware")
    dataset = open_dataset(root / "tableware", group_by="table")
    clf = train_classifier(dataset)
    run = explain_by_retrieval(dataset, clf, root / "run")
    return dataset, run


def test_the_world_comes_out_with_its_own_names(world):
    dataset, run = world
    assert dataset.kind == "metadata_csv" and dataset.class_names == CLASSES
    assert dataset.group_names == {0: "cup · table: striped", 1: "cup · table: wooden",
                                   2: "plate · table: striped", 3: "plate · table: wooden"}
    report = build_report(run)
    assert [c["class"] for c in report["accuracy"]["per_class"]] == CLASSES
    names = {g["group_name"] for g in report["groups"]["per_group"]}
    assert names == set(dataset.group_names.values())
    tables = [line for line in to_markdown(report).splitlines() if line.startswith("|")]
    assert "cup · table: wooden" in "\n".join(tables)
    assert not [line for line in tables if "bird" in line]  # the Waterbirds example lives only in the definition


def test_the_classifier_learned_the_cloth(world):
    _, run = world
    images = run.images()
    right = images["label"] == images["prediction"]
    by_group = right.groupby(images["group"]).mean()
    # Plates on wood (the group that contradicts the shortcut) are read worst.
    assert by_group[3] == by_group.min() and by_group[3] < 0.5 < by_group[2]


def test_planted_cue_is_a_top_association_flag_of_plate(world):
    _, run = world
    scorer = SpuriousTermScorer().fit(run)
    plate = scorer.associations_for("plate")
    assert "striped" in plate["word"].head(3).tolist(), plate[["word", "z", "group_gap"]]
    striped = plate.set_index("word").loc["striped"]
    assert bool(striped["confirmed"]) and striped["group_high"].endswith("striped")
    # Object words never become flags in either view: they are what the classes are.
    for table in (scorer.associations_, scorer.flags_):
        assert not set(table["word"]) & {"cup", "plate", "dish", "mug"}


def test_a_class_with_too_few_misread_images_still_gets_flags_and_a_reason(world):
    _, run = world
    scorer = SpuriousTermScorer().fit(run)
    cup = scorer.misread_.query("`class` == 'cup' and predicted_as.isna()").iloc[0]
    assert cup["n_wrong"] < scorer.min_misread and not cup["scored"]
    assert scorer.flags_for("cup").empty
    reason = scorer.note_for("cup", "error")
    assert f"only {cup['n_wrong']} cup images are misread" in reason and "association view" in reason
    assert not scorer.associations_for("cup").empty  # the association view still warns about cups
    assert scorer.note_for("plate", "error") is None and scorer.note_for("cup", "association") is None
    report = build_report(run)
    assert f"No word flagged: {reason}." in to_markdown(report)
    notes = {(n["class"], n["view"]): n["reason"] for n in report["flags"]["notes"]}
    assert notes[("cup", "error")] == reason and notes[("plate", "association")] is None
