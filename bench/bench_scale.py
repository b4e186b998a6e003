"""Analysis at ImageNet scale: build_report and the Home, Class words and Spurious terms pages on generated runs
of 20,000, 200,000 and 1,280,000 images: time and peak memory, against a baseline revision's in-memory path.

    python -m bench.bench_scale [--sizes 20000 200000 1280000] [--runs DIR] [--baseline-rev REV] [--baseline-max N]

The runs are bench_dashboard's (50 words per image, Waterbirds-like groups), written with the real run store into
`--runs` (kept there: a 1.28 M-image run takes minutes to write and ~180 MB). Every figure comes from its own
Python process, so that its peak resident memory (ru_maxrss, imports included) is its own:

- report cold: build_report (after one on a 40-image run that pays the imports and WordNet) with the run's
  aggregate cache (analysis-cache/) deleted; reopen: a new process with the cache on disk; baseline: the same
  call in `--baseline-rev`'s code (`git archive` of core/ and dashboard/), which reads the whole run into
  memory, for runs of at most `--baseline-max` images.
- pages: each page in a process of its own, after a load of a 40-image run that pays the imports; cold (no
  aggregate cache), reopen (cache on disk) and warm (the median of three more loads: Streamlit's caches).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"Home": "dashboard/Home.py", "Class words": "dashboard/pages/3_Class_words.py",
         "Spurious terms": "dashboard/pages/4_Spurious_terms.py"}
SIZES = (20_000, 200_000, 1_280_000)
BASELINE_REV = "b3986f6"  # the last commit whose analysis read a run into memory


def _peak_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def run_folder(runs: Path, n: int) -> Path:
    """The generated run of n images under `runs`, written when missing (bench_dashboard.make_run)."""
    from bench.bench_dashboard import make_run

    path = runs / f"scale-{n}" / "bench-run"
    manifest = path / "manifest.json"
    if not (manifest.is_file() and json.loads(manifest.read_text()).get("status") == "complete"):
        shutil.rmtree(path, ignore_errors=True)
        t = time.perf_counter()
        make_run(path, n)
        print(f"   wrote a run of {n:,} images in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def _child(src: Path, *args: str) -> dict:
    """One measurement in a fresh Python process running `src`'s code; its JSON answer."""
    env = {**os.environ, "TEXPLAIN_ASSETS": str(ROOT / ".assets"), "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(src), *args],
                          env=env, capture_output=True, text=True, cwd=src)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_report(run_path: str) -> dict:
    from core.report import build_report

    # The first report of a process pays imports (torch, NLTK, SciPy) and WordNet: on the 40-image run.
    warm_up = Path(run_path).parents[1] / "scale-40" / "bench-run"
    t = time.perf_counter()
    build_report(warm_up)
    first, before = time.perf_counter() - t, _peak_mb()
    t = time.perf_counter()
    report = build_report(run_path)
    return {"s": round(time.perf_counter() - t, 2), "peak_mb": _peak_mb(), "warm_up_s": round(first, 2),
            "warm_up_peak_mb": before, "accuracy": report["accuracy"]["overall"]}


def child_page(page: str, run_path: str, warm_up: str) -> dict:
    from streamlit.testing.v1 import AppTest

    def load() -> float:
        at = AppTest.from_file(str(Path.cwd() / page), default_timeout=900)
        t = time.perf_counter()
        at.run()
        if at.exception:
            raise RuntimeError(f"{page} raised: {at.exception[0].message}")
        return time.perf_counter() - t

    os.environ["TEXPLAIN_SHIPPED_RUNS"] = str(Path(warm_up).parent / "no-shipped-runs")
    os.environ["TEXPLAIN_RUNS"] = str(Path(warm_up).parent)
    load()  # imports, WordNet
    before = _peak_mb()
    os.environ["TEXPLAIN_RUNS"] = str(Path(run_path).parent)
    first = load()
    warm = statistics.median(load() for _ in range(3))
    return {"first_s": round(first, 2), "warm_s": round(warm, 2), "peak_mb": _peak_mb(), "warm_up_peak_mb": before}


def baseline_source(rev: str, into: Path) -> Path | None:
    """`rev`'s core/ and dashboard/ unpacked under `into` (None when git cannot give them)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "core", "dashboard"], capture_output=True)
    if archive.returncode != 0:
        return None
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def run(quick: bool = False, sizes: list[int] | None = None, runs: str | None = None,
        baseline_rev: str | None = BASELINE_REV, baseline_max: int = 200_000) -> dict:
    sizes = sizes or ([2_000, 20_000] if quick else list(SIZES))
    out: dict = {"sizes": sizes, "cpus": os.cpu_count(), "load_average_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(runs) if runs else Path(tmp) / "runs"
        warm_up = run_folder(folder, 40)
        base = baseline_source(baseline_rev, Path(tmp) / "baseline") if baseline_rev else None
        for n in sizes:
            path = run_folder(folder, n)
            cache = path / "analysis-cache"
            row: dict = {}
            shutil.rmtree(cache, ignore_errors=True)
            row["report_cold"] = _child(ROOT, "report", str(path))
            row["report_reopen"] = _child(ROOT, "report", str(path))
            if base is not None and n <= baseline_max:
                row["report_baseline"] = _child(base, "report", str(path))
            for name, page in PAGES.items():
                shutil.rmtree(cache, ignore_errors=True)
                row[f"{name}_cold"] = _child(ROOT, "page", page, str(path), str(warm_up))
                row[f"{name}_reopen"] = _child(ROOT, "page", page, str(path), str(warm_up))
                if base is not None and n <= baseline_max:
                    row[f"{name}_baseline"] = _child(base, "page", page, str(path), str(warm_up))
            out[str(n)] = row
            print(json.dumps({n: row}), flush=True)
    out["load_average_end"] = os.getloadavg()[0]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--runs", default=None, help="folder to keep the generated runs in (default: a temporary one)")
    ap.add_argument("--baseline-rev", default=BASELINE_REV, help="revision of the in-memory path ('' for none)")
    ap.add_argument("--baseline-max", type=int, default=200_000, help="largest run the baseline is measured on")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args(argv)
    if a.child:
        sys.path.insert(0, a.child[0])
        kind, *rest = a.child[1:]
        print(json.dumps(child_report(*rest) if kind == "report" else child_page(*rest)))
        return 0
    r = run(a.quick, a.sizes, a.runs, a.baseline_rev or None, a.baseline_max)
    print(f"\n{'images':>10} {'figure':28} {'time s':>8} {'warm s':>7} {'peak MB':>8}")
    for n in r["sizes"]:
        for key, m in r[str(n)].items():
            time_s = m.get("s", m.get("first_s"))
            print(f"{n:>10,} {key:28} {time_s if time_s is not None else m.get('error', '?')!s:>8} "
                  f"{m.get('warm_s', ''):>7} {m.get('peak_mb', ''):>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
