"""`python -m core mitigate RUN_VAL`: fix a classifier's reliance on flagged words, and measure it.

The options and the work live in core.mitigate_cli; this registers them as a verb of the one CLI tree.
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from core import mitigate_cli

    doc = mitigate_cli.__doc__.splitlines()
    p = subparsers.add_parser("mitigate", help="fix a classifier (last-layer reweighting, MaskTune): "
                                               "RUN_VAL --test-run RUN_TEST",
                              description=doc[0], epilog="\n".join(doc[1:]),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    mitigate_cli.add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from core.mitigate_cli import _mitigate

    return _mitigate(args)
