"""Builds the demo's shipped artefacts from the demo world: two classifiers, their translators, their runs.

    python -m core demo classifiers   # ERM and group-balanced EfficientNet-Lite0 (minutes on 2 cores)
    python -m core demo translators   # one translator per classifier (the long step: ~15 min each on 2 cores)
    python -m core demo runs          # explain the val and test splits with each (~10 min each)

Each step writes into checkpoints/ and is skipped when its output exists (pass --force to redo).
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch

from core import paths

CLASSIFIER_DIR = paths.CHECKPOINTS / "classifiers"
TRANSLATOR_DIR = paths.CHECKPOINTS / "translators"
NAMES = ("erm", "robust")
TRANSLATOR_STEPS = 160  # 2,560 caption pairs (~2 captions per training image), batch 16: ~15 min on 2 cores
RUN_SENTENCES = 16


def _finetune_configs():
    from core.finetune import FinetuneConfig

    return {"erm": FinetuneConfig(sampling="erm", select="last"),
            "robust": FinetuneConfig(sampling="group_balanced", select="worst_group")}


def build_classifiers(force: bool = False) -> None:
    from core.data import read_waterbirds
    from core.finetune import finetune, group_accuracies, trunk_features, trunk_views
    from core.models.classifier import efficientnet_lite0, from_pretrained

    ds = read_waterbirds(paths.DEMO_DATA)
    splits = {s: ds.split(s) for s in ("train", "val", "test")}
    images = {s: [d.load_image(r) for r in d.records] for s, d in splits.items()}
    configs = {n: c for n, c in _finetune_configs().items() if force or not (CLASSIFIER_DIR / n / "config.json").exists()}
    if not configs:
        print(f"classifiers: exist ({CLASSIFIER_DIR})")
        return
    # Both classifiers start from the same ImageNet weights: their frozen trunk is computed once.
    start = next(iter(configs.values())).train_from_block
    base = efficientnet_lite0(num_classes=2, class_names=ds.class_names)
    views = trunk_views(base, images["train"], start, flips=True)
    val_trunk = trunk_features(base, images["val"], start, desc="cache val")
    for name, cfg in configs.items():
        out = CLASSIFIER_DIR / name
        t0 = time.time()
        torch.manual_seed(cfg.seed)  # the new 2-class head's initialisation
        clf = efficientnet_lite0(num_classes=2, class_names=ds.class_names, name=f"demo-{name}")
        tr, va = splits["train"].records, splits["val"].records
        hist = finetune(clf, images["train"], [r.label for r in tr], [r.group for r in tr], cfg,
                        None, [r.label for r in va], [r.group for r in va], train_views=views, val_trunk=val_trunk)
        clf.save_pretrained(out, extra={"training": {**hist, "seconds": round(time.time() - t0, 1)}})
        # Metrics of the checkpoint as shipped (float16 weights), on the test split.
        shipped = from_pretrained(out)
        te = splits["test"].records
        x = trunk_features(shipped, images["test"], cfg.train_from_block)
        acc = group_accuracies(shipped, x, torch.tensor([r.label for r in te]), torch.tensor([r.group for r in te]),
                               cfg.train_from_block)
        cfg_json = json.loads((out / "config.json").read_text())
        cfg_json["metrics"] = {"test": acc}
        (out / "config.json").write_text(json.dumps(cfg_json, indent=2))
        print(f"classifier {name}: test average {acc['average']:.3f}, worst group {acc['worst_group']:.3f} "
              f"({acc['per_group']}) in {time.time() - t0:.0f} s")


def build_translators(force: bool = False, steps: int = TRANSLATOR_STEPS, names=NAMES) -> None:
    import pandas as pd

    from core.data import load_rgb, read_caption_csv
    from core.models import load_language_model
    from core.models.classifier import from_pretrained
    from core.train import TrainConfig, compute_features, train_translator
    from core.translator import Translator

    caps = read_caption_csv(paths.DEMO_DATA / "captions.csv")
    train = caps[caps["split"] == "train"].reset_index(drop=True)
    val = caps[caps["split"] == "val"].drop_duplicates("path").reset_index(drop=True)
    lm = load_language_model()
    for name in names:
        out = TRANSLATOR_DIR / name
        if (out / "config.json").exists() and not force:
            print(f"translator {name}: exists ({out})")
            continue
        clf = from_pretrained(CLASSIFIER_DIR / name)
        uniq = sorted(set(train["path"]) | set(val["path"]))
        row = {p: i for i, p in enumerate(uniq)}
        feats = compute_features(clf, uniq, load_rgb)
        cfg = TrainConfig(epochs=1, max_steps=steps, lr=8e-4, warmup_steps=16, save_every=20)
        work = paths.ASSETS / "train" / f"translator-{name}"
        if force and work.exists():
            shutil.rmtree(work)  # --force means from scratch, not a resume of the previous training
        tr = train_translator(clf, lm, feats[[row[p] for p in train["path"]]], list(train["caption"]), work,
                              feats[[row[p] for p in val["path"]]], list(val["caption"]), cfg,
                              data_info={"captions": "demo world captions.csv", "train_pairs": len(train),
                                         "val_pairs": len(val)})
        tr.save_pretrained(out, dtype=torch.float16)
        Translator.from_pretrained(out, clf, lm)  # the shipped float16 file loads against its models
        print(f"translator {name}: val loss {tr.config.training.get('best_val_loss')}, "
              f"{tr.config.training.get('samples_per_s')} samples/s -> {out}")


def build_runs(force: bool = False, sentences: int = RUN_SENTENCES, names=NAMES, splits=("test", "val")) -> None:
    from core.data import read_waterbirds
    from core.explain import ExplainConfig, explain_dataset
    from core.models import load_language_model
    from core.models.classifier import from_pretrained
    from core.translator import Translator

    ds = read_waterbirds(paths.DEMO_DATA)
    lm = load_language_model()
    # Test runs first: they are what the dashboard opens on; val runs feed inferred groups and mitigation.
    for split in splits:
        for name in names:
            clf = from_pretrained(CLASSIFIER_DIR / name)
            tr = Translator.from_pretrained(TRANSLATOR_DIR / name, clf, lm)
            out = paths.SHIPPED_RUNS / f"demo-{name}-{split}"
            if force and out.exists():
                shutil.rmtree(out)
            if (out / "manifest.json").exists() and json.loads((out / "manifest.json").read_text()).get("status") == "complete":
                print(f"run {out.name}: complete")
                continue
            cfg = ExplainConfig(sentences_per_image=sentences, seed=0, device="cpu")
            explain_dataset(ds, clf, tr, lm, out, cfg, split=split, name=f"demo {name} ({split})")


def main(argv: list[str] | None = None) -> int:
    """`python -m core demo STEP` (run through the one CLI tree; its options are in core.commands.demo)."""
    from core.cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


def build(step: str, force: bool = False, only: str | None = None, splits: tuple[str, ...] = ("test", "val")) -> int:
    """Rebuild one step (classifiers, translators, runs) or all of them."""
    names = (only,) if only else NAMES
    if step in ("classifiers", "all"):
        build_classifiers(force)
    if step in ("translators", "all"):
        build_translators(force, names=names)
    if step in ("runs", "all"):
        build_runs(force, names=names, splits=splits)
    return 0


if __name__ == "__main__":
    sys.exit(main())
