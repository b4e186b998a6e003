"""`python -m core evaluate RUN [RUN ...]`: caption quality of runs (fluency, scene and object accuracy)."""
from __future__ import annotations

FORMATS = ("text", "json", "md")  # as core.evaluate.FORMATS, without importing it to build the parser


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder, or the name of a run in the runs folder")
    p.add_argument("--format", choices=FORMATS, default="text", help="json: a list with one object per run")
    p.add_argument("--captions", default=None, help="reference captions CSV (default: captions.csv of the dataset)")
    p.add_argument("--lm", default=None, help="language model to score fluency with (default: the run's)")
    p.add_argument("--max-sentences", type=int, default=400,
                   help="generated sentences (and captions) scored for fluency per run, a fixed sample; 0 = all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-save", action="store_true",
                   help="do not write RUN/evaluation.json (runs/.shipped/RUN/ for a shipped demo run; the bias "
                        "report shows it when present)")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="caption quality of runs: fluency, scene and object accuracy",
                              description="Caption quality of runs whose dataset has reference captions: fluency "
                                          "(NLL under the plain LM vs the captions), scene and object accuracy, "
                                          "validation loss, example sentences.")
    add_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from core.evaluate import run_evaluate

    return run_evaluate(args)
