"""`python -m core mitigate RUN_VAL`: fix a classifier's reliance on what its explanations flagged, and measure it.

    python -m core mitigate checkpoints/runs/demo-erm-val --test-run checkpoints/runs/demo-erm-test --method all

Reads the validation run's explanations, flags spurious words (SpuriousTermScorer), infers groups from
them (GroupInferrer), then:

- dfr: refits the classifier's last layer on the validation images, balanced over the inferred groups
  (and/or the dataset's true groups, as a reference, or the classes alone, as a control);
- masktune: masks what the classifier attends to (GradCAM) on the training split and fine-tunes briefly.

Each new classifier is saved (float16) under OUT/<method>-<groups> (default: runs/classifiers/<classifier>),
evaluated on the test split with the TRUE groups, and the results are written to mitigation.json in the test
run (and the validation run). For a shipped demo run (under checkpoints/, tracked by git) they go to
runs/.shipped/<run>/ instead, and the dashboard reads them from there: using the demo never changes the repo.
Each refit classifier also gets a run on the test images, runs/<test run>-dfr-<groups>, made in seconds from
the test run's explanations (a refit last layer keeps the features: core.rescore), to compare side by side.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from core import paths

CLASSIFIER_DIR = paths.CHECKPOINTS / "classifiers"


def _say(msg: str) -> None:
    print(msg, flush=True)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(paths.ROOT))
    except ValueError:
        return str(path)


def classifier_candidates(manifest: dict) -> list[Path]:
    """Checkpoint folders that may hold the classifier a run was made with, most likely first.

    The manifest records the classifier's name and identity; a demo name "demo-erm" maps to
    checkpoints/classifiers/erm, and any folder under checkpoints/classifiers or the user's classifiers
    (runs/classifiers) whose config names it is a candidate too.
    """
    import json

    name = str((manifest.get("models") or {}).get("classifier") or "")
    found: list[Path] = []
    if name:
        direct = Path(name)
        if direct.is_dir():
            found.append(direct)
        for short in (name.removeprefix("demo-"), name):
            if (CLASSIFIER_DIR / short / "config.json").exists():
                found.append(CLASSIFIER_DIR / short)
        for root in (CLASSIFIER_DIR, paths.user_classifiers()):
            for cfg in sorted(root.glob("**/config.json")) if root.is_dir() else []:
                try:
                    if json.loads(cfg.read_text()).get("name") == name:
                        found.append(cfg.parent)
                except (OSError, ValueError):
                    continue
    return list(dict.fromkeys(p.resolve() for p in found))


def builtin_refusal(identity: str | None) -> str | None:
    """Why a run of `identity` cannot be mitigated because it is the unmodified built-in classifier, or None."""
    from core.models.classifier import builtin_for

    if not (builtin := builtin_for(identity)):
        return None
    return (f"this run's classifier is the unmodified built-in {builtin!r}"
            + (" read in the dataset's classes" if ">" in str(identity) else "") + ", which has no last layer of "
            "the dataset's classes to refit. Fine-tune one on the dataset first (`python -m core finetune "
            "--dataset FOLDER --out FOLDER`), explain its val and test splits with a translator for it, and "
            "mitigate that run")


def resolve_classifier(manifest: dict, explicit: str | None = None):
    """The run's classifier: (adapter, folder or spec, note). Checks its identity against the manifest."""
    from core.models.classifier import ClassifierLoadError, load_classifier

    want = (manifest.get("models") or {}).get("classifier_identity")
    if explicit:
        adapter = load_classifier(explicit)
        note = ""
        if want and adapter.identity != want:
            note = (f"the classifier given ({adapter.identity}) is not the one the run was explained with "
                    f"({want}); inferred groups describe the run's classifier")
        return adapter, explicit, note
    candidates = classifier_candidates(manifest)
    loaded = []
    for folder in candidates:
        try:
            adapter = load_classifier(folder)
        except ClassifierLoadError:
            continue
        if not want or adapter.identity == want:
            return adapter, str(folder), ""
        loaded.append((adapter, folder))
    if loaded:
        adapter, folder = loaded[0]
        return adapter, str(folder), (f"no checkpoint has the run's classifier identity {want}; using {_rel(folder)} "
                                      f"({adapter.identity}), found by name")
    name = (manifest.get("models") or {}).get("classifier")
    if reason := builtin_refusal(want):
        raise ValueError(reason)
    raise ValueError(f"cannot find the classifier {name!r} of this run under {_rel(CLASSIFIER_DIR)} or "
                     f"{_rel(paths.user_classifiers())}; pass --classifier FOLDER")


