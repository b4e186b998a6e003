"""The bias report as one self-contained HTML file: Jinja2's templates/report.html.j2 lays out the tables and
sentences of core.report.view and interactive Plotly charts (plotly.js inlined once), and carries the
report's JSON in a script element, so the file is both a page to read and data to parse."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from core import plots
from core.report import view
from core.report.build import mitigation_cautions, to_json
from core.report.evidence import causal_text, example_maps
from core.report.schema import validate_report
from core.report.view import pct

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=False)


class _Blocks(list):
    """The page's body, top to bottom: headings, paragraphs, tables and charts (the template draws each)."""

    def __init__(self):
        super().__init__()
        self.charts = 0

    def h2(self, text: str) -> None:
        self.append({"kind": "h2", "text": text})

    def h3(self, text: str) -> None:
        self.append({"kind": "h3", "text": text})

    def p(self, text: str, css: str = "") -> None:
        self.append({"kind": "p", "text": text, "css": css})

    def table(self, table: view.Table) -> None:
        self.append({"kind": "table", "table": table})

    def chart(self, fig) -> None:
        html = plots.legend_clear_of_titles(fig).to_html(full_html=False, include_plotlyjs=self.charts == 0,
                                                         config={"displaylogo": False, "responsive": True})
        self.charts += 1
        self.append({"kind": "chart", "html": html})


def _evidence(b: _Blocks, cls: str, rows: list[dict], maps: dict) -> None:
    """Each flag's causal verdict and the word's map on its example images, where they were computed."""
    for f in rows:
        if f.get("causal"):
            verdict = f["causal"]["verdict"]
            b.p(causal_text(f["causal"], cls, f["word"]), "causal" if verdict == "causal" else "causal other")
        if pictures := maps.get((cls, f["word"])):
            b.append({"kind": "maps", "title": f"Where '{f['word']}' comes from in example {cls} images",
                      "items": [{"uri": m["uri"], "caption": f"image {m['image_id']}"} for m in pictures]})


def _flags(b: _Blocks, report: dict) -> None:
    flags = report["flags"]
    b.h2("Spurious-term flags")
    b.p(flags["definition"], "def")
    b.chart(plots.flags_chart(pd.DataFrame([dict(f, **{"class": c}) for c, fs in flags["by_class"].items()
                                            for f in fs])))
    maps = example_maps(report)
    n_examples = sum(len(f.get("example_image_ids") or []) for fs in flags["by_class"].values() for f in fs)
    if maps or (report.get("word_map_reliability") or {}).get("text"):
        n = sum(len(v) for v in maps.values())
        b.p(f"Word maps show where in an image the classifier's features make the language model say the word "
            f"(red: most, blue: least). They are drawn where they were computed ({n} of {n_examples} example images; "
            "the dashboard computes them on Explain an image, Spurious terms and the Report page), so building "
            "this report loads no model. " + ((report.get("word_map_reliability") or {}).get("text") or ""), "def")
    for cls, rows in flags["by_class"].items():
        b.h3(view.flags_heading(flags, cls, "error"))
        if rows:
            b.table(view.flags_table(rows, examples=True))
            _evidence(b, cls, rows, maps)
        else:
            b.p(view.no_flags(flags, cls, "error"))
    assoc = flags.get("association")
    if assoc:
        b.h3("Association view")
        b.p(assoc["definition"], "def")
        for cls, rows in assoc["by_class"].items():
            b.h3(view.flags_heading(flags, cls, "association"))
            if rows:
                b.table(view.association_table(cls, rows, evidence=True))
                _evidence(b, cls, rows, {})
            else:
                b.p(view.no_flags(flags, cls, "association"))


def _groups(b: _Blocks, report: dict) -> None:
    groups, inferred = report["groups"], report["inferred_groups"]
    if groups:
        b.h2(view.groups_title(groups))
        b.chart(plots.group_accuracy_chart(pd.DataFrame(groups["per_group"]), groups["worst_group"],
                                           groups["average_test_weighted"]))
        b.p(f"Worst group: {groups['worst_group_name']}, {pct(groups['worst'])}. Average accuracy: "
            f"{view.group_averages(groups)}.", "worst")
    if inferred and groups and groups["source"] == "true":
        b.h2("Inferred groups")
        b.p(view.inferred_groups_text(inferred))
        b.chart(plots.group_accuracy_chart(pd.DataFrame(inferred["per_group"]), title="Accuracy per inferred group"))
        if inferred["agreement"]:
            b.p(view.agreement_text(inferred["agreement"]))


