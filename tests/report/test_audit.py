"""`texplain audit`, the CI gate: exit 1 with each broken rule and its evidence, 0 when every rule holds, 2 for
bad input; the JSON report carries the verdict."""
from __future__ import annotations

import json

import pytest

from core import cli
from core.report import build_report, validate_report
from core.report.audit import AuditError, AuditRules, audit
from tests.fake_runs import make_waterbirds_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit")
    erm = make_waterbirds_run(root / "erm", name="erm")  # landbirds on water misread: worst group ~45%
    robust = make_waterbirds_run(root / "robust", name="robust", error_rates=(0.02, 0.05, 0.05, 0.02), seed=1)
    return erm, robust


def test_a_biased_run_fails_the_gate_with_evidence(runs, tmp_path, capsys):
    erm, _ = runs
    out = tmp_path / "ci" / "report.json"
    code = cli.main(["audit", str(erm.path), "--fail-under-worst-group", "0.8", "--fail-on-flag", "water",
                     "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 1
    assert "FAILED" in printed
    assert "FAIL worst-group accuracy: worst group 'landbird on water' is at" in printed
    assert "FAIL no flag 'water': 'water' for landbird (error view)" in printed
    report = json.loads(out.read_text())
    assert report["verdict"]["passed"] is False
    assert [r["passed"] for r in report["verdict"]["rules"]] == [False, False]
    validate_report(report)


def test_a_run_that_keeps_every_rule_passes(runs, capsys):
    _, robust = runs
    code = cli.main(["audit", str(robust.path), "--fail-under-worst-group", "0.8", "--fail-under-accuracy", "0.9",
                     "--fail-on-flag", "zebra"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "PASSED" in printed and "PASS worst-group accuracy" in printed and "'zebra' is not flagged" in printed


def test_bad_input_exits_2(runs, tmp_path, capsys):
    erm, _ = runs
    assert cli.main(["audit", str(tmp_path / "no-run"), "--fail-under-accuracy", "0.5"]) == 2
    assert cli.main(["audit", str(erm.path)]) == 2  # no rule
    assert "no rule to check" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # 80 where 0.8 was meant
        cli.main(["audit", str(erm.path), "--fail-under-accuracy", "80"])
    assert exc.value.code == 2 and "write 0.8 for 80%" in capsys.readouterr().err


def test_a_run_without_groups_cannot_be_gated_on_its_worst_group(tmp_path):
    run = make_waterbirds_run(tmp_path / "nogroups", name="nogroups", error_rates=(0, 0, 0, 0), with_groups=False)
    report = build_report(run)
    if report["groups"] is not None:  # inferred from association-view words: the gate says which groups it used
        assert report["groups"]["source"] == "inferred"
        assert "worst inferred group" in audit(report, AuditRules(fail_under_worst_group=0.1)).rules[0]["evidence"]
    report["groups"] = None  # nothing to infer groups from either
    with pytest.raises(AuditError, match="has no groups"):
        audit(report, AuditRules(fail_under_worst_group=0.8))
    assert audit(report, AuditRules(fail_under_accuracy=0.9)).passed


def test_any_flag_rule_counts_error_view_flags(runs):
    erm, robust = runs
    verdict = audit(build_report(erm), AuditRules(fail_on_any_flag=True))
    assert not verdict.passed and "error-view flag(s)" in verdict.broken[0]["evidence"]
    with pytest.raises(AuditError, match="keeps only 1 flags"):
        audit(build_report(erm, flags_k=1), AuditRules(fail_on_any_flag=True))
