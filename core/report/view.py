"""The report's tables and sentences, once, for every format: each function turns a part of the report dict
into a `Table` (header, rows, which columns are numbers) or a line of text, and core.report.markdown and
core.report.html only lay them out."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core.analysis.groups import describe_group_words
from core.store import describe_gain


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]
    numeric: set[int] = field(default_factory=set)  # columns right-aligned (numbers)
    strong_rows: set[int] = field(default_factory=set)  # rows to emphasise (the worst group, the total)


def pct(x: Any, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def ci(row: dict) -> str:
    return f"{pct(row.get('ci_low'), 0)}–{pct(row.get('ci_high'), 0)}" if row.get("ci_low") is not None else ""


def z_text(z: Any) -> str:
    return "–" if z is None else f"{z:.1f}"


def settings_line(prov: dict) -> str:
    s = prov.get("settings", {})
    bits = []
    if s.get("sentences_per_image") is not None:  # an adaptive run's mean and range, where the report has them
        bits.append(prov.get("sentences") or f"{s['sentences_per_image']} sentences per image")
    if s.get("top_p") is not None:
        bits.append(f"top-p {s['top_p']}")
    if s.get("temperature") is not None:
        bits.append(f"temperature {s['temperature']}")
    if s.get("max_new_tokens") is not None:
        bits.append(f"≤ {s['max_new_tokens']} new tokens")
    bits.append(f"seed {prov.get('seed')}")
    return ", ".join(bits)


def split_name(report: dict) -> str:
    return report["run"]["evaluation_split"] or "all images"


def images_line(run: dict) -> str:
    """"200 images", or "197 images explained, 3 unreadable (left out)": unreadable ones are never counted in."""
    bad = run.get("n_unreadable") or 0
    if not bad:
        return f"{run['n_evaluated']} images"
    return f"{run['n_evaluated'] - bad} images explained, {bad} unreadable (left out of every number)"


def flags_heading(flags_block: dict, cls: str, view: str) -> str:
    """"flags for X" with "(5 of 13 shown)" when the export kept fewer than the class has."""
    total = ((flags_block.get("counts") or {}).get(cls) or {}).get(view)
    kept = flags_block.get("kept_per_class")
    title = f"Error view: flags for {cls}" if view == "error" else f"Associated with {cls}"
    if total is None:
        return title
    if kept is not None and total > kept:
        return f"{title} ({kept} of {total} shown)"
    return f"{title} ({total})"


def changed_words_title(cmp: dict, cls: str) -> str:
    if cmp.get("by") == "prediction":
        return f"Words that changed most for images predicted {cls}"
    return f"Words that changed most for {cls}"


def slices_table(slices: list[dict]) -> Table:
    rows = [[s["name"], s["n"], pct(s["accuracy"]), ci(s), pct(s.get("accuracy_rest")),
             ", ".join(f"{c['class']} → {c['predicted_as']} {c['images']}" for c in s["confusion"]
                       if c["class"] != c["predicted_as"]) or "–",
             ", ".join(s["example_image_ids"][:4])] for s in slices]
    return Table(["slice (images whose sentences use)", "images", "accuracy", "95% CI", "accuracy elsewhere",
                  "errors", "example images"], rows, {1, 2, 4})


def verdict_lines(verdict: dict) -> list[str]:
    """The CI gate's verdict: one line per rule, broken ones first."""
    rules = sorted(verdict["rules"], key=lambda r: r["passed"])
    return [f"{'PASS' if r['passed'] else 'FAIL'} {r['rule']}: {r['evidence']}" for r in rules]


def no_flags(flags_block: dict, cls: str, view: str) -> str:
    reason = next((n["reason"] for n in flags_block.get("notes") or [] if n["class"] == cls and n["view"] == view),
                  None)
    return f"No word flagged: {reason}." if reason else "No word flagged."


def accuracy_table(acc: dict) -> Table:
    rows = [[c["class"], c["n"], pct(c["accuracy"]), ci(c)] for c in acc["per_class"]]
    rows.append(["all", acc["n_images"], pct(acc["overall"]), ""])
    return Table(["class", "images", "accuracy", "95% CI"], rows, {1, 2}, {len(rows) - 1})


def groups_title(groups: dict) -> str:
    return "Groups" if groups["source"] == "true" else "Groups (inferred from flagged words)"


def groups_table(groups: dict) -> Table:
    rows = [[g["group_name"], g["n"], pct(g["accuracy"]), ci(g)] for g in groups["per_group"]]
    worst = {i for i, g in enumerate(groups["per_group"]) if g["group"] == groups["worst_group"]}
    return Table(["group", "images", "accuracy", "95% CI"], rows, {1, 2}, worst)


