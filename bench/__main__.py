"""Runs every benchmark and prints its figures: `python -m bench [--quick]` (`make bench`)."""
import argparse
import importlib
import json
import sys
import time

BENCHES = ["bench_words", "bench_generate", "bench_precision", "bench_train", "bench_memory", "bench_dashboard",
           "bench_scaling", "bench_evaluate", "bench_workers", "bench_ray", "bench_word_maps", "bench_adaptive",
           "bench_scale"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    ap.add_argument("--only", nargs="*", default=None, help=f"some of {BENCHES}")
    a = ap.parse_args()
    results, failed = {}, []
    for name in a.only or BENCHES:
        t = time.time()
        print(f"== {name}", flush=True)
        try:
            results[name] = importlib.import_module(f"bench.{name}").run(quick=a.quick)
        except Exception as exc:  # one failing bench must not hide the others' figures
            failed.append(name)
            print(f"   failed: {exc!r}")
            continue
        print(json.dumps(results[name], indent=1), f"\n   ({time.time() - t:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
