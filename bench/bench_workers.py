"""Decoding workers for `explain_dataset`: num_workers=0 (decode in the main process) against worker processes.

    python -m bench.bench_workers [--images 96] [--workers 2] [--repeats 1]

Demo test images, the shipped ERM classifier and a tiny random-weight LM, so that decoding and the
classifier (what workers can take off the main process) are as large a share of the run as they
get; with the real LM they are a few percent of it. The runs alternate (0, W, 0, W, ...) in one
process; the figure is the ratio of their rates.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

import core  # noqa: F401  (offline environment)
from core import paths

TINY_LM = dict(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
               bos_token_id=1, eos_token_id=2, pad_token_id=2)


def run(quick: bool = False, images: int | None = None, workers: int = 2, repeats: int = 1) -> dict:
    from bench.bench_generate import _RandomLM
    from core.data import read_waterbirds
    from core.engine.config import ExplainConfig
    from core.engine.pipeline import explain_dataset
    from core.engine.words import WordExtractor
    from core.models.classifier import from_pretrained
    from core.models.translator import Translator, TranslatorConfig

    images = images or (32 if quick else 96)
    lm = _RandomLM("cpu", torch.float32, TINY_LM)
    clf = from_pretrained(paths.CHECKPOINTS / "classifiers" / "erm")
    torch.manual_seed(0)
    tr = Translator(TranslatorConfig(feature_dim=clf.feature_dim, hidden_size=lm.hidden_size, prefix_length=10,
                                     classifier_identity=clf.identity, lm_identity=lm.identity)).eval()
    test = read_waterbirds(paths.DEMO_DATA).split("test")
    ds = test.__class__(test.name, test.kind, test.root, test.records[:images], test.class_names)
    extractor = WordExtractor(stop_words=(), lemmatize=False, vocabulary=None)  # token ids as words
    rates: dict[int, list[float]] = {0: [], workers: []}
    for _ in range(repeats):
        for nw in (0, workers):
            folder = Path(tempfile.mkdtemp())
            try:
                t = time.perf_counter()
                explain_dataset(ds, clf, tr, lm, folder / "run", ExplainConfig(
                    sentences_per_image=4, max_new_tokens=4, num_workers=nw, device="cpu"),
                    extractor=extractor, show_progress=False)
                rates[nw].append(images / (time.perf_counter() - t))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    best = {nw: max(r) for nw, r in rates.items()}
    return {"images": images, "threads": torch.get_num_threads(), "workers": workers,
            "no_workers_images_per_s": round(best[0], 2), "workers_images_per_s": round(best[workers], 2),
            "workers_vs_none": round(best[workers] / best[0], 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="32 images")
    a = ap.parse_args(argv)
    print(run(a.quick, a.images, a.workers, a.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