def group_averages(groups: dict) -> str:
    averages = [f"{pct(groups['average_test_weighted'])} weighted by this split's group sizes"]
    if groups.get("average_train_weighted") is not None:
        averages.append(f"{pct(groups['average_train_weighted'])} weighted by training group shares")
    averages.append(f"{pct(groups['average_unweighted'])} unweighted mean of groups")
    return "; ".join(averages)


def _carry(f: dict) -> str:
    return "–" if f.get("images_wrong") is None else f"{f['images_wrong']} / {f.get('n_wrong')}"


def _group_evidence(a: dict) -> str:
    if not a.get("group_high"):
        return "–"
    gap = f"{pct(a['share_group_high'], 0)} {a['group_high']} vs {pct(a['share_group_low'], 0)} {a['group_low']}"
    return gap + (" ✔" if a.get("confirmed") else "")


def _with_causal(header: list[str], rows: list[list], flags: list[dict]) -> None:
    """A "causal test" column where at least one flag of the table was tested (core.report.evidence)."""
    if any(f.get("causal") for f in flags):
        header.append("causal test")
        for row, f in zip(rows, flags):
            c = f.get("causal") or {}
            row.append(f"{c['verdict']} ({c.get('images', '?')} images)" if c.get("verdict") else "not tested")


def flags_table(flags: list[dict], examples: bool = False) -> Table:
    """One class's error-view flags; `examples` adds the ids of example images."""
    header = ["#", "word", "pulls toward", "misread", "read right", "z", "misread images using it", "evidence"]
    rows = [[f["rank"], f["word"], f["predicted_as"] or "–", pct(f["share_wrong"], 0), pct(f["share_right"], 0),
             z_text(f["z"]), _carry(f), f["evidence"]] for f in flags]
    _with_causal(header, rows, flags)
    if examples:
        header.append("example images")
        rows = [row + [", ".join(f["example_image_ids"])] for row, f in zip(rows, flags)]
    return Table(header, rows, {0, 3, 4, 5, 6})


def association_table(cls: str, flags: list[dict], evidence: bool = False) -> Table:
    """One class's association-view flags; `evidence` adds each flag's sentence of evidence."""
    rows = [[a["rank"], a["word"], pct(a["share_class"], 0), pct(a["share_other"], 0), z_text(a["z"]),
             _group_evidence(a), f"{a['images_misread']} / {a['n_misread']}"] for a in flags]
    header = ["#", "word", f"predicted {cls}", "other images", "z", "within-class groups", "misread images using it"]
    _with_causal(header, rows, flags)
    if evidence:
        header.append("evidence")
        rows = [row + [a["evidence"]] for row, a in zip(rows, flags)]
    return Table(header, rows, {0, 2, 3, 4, 6})


def inferred_groups_text(inferred: dict) -> str:
    return ("Class × whether an image's explanations carry its class's flagged words: "
            + describe_group_words(inferred["words"], inferred.get("word_views")) + ".")


def inferred_groups_table(inferred: dict) -> Table:
    return Table(["inferred group", "images", "accuracy"],
                 [[g["group_name"], g["n"], pct(g["accuracy"])] for g in inferred["per_group"]], {1, 2})


def agreement_text(agreement: dict) -> str:
    return (f"Agreement with the true groups: {pct(agreement['accuracy'])} of images (best matching), "
            f"adjusted Rand index {agreement['adjusted_rand']:.2f}.")


def top_words_table(words: list[dict]) -> Table:
    return Table(["word", "share", "95% CI", "images"],
                 [[w["word"], pct(w["share"]), ci(w), f"{w['images_with_word']} / {w['n_images']}"] for w in words],
                 {1, 3})


def mitigation_table(records: list[dict], arrows: bool = False) -> Table:
    """Before and after each fix; `arrows` puts before → after in one cell (narrow, for Markdown)."""
    if arrows:
        rows = [[m["method"], m.get("groups") or "–", m.get("source") or "–",
                 f"{pct(m.get('worst_group_before'))} → {pct(m.get('worst_group_after'))}", describe_gain(m),
                 f"{pct(m.get('average_before'))} → {pct(m.get('average_after'))}"] for m in records]
        return Table(["method", "groups", "source", "worst group", "worst-group gain (95% interval)", "average"], rows)
    rows = [[m["method"], m.get("groups") or "–", m.get("source") or "–", pct(m.get("worst_group_before")),
             pct(m.get("worst_group_after")), describe_gain(m), pct(m.get("average_before")),
             pct(m.get("average_after"))] for m in records]
    return Table(["method", "groups", "source", "worst group before", "after", "worst-group gain (95% interval)",
                  "average before", "after"], rows, {3, 4, 5, 6, 7})


