"""`texplain setup`: prepare the offline assets (idempotent; each step is skipped when done)."""
from __future__ import annotations

STEPS = ("debs", "extract", "photos", "nltk", "lm")  # as core.demo.assets.STEPS, without importing it for --help


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("setup", help="prepare the offline assets: language model, WordNet, demo worlds",
                              description=__doc__)
    p.add_argument("--status", action="store_true", help="print what is ready and what is missing")
    p.add_argument("steps", nargs="*", metavar="STEP",
                   help=f"only these steps, of {', '.join(STEPS)} (default: all, then the demo worlds)")
    p.set_defaults(func=run)


def run(args) -> int:
    from core.demo import assets

    unknown = [s for s in args.steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown set-up step(s) {unknown}; choose from {', '.join(STEPS)}")
    if args.status:
        for s in assets.status():
            print(f"{'ok     ' if s.ready else 'MISSING'}  {s.name}: {s.detail}")
        return 0
    assets.prepare_all(args.steps or None)
    return 0
