"""`texplain verify RUN --class C --word W`: the causal test of a flag: does removing the word's region change
the classifier's predictions more than removing as much of the image elsewhere?"""
from __future__ import annotations

import json

from core.cli.options import default
from core.evaluation.causal import FILLS, MAP_METHODS, REGIONS, CausalSettings
from core.report.evidence import describe_removal


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("verify", help="causal test of a flag: RUN --class C --word W", description=__doc__)
    p.add_argument("run", metavar="RUN", help="run folder, or the name of a run in the runs folders")
    p.add_argument("--class", dest="class_name", required=True, help="the class whose images use the word")
    p.add_argument("--word", required=True, help="the flagged word (as the report lists it: a lemma)")
    p.add_argument("--share", type=float, default=default(CausalSettings, "share"),
                   help="share of the word map's pixels removed, its region (default %(default)s)")
    p.add_argument("--fill", choices=FILLS, default=default(CausalSettings, "fill"),
                   help="what the removed pixels become: a blur of the image, its mean colour, or (swap) the same "
                        "pixels of an image of the class whose sentences lack the word, with the same region from one "
                        "that uses it as the control instead of a random rectangle (default %(default)s)")
    p.add_argument("--region", choices=REGIONS, default=default(CausalSettings, "region"),
                   help="what is replaced: the top --share of the word's map, or (scene, with --fill swap) the whole "
                        "scene, all but the object (the top of the predicted class's Grad-CAM), each image's scene "
                        "swapped for another's: the test for a scene word such as water (default %(default)s)")
    p.add_argument("--map", dest="map_method", choices=MAP_METHODS, default=default(CausalSettings, "map_method"),
                   help="how the word's map is drawn: gradient (Grad-CAM of the word, needs a spatial feature map), "
                        "occlusion (patches hidden one at a time: slower, and the better map where "
                        "a fine-tuned classifier's features at the object carry its background), auto: gradient where "
                        "it can "
                        "(default %(default)s)")
    p.add_argument("--predicted", default=None, metavar="CLASS",
                   help="only the class's images predicted as CLASS (e.g. the landbirds read as waterbirds, where "
                        "the flag was found)")
    p.add_argument("--max-images", type=int, default=None, help="test at most this many of the class's images")
    p.add_argument("--seed", type=int, default=default(CausalSettings, "seed"),
                   help="seed of the control rectangles (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from core.evaluation.causal import verify_flag
    from core.models import load_classifier, load_language_model
    from core.models.registry import run_model_sources
    from core.models.translator import Translator
    from core.store import resolve_run

    run_ = resolve_run(args.run)
    sources = run_model_sources(run_.manifest)
    classifier, lm = load_classifier(sources.classifier), load_language_model(sources.lm)
    translator = Translator.from_pretrained(sources.translator, classifier, lm)
    settings = CausalSettings(share=args.share, fill=args.fill, seed=args.seed, max_images=args.max_images,
                              predicted=args.predicted, map_method=args.map_method, region=args.region)
    result = verify_flag(run_, args.class_name, args.word, classifier, translator, lm, settings,
                         progress=lambda i, n, s: print(f"\r{i}/{n} images, {s:.0f} s", end="", flush=True))
    print()
    s = result.summary()
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return 0
    if s["images"] == 0:
        read_as = f" predicted {args.predicted}" if args.predicted else ""
        print(f"no {args.class_name} image{read_as} of {run_.name} uses {args.word!r}: nothing to test")
        return 0
    p, c = s["prediction_changed"], s["control_prediction_changed"]
    done, control = describe_removal(args.fill, args.share if args.region == "map" else None)
    print(f"{args.word!r} under {args.class_name}: {s['verdict'].upper()} on {s['images']} images. With "
          f"{done}, {p['rate']:.0%} of predictions changed (95% {p['ci95'][0]:.0%}-{p['ci95'][1]:.0%}); with "
          f"{control}, {c['rate']:.0%} ({c['ci95'][0]:.0%}-{c['ci95'][1]:.0%}). The word's share went "
          f"{s['mean_share_before']:.0%} -> {s['mean_share_after']:.0%} (control {s['mean_share_control']:.0%}).")
    if "right_after" in s:
        r, rc = s["right_after"], s["control_right_after"]
        print(f"Right afterwards: {r['rate']:.0%} of the images (95% {r['ci95'][0]:.0%}-{r['ci95'][1]:.0%}); after the "
              f"control {rc['rate']:.0%} ({rc['ci95'][0]:.0%}-{rc['ci95'][1]:.0%}).")
    return 0
