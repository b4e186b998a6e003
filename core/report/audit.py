"""The CI gate: a verdict on a run's bias report from a few rules, so that a pull request can stop a biased model.

    rules = AuditRules(fail_under_worst_group=0.8, fail_on_flags=("water",))
    verdict = audit(build_report(run), rules)        # Verdict(passed, rules=[{rule, passed, value, evidence}])
    report["verdict"] = verdict.to_dict()            # the JSON report carries it (REPORT_SCHEMA's `verdict`)
    texplain audit RUN --fail-under-worst-group 0.8 --fail-on-flag water   # exit 1 when a rule is broken

A rule that cannot be checked on this run (a worst group without groups, an accuracy without scored
images, a threshold outside [0, 1]) is an AuditError: bad input, not a verdict.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import TExplainError


class AuditError(TExplainError, ValueError):
    """The rules cannot be checked on this run (or make no sense): exit status 2, not a failed audit."""


@dataclass
class AuditRules:
    """What a run must satisfy. Thresholds are fractions (0.8 = 80%); None leaves a rule out.

    `fail_on_flags`: words that must not be flagged for any class, in either view (error: they already cost
    accuracy; association: the classifier ties them to a class). `fail_on_any_flag`: no class may have an
    error-view flag at all (association flags exist in nearly every run, so they do not count here).
    """

    fail_under_worst_group: float | None = None
    fail_under_accuracy: float | None = None
    fail_on_flags: tuple[str, ...] = ()
    fail_on_any_flag: bool = False

    def __post_init__(self) -> None:
        for name in ("fail_under_worst_group", "fail_under_accuracy"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
                hint = f" (a fraction: {value / 100:g} for {value:g}%)" if isinstance(value, (int, float)) \
                    and 1 < value <= 100 else ""
                raise AuditError(f"{name.replace('_', '-')} must be a number in [0, 1]{hint}, got {value!r}")
        words = (self.fail_on_flags,) if isinstance(self.fail_on_flags, str) else tuple(self.fail_on_flags or ())
        cleaned = tuple(dict.fromkeys(str(w).strip().lower() for w in words))
        if any(not w for w in cleaned):
            raise AuditError(f"fail-on-flag needs non-blank words, got {list(words)!r}")
        self.fail_on_flags = cleaned

    @property
    def empty(self) -> bool:
        return (self.fail_under_worst_group is None and self.fail_under_accuracy is None and not self.fail_on_flags
                and not self.fail_on_any_flag)


@dataclass
class Verdict:
    passed: bool
    rules: list[dict] = field(default_factory=list)  # {rule, threshold, value, passed, evidence}

    @property
    def broken(self) -> list[dict]:
        return [r for r in self.rules if not r["passed"]]

    def to_dict(self) -> dict:
        return {"passed": self.passed, "rules": [dict(r) for r in self.rules]}

    def lines(self) -> list[str]:
        """One line per rule, broken ones first: what a CI log shows."""
        return [f"{'PASS' if r['passed'] else 'FAIL'} {r['rule']}: {r['evidence']}"
                for r in sorted(self.rules, key=lambda r: r["passed"])]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _interval(row: dict | None) -> str:
    if not row or row.get("ci_low") is None:
        return ""
    return f", 95% interval {_pct(row['ci_low'])} to {_pct(row['ci_high'])}"


def _worst_group(report: dict, threshold: float) -> dict:
    groups = report.get("groups")
    if not groups or groups.get("worst") is None:
        raise AuditError(f"run {report['run']['name']!r} has no groups (none in the dataset and no flagged word to "
                         "infer them from): --fail-under-worst-group cannot be checked; use --fail-under-accuracy")
    worst = groups["worst"]
    row = next((g for g in groups["per_group"] if g["group"] == groups["worst_group"]), None)
    kind = "inferred group" if groups["source"] == "inferred" else "group"
    size = f"{row['correct']} of {row['n']} images right" if row and row.get("correct") is not None else ""
    evidence = (f"worst {kind} {groups['worst_group_name']!r} is at {_pct(worst)} ({size}{_interval(row)}); "
                f"the rule asks for at least {_pct(threshold)}")
    return {"rule": "worst-group accuracy", "threshold": threshold, "value": worst, "passed": worst >= threshold,
            "evidence": evidence}


def _accuracy(report: dict, threshold: float) -> dict:
    acc = report["accuracy"]
    if acc.get("overall") is None:
        raise AuditError(f"run {report['run']['name']!r} has no scored images: --fail-under-accuracy cannot be checked")
    value = acc["overall"]
    evidence = (f"average accuracy is {_pct(value)} over {acc['n_images']} images; the rule asks for at least "
                f"{_pct(threshold)}")
    return {"rule": "accuracy", "threshold": threshold, "value": value, "passed": value >= threshold,
            "evidence": evidence}


def _flag_hits(report: dict, word: str | None, views: tuple[str, ...]) -> list[str]:
    """Where `word` (None: any word) is flagged: "landbird (error view): <its evidence>"."""
    flags = report["flags"]
    by_view = {"error": flags["by_class"], "association": (flags.get("association") or {}).get("by_class") or {}}
    hits = []
    for view in views:
        for cls, rows in by_view[view].items():
            for f in rows:
                if word is None or f["word"] == word:
                    hits.append(f"'{f['word']}' for {cls} ({view} view): {f['evidence']}")
    return hits


def _flag_rule(report: dict, word: str) -> dict:
    hits = _flag_hits(report, word, ("error", "association"))
    evidence = "; ".join(hits) if hits else f"'{word}' is not flagged for any class in either view"
    return {"rule": f"no flag '{word}'", "threshold": None, "value": len(hits), "passed": not hits,
            "evidence": evidence}


def _any_flag_rule(report: dict) -> dict:
    hits = _flag_hits(report, None, ("error",))
    shown = "; ".join(hits[:8]) + (f"; and {len(hits) - 8} more" if len(hits) > 8 else "")
    evidence = (f"{len(hits)} error-view flag(s): {shown}" if hits
                else "no class has an error-view flag (no word goes with misreading a class)")
    return {"rule": "no error-view flag", "threshold": None, "value": len(hits), "passed": not hits,
            "evidence": evidence}


def audit(report: dict, rules: AuditRules) -> Verdict:
    """The verdict of `rules` on `report` (core.report.build_report's dict, every flag kept: flags_k=None)."""
    if not isinstance(rules, AuditRules):
        raise TypeError(f"rules must be an AuditRules, got {type(rules).__name__}")
    if rules.empty:
        raise AuditError("no rule to check: give --fail-under-worst-group, --fail-under-accuracy, --fail-on-flag or "
                         "--fail-on-any-flag")
    kept = report["flags"].get("kept_per_class")
    if kept is not None and (rules.fail_on_flags or rules.fail_on_any_flag):
        raise AuditError(f"the report keeps only {kept} flags per class; build it with flags_k=None to audit flags")
    checked = []
    if rules.fail_under_worst_group is not None:
        checked.append(_worst_group(report, rules.fail_under_worst_group))
    if rules.fail_under_accuracy is not None:
        checked.append(_accuracy(report, rules.fail_under_accuracy))
    checked += [_flag_rule(report, w) for w in rules.fail_on_flags]
    if rules.fail_on_any_flag:
        checked.append(_any_flag_rule(report))
    return Verdict(all(r["passed"] for r in checked), checked)
