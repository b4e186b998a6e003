"""`python -m core demo STEP`: rebuild the shipped demo artefacts (classifiers, select, translators, runs, fixed).

select: pilot-train each candidate translator (mapper, prefix length) for ERM and pick one by the caption
evaluation of its val-split explanations; `translators` then trains the chosen one for both classifiers.
"""
from __future__ import annotations

import argparse

NAMES = ("erm", "robust")  # as core.demo_models.NAMES (that module imports torch)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="rebuild the shipped demo artefacts: classifiers|select|translators|runs|fixed",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="Each step writes into checkpoints/ and is skipped when its output exists.")
    p.add_argument("step", choices=["classifiers", "select", "translators", "runs", "fixed", "all", "general-world",
                                    "imagenet9", "general-translator", "general-evaluation", "imagenet9-runs"],
                   help="fixed: ERM with its last layer refit on the groups its explanations revealed (DFR), "
                        "its mitigation record and its test run; general-world: the caption world of all usable "
                        "stamps (.assets/general-world); imagenet9: that, the mini ImageNet-9 Backgrounds "
                        "Challenge and the ImageNet classifier's accuracy on each variation (core.demo_imagenet9); "
                        "general-translator: a translator for the unmodified ImageNet classifier, trained on the "
                        "general world; general-evaluation: how well its sentences name unseen objects and scenes "
                        "(checkpoints/translators/general/evaluation.json); imagenet9-runs: every variation "
                        "explained with it")
    p.add_argument("--force", action="store_true", help="rebuild even when the output exists")
    p.add_argument("--only", choices=NAMES, default=None, help="just one of the two classifiers")
    p.add_argument("--splits", default="test,val", help="splits to explain with `runs` (comma-separated)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.step in ("general-world", "imagenet9", "general-translator", "general-evaluation", "imagenet9-runs"):
        from core.demo_imagenet9 import build as build_imagenet9

        return build_imagenet9(args.step, force=args.force)
    from core.demo_models import build

    return build(args.step, force=args.force, only=args.only, splits=tuple(args.splits.split(",")))
