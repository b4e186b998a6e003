"""Adaptive sentences per image (`explain --sentences auto`) against fixed N=32, on the same images in one run.

    python -m bench.bench_adaptive [--images N] [--runs demo-erm-test imagenet9-only_fg ...]
                                   [--fixed-runs 'DIR/fixed32-{run}'] [--quick] [--keep DIR] [--out F]

For each shipped run named, its images (all, or a sample of --images stratified by group or class) are
explained twice with the run's own classifier and translator on the CPU (float32): fixed N=32, and auto
(ExplainConfig's min, max, round and tolerance). The two alternate shard by shard (calls of one shard each),
so a machine whose load drifts slows both alike; wall time and CPU time are summed per mode over those calls,
end to end (decode, classify, translate, sample, count words, write). This timed pair gives the sentences
sampled (auto / fixed) and the speed-up (fixed seconds / auto seconds, by wall and by CPU time). A shard ends
the auto sampler's stream, so its last calls run short: a sample of one shard is timed as a run of that many
images, which costs auto more than a longer run does.

What the runs say is compared on every image of the run: the timed pair when it holds them all; otherwise,
with --fixed-runs, a complete fixed N=32 run of the run's images made earlier (same seed) and the auto run
read off it. Sampling is counter-based, so an auto image's sentences are its fixed run's first n and n is
what the stopping rule says of them (`core.engine.adaptive.sentences_needed`): the auto run derived this way
is the one `explain --sentences auto` writes; the bench checks it against the timed auto run's images.

- the top-10 flags (core.analysis.SpuriousTermScorer) of every class in both views (error, association):
  the same set?, how many shared, and Spearman's rank correlation over the union of the two lists (a word
  missing from a list ranks after its last); and whether the top-3 flags of every class and view are the
  same three words;
- `core evaluate`'s scene accuracy (runs whose images have a scene: the Waterbirds demo);
- for a Waterbirds run, the worst-group accuracy on the test images of DFR fitted on groups inferred from the
  val split, explained both ways (core.mitigation.mitigate, true groups as the yardstick).

Targets (issue 34): at most half the sentences, >= 1.8x faster, top-3 flags unchanged, top-10 rank
correlation >= 0.9, scene accuracy within 1 point.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import core  # noqa: F401  (offline environment)
from core import paths

RUNS = ("demo-erm-test", "imagenet9-only_fg", "imagenet9-mixed_rand")
VAL_OF = {"demo-erm-test": "demo-erm-val"}  # the val run whose images DFR is fitted on
FIXED_N = 32
TARGETS = {"sentences_ratio_max": 0.5, "speedup_min": 1.8, "top10_spearman_min": 0.9, "scene_points_max": 1.0}


# --- the shipped runs' models and images ---------------------------------------------------------------

def shipped_models(name: str, lm):
    """(dataset of the run's images, classifier read as the run read it, translator, split) of a shipped run."""
    from core.data.readers import open_dataset
    from core.models.registry import classifier_for_run, load_classifier_spec, run_model_sources
    from core.models.translator import Translator
    from core.store import Run

    run = Run.open(paths.SHIPPED_RUNS / name)
    m = run.manifest
    src = run_model_sources(m)
    classifier = classifier_for_run(load_classifier_spec(src.classifier), src)
    translator = Translator.from_pretrained(src.translator, classifier, lm)
    root = paths.ROOT / m["dataset"]["root"]
    # A Backgrounds Challenge run records its variation's folder as the root.
    dataset = (open_dataset(root.parent, variation=root.name) if m["dataset"]["kind"] == "backgrounds_challenge"
               else open_dataset(root))
    ids = set(run.images()["image_id"])
    split = m["dataset"].get("split")
    ds = dataset.split(split) if split else dataset
    records = [r for r in ds.records if r.image_id in ids]
    if len(records) != len(ids):
        raise RuntimeError(f"found {len(records)} of the {len(ids)} images of {name} under {root}")
    return replace(ds, records=records), classifier, translator


def explain_both(ds, classifier, translator, lm, folder: Path, fixed, auto, max_images: int | None) -> dict:
    """Explain `ds` with both configs into folder/fixed and folder/auto, one shard at a time, alternately;
    the wall seconds and this process's CPU seconds (every thread's: on a shared machine they move less
    with the load than wall time does) of each mode's calls."""
    from core.engine.pipeline import explain_dataset

    seconds, cpu = {"fixed": 0.0, "auto": 0.0}, {"fixed": 0.0, "auto": 0.0}
    runs, done = {}, {"fixed": False, "auto": False}
    while not all(done.values()):
        for mode, cfg in (("fixed", fixed), ("auto", auto)):
            if done[mode]:
                continue
            t, c = time.perf_counter(), time.process_time()
            runs[mode] = explain_dataset(ds, classifier, translator, lm, folder / mode, cfg, max_shards=1,
                                         show_progress=False, max_images=max_images)
            seconds[mode] += time.perf_counter() - t
            cpu[mode] += time.process_time() - c
            done[mode] = runs[mode].status == "complete"
    return {"runs": runs, "seconds": seconds, "cpu_seconds": cpu}


# --- what the runs say -----------------------------------------------------------------------------------

def flag_lists(run, k: int = 10) -> dict[tuple[str, str], dict]:
    """(view, class) -> {"top": its top-k flags, best first; "scores": every scored word's score}, in both views
    of SpuriousTermScorer (error: a class's misread vs read-right images; association: predicted as it vs not)."""
    from core.analysis import SpuriousTermScorer

    scorer = SpuriousTermScorer().fit(run)
    out = {}
    for view, table in (("error", scorer.scores_), ("association", scorer.association_scores_)):
        for c in scorer.classes_:
            rows = table[table["class"] == c]
            scores = dict(zip(rows["word"], rows["score"].astype(float)))
            top = (scorer.flags_for(c, k=k) if view == "error" else scorer.associations_for(c, k=k))["word"]
            out[(view, c)] = {"top": top.tolist(), "scores": scores}
    return out


def rank_correlation(words: list[str], a: dict[str, float], b: dict[str, float]) -> float | None:
    """Spearman's rho of `words`' scores in two runs (a word a run did not score ranks last there); None for
    fewer than three words (two are only ever +1 or -1) or no spread."""
    import numpy as np
    from scipy.stats import spearmanr

    if len(words) < 3:
        return None
    lowest = -1e9
    x = [a.get(w, lowest) if np.isfinite(a.get(w, lowest)) else lowest for w in words]
    y = [b.get(w, lowest) if np.isfinite(b.get(w, lowest)) else lowest for w in words]
    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def compare_flags(fixed: dict, auto: dict) -> dict:
    """Per (view, class) with flags in either run: the top-10 lists, the same set?, how many shared, Spearman's
    rho of the union's scores in the two runs, and whether the top 3 are the same words."""
    rows = []
    for key in sorted(set(fixed) | set(auto)):
        fa, fb = fixed.get(key, {"top": [], "scores": {}}), auto.get(key, {"top": [], "scores": {}})
        a, b = fa["top"], fb["top"]
        if not a and not b:
            continue
        union = list(dict.fromkeys(a + b))
        rows.append({"view": key[0], "class": key[1], "fixed_top10": a, "auto_top10": b,
                     "same_set": set(a) == set(b), "shared": len(set(a) & set(b)),
                     "spearman": rank_correlation(union, fa["scores"], fb["scores"]),
                     "top3_same": set(a[:3]) == set(b[:3]), "top3_same_order": a[:3] == b[:3]})
    rhos = [r["spearman"] for r in rows if r["spearman"] is not None]
    return {"lists": len(rows), "top10_same_set": sum(r["same_set"] for r in rows),
            "top10_shared_mean": round(sum(r["shared"] for r in rows) / max(len(rows), 1), 2),
            "top10_spearman_mean": round(sum(rhos) / len(rhos), 3) if rhos else None,
            "top10_spearman_min": round(min(rhos), 3) if rhos else None,
            "top3_unchanged": sum(r["top3_same"] for r in rows),
            "top3_unchanged_order": sum(r["top3_same_order"] for r in rows),
            "changed": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                        for r in rows if not r["top3_same"] or not r["same_set"]]}


