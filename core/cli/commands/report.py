"""`texplain report RUN`: write the bias report of a run (HTML, JSON or Markdown)."""
from __future__ import annotations

import sys
from pathlib import Path

FORMATS = ("html", "json", "md")  # as core.report.FORMATS, without importing it (and plotly) to build the parser
SUFFIXES = {"htm": "html", "html": "html", "json": "json", "md": "md", "markdown": "md"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="write a bias report: RUN [--compare RUN2] --format html|json|md",
                              description="Write the bias report of a run (HTML, JSON or Markdown).")
    p.add_argument("run", help="run folder, or the name of a run in the runs folder")
    p.add_argument("--compare", metavar="RUN2", help="a second run on the same data to compare with")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="output format (default: from --out's extension, else md)")
    p.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    p.add_argument("--split", default="auto", help="split to evaluate on (default: test when present, else all)")
    p.add_argument("--min-misread", type=int, default=None, metavar="N",
                   help="misread images a class needs for error-view flags (default: 3)")
    p.add_argument("--min-z", type=float, default=None, metavar="Z", help="log-odds z a flag needs (default: 2)")
    p.set_defaults(func=run)


def run(args) -> int:
    from core.report import build_report, to_html, to_json, to_markdown
    from core.store import resolve_run

    fmt = args.format
    if fmt is None:
        suffix = Path(args.out).suffix.lower().lstrip(".") if args.out else ""
        fmt = SUFFIXES.get(suffix, "md")
    run_ = resolve_run(args.run)
    other = resolve_run(args.compare) if args.compare else None
    for r in (run_, other):
        problem = r.health().describe() if r is not None else None
        if problem:
            print(f"warning: run {r.path} is {problem}", file=sys.stderr)
    split = None if args.split in ("all", "none") else args.split
    params = {k: v for k, v in (("min_misread", args.min_misread), ("min_z", args.min_z)) if v is not None}
    report = build_report(run_, compare=other, split=split, scorer_params=params)
    text = {"json": lambda r: to_json(r), "md": to_markdown, "html": to_html}[fmt](report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        print(f"wrote {fmt} report to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
