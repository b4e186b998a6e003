"""`python -m core setup`: prepare the offline assets (idempotent; each step is skipped when done)."""
from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("setup", help="prepare the offline assets (idempotent)", description=__doc__)
    p.add_argument("--status", action="store_true", help="print what is ready and what is missing")
    p.set_defaults(func=run)


def run(args) -> int:
    from core.assets import main as assets_main

    return assets_main(["--status"] if args.status else [])