def scene_accuracy(run, lm) -> float | None:
    """`core evaluate`'s scene accuracy of a run (None where its images have no scene)."""
    from core.evaluation.captions import evaluate_run, find_captions

    try:
        find_captions(run)
    except ValueError:  # no reference captions (ImageNet-9): no scene to score
        return None
    # Fluency is not what is compared here: score as few sentences for it as evaluate_run allows.
    return evaluate_run(run, lm=lm, max_sentences=8).scene_accuracy


def dfr_worst_group(val_run, test_run) -> dict:
    """DFR fitted on groups inferred from `val_run`, scored on the test run's images with their true groups."""
    from core.mitigation.config import MitigationConfig
    from core.mitigation.pipeline import mitigate

    out = mitigate(val_run.path, test_run.path, MitigationConfig(method="dfr", groups="inferred", save=False,
                                                                 write_runs=False), say=lambda msg: None)
    r = out.results[0]
    return {"worst_group_before": round(r.worst_group_before, 4), "worst_group_after": round(r.worst_group_after, 4),
            "average_after": round(r.average_after, 4)}


def sentences_of(run) -> dict:
    n = run.images()["n_sentences"]
    return {"total": int(n.sum()), "mean": round(float(n.mean()), 2), "min": int(n.min()), "max": int(n.max())}