def _run_images(run) -> pd.DataFrame:
    """A run's images with a label, in a stable order, with resolved file paths."""
    df = run.images()
    if "error" in df:
        df = df[df["error"].isna() | (df["error"].astype(str).str.len() == 0)]
    df = df[df["label"].notna()].sort_values("image_id").reset_index(drop=True)
    df["file"] = [str(run.image_path(p)) for p in df["path"]]
    return df


def _dataset(manifest: dict, override: str | None):
    from core.data import open_dataset

    root = override or (manifest.get("dataset") or {}).get("root")
    if not root:
        raise ValueError("the run's manifest names no dataset root; pass --dataset FOLDER")
    root = Path(root)
    return open_dataset(root if root.is_absolute() else paths.ROOT / root)


def _split_frame(dataset, split: str) -> pd.DataFrame:
    ds = dataset.split(split)
    return pd.DataFrame({"image_id": [r.image_id for r in ds.records], "file": [str(r.path) for r in ds.records],
                         "label": [r.label for r in ds.records],
                         "group": pd.array([r.group for r in ds.records], dtype="Int64")})


def _load(files, desc: str) -> list:
    from tqdm.auto import tqdm

    from core.data import load_rgb

    return [load_rgb(f) for f in tqdm(list(files), desc=desc, unit="img", leave=False)]


def _groups_line(names: dict, counts: pd.Series) -> str:
    return ", ".join(f"{names.get(int(g), g)}: {int(n)}" for g, n in counts.sort_index().items())


def _rescored_run(test_run, after, base, key: str) -> Path | None:
    """The refit classifier's run on the test images, from the test run's explanations (core.rescore)."""
    from core.rescore import rescore_run
    from core.store import RunStoreError

    out = paths.user_runs() / f"{test_run.path.name}-{key}"
    source = base if base.identity == (test_run.manifest.get("models") or {}).get("classifier_identity") else None
    _say(f"writing {_rel(out)}: the test run's explanations with the predictions of {after.name}")
    try:
        rescore_run(test_run, after, out, name=f"{test_run.name} ({key})", source_classifier=source,
                    show_progress=False)
    except (ValueError, RunStoreError) as exc:  # the fix itself stands; only its run is missing
        _say(f"note: no run written for {after.name}: {exc}")
        return None
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m core mitigate", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    return add_arguments(ap)


def add_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The verb's options (core.commands.mitigate adds them to the one CLI tree)."""
    ap.add_argument("run_val", metavar="RUN_VAL", help="run folder of the validation split (explanations)")
    ap.add_argument("--test-run", default=None, help="run folder of the test split (mitigation.json goes there); "
                                                     "without it, the dataset's test split is read directly")
    ap.add_argument("--method", choices=["dfr", "masktune", "all"], default="dfr")
    ap.add_argument("--groups", choices=["inferred", "true", "class", "both", "all"], default="inferred",
                    help="groups DFR balances over: inferred from the explanations, the dataset's true groups "
                         "(a reference), class (classes only: a control showing what the groups add); both = "
                         "inferred + true, all = the three (MaskTune uses none)")
    ap.add_argument("--classifier", default=None, help="classifier checkpoint folder (default: the run's, found "
                                                       "from its manifest)")
    ap.add_argument("--dataset", default=None, help="dataset folder (default: the run's)")
    ap.add_argument("--out", default=None, help="folder for the new classifiers, each in OUT/<method>-<groups> "
                                                "(default: runs/classifiers/<classifier name>)")
    ap.add_argument("--no-save", action="store_true", help="evaluate only; save no checkpoint")
    ap.add_argument("--no-runs", action="store_true",
                    help="do not write a run of each refit classifier on the test run's images (by default one is "
                         "written to runs/<test run>-dfr-<groups>, reusing the test run's explanations: a refit last "
                         "layer keeps the features, so the sentences are the same; see core.rescore)")
    ap.add_argument("--penalty", choices=["l1", "l2"], default="l1", help="DFR: penalty of the last layer")
    ap.add_argument("--balance", choices=["auto", "subsample", "weights"], default="auto",
                    help="DFR: group-balanced subsamples (as in DFR), group weights, or auto: subsamples unless the "
                         "smallest group has fewer than 20 images")
    ap.add_argument("--masktune-epochs", type=int, default=1)
    ap.add_argument("--masktune-lr", type=float, default=1e-3,
                    help="MaskTune keeps the ERM fine-tuning settings (core.finetune: lr 1e-3) for one epoch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--into-shipped", action="store_true", help=argparse.SUPPRESS)  # demo rebuilds only: write
    # mitigation.json into shipped run folders (checkpoints/) instead of the user's overlay
    return ap


