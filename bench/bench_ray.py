"""Ray Data scale-out against the single-process pipeline, in the same run: images/s with 1 and 2 actors.

    python -m bench.bench_ray [--images 32] [--sentences 16] [--workers 1 2] [--quick]

Real models (the shipped ERM classifier and translator, SmolLM2-135M) on demo test images; each actor
loads them from disk as `explain --ray` does. Ray is started once, on this machine, with one logical CPU
per actor plus one for decoding and counting; CPU actors get one torch thread each (Ray sets
OMP_NUM_THREADS from their CPUs), the single-process run keeps torch's default threads. Every Ray run's
tables are compared with the single-process run's: exactly equal with the tiny models of the tests; with
the real SmolLM2 a batch of another size may round one float differently (BLAS blocking, see docs/performance.md), so
the share of identical sentences is printed. Images/s is over the whole call, actor start and model
loading included (a long run amortises them).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import core  # noqa: F401  (offline environment)
from core import paths


def _timed(fn) -> float:
    """images/s over the whole call of fn()."""
    t0 = time.perf_counter()
    run = fn()
    return run.manifest["progress"]["done_images"] / (time.perf_counter() - t0)


def _table_differences(a, b) -> dict:
    """Where two runs' table differ: {column: largest absolute difference (numbers) or rows that differ}."""
    import pandas as pd

    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return {"shape": f"{list(a.columns)} x {len(a)} vs {list(b.columns)} x {len(b)}"}
    out = {}
    for c in a.columns:
        x, y = a[c], b[c]
        if x.equals(y):
            continue
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            out[c] = float((x.astype(float) - y.astype(float)).abs().max())
        else:
            out[c] = f"{int((x.astype(str) != y.astype(str)).sum())} rows"
    return out


def _same_sentences(a, b) -> float:
    """Share of (image, idx) sentences that are the same text in two runs."""
    m = a.merge(b, on=["image_id", "idx"], suffixes=("_a", "_b"))
    return float((m["text_a"] == m["text_b"]).mean()) if len(m) else 0.0


def run(quick: bool = False, images: int | None = None, sentences: int | None = None,
        workers: tuple[int, ...] = (1, 2)) -> dict:
    import ray
    import torch

    from core.data import read_waterbirds
    from core.engine.config import ExplainConfig
    from core.engine.pipeline import explain_dataset
    from core.engine.ray import ModelFiles, RayPlacement
    from core.models import load_language_model
    from core.models.classifier import from_pretrained
    from core.models.translator import Translator
    from core.store import Run

    images = images or (16 if quick else 32)
    n = sentences or (8 if quick else 16)
    clf_dir, tr_dir = paths.CHECKPOINTS / "classifiers" / "erm", paths.CHECKPOINTS / "translators" / "erm"
    clf = from_pretrained(clf_dir)
    lm = load_language_model()
    tr = Translator.from_pretrained(tr_dir, clf, lm)
    test = read_waterbirds(paths.DEMO_DATA).split("test")
    ds = test.__class__(test.name, test.kind, test.root, test.records[:images], test.class_names)
    # Four images per sampler call and classifier batch in every placement: several actor calls even for a
    # small run, and the same batches everywhere, so the tables can be compared exactly.
    cfg = ExplainConfig(sentences_per_image=n, shard_size=4, batch_rows=4 * n, image_batch=4, device="cpu", seed=0)
    files = ModelFiles(classifier=str(clf_dir), translator=str(tr_dir), lm="smollm2-135m-instruct")
    keys = {"images": ["image_id"], "words": ["image_id", "word"], "sentences": ["image_id", "idx"]}
    out: dict = {"images": images, "sentences_per_image": n, "threads": torch.get_num_threads()}
    folder = Path(tempfile.mkdtemp())
    try:
        single = {}

        def one():
            r = explain_dataset(ds, clf, tr, lm, folder / "single", cfg, show_progress=False)
            single.update({t: r.table(t).sort_values(k).reset_index(drop=True) for t, k in keys.items()})
            return r

        base = _timed(one)
        out["single_process_images_per_s"] = round(base, 3)
        ray.init(num_cpus=max(workers) + 1, include_dashboard=False, log_to_driver=False,
                 object_store_memory=500 * 2**20,
                 runtime_env={"env_vars": {"PYTHONPATH": str(paths.ROOT), "HF_HUB_OFFLINE": "1",
                                           "TRANSFORMERS_OFFLINE": "1"}})
        try:
            for w in workers:
                def on_ray_files(w=w):
                    return explain_dataset(ds, clf, tr, lm, folder / f"ray{w}", cfg, show_progress=False,
                                           placement=RayPlacement(workers=w, models=files))

                rate = _timed(on_ray_files)
                r = Run.open(folder / f"ray{w}")
                tables = {t: r.table(t).sort_values(k).reset_index(drop=True) for t, k in keys.items()}
                same = all(tables[t].equals(single[t]) for t in keys)
                diffs = {t: d for t in keys if (d := _table_differences(single[t], tables[t]))}
                if diffs:  # e.g. a confidence one float apart: the classifier ran with another thread count
                    out[f"ray_{w}_differences"] = diffs
                out[f"ray_{w}_images_per_s"] = round(rate, 3)
                out[f"ray_{w}_vs_single"] = round(rate / base, 2)
                out[f"ray_{w}_tables_identical"] = bool(same)
                out[f"ray_{w}_same_sentences"] = round(_same_sentences(single["sentences"], r.sentences()), 4)
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--sentences", type=int, default=None)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--quick", action="store_true", help="16 images, 8 sentences each")
    a = ap.parse_args(argv)
    print(run(a.quick, a.images, a.sentences, tuple(a.workers)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