# --- an auto run read off a fixed one ---------------------------------------------------------------------

def reused_fixed_run(pattern: str, name: str, ds, auto):
    """The complete fixed N=32 run `pattern.format(run=name)` of exactly `ds`'s images with auto's seed, or
    an error that says what differs."""
    from core.store import Run

    run = Run.open(pattern.format(run=name))
    st = run.manifest.get("settings") or {}
    problems = [f"{k} is {st.get(k)!r}, not {v!r}" for k, v in (("sentences_per_image", FIXED_N), ("seed", auto.seed),
                                                                 ("keep_sentences", None), ("top_p", auto.top_p),
                                                                 ("temperature", auto.temperature),
                                                                 ("max_new_tokens", auto.max_new_tokens))
                if st.get(k) != v]
    if run.health().status != "complete":
        problems.append(f"it is {run.health().status}")
    if set(run.images()["image_id"]) != {r.image_id for r in ds.records}:
        problems.append(f"its images are not the {len(ds.records)} of {name}")
    if problems:
        raise RuntimeError(f"cannot reuse {run.path} as {name}'s fixed run: " + "; ".join(problems))
    return run


def auto_from_fixed(fixed_run, auto, out: Path):
    """The run `explain` with `auto` writes for the fixed run's images, read off its stored sentences: each
    image's first `sentences_needed` of them, recounted by the run's word counter."""
    from core.engine.adaptive import sentences_needed
    from core.engine.run_io import sentence_summary, shard_tables
    from core.engine.words import WordExtractor
    from core.store import Run

    count = WordExtractor().count  # what explain_dataset counts with by default, as in the timed runs
    images = fixed_run.images()
    texts = {i: list(g) for i, g in fixed_run.sentences().sort_values(["image_id", "idx"]).groupby("image_id")["text"]}
    n = {i: sentences_needed(t, auto, count) for i, t in texts.items()}
    words = [{"image_id": i, "word": w, "count": c, "sentences": k}
             for i, t in texts.items() for w, (c, k) in count(t[:n[i]]).items()]
    kept = [{"image_id": i, "idx": j, "text": x} for i, t in texts.items() for j, x in enumerate(t[:n[i]])]
    images["n_sentences"] = images["image_id"].map(n).fillna(0).astype("int64")
    keep = ("name", "kind", "models", "dataset", "device", "data_fingerprint")
    manifest = {**{k: v for k, v in fixed_run.manifest.items() if k in keep},
                "settings": auto.sampling_settings(), "derived_from": str(fixed_run.path)}
    run = Run.create(out, manifest, overwrite=True)
    run.write_shard(0, *shard_tables(images.to_dict("records"), words, kept), total_images=len(images))
    run.update_manifest(progress={**run.manifest["progress"], "total_shards": 1})
    run.finish(sentences=sentence_summary(run))
    run.unlock()
    return Run.open(out)


