"""`python -m bench.discovery build|run|table`: the planted-bias worlds, the benchmark, its table again.

    python -m bench.discovery build                       # every world of the suite (about 2 minutes on 2 cores)
    python -m bench.discovery run                         # linear-head tier over the suite: table + JSON
    python -m bench.discovery run --tier finetune         # fine-tuned classifiers, fast-path translators (2 worlds)
    python -m bench.discovery table bench/results/discovery-linear.json
"""
from __future__ import annotations

import argparse
import json
import sys

FINETUNE_MAX_WORLDS = 2  # the fine-tune tier costs a fine-tune, a translator alignment and a run per world


def main(argv: list[str] | None = None) -> int:
    from bench.discovery import run as R
    from bench.discovery import worlds as W

    ap = argparse.ArgumentParser(prog="python -m bench.discovery", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)
    b = sub.add_parser("build", help="build the planted-bias worlds (deterministic; current ones are kept)")
    b.add_argument("--worlds", nargs="*", default=None, help=f"some of {[w.name for w in W.SUITE]}")
    b.add_argument("--force", action="store_true", help="rebuild even when current")
    b.add_argument("--workers", type=int, default=None, help="rendering processes (default: up to 2)")
    r = sub.add_parser("run", help="run the benchmark over the worlds: a table and a JSON file")
    r.add_argument("--worlds", nargs="*", default=None, help="some worlds (default: the suite)")
    r.add_argument("--tier", choices=R.TIERS, default="linear",
                   help="linear: a linear head on frozen ImageNet features, explained by the shipped general "
                        "translator; finetune: a fine-tuned classifier with a fast-path translator (costly)")
    r.add_argument("--sentences", type=int, default=None, help=f"sentences per image (default "
                                                                f"{R.BenchSettings.sentences})")
    r.add_argument("--max-worlds", type=int, default=None,
                   help=f"run at most this many worlds (default for --tier finetune: {FINETUNE_MAX_WORLDS})")
    r.add_argument("--json", default=None, help="where the JSON goes (default bench/results/discovery-TIER.json)")
    r.add_argument("--force", action="store_true", help="score worlds again even when a result is kept")
    r.add_argument("--all-worlds", action="store_true",
                   help="also explain worlds whose classifier did not learn the cue (by default they stop after the "
                        "classifier: nothing to discover, and they do not count toward hit@3)")
    t = sub.add_parser("table", help="print the tables of a JSON file written by `run`")
    t.add_argument("json_file")
    a = ap.parse_args(argv)

    if a.verb == "build":
        out = W.build_suite(a.worlds, force=a.force, workers=a.workers)
        for folder in out.folders:
            world = W.read_world(folder)
            print(f"{world['name']:24s} {world['cue']['kind']:8s} train correlation {world['train_correlation']:.3f}"
                  f"  counts {world['counts']}")
        print(f"{len(out.folders)} worlds in {out.seconds:.0f} s under {W.WORLDS}")
        return 0
    if a.verb == "table":
        data = json.loads(open(a.json_file).read())
        print(R.world_table(data["worlds"]))
        print()
        print(R.kind_table(data["summary"]))
        print()
        print(R.verdict(data["summary"]))
        return 0
    settings = R.replace_settings(R.BenchSettings(), sentences=a.sentences)
    max_worlds = a.max_worlds if a.max_worlds is not None else (FINETUNE_MAX_WORLDS if a.tier == "finetune" else None)
    R.run_suite(a.worlds, a.tier, settings, force=a.force, json_out=a.json, max_worlds=max_worlds,
                explain_unlearned=a.all_worlds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
