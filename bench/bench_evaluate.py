"""Caption-quality evaluation of the shipped demo run: its figures, and batched fluency scoring vs one by one.

    python -m bench.bench_evaluate            # demo-erm-test, 400 sentences scored for fluency
    python -m bench.bench_evaluate --quick    # 128 sentences

Prints the evaluation's figures (fluency NLL of the kept sentences and of the reference captions,
scene and object accuracy, validation loss) and times the fluency step two ways on the same sentences
with the real SmolLM2-135M: `token_nll` (batches of 32, sorted by length) against the baseline of one
forward pass per sentence. Both must give the same NLL (the command exits non-zero when they differ).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

import core  # noqa: F401
from core import paths

RUN = paths.SHIPPED_RUNS / "demo-erm-test"


def run(quick: bool = False, run_path=RUN) -> dict:
    from core.evaluation.captions import evaluate_run, mean_token_nll, subsample, token_nll
    from core.models.lm import load_language_model
    from core.store import Run

    n = 128 if quick else 400
    lm = load_language_model()
    t = time.perf_counter()
    ev = evaluate_run(run_path, lm, max_sentences=n)
    evaluate_s = time.perf_counter() - t

    texts = subsample([s for s in Run.open(run_path).sentences()["text"].astype(str) if s.strip()], n, 0)
    token_nll(lm, texts[:8])  # warm-up
    t = time.perf_counter()
    batched = mean_token_nll(token_nll(lm, texts, batch_size=32))
    batched_s = time.perf_counter() - t
    t = time.perf_counter()
    one_by_one = mean_token_nll(token_nll(lm, texts, batch_size=1))
    baseline_s = time.perf_counter() - t
    return {
        "run": str(run_path), "images": ev.n_images, "sentences_per_image": ev.sentences_per_image,
        "fluency_nll": round(ev.fluency_nll, 3), "reference_nll": round(ev.reference_nll, 3),
        "fluency_ratio": round(ev.fluency_ratio, 3), "scene_accuracy": round(ev.scene_accuracy, 3),
        "object_accuracy": round(ev.object_accuracy, 3), "val_loss": ev.val_loss,
        "evaluate_s": round(evaluate_s, 1),
        "nll_sentences": len(texts), "batched_sentences_per_s": round(len(texts) / batched_s, 1),
        "one_by_one_sentences_per_s": round(len(texts) / baseline_s, 1), "speedup": round(baseline_s / batched_s, 2),
        "same_nll": abs(batched - one_by_one) < 1e-3, "threads": torch.get_num_threads(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    result = run(quick=a.quick)
    print(json.dumps(result, indent=1))
    return 0 if result["same_nll"] else 1


if __name__ == "__main__":
    sys.exit(main())