def _load() -> float | None:
    """The machine's 1-minute load average (how shared the CPU was while timing), where the OS tells it."""
    import os

    return round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None


# --- the benchmark ---------------------------------------------------------------------------------------

def run(quick: bool = False, images: int | None = None, runs: tuple[str, ...] | None = None, auto=None,
        keep: str | Path | None = None, fixed_runs: str | None = None) -> dict:
    """The figures per shipped run; `auto` an ExplainConfig with sentences_per_image="auto" (default: the
    defaults' bounds and tolerance); `keep` a folder to keep the runs in (default: a temporary one);
    `fixed_runs` a pattern ('DIR/fixed32-{run}') of complete fixed N=32 runs to compare every image on when
    `images` times a sample only."""
    import torch

    from core.engine.config import ExplainConfig
    from core.models import load_language_model

    runs = runs or (("demo-erm-test",) if quick else RUNS)
    images = images or (16 if quick else None)
    base = ExplainConfig(seed=0, device="cpu")
    auto = auto or replace(base, sentences_per_image="auto")
    fixed = replace(auto, sentences_per_image=FIXED_N)
    lm = load_language_model()
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench_adaptive-"))
    out: dict = {"fixed_n": FIXED_N, "auto": {k: getattr(auto, k) for k in ("min_sentences", "max_sentences",
                                                                           "round_sentences", "tolerance")},
                 "images_timed_per_run": images or "all", "threads": torch.get_num_threads(), "runs": {}}

    def compared(name: str, ds, timed: dict) -> tuple:
        """(fixed run, auto run, how) over every image of `ds`: the timed pair, or a reused fixed run's."""
        f, a = timed["runs"]["fixed"], timed["runs"]["auto"]
        if len(f.images()) == len(ds.records):
            return f, a, "timed runs"
        if not fixed_runs:
            return f, a, f"timed sample of {len(f.images())} images"
        f_all = reused_fixed_run(fixed_runs, name, ds, auto)
        a_all = auto_from_fixed(f_all, auto, folder / name / "auto-read-off-fixed")
        # The derived run is what explain writes: the timed auto run's images got the same sentences.
        got = a.images().set_index("image_id")["n_sentences"]
        derived = a_all.images().set_index("image_id")["n_sentences"].reindex(got.index)
        if not (got == derived).all():
            raise RuntimeError(f"{name}: the auto run read off {f_all.path} differs from the timed auto run on "
                               f"{int((got != derived).sum())} of {len(got)} images")
        return f_all, a_all, f"all {len(ds.records)} images: {f_all.path} and auto read off it (matches timed)"

    try:
        for name in runs:
            ds, classifier, translator = shipped_models(name, lm)
            timed = explain_both(ds, classifier, translator, lm, folder / name, fixed, auto, images)
            tf, ta = sentences_of(timed["runs"]["fixed"]), sentences_of(timed["runs"]["auto"])
            res = {"timed": {"images": int(len(timed["runs"]["fixed"].images())), "sentences_fixed": tf,
                             "sentences_auto": ta, "sentences_ratio": round(ta["total"] / tf["total"], 3),
                             "seconds_fixed": round(timed["seconds"]["fixed"], 1),
                             "seconds_auto": round(timed["seconds"]["auto"], 1),
                             "speedup": round(timed["seconds"]["fixed"] / timed["seconds"]["auto"], 2),
                             "cpu_seconds_fixed": round(timed["cpu_seconds"]["fixed"], 1),
                             "cpu_seconds_auto": round(timed["cpu_seconds"]["auto"], 1),
                             "cpu_speedup": round(timed["cpu_seconds"]["fixed"] / timed["cpu_seconds"]["auto"], 2),
                             "load_average": _load()}}
            f, a, how = compared(name, ds, timed)
            sf, sa = sentences_of(f), sentences_of(a)
            res["compared"] = {"on": how, "images": int(len(f.images())), "sentences_fixed": sf,
                               "sentences_auto": sa, "sentences_ratio": round(sa["total"] / sf["total"], 3)}
            res["flags"] = compare_flags(flag_lists(f), flag_lists(a))
            acc_f, acc_a = scene_accuracy(f, lm), scene_accuracy(a, lm)
            res["scene_accuracy"] = ({"fixed": round(acc_f, 4), "auto": round(acc_a, 4),
                                      "points": round(100 * (acc_a - acc_f), 2)} if acc_f is not None else None)
            if name in VAL_OF:
                vname = VAL_OF[name]
                vds, _, _ = shipped_models(vname, lm)
                if fixed_runs:  # the val images are for DFR only: no timing, the auto run read off the fixed one
                    vf = reused_fixed_run(fixed_runs, vname, vds, auto)
                    va, vhow = auto_from_fixed(vf, auto, folder / vname / "auto-read-off-fixed"), f"{vf.path}, read off"
                else:
                    vf, va, vhow = compared(vname, vds, explain_both(vds, classifier, translator, lm, folder / vname,
                                                                     fixed, auto, images))
                res["val"] = {"on": vhow, "sentences_ratio": round(sentences_of(va)["total"]
                                                                   / sentences_of(vf)["total"], 3)}
                res["dfr_inferred"] = {"fixed": dfr_worst_group(vf, f), "auto": dfr_worst_group(va, a)}
            scene = res["scene_accuracy"]
            res["targets"] = {
                "half_the_sentences": res["compared"]["sentences_ratio"] <= TARGETS["sentences_ratio_max"],
                "speedup_1_8x": res["timed"]["speedup"] >= TARGETS["speedup_min"],
                "top3_unchanged": res["flags"]["top3_unchanged"] == res["flags"]["lists"],
                "top10_spearman_0_9": (res["flags"]["top10_spearman_min"] or 1.0) >= TARGETS["top10_spearman_min"],
                "scene_within_1_point": abs(scene["points"]) <= TARGETS["scene_points_max"] if scene else None}
            out["runs"][name] = res
            print(json.dumps({name: res}, indent=1), flush=True)
        rs = out["runs"].values()
        out["overall"] = {
            "timed_sentences_ratio": round(sum(r["timed"]["sentences_auto"]["total"] for r in rs)
                                           / sum(r["timed"]["sentences_fixed"]["total"] for r in rs), 3),
            "timed_speedup": round(sum(r["timed"]["seconds_fixed"] for r in rs)
                                   / sum(r["timed"]["seconds_auto"] for r in rs), 2),
            "timed_cpu_speedup": round(sum(r["timed"]["cpu_seconds_fixed"] for r in rs)
                                       / sum(r["timed"]["cpu_seconds_auto"] for r in rs), 2),
            "sentences_ratio": round(sum(r["compared"]["sentences_auto"]["total"] for r in rs)
                                     / sum(r["compared"]["sentences_fixed"]["total"] for r in rs), 3)}
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    return out