def comparison_table(report: dict) -> Table:
    """This run against the compared one: accuracy, worst group, each class's top flags in both views."""
    cmp, groups = report["comparison"], report["groups"]
    rows = [["overall accuracy", pct(report["accuracy"]["overall"]), pct(cmp["accuracy"]["overall"])]]
    if groups and cmp["groups"]:
        rows.append(["worst group", f"{pct(groups['worst'])} ({groups['worst_group_name']})",
                     f"{pct(cmp['groups']['worst'])} ({cmp['groups']['worst_group_name']})"])
    for cls, flags in report["flags"]["by_class"].items():
        rows.append([f"top flags for {cls}", ", ".join(f["word"] for f in flags[:3]) or "–",
                     ", ".join(f["word"] for f in cmp["flags"]["by_class"].get(cls, [])[:3]) or "–"])
    theirs = (cmp["flags"].get("association") or {}).get("by_class") or {}
    for cls, flags in ((report["flags"].get("association") or {}).get("by_class") or {}).items():
        rows.append([f"associated with {cls}", ", ".join(a["word"] for a in flags[:3]) or "–",
                     ", ".join(a["word"] for a in theirs.get(cls, [])[:3]) or "–"])
    return Table(["", report["run"]["name"], cmp["run"]["name"]], rows)


def divergence_text(cmp: dict) -> str | None:
    if not cmp["divergence"]:
        return None
    return ("Jensen–Shannon divergence of each class's words between the two runs (bits, 0 = same): "
            + ", ".join(f"{d['class']} {d['jensen_shannon']:.3f}" for d in cmp["divergence"]) + ".")


def changed_words_table(report: dict, words: list[dict]) -> Table:
    return Table(["word", report["run"]["name"], report["comparison"]["run"]["name"], "change"],
                 [[w["word"], pct(w["share_a"]), pct(w["share_b"]), f"{100 * w['change']:+.1f} pts"] for w in words],
                 {1, 2, 3})


def variations_table(bg: dict) -> Table:
    """One row per variation run; an unfinished run is marked (its numbers cover the images done so far)."""
    def name(v: dict) -> str:
        status = v.get("status")
        return v["variation"] + (f" ({status}: unfinished)" if status and status != "complete" else "")

    return Table(["variation", "images", "accuracy", "95% CI"],
                 [[name(v), v["images"], pct(v["accuracy"]), ci(v)] for v in bg["variations"]], {1, 2})


def bg_gap_text(bg: dict, strong=str) -> str | None:
    """The BG-gap in a sentence; `strong` emphasises its number (Markdown passes a bold formatter)."""
    g = bg["bg_gap"]
    if not g:
        return None
    gap = f"{100 * g['gap']:+.1f} points"
    return (f"BG-gap (mixed_same − mixed_rand): {strong(gap)} (95% paired bootstrap "
            f"{100 * g['low']:+.1f} to {100 * g['high']:+.1f}, {g['n']} photos). {bg['reading']}")


def error_words_table(bg: dict) -> Table:
    return Table(["word", "original", "mixed_rand errors", "images"],
                 [[w["word"], pct(w["share_original"]), pct(w["share_mixed_rand_errors"]), w["images"]]
                  for w in bg["error_words"]], {1, 2, 3})


def class_variation_table(cells: list[dict]) -> Table:
    """by_class records as a table: one row per class, one accuracy column per variation."""
    variations = list(dict.fromkeys(c["variation"] for c in cells))
    acc = {(c["class"], c["variation"]): c["accuracy"] for c in cells}
    rows = [[cls, *(pct(acc[(cls, v)]) if (cls, v) in acc else "–" for v in variations)]
            for cls in dict.fromkeys(c["class"] for c in cells)]
    return Table(["class", *variations], rows, set(range(1, len(variations) + 1)))


def worst_cell_text(w: dict, strong=str) -> str:
    return (f"Worst class × variation: {strong(w['class'] + ' in ' + w['variation'])}, {pct(w['accuracy'])} "
            f"({w['correct']} of {w['images']}, 95% CI {ci(w)}).")


def provenance_table(report: dict) -> Table:
    prov, run = report["provenance"], report["run"]
    rows = [["run", f"{run['name']} ({run['path']}), status {run['status']}, created {run.get('created')}"],
            *[[f"model: {k}", v] for k, v in prov["models"].items()],
            *[[f"dataset: {k}", json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v]
              for k, v in prov["dataset"].items()],
            *[[f"setting: {k}", v] for k, v in prov["settings"].items()],
            ["versions", ", ".join(f"{k} {v}" for k, v in prov["versions"].items()) or "–"],
            ["report", f"schema v{report['schema_version']}, generated {report['generated_at']} "
                       f"by {report['generator']}"]]
    return Table(["", "value"], rows)
