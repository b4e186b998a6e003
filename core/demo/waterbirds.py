"""Builds the demo's shipped artefacts from the demo world: two classifiers, their translators, their runs.

    texplain maintain classifiers   # ERM and group-balanced EfficientNet-Lite0 (minutes on 2 cores)
    texplain maintain translators   # one translator per classifier (the long step: ~15 min each on 2 cores)
    texplain maintain runs          # explain the val and test splits with each (~10 min each)
    texplain maintain fixed         # ERM fixed from its explanations (DFR on inferred groups) + its test run

Each step writes into checkpoints/ and is skipped when its output exists (pass --force to redo).
"""
from __future__ import annotations

import json
import shutil
import time

import torch

from core import paths

CLASSIFIER_DIR = paths.CHECKPOINTS / "classifiers"
TRANSLATOR_DIR = paths.CHECKPOINTS / "translators"
NAMES = ("erm", "robust")
FIXED = "erm-fixed"  # ERM with its last layer refit on the groups its explanations revealed
# The translator each classifier's runs use: the fixed classifier keeps ERM's feature extractor, so ERM's
# translator reads its features exactly (core.translator accepts a classifier by its feature identity).
TRANSLATOR_OF = {"erm": "erm", "robust": "robust", FIXED: "erm"}
# The translators' recipe since demo world v3 (8 captions per image, feature augmentation): many small steps,
# since a step's cost on a CPU is mostly the frozen LM's, and steps, not batch size, are what was short.
TRANSLATOR_STEPS = 2000  # 8,000 caption pairs at batch 4
TRANSLATOR_BATCH = 4
TRANSLATOR_LR = 5e-4
# Mapper and prefix length are chosen by the caption evaluation of short pilot trainings (`demo select`).
CANDIDATES = ({"mapper": "mlp", "prefix_length": 4}, {"mapper": "mlp", "prefix_length": 10},
              {"mapper": "transformer", "prefix_length": 4})
PILOT_STEPS = 100
PILOT_SENTENCES = 8
SELECTION = TRANSLATOR_DIR / "selection.json"
RUN_SENTENCES = 16


def _finetune_configs():
    from core.engine.config import FinetuneConfig

    return {"erm": FinetuneConfig(sampling="erm", select="last"),
            "robust": FinetuneConfig(sampling="group_balanced", select="worst_group")}


def build_classifiers(force: bool = False) -> None:
    from core.data import read_waterbirds
    from core.engine.finetune import finetune, test_metrics, trunk_features, trunk_views
    from core.models.classifier import efficientnet_lite0

    ds = read_waterbirds(paths.DEMO_DATA)
    splits = {s: ds.split(s) for s in ("train", "val", "test")}
    images = {s: [d.load_image(r) for r in d.records] for s, d in splits.items()}
    configs = {n: c for n, c in _finetune_configs().items()
               if force or not (CLASSIFIER_DIR / n / "config.json").exists()}
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
        acc = test_metrics(out, images["test"], splits["test"].records, cfg.train_from_block)
        print(f"classifier {name}: test average {acc['average']:.3f}, worst group {acc['worst_group']:.3f} "
              f"({acc['per_group']}) in {time.time() - t0:.0f} s")


def _translator_data(clf):
    """The demo world's captions as training data (core.train.caption_pairs: four views per training image)."""
    from core.data import load_rgb, read_caption_csv
    from core.engine.train import caption_pairs

    return caption_pairs(clf, read_caption_csv(paths.DEMO_DATA / "captions.csv"), load_rgb, name="demo world")