def mitigate_main(argv: list[str] | None = None) -> int:
    """`python -m core mitigate ...` (run through the one CLI tree: same options, same error handling)."""
    from core.cli import main

    return main(["mitigate", *(sys.argv[1:] if argv is None else argv)])


def _mitigate(args) -> int:
    import torch

    from core.analysis import GroupInferrer, SpuriousTermScorer, group_agreement
    from core.analysis.groups import describe_group_words
    from core.mitigate import (LastLayerReweighting, MaskTune, evaluate_mitigation, features_and_logits,
                               results_table, write_mitigation_json)
    from core.models.classifier import from_pretrained
    from core.store import Run

    t0 = time.time()
    val_run = Run.open(args.run_val)
    manifest = val_run.manifest
    if (manifest.get("dataset") or {}).get("split") not in (None, "val"):
        _say(f"note: {val_run.path} explains the {manifest['dataset']['split']!r} split; DFR is meant to be fitted on "
             "held-out images that are not the test split")
    test_run = Run.open(args.test_run) if args.test_run else None
    for run in filter(None, (val_run, test_run)):  # a damaged or partial run still fits, on what it holds
        problem = run.health().describe()
        if problem:
            _say(f"warning: {run.path} is {problem}")
    base, source, note = resolve_classifier(manifest, args.classifier)
    base.eval()
    _say(f"classifier {base.name} from {_rel(Path(source)) if Path(source).exists() else source} ({base.identity})")
    if note:
        _say(f"warning: {note}")
    group_names = {int(k): v for k, v in ((manifest.get("dataset") or {}).get("group_names") or {}).items()}

    # Validation images, their true groups and the groups inferred from the explanations.
    val = _run_images(val_run)
    true_val = val["group"].astype("Int64")
    methods = ["dfr", "masktune"] if args.method == "all" else [args.method]
    group_sources = {"both": ["inferred", "true"], "all": ["inferred", "true", "class"]}.get(args.groups, [args.groups])
    if "dfr" in methods and "true" in group_sources and true_val.isna().all():
        _say("note: the validation run has no true groups; DFR with true groups is skipped")
        group_sources = [g for g in group_sources if g != "true"]
    scorer = SpuriousTermScorer().fit(val_run)
    inferrer = GroupInferrer().fit(val_run, scorer)
    inferred = inferrer.predict().reindex(val["image_id"]).to_numpy()
    words = {c: ws for c, ws in inferrer.spurious_words_.items()}
    _say("words that split the classes: " + (describe_group_words(words, inferrer.word_views_) or "none"))
    agreement = None
    if not true_val.isna().all():
        agreement = group_agreement(pd.Series(true_val.to_numpy(), index=val["image_id"]),
                                    pd.Series(inferred, index=val["image_id"]))
        _say(f"inferred vs true groups on {agreement.n} val images: agreement {agreement.accuracy:.3f}, "
             f"adjusted Rand {agreement.adjusted_rand:.3f}")
    _say("inferred groups: " + _groups_line(inferrer.group_names_, pd.Series(inferred).dropna().astype(int)
                                            .value_counts()))

    # Test images (true groups: always the yardstick).
    dataset = None
    if test_run is not None:
        test = _run_images(test_run)
        if (test_run.manifest.get("models") or {}).get("classifier_identity") not in (None, base.identity):
            _say(f"warning: {test_run.path} was explained with another classifier than {base.identity}")
    else:
        dataset = _dataset(manifest, args.dataset)
        test = _split_frame(dataset, "test")
    if test["group"].isna().all():
        raise ValueError("the test images have no true groups; the yardstick needs them (a Waterbirds-style dataset)")
    val_images = _load(val["file"], "load val images")
    test_images = _load(test["file"], "load test images")
    z_val, logits_val = features_and_logits(base, val_images, desc="val features")
    z_test, logits_test = features_and_logits(base, test_images, desc="test features")
    same = float((logits_val.argmax(1) == val["prediction"].to_numpy()).mean()) if "prediction" in val else 1.0
    if same < 1.0:
        _say(f"warning: the classifier agrees with the run's recorded predictions on {same:.1%} of val images")

    out_root = Path(args.out) if args.out else paths.user_classifiers() / base.name
    common = dict(labels=test["label"].to_numpy(), groups=test["group"], group_names=group_names,
                  show_progress=False)
    results, new_runs = [], []
    ident = {"source_classifier": base.identity, "run_val": _rel(val_run.path),
             "run_test": _rel(test_run.path) if test_run else None}

    def save(adapter, key: str, extra: dict):
        if args.no_save:
            return adapter, None
        folder = out_root / key
        adapter.name = f"{base.name}-{key}"
        adapter.save_pretrained(folder, extra={"mitigation": {**extra, **ident}})
        return from_pretrained(folder).eval(), _rel(folder)  # evaluate what was shipped (float16 weights)

    if "dfr" in methods:
        for src in group_sources:
            groups = {"inferred": inferred, "true": true_val.to_numpy(), "class": val["label"].to_numpy()}[src]
            _say(f"DFR with {src} groups: fitting the last layer on {len(val)} val images")
            dfr = LastLayerReweighting(penalty=args.penalty, balance=args.balance, seed=args.seed)
            dfr.fit(base, features=z_val, labels=val["label"].astype(int).to_numpy(), groups=groups)
            details = {**dfr.summary(), "val_images": len(val)}
            if src == "inferred":
                details["spurious_words"] = words
                details["word_views"] = inferrer.word_views_
                details["inferred_group_names"] = {str(k): v for k, v in inferrer.group_names_.items()}
                if agreement is not None:
                    details["group_agreement"] = agreement.to_dict()
            after, ckpt = save(dfr.adapter_, f"dfr-{src}", {"method": "dfr", "groups": src, **details})
            if ckpt and test_run is not None and not args.no_runs:
                new_runs.append(_rescored_run(test_run, after, base, f"dfr-{src}"))
            with torch.inference_mode():
                logits_after = after.head(torch.from_numpy(z_test)).float().numpy()
            if src == "inferred":
                listed = "; ".join(f"{c}: {'/'.join(ws[:3])}" for c, ws in words.items()) or "no flagged words"
                agree = f", {agreement.accuracy:.0%} agreement with the true groups" if agreement else ""
                text = (f"last layer refit on {len(val)} val images, balanced over groups inferred from "
                        f"({listed}){agree}")
            elif src == "true":
                text = f"last layer refit on {len(val)} val images, balanced over the true groups (reference)"
            else:
                text = (f"last layer refit on {len(val)} val images, balanced over classes only (control: what "
                        "refitting on held-out images gives without groups)")
            results.append(evaluate_mitigation(
                logits_test, logits_after, method="dfr", group_source=src, checkpoint=ckpt,
                notes=f"{text}; C={dfr.C_:g}, {args.penalty}, {dfr.balance_}", details={**details, **ident}, **common))
            results[-1].classifier_before, results[-1].classifier_after = base.identity, after.identity

    if "masktune" in methods:
        dataset = dataset or _dataset(manifest, args.dataset)
        train = _split_frame(dataset, "train")
        _say(f"MaskTune: GradCAM masks on {len(train)} training images, then {args.masktune_epochs} epoch(s) of "
             "fine-tuning on the masked images")
        train_images = _load(train["file"], "load train images")
        mt = MaskTune(epochs=args.masktune_epochs, lr=args.masktune_lr, seed=args.seed)
        mt.fit(base, train_images, train["label"].to_numpy())
        del train_images
        details = {**mt.summary(), **ident}
        after, ckpt = save(mt.adapter_, "masktune", {"method": "masktune", "groups": "none", **mt.summary()})
        _, logits_after = features_and_logits(after, test_images, desc="test (MaskTune)")
        results.append(evaluate_mitigation(
            logits_test, logits_after, method="masktune", group_source="none", checkpoint=ckpt,
            notes=(f"GradCAM-masked {len(train)} training images (mean {mt.masked_share_.mean():.1%} of each input "
                   f"masked), fine-tuned blocks {mt.train_from_block}+ for {mt.epochs} epoch(s) at lr {mt.lr:g}; "
                   "no groups used"), details=details, **common))
        results[-1].classifier_before, results[-1].classifier_after = base.identity, after.identity

    written = [write_mitigation_json(r.path, results, into_shipped=args.into_shipped)
               for r in (test_run, val_run) if r is not None]
    table = results_table(results)
    for col in ("worst_group_before", "worst_group_after", "average_before", "average_after"):
        table[col] = table[col].map(lambda v: f"{v:.3f}")
    _say("")
    _say(f"test split, true groups ({results[0].n_images if results else 0} images):")
    _say(table.to_string(index=False))
    for r in results:
        per = r.table()
        ci = r.intervals.get("worst_group_change")
        _say(f"\n{r.method} ({r.groups} groups): worst group {r.worst_group_change:+.3f}"
             + (f" (95% interval {ci[0]:+.3f} to {ci[1]:+.3f}, paired bootstrap)" if ci else "") + ", per group:")
        _say(per.assign(before=per["before"].map("{:.3f}".format), after=per["after"].map("{:.3f}".format),
                        change=per["change"].map("{:+.3f}".format)).to_string(index=False))
    _say("\nwrote " + ", ".join(_rel(p) for p in [*written, *new_runs] if p) + f" in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(mitigate_main())
