"""Fix a classifier's reliance on what its explanations flagged, and measure it: the detect-fix-compare loop.

    outcome = mitigate("checkpoints/runs/demo-erm-val", "checkpoints/runs/demo-erm-test", MitigationConfig("all"))
    texplain mitigate checkpoints/runs/demo-erm-val --test-run checkpoints/runs/demo-erm-test --method all

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

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from core import paths
from core.mitigation.config import MitigationConfig
from core.models.registry import relative_to_repo, resolve_run_classifier


def _say(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class MitigationOutcome:
    """What `mitigate` did: one MitigationResult per fix (core.mitigation.methods), the mitigation.json files
    written and the runs of the refit classifiers (core.engine.rescore)."""

    results: list
    written: list[Path]
    new_runs: list[Path]
    seconds: float


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


def _rescored_run(test_run, after, base, key: str, say) -> Path | None:
    """The refit classifier's run on the test images, from the test run's explanations (core.rescore)."""
    from core.engine.rescore import rescore_run
    from core.store import RunStoreError

    out = paths.user_runs() / f"{test_run.path.name}-{key}"
    source = base if base.identity == (test_run.manifest.get("models") or {}).get("classifier_identity") else None
    say(f"writing {relative_to_repo(out)}: the test run's explanations with the predictions of {after.name}")
    try:
        rescore_run(test_run, after, out, name=f"{test_run.name} ({key})", source_classifier=source,
                    show_progress=False)
    except (ValueError, RunStoreError) as exc:  # the fix itself stands; only its run is missing
        say(f"note: no run written for {after.name}: {exc}")
        return None
    return out


SMALL_VAL = 200  # validation images below which a refit last layer is read with suspicion (Waterbirds' has 1,199)
FEW_PER_GROUP = 20  # validation images of a group below which DFR weights instead of subsampling (balance="auto")
UNLIKE_TEST = 0.25  # total variation distance between the val and test group shares that calls them unlike


def why_worse(result, val_groups: pd.Series | None = None, n_val: int | None = None,
              agreement: float | None = None) -> str:
    """The warning a fix gets when it lowers worst-group accuracy on the test split, with the reasons it may:
    a small validation split, groups the validation split lacks or holds in other shares than the test split,
    inferred groups that disagree with the true ones. "" when the fix does not make the worst group worse.

    `val_groups`: the validation images' true groups (NA where unknown); `n_val`: how many images the fix was
    fitted on; `agreement`: the inferred groups' agreement with the true ones on the validation images."""
    before, after = result.worst_group_before, result.worst_group_after
    if after >= before:
        return ""
    ci = (result.intervals or {}).get("worst_group_change")
    spread = f" (95% interval {100 * ci[0]:+.0f} to {100 * ci[1]:+.0f} points)" if ci else ""
    head = (f"{result.method} ({result.groups} groups) lowers worst-group accuracy on the test split from "
            f"{before:.1%} to {after:.1%}{spread}, worst now {result.worst_group_name_after or '?'}")
    reasons = []
    if result.method == "dfr":
        if n_val is not None and n_val < SMALL_VAL:
            reasons.append(f"the validation split it was refit on is small ({n_val} images)")
        known = val_groups.dropna().astype(int) if val_groups is not None else pd.Series(dtype=int)
        if len(known):
            val_counts = known.value_counts()
            test_sizes = {int(k): int(v) for k, v in (result.group_sizes or {}).items()}
            names = {int(k): v for k, v in (result.group_names or {}).items()}
            lacking = [g for g in sorted(test_sizes) if val_counts.get(g, 0) < FEW_PER_GROUP]
            if lacking:
                reasons.append("the validation split has few or no images of "
                               + ", ".join(f"{names.get(g, g)} ({int(val_counts.get(g, 0))} val vs {test_sizes[g]} "
                                           "test)" for g in lacking[:4]))
            total_test = sum(test_sizes.values()) or 1
            tv = 0.5 * sum(abs(val_counts.get(g, 0) / len(known) - test_sizes.get(g, 0) / total_test)
                           for g in set(test_sizes) | set(val_counts.index.astype(int)))
            if tv > UNLIKE_TEST:
                reasons.append(f"its groups are unlike the test split's (their shares differ by {tv:.0%}, total "
                               "variation)")
        if result.groups == "inferred" and agreement is not None and agreement < 0.75:
            reasons.append(f"the inferred groups agree with the true ones on only {agreement:.0%} of the validation "
                           "images")
        if not reasons:
            reasons.append("the refit may fit the validation images too closely")
        advice = "Keep the original classifier unless a larger validation split, drawn like the test split, confirms it"
    else:
        reasons.append("fine-tuning on masked images may have hidden what the classes need, not only what they "
                       "should not use")
        advice = "Keep the original classifier"
    return f"{head}. It may, because {'; '.join(reasons)}. {advice}."