def _train_config(choice: dict, steps: int):
    from core.engine.config import TrainConfig

    return TrainConfig(epochs=1, max_steps=steps, batch_size=TRANSLATOR_BATCH, lr=TRANSLATOR_LR,
                       warmup_steps=min(100, steps // 10), save_every=50, **choice)


def read_selection() -> dict:
    """The mapper and prefix length `demo select` chose (MLP, 10 tokens before there was a selection)."""
    try:
        return json.loads(SELECTION.read_text())["chosen"]
    except (OSError, ValueError, KeyError):
        return {"mapper": "mlp", "prefix_length": 10}


def select_translator(force: bool = False, steps: int = PILOT_STEPS, sentences: int = PILOT_SENTENCES) -> dict:
    """Pilot-train each candidate (mapper, prefix length) for ERM, explain the val split with it and pick
    by the caption evaluation: the best scene accuracy, ties (within 2 points) to the lower validation loss."""
    from core.data import read_waterbirds
    from core.engine.config import ExplainConfig
    from core.engine.pipeline import explain_dataset
    from core.engine.train import train_translator
    from core.evaluation.captions import evaluate_run
    from core.models import load_language_model
    from core.models.classifier import from_pretrained

    if SELECTION.exists() and not force:
        print(f"selection: exists ({SELECTION}): {read_selection()}")
        return read_selection()
    lm = load_language_model()
    clf = from_pretrained(CLASSIFIER_DIR / "erm")
    data = _translator_data(clf)
    ds = read_waterbirds(paths.DEMO_DATA)
    results = []
    for choice in CANDIDATES:
        tag = f"{choice['mapper']}-{choice['prefix_length']}"
        work = paths.ASSETS / "train" / "selection" / tag
        if force and work.exists():
            shutil.rmtree(work)
        t0 = time.time()
        tr = train_translator(clf, lm, data[0], data[1], work / "train", data[2], data[3], _train_config(choice, steps))
        train_s = time.time() - t0
        run = explain_dataset(ds, clf, tr, lm, work / "run", ExplainConfig(sentences_per_image=sentences, seed=0,
                              device="cpu"), split="val", name=f"pilot {tag}", show_progress=False)
        ev = evaluate_run(run, lm).to_dict()
        results.append({**choice, "val_loss": tr.config.training.get("best_val_loss"),
                        "scene_accuracy": ev["scene_accuracy"], "object_accuracy": ev["object_accuracy"],
                        "fluency_nll": ev["fluency_nll"], "reference_nll": ev["reference_nll"],
                        "train_seconds": round(train_s, 1)})
        print(f"pilot {tag}: {results[-1]}", flush=True)
    best_scene = max(r["scene_accuracy"] for r in results)
    chosen = min((r for r in results if r["scene_accuracy"] >= best_scene - 0.02), key=lambda r: r["val_loss"])
    out = {"chosen": {"mapper": chosen["mapper"], "prefix_length": chosen["prefix_length"]},
           "rule": "best val-split scene accuracy; within 2 points of it, the lower validation loss",
           "pilots": {"classifier": "erm", "steps": steps, "batch_size": TRANSLATOR_BATCH, "lr": TRANSLATOR_LR,
                      "sentences_per_image": sentences, "split": "val"},
           "results": results}
    SELECTION.parent.mkdir(parents=True, exist_ok=True)
    SELECTION.write_text(json.dumps(out, indent=1) + "\n")
    print(f"selection: {out['chosen']} -> {SELECTION}")
    return out["chosen"]


def build_translators(force: bool = False, steps: int = TRANSLATOR_STEPS, names=NAMES) -> None:
    from core.engine.train import train_translator
    from core.errors import TrainStateError
    from core.models import load_language_model
    from core.models.classifier import from_pretrained
    from core.models.translator import Translator

    lm = load_language_model()
    choice = read_selection()
    for name in names:
        out = TRANSLATOR_DIR / name
        if (out / "config.json").exists() and not force:
            print(f"translator {name}: exists ({out})")
            continue
        clf = from_pretrained(CLASSIFIER_DIR / name)
        train_z, train_caps, val_z, val_caps = _translator_data(clf)
        work = paths.ASSETS / "train" / f"translator-{name}"
        info = {"captions": "demo world v3 captions.csv (8 per image)", "train_pairs": len(train_caps),
                "val_pairs": len(val_caps), "feature_views": "identity, mirror, 2 random-resized crops",
                "selection": str(SELECTION.relative_to(paths.CHECKPOINTS))}
        try:
            # A saved state of this very training (same models, data and settings) resumes: an interrupted
            # rebuild continues, with the same result as an uninterrupted one.
            tr = train_translator(clf, lm, train_z, train_caps, work, val_z, val_caps, _train_config(choice, steps),
                                  data_info=info)
        except TrainStateError as exc:  # the state of another training: start this one from scratch
            print(f"translator {name}: {exc}; starting over")
            shutil.rmtree(work)
            tr = train_translator(clf, lm, train_z, train_caps, work, val_z, val_caps, _train_config(choice, steps),
                                  data_info=info)
        tr.save_pretrained(out, dtype=torch.float16)
        Translator.from_pretrained(out, clf, lm)  # the shipped float16 file loads against its models
        print(f"translator {name}: val loss {tr.config.training.get('best_val_loss')}, "
              f"{tr.config.training.get('samples_per_s')} samples/s -> {out}")


def build_runs(force: bool = False, sentences: int = RUN_SENTENCES, names=NAMES, splits=("test", "val")) -> None:
    from core.data import read_waterbirds
    from core.engine.config import ExplainConfig
    from core.engine.pipeline import explain_dataset
    from core.models import load_language_model
    from core.models.classifier import from_pretrained
    from core.models.translator import Translator

    ds = read_waterbirds(paths.DEMO_DATA)
    lm = load_language_model()
    # Test runs first: they are what the dashboard opens on; val runs feed inferred groups and mitigation.
    for split in splits:
        for name in names:
            clf = from_pretrained(CLASSIFIER_DIR / name)
            tr = Translator.from_pretrained(TRANSLATOR_DIR / TRANSLATOR_OF[name], clf, lm)
            out = paths.SHIPPED_RUNS / f"demo-{name}-{split}"
            if force and out.exists():
                shutil.rmtree(out)
            if ((out / "manifest.json").exists()
                    and json.loads((out / "manifest.json").read_text()).get("status") == "complete"):
                print(f"run {out.name}: complete")
                continue
            cfg = ExplainConfig(sentences_per_image=sentences, seed=0, device="cpu")
            explain_dataset(ds, clf, tr, lm, out, cfg, split=split, name=f"demo {name} ({split})")


def build_fixed(force: bool = False) -> None:
    """Close the loop on the demo: fix ERM with what its explanations flagged, ship it, explain the test split.

    DFR refits ERM's last layer on the val run's images, balanced over the groups inferred from the flagged
    words; true groups (a reference) and classes only (a control) are fitted too, for the record. The
    inferred-groups classifier ships as classifiers/erm-fixed; the results go into the ERM runs'
    mitigation.json (the shipped record the Worst-group page shows), and demo-erm-fixed-test is its run.
    """
    from core.mitigation.config import MitigationConfig
    from core.mitigation.pipeline import mitigate

    out = CLASSIFIER_DIR / FIXED
    if (out / "config.json").exists() and not force:
        print(f"classifier {FIXED}: exists ({out})")
    else:
        work = paths.ASSETS / "train" / "mitigation-erm"
        shutil.rmtree(work, ignore_errors=True)
        val, test = paths.SHIPPED_RUNS / "demo-erm-val", paths.SHIPPED_RUNS / "demo-erm-test"
        mitigate(val, test, MitigationConfig(method="dfr", groups="all", write_runs=False),
                 classifier=str(CLASSIFIER_DIR / "erm"), out=work, into_shipped=True)
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(work / "dfr-inferred", out)
        cfg = json.loads((out / "config.json").read_text())
        cfg["name"] = f"demo-{FIXED}"
        (out / "config.json").write_text(json.dumps(cfg, indent=2))
        shipped = str(out.relative_to(paths.ROOT))
        for run in (val, test):  # the records name the shipped folder; the other two refits are not shipped
            path = run / "mitigation.json"
            records = json.loads(path.read_text())
            for r in records:
                keep = r["method"] == "dfr" and r["groups"] == "inferred"
                r["checkpoint"] = shipped if keep else None
            path.write_text(json.dumps(records, indent=2))
        print(f"classifier {FIXED}: {out}")
    # Its test run: ERM's explanations (same features, translator and seed) with the fixed predictions.
    from core.engine.rescore import rescore_run
    from core.models.classifier import from_pretrained

    run = paths.SHIPPED_RUNS / f"demo-{FIXED}-test"
    if force and run.exists():
        shutil.rmtree(run)
    rescore_run(paths.SHIPPED_RUNS / "demo-erm-test", from_pretrained(out), run, name=f"demo {FIXED} (test)")
    print(f"run {run.name}: complete")


def build(step: str, force: bool = False, only: str | None = None, splits: tuple[str, ...] = ("test", "val")) -> int:
    """Rebuild one step (classifiers, translators, runs) or all of them."""
    names = (only,) if only else NAMES
    if step in ("classifiers", "all"):
        build_classifiers(force)
    if step == "select" or (step == "all" and not SELECTION.exists()):
        select_translator(force and step == "select")
    if step in ("translators", "all"):
        build_translators(force, names=names)
    if step in ("runs", "all"):
        build_runs(force, names=names, splits=splits)
    if step in ("fixed", "all") and only in (None, "erm"):
        build_fixed(force)
    return 0