def _comparison(b: _Blocks, report: dict) -> None:
    cmp = report["comparison"]
    if not cmp:
        return
    b.h2(f"Comparison with {cmp['run']['name']}")
    b.table(view.comparison_table(report))
    if text := view.divergence_text(cmp):
        b.p(text)
    rows = [dict(w, label=c) for c, ws in cmp["changed_words"].items() for w in ws]
    per = "images predicted as each class" if cmp.get("by") == "prediction" else "each class"
    b.chart(plots.run_comparison_chart(pd.DataFrame(rows), by="label", a_name=report["run"]["name"],
                                       b_name=cmp["run"]["name"],
                                       title=f"Words that changed most, per {per}"))


def _backgrounds(b: _Blocks, report: dict) -> None:
    bg = report.get("backgrounds")
    if not bg:
        return
    b.h2("Background variations (ImageNet-9)")
    b.table(view.variations_table(bg))
    if text := view.bg_gap_text(bg):
        b.p(text)
    if bg["error_words"]:
        b.p("Words that rise from the original photos to the mixed_rand images read wrong:")
        b.table(view.error_words_table(bg))
    if bg.get("by_class"):
        b.p("Accuracy per class and variation (each a group):")
        b.table(view.class_variation_table(bg["by_class"]))
        if bg.get("worst_cell"):
            b.p(view.worst_cell_text(bg["worst_cell"]))
        b.chart(plots.class_variation_heatmap(pd.DataFrame(bg["by_class"]), bg.get("worst_cell")))
    for note in bg["notes"]:
        b.append({"kind": "note", "text": note})


def to_html(report: dict) -> str:
    """One self-contained HTML page of the report (see the module docstring)."""
    validate_report(report)
    prov, acc, groups = report["provenance"], report["accuracy"], report["groups"]
    kpis = [("overall accuracy", pct(acc["overall"]))]
    if groups:
        kpis.append((f"worst group ({groups['worst_group_name']})", pct(groups["worst"])))
        if groups.get("average_train_weighted") is not None:
            kpis.append(("average, training-weighted", pct(groups["average_train_weighted"])))
    b = _Blocks()
    if report.get("verdict"):
        b.h2(f"Audit: {'passed' if report['verdict']['passed'] else 'FAILED'}")
        for line in view.verdict_lines(report["verdict"]):
            b.p(line, "worst" if line.startswith("FAIL") else "")
    _flags(b, report)
    b.h2("Accuracy")
    b.table(view.accuracy_table(acc))
    _groups(b, report)
    b.h2("Top words per class")
    b.chart(plots.class_words_chart(pd.DataFrame([dict(w, label=c) for c, ws in report["top_words"]["by_class"].items()
                                                  for w in ws]), by="label"))
    if report["mitigation"]:
        b.h2("Mitigation")
        b.chart(plots.mitigation_chart(pd.DataFrame(report["mitigation"])))
        b.table(view.mitigation_table(report["mitigation"]))
        for caution in mitigation_cautions(report["mitigation"]):
            b.append({"kind": "note", "text": caution})
    if report.get("slices"):
        b.h2("Slices")
        b.p("Images whose sentences use the slice's words (any of them unless it says 'and').")
        b.table(view.slices_table(report["slices"]))
    _comparison(b, report)
    _backgrounds(b, report)
    if report.get("evaluation"):
        from core.evaluation.captions import to_html as evaluation_html

        b.append({"kind": "html", "html": evaluation_html(report["evaluation"])})
    b.h2("Provenance")
    b.table(view.provenance_table(report))
    data = to_json(report, indent=None).replace("</", "<\\/")  # JSON that cannot end the script element
    return _environment().get_template("report.html.j2").render(
        run=report["run"], models={k: prov["models"].get(k) for k in ("classifier", "translator", "lm")},
        dataset={"name": prov["dataset"].get("name")}, split=view.split_name(report),
        settings=view.settings_line(prov), images_line=view.images_line(report["run"]), notes=report["notes"],
        kpis=kpis, blocks=b, data=data)
