"""Dashboard render time on a large run: Home and Class words, from a generated run of 20,000 images.

    python -m bench.bench_dashboard [--images 20000] [--repeats 5]

The run (50 words per image, Waterbirds-like groups) is written with the real run store; the
pages run through Streamlit's AppTest. Reported: the first (cold) load of each run, which reads it
and fits the spurious-term scorer, and the median of the repeated (warm) loads, which Streamlit's
caches serve, for the large run and for a 200-image baseline in the same process (after a warm-up
on a 40-image run that pays the imports).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]  # AppTest resolves relative paths against the calling file
PAGES = {"Home": ROOT / "dashboard/Home.py", "Class words": ROOT / "dashboard/pages/3_Class_words.py"}
VOCAB = [f"w{i}" for i in range(400)] + ["water", "lake", "sea", "tree", "forest", "grass", "bird", "duck"]


def make_run(path: Path, n_images: int, words_per_image: int = 50, seed: int = 0):
    from core.store import Run

    rng = np.random.default_rng(seed)
    run = Run.create(path, {"name": path.name, "models": {"classifier": "bench", "lm": "bench"},
                            "dataset": {"name": "bench", "kind": "waterbirds", "root": str(path),
                                        "class_names": ["landbird", "waterbird"],
                                        "group_names": {"0": "landbird on land", "1": "landbird on water",
                                                        "2": "waterbird on land", "3": "waterbird on water"}},
                            "settings": {"sentences_per_image": 32, "seed": seed}})
    shard = 2000
    for s, start in enumerate(range(0, n_images, shard)):
        ids = np.arange(start, min(start + shard, n_images))
        group = ids % 4
        label = group // 2
        wrong = rng.random(len(ids)) < np.where(group % 3 == 0, 0.05, 0.4)
        pred = np.where(wrong, 1 - label, label)
        images = pd.DataFrame({"image_id": [f"i{i}" for i in ids], "path": [f"img/{i}.jpg" for i in ids],
                               "split": "test", "label": label, "label_name": np.where(label, "waterbird", "landbird"),
                               "prediction": pred, "prediction_name": np.where(pred, "waterbird", "landbird"),
                               "confidence": rng.uniform(0.5, 1, len(ids)), "group": group, "place": group % 2,
                               "n_sentences": 32, "error": None})
        w_idx = rng.integers(0, len(VOCAB), (len(ids), words_per_image))
        words = pd.DataFrame({"image_id": np.repeat(images["image_id"].to_numpy(), words_per_image),
                              "word": np.array(VOCAB)[w_idx.ravel()],
                              "sentences": rng.integers(1, 32, w_idx.size)})
        words = words.drop_duplicates(["image_id", "word"])
        words["count"] = words["sentences"] + rng.integers(0, 3, len(words))
        sents = pd.DataFrame({"image_id": images["image_id"], "idx": 0, "text": "a bird by the water"})
        run.write_shard(s, images, words[["image_id", "word", "count", "sentences"]], sents)
    run.finish()
    return run


def time_page(page: Path, repeats: int) -> tuple[float, float]:
    from streamlit.testing.v1 import AppTest

    times = []
    for _ in range(repeats + 1):
        at = AppTest.from_file(str(page), default_timeout=300)
        t = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t)
        if at.exception:
            raise RuntimeError(f"{page} raised: {at.exception[0].message}")
    return times[0], statistics.median(times[1:])


def run(quick: bool = False, images: int | None = None, repeats: int | None = None) -> dict:
    images = images or (5000 if quick else 20000)
    repeats = repeats or (2 if quick else 5)
    out = {"images": images, "repeats": repeats}
    with tempfile.TemporaryDirectory() as tmp:
        # Imports (pandas, DuckDB, plotly, NLTK, ...) cost seconds once per dashboard process, not
        # per run: pay them before timing, on a small separate run.
        make_run(Path(tmp) / "warm-up" / "warm-up-run", 40)
        os.environ["TEXPLAIN_RUNS"] = str(Path(tmp) / "warm-up")
        os.environ["TEXPLAIN_SHIPPED_RUNS"] = str(Path(tmp) / "no-shipped-runs")
        for page in PAGES.values():
            from streamlit.testing.v1 import AppTest

            AppTest.from_file(str(page), default_timeout=300).run()
        for label, n in (("baseline_200", 200), (f"large_{images}", images)):
            root = Path(tmp) / label
            make_run(root / "bench-run", n)
            # The dashboard lists runs from TEXPLAIN_RUNS at call time; the shipped runs are hidden for the bench.
            os.environ["TEXPLAIN_RUNS"] = str(root)
            os.environ["TEXPLAIN_SHIPPED_RUNS"] = str(Path(tmp) / "no-shipped-runs")
            for name, page in PAGES.items():
                cold, warm = time_page(page, repeats)
                out[f"{label}_{name}_cold_s"] = round(cold, 3)
                out[f"{label}_{name}_warm_median_s"] = round(warm, 3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    r = run(a.quick, a.images, a.repeats)
    print(f"dashboard render time (AppTest), median of {r['repeats']} warm loads after one cold load")
    for key, val in r.items():
        if key.endswith("_s"):
            print(f"  {key:45s} {val:7.3f} s")
    for page in PAGES:
        big, small = r[f"large_{r['images']}_{page}_warm_median_s"], r[f"baseline_200_{page}_warm_median_s"]
        print(f"  {page}: {r['images']:,} images vs 200, warm median {big:.2f} s vs {small:.2f} s ({big / small:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
