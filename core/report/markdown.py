"""The bias report as Markdown, for pull requests and notebooks: the tables of core.report.view, in order."""
from __future__ import annotations

from typing import Any

from core.report import view
from core.report.build import mitigation_cautions
from core.report.evidence import causal_text
from core.report.schema import validate_report
from core.report.view import Table, pct


def _escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _bold(text: str) -> str:
    return f"**{text}**"


def md_table(table: Table, bold: tuple[int, ...] = ()) -> str:
    """A pipe table; numeric columns right-aligned; the first cell of an emphasised row and every cell of the
    `bold` columns in bold."""
    marks = ["---:" if i in table.numeric else "---" for i in range(len(table.header))]
    lines = ["| " + " | ".join(table.header) + " |", "| " + " | ".join(marks) + " |"]
    for r, row in enumerate(table.rows):
        cells = [_escape(c) for c in row]
        strong = set(bold) | ({0} if r in table.strong_rows else set())
        lines.append("| " + " | ".join(_bold(c) if i in strong and c else c for i, c in enumerate(cells)) + " |")
    return "\n".join(lines)


def _causal(cls: str, rows: list[dict]) -> list[str]:
    """A line per flag whose causal test is stored: does the classifier use what the word names?"""
    lines = [f"- **{_escape(f['word'])}**: {_escape(causal_text(f['causal'], cls, f['word']))}"
             for f in rows if f.get("causal")]
    return lines + [""] if lines else []


def _flags(report: dict) -> list[str]:
    flags = report["flags"]
    out = ["## Spurious-term flags", "", f"_{flags['definition']}_", ""]
    if text := (report.get("word_map_reliability") or {}).get("text"):
        out += [f"Word maps (where in an image a word comes from): {text}", ""]
    for cls, rows in flags["by_class"].items():
        out += [f"### {view.flags_heading(flags, cls, 'error')}", ""]
        out += [md_table(view.flags_table(rows), bold=(1,)) if rows else view.no_flags(flags, cls, "error"), ""]
        out += _causal(cls, rows)
    assoc = flags.get("association")
    if assoc:
        out += ["### Association view", "", f"_{assoc['definition']}_", ""]
        for cls, rows in assoc["by_class"].items():
            out += [f"#### {view.flags_heading(flags, cls, 'association')}", ""]
            out += [md_table(view.association_table(cls, rows), bold=(1,)) if rows
                    else view.no_flags(flags, cls, "association"), ""]
            out += _causal(cls, rows)
    return out


def _groups(groups: dict | None) -> list[str]:
    if not groups:
        return []
    return [f"## {view.groups_title(groups)}", "", md_table(view.groups_table(groups)), "",
            f"**Worst group:** {groups['worst_group_name']}, {pct(groups['worst'])}. "
            f"**Average accuracy:** {view.group_averages(groups)}.", ""]


def _inferred(report: dict) -> list[str]:
    inferred, groups = report["inferred_groups"], report["groups"]
    if not (inferred and groups and groups["source"] == "true"):
        return []  # inferred groups stand in for missing true ones in the Groups section
    out = ["## Inferred groups", "", view.inferred_groups_text(inferred), "",
           md_table(view.inferred_groups_table(inferred)), ""]
    return out + ([view.agreement_text(inferred["agreement"]), ""] if inferred["agreement"] else [])


def _comparison(report: dict) -> list[str]:
    cmp = report["comparison"]
    if not cmp:
        return []
    out = [f"## Comparison with {cmp['run']['name']}", "", md_table(view.comparison_table(report)), ""]
    if text := view.divergence_text(cmp):
        out += [text, ""]
    for cls, words in cmp["changed_words"].items():
        out += [f"### {view.changed_words_title(cmp, cls)}", "", md_table(view.changed_words_table(report, words)), ""]
    return out


def _backgrounds(report: dict) -> list[str]:
    bg = report.get("backgrounds")
    if not bg:
        return []
    out = ["## Background variations (ImageNet-9)", "", md_table(view.variations_table(bg)), ""]
    if text := view.bg_gap_text(bg, strong=_bold):
        out += [text, ""]
    if bg["error_words"]:
        out += ["Words that rise from the original photos to the mixed_rand images read wrong:", "",
                md_table(view.error_words_table(bg)), ""]
    if bg.get("by_class"):
        out += ["Accuracy per class and variation (each a group):", "",
                md_table(view.class_variation_table(bg["by_class"])), ""]
        if bg.get("worst_cell"):
            out += [view.worst_cell_text(bg["worst_cell"], strong=_bold), ""]
    return out + [f"> {n}" for n in bg["notes"]] + ([""] if bg["notes"] else [])


def to_markdown(report: dict) -> str:
    """The report as Markdown: accuracy, groups, flags with evidence and top words, then provenance."""
    validate_report(report)
    prov, run = report["provenance"], report["run"]
    models, dataset = prov["models"], prov["dataset"]
    out = [f"# TExplain bias report: {run['name']}", "",
           f"Classifier **{models.get('classifier', '?')}**, translator {models.get('translator', '?')}, "
           f"language model {models.get('lm', '?')}; dataset **{dataset.get('name', '?')}**, split "
           f"{view.split_name(report)} ({view.images_line(run)}); sampling: {view.settings_line(prov)}.", ""]
    if report.get("verdict"):
        verdict = report["verdict"]
        out += [f"## Audit: {'PASSED' if verdict['passed'] else 'FAILED'}", ""]
        out += [f"- {line}" for line in view.verdict_lines(verdict)] + [""]
    out += [line for note in report["notes"] for line in (f"> {note}", "")]
    out += ["## Accuracy", "", md_table(view.accuracy_table(report["accuracy"])), ""]
    out += _groups(report["groups"]) + _flags(report) + _inferred(report)
    out += ["## Top words per class", ""]
    for cls, words in report["top_words"]["by_class"].items():
        out += [f"### {cls}", "", md_table(view.top_words_table(words)), ""]
    if report["mitigation"]:
        out += ["## Mitigation", "", md_table(view.mitigation_table(report["mitigation"], arrows=True)), ""]
        out += [line for c in mitigation_cautions(report["mitigation"]) for line in (f"> **Warning.** {c}", "")]
    if report.get("slices"):
        out += ["## Slices", "", "Images whose sentences use the slice's words (any of them unless it says 'and').", "",
                md_table(view.slices_table(report["slices"])), ""]
    out += _comparison(report) + _backgrounds(report)
    if report.get("evaluation"):
        from core.evaluation.captions import to_markdown as evaluation_markdown

        out += [evaluation_markdown(report["evaluation"]), ""]
    out += ["## Provenance", "", md_table(view.provenance_table(report)), ""]
    return "\n".join(out)
