"""Memory of a long explain run: resident memory per shard over 10,000 images must stay flat.

    python -m bench.bench_memory [--images 10000]

Uses the tiny test models (the cost here is the pipeline's bookkeeping, not the LM), real image
files on disk and the real run store. Prints RSS after the first shard, at the middle and at the
end, and the growth per 1,000 images.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(quick: bool = False, images: int | None = None) -> dict:
    import torch

    import core  # noqa: F401
    from core.data import open_dataset
    from core.engine.config import ExplainConfig
    from core.engine.pipeline import explain_dataset
    from core.models.classifier import Preprocessing, from_module
    from core.models.lm import load_language_model
    from core.models.translator import Translator, TranslatorConfig
    from tests import tiny

    images = images or (2000 if quick else 10000)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        per_group = images // 12  # 3 splits x 4 groups
        tiny.make_waterbirds(tmp / "wb", n_per_group=per_group, size=16)
        ds = open_dataset(tmp / "wb")
        lm = load_language_model(tiny.save_tiny_lm(tmp / "lm"))
        torch.manual_seed(0)
        clf = from_module(tiny.TinyNet(), ["landbird", "waterbird"], preprocessing=Preprocessing(16, 16))
        tr = Translator(TranslatorConfig(feature_dim=clf.feature_dim, hidden_size=lm.hidden_size, prefix_length=2,
                                         classifier_identity=clf.identity, lm_identity=lm.identity)).eval()
        samples: list[tuple[int, float]] = []
        cfg = ExplainConfig(sentences_per_image=8, max_new_tokens=6, shard_size=128, device="cpu")
        explain_dataset(ds, clf, tr, lm, tmp / "run", cfg, show_progress=False,
                        progress=lambda done, total, info: samples.append((done, _rss_mb())))
    done = np.array([d for d, _ in samples], dtype=float)
    rss = np.array([r for _, r in samples])
    second_half = done >= done[-1] / 2
    slope = np.polyfit(done[second_half], rss[second_half], 1)[0] * 1000 if second_half.sum() > 2 else float("nan")
    return {"images": int(done[-1]), "rss_first_shard_mb": round(rss[0], 1),
            "rss_middle_mb": round(rss[len(rss) // 2], 1),
            "rss_end_mb": round(rss[-1], 1), "growth_mb_per_1000_images": round(slope, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    r = run(a.quick, a.images)
    print(f"explain run over {r['images']} images: RSS {r['rss_first_shard_mb']} MB after the first shard, "
          f"{r['rss_middle_mb']} MB at the middle, {r['rss_end_mb']} MB at the end; "
          f"growth over the second half {r['growth_mb_per_1000_images']} MB per 1,000 images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