def mitigate(run_val: str | Path, test_run: str | Path | None = None, cfg: MitigationConfig | None = None,
             classifier: str | None = None, dataset: str | Path | None = None, out: str | Path | None = None,
             into_shipped: bool = False, say: Callable[[str], None] = _say) -> MitigationOutcome:
    """Flag words on the validation run, infer groups from them, fix the classifier (cfg.method) and score every
    fix on the test images with their TRUE groups; see the module docstring. `classifier`: the run's own by
    default (found from its manifest); `dataset`: the run's; `out`: where the new classifiers go;
    `into_shipped` (demo rebuilds only) writes mitigation.json into shipped run folders."""
    import torch

    from core.analysis import GroupInferrer, SpuriousTermScorer, group_agreement
    from core.analysis.groups import describe_group_words
    from core.mitigation.methods import (LastLayerReweighting, MaskTune, evaluate_mitigation, features_and_logits,
                                         write_mitigation_json)
    from core.models.classifier import from_pretrained
    from core.store import Run

    cfg = cfg or MitigationConfig()

    t0 = time.time()
    val_run = Run.open(run_val)
    manifest = val_run.manifest
    if (manifest.get("dataset") or {}).get("split") not in (None, "val"):
        say(f"note: {val_run.path} explains the {manifest['dataset']['split']!r} split; DFR is meant to be fitted on "
             "held-out images that are not the test split")
    test_run = Run.open(test_run) if test_run is not None else None
    for run in filter(None, (val_run, test_run)):  # a damaged or partial run still fits, on what it holds
        problem = run.health().describe()
        if problem:
            say(f"warning: {run.path} is {problem}")
    base, source, note = resolve_run_classifier(manifest, classifier)
    base.eval()
    say(f"classifier {base.name} from "
        f"{relative_to_repo(Path(source)) if Path(source).exists() else source} ({base.identity})")
    if note:
        say(f"warning: {note}")
    group_names = {int(k): v for k, v in ((manifest.get("dataset") or {}).get("group_names") or {}).items()}

    # Validation images, their true groups and the groups inferred from the explanations.
    val = _run_images(val_run)
    true_val = val["group"].astype("Int64")
    methods = ["dfr", "masktune"] if cfg.method == "all" else [cfg.method]
    group_sources = {"both": ["inferred", "true"], "all": ["inferred", "true", "class"]}.get(cfg.groups, [cfg.groups])
    if "dfr" in methods and "true" in group_sources and true_val.isna().all():
        say("note: the validation run has no true groups; DFR with true groups is skipped")
        group_sources = [g for g in group_sources if g != "true"]
    scorer = SpuriousTermScorer().fit(val_run)
    inferrer = GroupInferrer().fit(val_run, scorer)
    inferred = inferrer.predict().reindex(val["image_id"]).to_numpy()
    words = {c: ws for c, ws in inferrer.spurious_words_.items()}
    say("words that split the classes: " + (describe_group_words(words, inferrer.word_views_) or "none"))
    agreement = None
    if not true_val.isna().all():
        agreement = group_agreement(pd.Series(true_val.to_numpy(), index=val["image_id"]),
                                    pd.Series(inferred, index=val["image_id"]))
        say(f"inferred vs true groups on {agreement.n} val images: agreement {agreement.accuracy:.3f}, "
             f"adjusted Rand {agreement.adjusted_rand:.3f}")
    say("inferred groups: " + _groups_line(inferrer.group_names_, pd.Series(inferred).dropna().astype(int)
                                            .value_counts()))

    # Test images (true groups: always the yardstick).
    dataset = None
    if test_run is not None:
        test = _run_images(test_run)
        if (test_run.manifest.get("models") or {}).get("classifier_identity") not in (None, base.identity):
            say(f"warning: {test_run.path} was explained with another classifier than {base.identity}")
    else:
        dataset = _dataset(manifest, dataset)
        test = _split_frame(dataset, "test")
    if test["group"].isna().all():
        raise ValueError("the test images have no true groups; the yardstick needs them (a Waterbirds-style dataset)")
    val_images = _load(val["file"], "load val images")
    test_images = _load(test["file"], "load test images")
    z_val, logits_val = features_and_logits(base, val_images, desc="val features")
    z_test, logits_test = features_and_logits(base, test_images, desc="test features")
    same = float((logits_val.argmax(1) == val["prediction"].to_numpy()).mean()) if "prediction" in val else 1.0
    if same < 1.0:
        say(f"warning: the classifier agrees with the run's recorded predictions on {same:.1%} of val images")

    out_root = Path(out) if out else paths.user_classifiers() / base.name
    common = dict(labels=test["label"].to_numpy(), groups=test["group"], group_names=group_names,
                  show_progress=False)
    results, new_runs = [], []
    ident = {"source_classifier": base.identity, "run_val": relative_to_repo(val_run.path),
             "run_test": relative_to_repo(test_run.path) if test_run else None}

    def save(adapter, key: str, extra: dict):
        if not cfg.save:
            return adapter, None
        folder = out_root / key
        adapter.name = f"{base.name}-{key}"
        adapter.save_pretrained(folder, extra={"mitigation": {**extra, **ident}})
        return from_pretrained(folder).eval(), relative_to_repo(folder)  # evaluate what was shipped (float16 weights)

    if "dfr" in methods:
        for src in group_sources:
            groups = {"inferred": inferred, "true": true_val.to_numpy(), "class": val["label"].to_numpy()}[src]
            say(f"DFR with {src} groups: fitting the last layer on {len(val)} val images")
            dfr = LastLayerReweighting(penalty=cfg.penalty, balance=cfg.balance, seed=cfg.seed)
            dfr.fit(base, features=z_val, labels=val["label"].astype(int).to_numpy(), groups=groups)
            details = {**dfr.summary(), "val_images": len(val)}
            if src == "inferred":
                details["spurious_words"] = words
                details["word_views"] = inferrer.word_views_
                details["inferred_group_names"] = {str(k): v for k, v in inferrer.group_names_.items()}
                if agreement is not None:
                    details["group_agreement"] = agreement.to_dict()
            after, ckpt = save(dfr.adapter_, f"dfr-{src}", {"method": "dfr", "groups": src, **details})
            if ckpt and test_run is not None and cfg.write_runs:
                new_runs.append(_rescored_run(test_run, after, base, f"dfr-{src}", say))
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
                notes=f"{text}; C={dfr.C_:g}, {cfg.penalty}, {dfr.balance_}", details={**details, **ident}, **common))
            results[-1].classifier_before, results[-1].classifier_after = base.identity, after.identity
            results[-1].warning = why_worse(results[-1], true_val, len(val),
                                            agreement.accuracy if agreement is not None else None)

    if "masktune" in methods:
        dataset = dataset or _dataset(manifest, dataset)
        train = _split_frame(dataset, "train")
        say(f"MaskTune: GradCAM masks on {len(train)} training images, then {cfg.masktune_epochs} epoch(s) of "
             "fine-tuning on the masked images")
        train_images = _load(train["file"], "load train images")
        mt = MaskTune(epochs=cfg.masktune_epochs, lr=cfg.masktune_lr, seed=cfg.seed)
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
        results[-1].warning = why_worse(results[-1])

    written = [write_mitigation_json(r.path, results, into_shipped=into_shipped)
               for r in (test_run, val_run) if r is not None]
    return MitigationOutcome(results, written, [p for p in new_runs if p], time.time() - t0)