def main(argv=None) -> int:
    from core.engine.config import ExplainConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None, help="time a stratified sample of this many images per run")
    ap.add_argument("--runs", nargs="+", default=None, help=f"shipped runs (default {' '.join(RUNS)})")
    ap.add_argument("--fixed-runs", default=None, metavar="PATTERN",
                    help="complete fixed N=32 runs of each run's images, e.g. 'DIR/fixed32-{run}' (with {run} the "
                         "shipped run's name, demo-erm-val too): compare every image on them and on the auto run "
                         "read off them, while --images times a sample")
    ap.add_argument("--min-sentences", type=int, default=None)
    ap.add_argument("--max-sentences", type=int, default=None)
    ap.add_argument("--round-sentences", type=int, default=None)
    ap.add_argument("--tolerance", type=float, default=None)
    ap.add_argument("--keep", default=None, help="keep the runs in this folder")
    ap.add_argument("--out", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--quick", action="store_true", help="16 images of the Waterbirds demo test run")
    a = ap.parse_args(argv)
    knobs = {k: v for k, v in (("min_sentences", a.min_sentences), ("max_sentences", a.max_sentences),
                               ("round_sentences", a.round_sentences), ("tolerance", a.tolerance)) if v is not None}
    auto = ExplainConfig(sentences_per_image="auto", seed=0, device="cpu", **knobs)
    res = run(a.quick, a.images, tuple(a.runs) if a.runs else None, auto, a.keep, a.fixed_runs)
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
