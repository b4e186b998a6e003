"""What a scene gate costs: explaining with the translator's gate (core.models.gate) against without it, on the
same images in one run.

    python -m bench.bench_scene_gate [--images N] [--sentences N] [--repeats R] [--translator FOLDER]

The open world's held-out test scenes (N spread over them) are explained by the open-unlikely translator with
its gate (`texplain maintain open-unlikely`, `texplain maintain open-gate`), 16 sentences each, on the CPU, and
again with the gate switched off; the two alternate chunk by chunk so that a drifting machine slows both alike.
Printed: seconds per mode (classify, translate, sample; words are counted in both to screen or not), the ratio
gated / plain, the samples drawn per image kept (the gate draws again what it refuses), the share of images
with a kind ruled out, and how often each kind is.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
import pandas as pd
import torch


def main(argv=None) -> int:
    from core.data import load_rgb
    from core.demo.open_translator import UNLIKELY_TRANSLATOR
    from core.demo.worlds import open_world as ow
    from core.engine.config import ExplainConfig
    from core.engine.explainer import Explainer
    from core.engine.sampling import image_key, sample_accepted, sample_sentences
    from core.models import load_classifier, load_language_model
    from core.models.translator import Translator

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--sentences", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=16, help="images per timed call")
    ap.add_argument("--translator", default=str(UNLIKELY_TRANSLATOR))
    args = ap.parse_args(argv)

    base, lm = load_classifier("efficientnet-lite0"), load_language_model()
    tr = Translator.from_pretrained(args.translator, base, lm)
    if tr.gate is None:
        raise SystemExit(f"{args.translator} has no scene gate: run `texplain maintain open-gate` first")
    meta = pd.read_csv(ow.OPEN_WORLD / "metadata.csv", keep_default_na=False)
    part = meta[(meta["split"] == "test") & (meta["held_out"] == "scene")].sort_values("img_filename")
    part = part.iloc[np.linspace(0, len(part) - 1, min(args.images, len(part))).round().astype(int)]
    cfg = ExplainConfig(sentences_per_image=args.sentences, seed=0, device="cpu")
    explainer = Explainer(base, tr, lm, cfg)
    seconds, drawn, kept, blocked = Counter(), 0, 0, Counter()
    n_blocked = 0
    for i in range(0, len(part), args.chunk):
        chunk = part.iloc[i:i + args.chunk]
        x = torch.stack([base.preprocess(load_rgb(ow.OPEN_WORLD / f)) for f in chunk["img_filename"]])
        keys = [image_key(f, cfg.seed) for f in chunk["img_filename"]]
        for mode in ("plain", "gated") if (i // args.chunk) % 2 == 0 else ("gated", "plain"):
            t0 = time.perf_counter()
            if mode == "plain":
                _, prefixes = explainer.classify_translate(x)
                out = sample_sentences(lm, prefixes, args.sentences, cfg, keys)
            else:
                _, prefixes, ruled_out = explainer.classify_translate(x, ruled_out=True)
                out, draws = sample_accepted(lm, prefixes, args.sentences, cfg, keys,
                                             [explainer.screen(b) for b in ruled_out])
                drawn += sum(draws)
                kept += sum(map(len, out))
            explainer.extractor.count_many(out)
            seconds[mode] += time.perf_counter() - t0
        with torch.inference_mode():
            z, _ = base.features_and_logits(x)
        for b in tr.gate.blocked(z.float()):
            blocked.update(b)
            n_blocked += bool(b)
    n = len(part)
    print(f"scene gate on {n} held-out test scenes, {args.sentences} sentences, CPU, threshold {tr.gate.threshold}")
    print(f"  plain: {seconds['plain']:.1f} s   gated: {seconds['gated']:.1f} s   "
          f"ratio gated / plain: {seconds['gated'] / seconds['plain']:.2f}")
    print(f"  samples drawn per sentence kept: {drawn / max(kept, 1):.2f} ({kept} kept of {n * args.sentences})")
    print(f"  images with a kind ruled out: {n_blocked / n:.0%}; per kind: "
          + ", ".join(f"{k} {v / n:.0%}" for k, v in blocked.most_common()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
