"""Synthetic runs, real image files and tiny model checkpoints for the dashboard tests (AppTest and browser).

`make_world(root)` builds, under `root`:

    data/wb/          a Waterbirds-format dataset (metadata.csv + small PNGs): a valid "New run" input
    data/other/       a second dataset, for the "runs on different datasets" error
    shipped/          demo-erm-test and demo-robust-test: synthetic runs named like the shipped demo runs
    user/             other-data-run (on data/other) and broken-run (a manifest that is not JSON)
    models/           (with_models=True) a tiny LM folder, two tiny classifier checkpoints and a translator
                      for the first, so the live "explain an upload" path and the mismatch error run fast

Runs follow the story of tests/test_analysis.py: landbirds on water are often misread and their
explanations then say water/lake/sea; waterbirds on land are misread with tree/forest/grass.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from core.store import IMAGE_COLUMNS, Run

CLASSES = ["landbird", "waterbird"]
GROUP_NAMES = {"0": "landbird on land", "1": "landbird on water", "2": "waterbird on land", "3": "waterbird on water"}
TRAIN_GROUP_COUNTS = {"0": 3498, "1": 184, "2": 56, "3": 1057}
ERM_ERRORS = (0.03, 0.55, 0.45, 0.03)
ROBUST_ERRORS = (0.08, 0.2, 0.18, 0.06)


def make_dataset(root: Path, per_group: int = 40, size: int = 48, seed: int = 0) -> Path:
    """A Waterbirds-format folder (test split only): blue scenes are water, green ones land."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for group in range(4):
        y, place = divmod(group, 2)
        for j in range(per_group):
            img_id = f"g{group}-{j:03d}"
            base = np.array([70, 150, 60] if place == 0 else [50, 100, 200], dtype=float)
            arr = np.clip(base + rng.normal(0, 18, (size, size, 3)), 0, 255).astype(np.uint8)
            arr[size // 3: 2 * size // 3, size // 3: 2 * size // 3] = [240, 200, 40] if y else [120, 70, 30]
            name = f"img/{img_id}.png"
            Image.fromarray(arr).save(root / name)
            rows.append({"img_id": img_id, "img_filename": name, "y": y, "split": 2, "place": place,
                         "place_filename": "synthetic"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def make_run(path: Path, dataset_root: Path, name: str, error_rates=ERM_ERRORS, seed: int = 0,
             models: dict | None = None, dataset_name: str = "waterbirds-synthetic", n_sent: int = 20) -> Run:
    """A finished run over every image of `dataset_root` (made by make_dataset), written in two shards."""
    meta = pd.read_csv(dataset_root / "metadata.csv")
    rng = np.random.default_rng(seed)
    images, words, sentences = [], [], []
    for rec in meta.itertuples(index=False):
        label, place = int(rec.y), int(rec.place)
        group = 2 * label + place
        wrong = rng.random() < error_rates[group]
        pred = 1 - label if wrong else label
        probs = {"bird": 0.8, "photo": 0.5, "background": 0.3}
        probs.update({"sparrow": 0.3, "robin": 0.2} if label == 0 else {"duck": 0.4, "gull": 0.2})
        if place == 1:
            strong = pred == 1
            probs.update(water=0.5 if strong else 0.25, lake=0.3 if strong else 0.15, sea=0.15 if strong else 0.05,
                         tree=0.02)
        else:
            strong = pred == 0
            probs.update(tree=0.5 if strong else 0.25, forest=0.3 if strong else 0.15, grass=0.2 if strong else 0.1,
                         water=0.03, lake=0.02)
        present = []
        for word, p in probs.items():
            k = int(rng.binomial(n_sent, p))
            if k:
                present.append(word)
                words.append({"image_id": rec.img_id, "word": word, "count": k + int(rng.integers(0, 2)),
                              "sentences": k})
        for idx in range(4):
            chosen = rng.choice(present, size=min(3, len(present)), replace=False) if present else ["bird"]
            sentences.append({"image_id": rec.img_id, "idx": idx,
                              "text": "A photo of a " + " near the ".join(chosen) + "."})
        images.append({"image_id": rec.img_id, "path": rec.img_filename, "split": "test", "label": label,
                       "label_name": CLASSES[label], "prediction": pred, "prediction_name": CLASSES[pred],
                       "confidence": float(np.round(rng.uniform(0.55, 0.99), 3)), "group": group, "place": place,
                       "n_sentences": n_sent, "error": None})
    images, words, sentences = pd.DataFrame(images), pd.DataFrame(words), pd.DataFrame(sentences)
    for column in IMAGE_COLUMNS:
        if column not in images:
            images[column] = None
    manifest = {"name": name, "kind": "explain",
                "models": models or {"classifier": f"tiny-{name}", "translator": "tiny-translator",
                                     "lm": "tiny-lm"},
                "dataset": {"name": dataset_name, "kind": "waterbirds", "root": str(dataset_root), "split": "test",
                            "class_names": CLASSES, "group_names": GROUP_NAMES,
                            "train_group_counts": TRAIN_GROUP_COUNTS},
                "settings": {"sentences_per_image": n_sent, "top_p": 0.9, "temperature": 0.9, "max_new_tokens": 20,
                             "seed": seed},
                "device": "CPU (synthetic)"}
    run = Run.create(path, manifest)
    halves = np.array_split(images["image_id"].to_numpy(), 2)
    for shard, ids in enumerate(halves):
        run.write_shard(shard, images[images["image_id"].isin(ids)], words[words["image_id"].isin(ids)],
                        sentences[sentences["image_id"].isin(ids)], total_images=len(images))
    run.update_manifest(rate_images_per_s=12.5)
    run.finish()
    return run


def make_tiny_models(root: Path) -> dict[str, str]:
    """A tiny LM, two tiny classifier checkpoints (ShuffleNet, 32 px) and a translator for the first."""
    import torch
    import torchvision

    from core.models.classifier import ClassifierAdapter, Preprocessing, from_pretrained
    from core.models.lm import load_language_model
    from core.models.translator import Translator, TranslatorConfig
    from tests import tiny

    root.mkdir(parents=True, exist_ok=True)
    lm_dir = tiny.save_tiny_lm(root / "lm")
    lm = load_language_model(lm_dir)
    out = {"lm": str(lm_dir)}
    for i, key in enumerate(("classifier", "other_classifier")):
        torch.manual_seed(i)
        net = torchvision.models.shufflenet_v2_x0_5(weights=None, num_classes=2)
        adapter = ClassifierAdapter(net, CLASSES, "shufflenet_v2_x0_5", Preprocessing(resize=32, crop=32),
                                    name=f"tiny-{key}", backend="torchvision:shufflenet_v2_x0_5")
        adapter.save_pretrained(root / key)
        out[key] = str(root / key)
    clf = from_pretrained(root / "classifier")
    cfg = TranslatorConfig(feature_dim=clf.feature_dim, hidden_size=lm.hidden_size, prefix_length=2, mlp_hidden=32,
                           classifier_identity=clf.identity, classifier_name=clf.name, lm_identity=lm.identity,
                           lm_name=lm.name)
    torch.manual_seed(0)
    Translator(cfg).save_pretrained(root / "translator")
    out["translator"] = str(root / "translator")
    return out


def make_world(root: Path, with_models: bool = False, per_group: int = 40) -> dict[str, Path | dict]:
    """Datasets, shipped-like and user runs (see the module docstring); returns the interesting paths."""
    root = Path(root)
    data = make_dataset(root / "data" / "wb", per_group=per_group)
    other = make_dataset(root / "data" / "other", per_group=10, seed=3)
    models = make_tiny_models(root / "models") if with_models else None
    run_models = None
    if models:
        run_models = {"classifier": "tiny-classifier", "classifier_source": models["classifier"],
                      "translator": models["translator"], "lm": models["lm"]}
    shipped, user = root / "shipped", root / "user"
    make_run(shipped / "demo-erm-test", data, "demo erm (test)", ERM_ERRORS, seed=0, models=run_models)
    make_run(shipped / "demo-robust-test", data, "demo robust (test)", ROBUST_ERRORS, seed=1, models=run_models)
    make_run(user / "other-data-run", other, "other data", ERM_ERRORS, seed=2, dataset_name="other-synthetic")
    broken = user / "broken-run"
    broken.mkdir(parents=True, exist_ok=True)
    (broken / "manifest.json").write_text("{ not json")
    (root / "not-a-dataset").mkdir(exist_ok=True)
    (root / "not-a-dataset" / "notes.txt").write_text("no images here")
    return {"root": root, "data": data, "other_data": other, "shipped": shipped, "user": user,
            "erm": shipped / "demo-erm-test", "robust": shipped / "demo-robust-test",
            "other_run": user / "other-data-run", "broken": broken, "not_a_dataset": root / "not-a-dataset",
            "models": models}


# --- running pages (streamlit.testing) -----------------------------------------------------------------------

PAGES = Path(__file__).resolve().parent.parent / "dashboard"


def run_page(page: str, timeout: float = 180, **state):
    """Run a page (a path under dashboard/) once with the given session state; it must not raise."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PAGES / page), default_timeout=timeout)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at) -> str:
    """Everything the page wrote as text (markdown, captions, alerts, headings), for content checks."""
    parts = []
    for kind in ("markdown", "caption", "info", "success", "warning", "error", "title", "header", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)
