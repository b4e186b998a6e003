"""`texplain audit RUN`: the CI gate. Exit 0 when the run passes every rule, 1 when it breaks one (each broken
rule printed with its evidence), 2 for bad input (no such run, a rule that cannot be checked)."""
from __future__ import annotations

import sys
from pathlib import Path


def _fraction(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.8, got {text!r}") from None
    if not 0 <= value <= 1:
        hint = f" (write {value / 100:g} for {value:g}%)" if 1 < value <= 100 else ""
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1]{hint}, got {text!r}")
    return value


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "audit", help="the CI gate: exit 1 when RUN breaks a rule (worst group, accuracy, flagged words)",
        description="Check a run against rules and exit 1 when it breaks one, printing each broken rule and its "
                    "evidence (0: every rule holds; 2: bad input). For a pull request's CI: stop a biased model.")
    p.add_argument("run", help="run folder, or the name of a run in the runs folder")
    p.add_argument("--fail-under-worst-group", type=_fraction, metavar="X",
                   help="fail when worst-group accuracy (true groups, else inferred ones) is below X, e.g. 0.8")
    p.add_argument("--fail-under-accuracy", type=_fraction, metavar="X",
                   help="fail when average accuracy is below X, e.g. 0.9")
    p.add_argument("--fail-on-flag", action="append", default=[], metavar="WORD",
                   help="fail when WORD is flagged for any class, in either view (repeat for several words)")
    p.add_argument("--fail-on-any-flag", action="store_true",
                   help="fail when any class has an error-view flag (a word that goes with misreading it)")
    p.add_argument("--json", metavar="FILE", help="also write the JSON report, with its verdict, to FILE")
    p.add_argument("--split", default="auto", help="split to evaluate on (default: test when present, else all)")
    p.add_argument("--min-misread", type=int, default=None, metavar="N",
                   help="misread images a class needs for error-view flags (default: 3)")
    p.add_argument("--min-z", type=float, default=None, metavar="Z", help="log-odds z a flag needs (default: 2)")
    p.set_defaults(func=run)


def run(args) -> int:
    from core.report import build_report, to_json
    from core.report.audit import AuditRules, audit
    from core.store import resolve_run

    rules = AuditRules(args.fail_under_worst_group, args.fail_under_accuracy, tuple(args.fail_on_flag),
                       args.fail_on_any_flag)  # checked before the run is read: a bad rule fails fast
    if rules.empty:
        from core.report.audit import AuditError

        raise AuditError("no rule to check: give --fail-under-worst-group, --fail-under-accuracy, --fail-on-flag "
                         "WORD or --fail-on-any-flag")
    run_ = resolve_run(args.run)
    problem = run_.health().describe()
    if problem:
        print(f"warning: run {run_.path} is {problem}", file=sys.stderr)
    split = None if args.split in ("all", "none") else args.split
    params = {k: v for k, v in (("min_misread", args.min_misread), ("min_z", args.min_z)) if v is not None}
    report = build_report(run_, split=split, scorer_params=params, flags_k=None)
    verdict = audit(report, rules)
    report["verdict"] = verdict.to_dict()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        to_json(report, args.json)
    print(f"audit of {report['run']['name']} ({run_.path}): {'PASSED' if verdict.passed else 'FAILED'}")
    for line in verdict.lines():
        print(f"  {line}")
    if args.json:
        print(f"wrote the JSON report with its verdict to {args.json}", file=sys.stderr)
    return 0 if verdict.passed else 1
