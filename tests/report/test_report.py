"""Tests for core.report (JSON, Markdown, self-contained HTML, the `report` command) and core.plots."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from core import cli, plots
from core.analysis import SpuriousTermScorer, compare_runs, compare_word_sets, image_set, word_shares
from core.report import REPORT_SCHEMA, SCHEMA_VERSION, build_report, to_html, to_json, to_markdown, validate_report
from tests.fake_runs import CLASSES, WATER_WORDS, make_waterbirds_run

MITIGATION = [{"method": "last-layer reweighting", "groups": "inferred", "worst_group_before": 0.41,
               "worst_group_after": 0.78, "average_before": 0.73, "average_after": 0.86}]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-runs")
    erm = make_waterbirds_run(root / "erm", name="erm")
    robust = make_waterbirds_run(root / "robust", name="robust", error_rates=(0.05, 0.1, 0.1, 0.05), seed=1)
    (erm.path / "mitigation.json").write_text(json.dumps(MITIGATION))
    return erm, robust


@pytest.fixture(scope="module")
def report(runs):
    erm, robust = runs
    return build_report(erm, compare=robust)


def _validate_strictly(report: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(REPORT_SCHEMA)
    jsonschema.validate(report, REPORT_SCHEMA)


def test_json_report_follows_the_schema_and_flags_water_for_landbird(report):
    _validate_strictly(report)
    validate_report(report)
    text = to_json(report)
    assert json.loads(text) == report  # JSON-able as it is: no NaN, no numpy types
    assert report["schema_version"] == SCHEMA_VERSION
    top3 = [f["word"] for f in report["flags"]["by_class"]["landbird"][:3]]
    assert set(top3) & WATER_WORDS and top3[0] in WATER_WORDS
    assert "landbird" in report["flags"]["definition"]
    # The association view names water words for waterbird, each confirmed by its gap between true groups.
    assoc = report["flags"]["association"]["by_class"]["waterbird"]
    assert assoc and assoc[0]["word"] in WATER_WORDS and assoc[0]["confirmed"] is True
    assert assoc[0]["group_high"].endswith("on water") and assoc[0]["share_group_high"] > assoc[0]["share_group_low"]
    notes = {(n["class"], n["view"]): n for n in report["flags"]["notes"]}
    assert notes[("landbird", "error")]["n_flags"] > 0 and notes[("landbird", "error")]["reason"] is None
    groups = report["groups"]
    assert groups["source"] == "true" and groups["worst_group_name"] == "landbird on water"
    # Training shares favour the easy majority groups, so that average is higher than the test-weighted one.
    assert groups["average_train_weighted"] > groups["average_test_weighted"]
    assert report["inferred_groups"]["agreement"]["accuracy"] > 0.9
    assert report["mitigation"][0]["worst_group_after"] == 0.78
    assert report["provenance"]["seed"] == 7 and report["provenance"]["models"]["lm"] == "smollm2-135m"
    assert report["run"]["evaluation_split"] == "test"
    cmp = report["comparison"]
    assert cmp["run"]["name"] == "robust" and cmp["groups"]["worst"] > groups["worst"]
    assert {d["class"] for d in cmp["divergence"]} == set(CLASSES)


def test_schema_rejects_a_broken_report(report):
    broken = json.loads(to_json(report))
    del broken["flags"]["by_class"]["landbird"][0]["evidence"]
    with pytest.raises(ValueError, match="REPORT_SCHEMA"):
        validate_report(broken)
    with pytest.raises(ValueError):
        validate_report({**report, "schema_version": 99})


def test_markdown_has_the_tables_a_pull_request_needs(report):
    md = to_markdown(report)
    assert md.startswith("# TExplain bias report: erm")
    assert "| class | images | accuracy | 95% CI |" in md
    assert "| group | images | accuracy | 95% CI |" in md
    assert "**Worst group:** landbird on water" in md
    assert "weighted by training group shares" in md
    assert re.search(r"### Error view: flags for landbird \(\d+\)\n\n\| # \| word \| pulls toward \|", md)
    assert re.search(r"#### Associated with waterbird \(\d+\)\n\n\| # \| word \| predicted waterbird \|", md)
    flag_line = next(line for line in md.splitlines() if line.startswith("| 1 | **"))
    assert "predicted as waterbird" in flag_line
    assert "### landbird" in md and "## Mitigation" in md and "41.0% → 78.0%" in md
    assert "## Comparison with robust" in md and "## Provenance" in md and "smollm2-135m" in md


def test_html_is_one_self_contained_file(report):
    page = to_html(report)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"<script[^>]+src\s*=", page, re.IGNORECASE)  # no external (or any) script src
    assert not re.search(r"<link[^>]+href\s*=\s*[\"']https?://", page, re.IGNORECASE)
    assert len(re.findall(r"\* plotly\.js v\d", page)) == 1  # the bundle, inlined exactly once
    assert page.count("Plotly.newPlot(") >= 4  # flags, groups, inferred groups, words, mitigation, comparison
    assert ("Error view: flags for landbird" in page and "Associated with waterbird" in page and "Provenance" in page
            and "smollm2-135m" in page)
    embedded = re.search(r"<script type='application/json' id='texplain-report'>(.*?)</script>", page, re.S)
    assert json.loads(embedded.group(1))["run"]["name"] == "erm"


def test_report_without_groups_infers_them_and_says_so(tmp_path):
    run = make_waterbirds_run(tmp_path / "nogroups", with_groups=False)
    report = build_report(run)
    _validate_strictly(report)
    assert report["groups"]["source"] == "inferred"
    assert report["groups"]["average_train_weighted"] is None
    assert report["inferred_groups"]["agreement"] is None
    assert any("inferred" in note for note in report["notes"])
    assert report["mitigation"] is None and report["comparison"] is None
    assert "Groups (inferred from flagged words)" in to_markdown(report)


def test_report_command_writes_each_format(tmp_path, runs, capsys):
    erm, robust = runs
    assert cli.main(["report", str(erm.path), "--format", "json", "--out", str(tmp_path / "r.json")]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["comparison"] is None
    assert cli.main(["report", str(erm.path), "--compare", str(robust.path), "--out", str(tmp_path / "r.html")]) == 0
    assert "Comparison with robust" in (tmp_path / "r.html").read_text()
    assert cli.main(["report", str(erm.path), "--format", "md"]) == 0
    assert capsys.readouterr().out.startswith("# TExplain bias report: erm")
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    assert "no run at" in capsys.readouterr().err


def test_plots_build_from_analysis_tables(runs):
    erm, robust = runs
    shares = word_shares(erm, by="label")
    fig = plots.class_words_chart(shares, by="label", k=5)
    assert len(fig.data) == 2 and fig.data[0].error_x.array is not None
    assert plots.top_words_chart(shares[shares["label"] == "landbird"], k=5).data[0].y[-1] == "bird"
    cmp = compare_word_sets(image_set(erm, label="landbird", prediction="waterbird", name="misread"),
                            image_set(erm, label="landbird", prediction="landbird", name="right"))
    butterfly = plots.log_odds_chart(cmp, k=3)
    assert "misread" in butterfly.layout.title.text and max(butterfly.data[0].x) == cmp["z"].max()
    flags = SpuriousTermScorer().fit(erm).flags_
    assert len(plots.flags_chart(flags).data) == 4
    # A panel that shows fewer flags than its class has says how many it leaves out.
    n = int((flags["class"] == "landbird").sum())
    titles = [a.text for a in plots.flags_chart(flags, k=1).layout.annotations]
    assert n > 1 and f"top 1 of {n} flags for landbird" in titles
    assert "flags for landbird" in [a.text for a in plots.flags_chart(flags, k=n).layout.annotations]
    # Nine classes' flags wrap at four panels a row (side by side, the last panel fell off the page).
    nine = pd.DataFrame([{"class": f"class {c}", "word": w, "share_wrong": 0.5, "share_right": 0.1}
                         for c in range(9) for w in ("a", "b")])
    wrapped = plots.flags_chart(nine)
    rows = {tuple(wrapped.layout[f"yaxis{i if i > 1 else ''}"].domain) for i in range(1, 10)}
    cols = {tuple(wrapped.layout[f"xaxis{i if i > 1 else ''}"].domain) for i in range(1, 10)}
    assert len(rows) == 3 and len(cols) == 4 and wrapped.layout.height > plots.flags_chart(flags).layout.height
    per_group = pd.DataFrame({"group": [0, 1], "group_name": ["a", "b"], "accuracy": [0.9, 0.4], "n": [10, 10]})
    bars = plots.group_accuracy_chart(per_group)
    assert list(bars.data[0].marker.color) == [plots.GREY, plots.RED]
    with_ci = plots.group_accuracy_chart(per_group.assign(ci_low=[0.6, 0.2], ci_high=[0.97, 0.6]))
    labels = [(a.y, a.text, a.yshift) for a in with_ci.layout.annotations]
    assert labels == [(0.97, "90%", 4), (0.6, "40%", 4)]  # above the CI, lifted clear of its cap
    assert not any(t.showlegend is not False for t in with_ci.data)  # nothing to explain in a legend
    assert len(plots.mitigation_chart(MITIGATION).data) == 4
    assert len(plots.run_comparison_chart(compare_runs(erm, robust), k=4).data) == 4
    assert plots.top_words_chart(shares.iloc[0:0]).layout.annotations[0].text == "No words to show"
    with pytest.raises(ValueError, match="missing columns"):
        plots.top_words_chart(pd.DataFrame({"word": ["a"]}))


def test_multi_panel_legends_sit_above_the_panel_titles():
    import pandas as pd

    from core import plots

    rows = pd.DataFrame({"method": ["dfr", "dfr"], "groups": ["true", "inferred"], "worst_group_before": [0.4, 0.4],
                         "worst_group_after": [0.8, 0.7], "average_before": [0.7, 0.7], "average_after": [0.9, 0.85]})
    fig = plots.legend_clear_of_titles(plots.mitigation_chart(rows))
    assert fig.layout.annotations and fig.layout.legend.yref == "container" and fig.layout.margin.t >= 90
    words = pd.DataFrame({"word": ["water", "tree"], "share": [0.3, 0.1]})
    single = plots.legend_clear_of_titles(plots.top_words_chart(words))
    assert single.layout.legend.yref is None  # nothing to move on a one-panel chart
