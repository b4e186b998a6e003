"""How explaining cost grows with the number of images and of sentences per image (real LM, CPU/GPU).

    python -m bench.bench_scaling [--images 1 2 4 8] [--n 8 16 32 64]

Prints a table of seconds per run and sentences/s; the ratio column is each cell's cost per
sentence relative to the smallest cell, measured in the same run.
"""
from __future__ import annotations

import argparse
import time

from bench.bench_generate import _prefixes
from core.device import resolve
from core.engine.config import ExplainConfig
from core.engine.sampling import sample_sentences


def run(quick: bool = False, images=None, ns=None, device: str = "auto") -> dict:
    from core.models.lm import load_language_model

    images = images or ([1, 4] if quick else [1, 2, 4, 8])
    ns = ns or ([8, 32] if quick else [8, 16, 32, 64])
    compute = resolve(device)
    lm = load_language_model(device=compute.device, dtype=compute.dtype)
    prefix, _, source = _prefixes(lm, max(images), compute.device, compute.dtype, False)
    cfg0 = ExplainConfig(sentences_per_image=1)
    sample_sentences(lm, prefix[:1], 4, cfg0)  # warm-up
    rows = []
    for b in images:
        for n in ns:
            t = time.perf_counter()
            sample_sentences(lm, prefix[:b], n, ExplainConfig(sentences_per_image=n))
            dt = time.perf_counter() - t
            rows.append({"images": b, "sentences_per_image": n, "seconds": round(dt, 2),
                         "sentences_per_s": round(b * n / dt, 1)})
    base = rows[0]["seconds"] / (rows[0]["images"] * rows[0]["sentences_per_image"])
    for r in rows:
        r["cost_per_sentence_vs_smallest"] = round(r["seconds"] / (r["images"] * r["sentences_per_image"]) / base, 2)
    return {"device": compute.label, "source": source, "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="*", default=None)
    ap.add_argument("--n", type=int, nargs="*", default=None)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    r = run(a.quick, a.images, a.n)
    print(f"scaling on {r['device']} ({r['source']})")
    print("| images | sentences/image | seconds | sentences/s | cost per sentence vs smallest |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for row in r["rows"]:
        print(f"| {row['images']} | {row['sentences_per_image']} | {row['seconds']} | {row['sentences_per_s']} | "
              f"{row['cost_per_sentence_vs_smallest']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
