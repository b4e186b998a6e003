"""`texplain evaluate RUN [RUN ...]`: caption quality of runs (fluency, scene and object accuracy)."""
from __future__ import annotations

import json

FORMATS = ("text", "json", "md")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="caption quality of runs: fluency, scene and object accuracy",
                              description="Caption quality of runs whose dataset has reference captions: fluency "
                                          "(NLL under the plain LM vs the captions), scene and object accuracy, "
                                          "validation loss, example sentences.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder, or the name of a run in the runs folder")
    p.add_argument("--format", choices=FORMATS, default="text", help="json: a list with one object per run")
    p.add_argument("--captions", default=None, help="reference captions CSV (default: captions.csv of the dataset)")
    p.add_argument("--lm", default=None, help="language model to score fluency with (default: the run's)")
    p.add_argument("--max-sentences", type=int, default=400,
                   help="generated sentences (and captions) scored for fluency per run, a fixed sample; 0 = all")
    p.add_argument("--seed", type=int, default=0, help="seed of the fluency sample")
    p.add_argument("--no-save", action="store_true",
                   help="do not write RUN/evaluation.json (runs/.shipped/RUN/ for a shipped demo run; the bias "
                        "report shows it when present)")
    p.set_defaults(func=run)


def run(args) -> int:
    from core import paths
    from core.evaluation.captions import evaluate_run, save_evaluation, to_markdown, to_text
    from core.models.lm import load_language_model
    from core.store import resolve_run

    results, lms = [], {}
    runs = [resolve_run(value) for value in args.runs]  # every name checked before any model loads
    for run_ in runs:
        lm_name = args.lm or (run_.manifest.get("models") or {}).get("lm") or paths.DEFAULT_LM
        if lm_name not in lms:
            lms[lm_name] = load_language_model(lm_name)
        d = evaluate_run(run_, lms[lm_name], captions=args.captions, max_sentences=args.max_sentences or None,
                         seed=args.seed).to_dict()
        if not args.no_save:
            save_evaluation(run_, d)
        results.append(d)
    if args.format == "json":
        print(json.dumps(results, indent=2, allow_nan=False))
    else:
        render = to_text if args.format == "text" else to_markdown
        print("\n\n".join(render(d) for d in results))
    return 0
