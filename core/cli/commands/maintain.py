"""`texplain maintain STEP`: rebuild the shipped demo artefacts (maintainers; each step writes into checkpoints/).

Waterbirds: classifiers (ERM and group-balanced EfficientNet-Lite0), select (pilot-train each candidate
translator shape and pick one by the caption evaluation of its val-split explanations), translators, runs,
fixed (ERM with its last layer refit on the groups its explanations revealed, with its mitigation record and
test run), all. ImageNet-9: general-world (the caption world of all usable stamps), imagenet9 (that, the mini
ImageNet-9 and the classifier's accuracy on each variation), general-translator (a translator for the
unmodified ImageNet classifier, trained on the general world), general-evaluation (how well its sentences
name unseen objects and scenes), imagenet9-runs (every variation explained with it), lite2 (the fast path on
ImageNet EfficientNet-Lite2: its aligned translator, that translator's evaluation, every variation explained with
it), lite2-trained (the fast path's reference: a translator trained on Lite2's features by the general recipe,
hours on a CPU; its evaluation goes beside the fast path's). Open world: open-world (objects and scenes with whole
scene packages held out), open-translator (trained on it), open-replay (one more epoch of it with the general
world's pairs replayed, so that it does not forget them), open-unlikely (one epoch of that mix from the general
translator, with the scene words of kinds an image does not show made unlikely), open-unlikely-objects (the same
with object words of superclasses unrelated to an image's objects made unlikely too), open-superclass (the same as
open-unlikely with one more caption per image naming its objects by superclass), open-mixup (the same with
features of two known objects of a superclass mixed and captioned by the superclass), open-gate (a scene gate for
open-unlikely: what its features rule out, its sentences do not say), open-evaluation (every translator at hand on
held-out scenes and objects). Evidence: word-maps (the pointing game of word maps on the
Waterbirds and ImageNet-9 test images, whose objects' masks the worlds know), causal (the causal test of the
Waterbirds ERM run's scene flags and a bird-word control).
"""
from __future__ import annotations

import argparse

WATERBIRDS_STEPS = ("classifiers", "select", "translators", "runs", "fixed", "all")
IMAGENET9_STEPS = ("general-world", "imagenet9", "general-translator", "general-evaluation", "imagenet9-runs",
                   "lite2", "lite2-trained")
OPEN_STEPS = ("open-world", "open-translator", "open-replay", "open-unlikely", "open-unlikely-objects",
              "open-superclass", "open-mixup", "open-gate", "open-evaluation")
EVIDENCE_STEPS = ("word-maps", "causal")
NAMES = ("erm", "robust")  # as core.demo.waterbirds.NAMES (that module imports torch)


def add_parser(subparsers) -> None:
    # No help=: argparse then leaves the verb out of `texplain --help`'s list (its epilog names it).
    p = subparsers.add_parser("maintain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="Each step is skipped when its output exists (--force rebuilds it).")
    p.add_argument("step", choices=WATERBIRDS_STEPS + IMAGENET9_STEPS + OPEN_STEPS + EVIDENCE_STEPS, metavar="STEP",
                   help="what to rebuild (see above)")
    p.add_argument("--force", action="store_true", help="rebuild even when the output exists")
    p.add_argument("--only", choices=NAMES, default=None, help="just one of the two Waterbirds classifiers")
    p.add_argument("--splits", default="test,val", help="splits to explain with `runs` (comma-separated)")
    p.add_argument("--dataset", default=None, metavar="FOLDER",
                   help="imagenet9 only: classify this ImageNet-9 copy (e.g. the real Backgrounds Challenge, its "
                        "variation folders side by side) instead of building the mini one")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="open-evaluation, word-maps, causal, lite2-trained: images to score (default: the step's own, "
                        "as shipped)")
    p.add_argument("--out", default=None, metavar="FOLDER",
                   help="imagenet9 only: where classifier_accuracy.json and predictions.csv go "
                        "(default runs/imagenet9)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.step in EVIDENCE_STEPS:
        from core.demo.evidence import build as build_evidence

        return build_evidence(args.step, force=args.force, limit=args.limit)
    if args.step in OPEN_STEPS:
        from core.demo.open_translator import build as build_open

        return build_open(args.step, force=args.force, limit=args.limit)
    if args.step == "lite2":
        from core.demo.lite2 import build as build_lite2

        return build_lite2(force=args.force)
    if args.step == "lite2-trained":
        from core.demo.lite2 import build_trained

        return build_trained(force=args.force, limit=args.limit)
    if args.step in IMAGENET9_STEPS:
        from core.demo.imagenet9 import build as build_imagenet9

        if (args.dataset or args.out) and args.step != "imagenet9":
            raise ValueError("--dataset and --out go with the imagenet9 step")
        return build_imagenet9(args.step, force=args.force, dataset=args.dataset,
                               **({"out_dir": args.out} if args.out else {}))
    from core.demo.waterbirds import build

    return build(args.step, force=args.force, only=args.only, splits=tuple(args.splits.split(",")))
