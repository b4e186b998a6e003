"""Translator training throughput: features cached once vs recomputed by the classifier at every step,
and float32 vs bf16 autocast (`train --bf16`) with cached features.

    python -m bench.bench_train [--steps 3]

Same classifier (demo ERM EfficientNet-Lite0, or ImageNet weights), same LM (SmolLM2-135M), same
captions and batch size; the only difference is where z comes from, or the matmuls' precision. Prints
samples/s and the ratios. bf16 pays only on CPUs with bf16 units (AVX512-BF16 or AMX; `bf16_units`).
"""
from __future__ import annotations

import argparse
import time

import torch

import core  # noqa: F401
from core import paths


def _cpu_has_bf16_units() -> bool | None:
    """Whether oneDNN finds native bf16 on this CPU (AVX512-BF16 or AMX); None where torch cannot say
    (the check is a private op)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def run(quick: bool = False, steps: int | None = None, batch_size: int = 16) -> dict:
    from core.data import load_rgb, read_caption_csv
    from core.engine.train import caption_loss, compute_features, tokenize_captions
    from core.models.classifier import efficientnet_lite0, from_pretrained
    from core.models.lm import load_language_model
    from core.models.translator import Translator, TranslatorConfig

    steps = steps or (2 if quick else 4)
    ckpt = paths.CHECKPOINTS / "classifiers" / "erm"
    clf = from_pretrained(ckpt) if (ckpt / "config.json").exists() else efficientnet_lite0()
    lm = load_language_model()
    caps = read_caption_csv(paths.DEMO_DATA / "captions.csv").drop_duplicates("path").head(batch_size * steps)
    img_paths, captions = list(caps["path"]), list(caps["caption"])
    ids, mask = tokenize_captions(lm, captions, 24)
    cached = compute_features(clf, img_paths, load_rgb, cache_dir=None, show_progress=False)

    def train(recompute: bool, bf16: bool = False) -> float:
        torch.manual_seed(0)
        tr = Translator(TranslatorConfig(feature_dim=clf.feature_dim, hidden_size=lm.hidden_size))
        opt = torch.optim.AdamW(tr.parameters(), lr=3e-4)
        t = time.perf_counter()
        for s in range(steps):
            sl = slice(s * batch_size, (s + 1) * batch_size)
            if recompute:  # what a loop without a feature cache does: load, preprocess, forward, every step
                with torch.inference_mode():
                    x = torch.stack([clf.preprocess(load_rgb(p)) for p in img_paths[sl]])
                    z = clf.features(x).clone()
            else:
                z = cached[sl]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = caption_loss(tr, lm, z, ids[sl], mask[sl])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return steps * batch_size / (time.perf_counter() - t)

    train(False)  # warm-up
    fast, slow = train(False), train(True)
    train(False, bf16=True)  # warm-up: oneDNN picks its bf16 kernels on first use
    bf16 = train(False, bf16=True)
    return {"batch_size": batch_size, "steps": steps, "cached_samples_per_s": round(fast, 2),
            "recompute_samples_per_s": round(slow, 2), "speedup": round(fast / slow, 2),
            "bf16_samples_per_s": round(bf16, 2), "bf16_speedup": round(bf16 / fast, 2),
            "bf16_units": _cpu_has_bf16_units(),
            "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    r = run(a.quick, a.steps)
    print(f"translator training, batch {r['batch_size']}, {r['steps']} steps, {r['threads']} threads")
    print(f"  features cached    : {r['cached_samples_per_s']:7.2f} samples/s")
    print(f"  features recomputed: {r['recompute_samples_per_s']:7.2f} samples/s")
    print(f"  speed-up: {r['speedup']}x")
    print(f"  bf16 autocast, cached: {r['bf16_samples_per_s']:7.2f} samples/s ({r['bf16_speedup']}x float32; "
          f"CPU bf16 units: {({True: 'yes', False: 'no'}).get(r['bf16_units'], 'unknown')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
