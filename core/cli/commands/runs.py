"""`texplain runs ls|show`: the runs on this machine (yours and the shipped demo runs), and one run's summary."""
from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("runs", help="list runs (ls) or summarise one (show RUN)", description=__doc__)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("ls", help="every run folder: status, images, classifier, dataset",
                        description="Every run folder under your runs (TEXPLAIN_RUNS, default runs/) and the shipped "
                                    "demo runs, with its status, size and models; broken folders say what is wrong.")
    ls.add_argument("--json", action="store_true", help="one JSON object per run, as a list")
    show = sub.add_parser("show", help="one run: models, data, settings, health, accuracy, worst group",
                          description="One run's provenance, health and headline numbers (the bias report has the "
                                      "flags: `texplain report RUN`).")
    show.add_argument("run", metavar="RUN", help="run folder, or the name of a run in the runs folders")
    show.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def _entries() -> list[dict]:
    from core.store import discover_runs, run_roots

    rows = []
    for e in discover_runs(run_roots()):
        progress = e.progress or {}
        rows.append({"run": e.folder, "where": e.location, "status": e.status if e.ok else "broken",
                     "images": progress.get("done_images"), "of": progress.get("total_images"),
                     "unreadable": progress.get("unreadable_images"),
                     "classifier": e.models.get("classifier"), "dataset": e.dataset.get("name"),
                     "split": e.dataset.get("split"), "created": e.created[:16].replace("T", " "),
                     "path": str(e.path), "problem": e.error or e.health})
    return rows


def _summary(value: str) -> dict:
    from core.analysis.groups import group_accuracy, worst_group_accuracy
    from core.analysis.tables import evaluation_tables, scored_images
    from core.store import resolve_run

    run_ = resolve_run(value)
    health = run_.health()
    tables, split = evaluation_tables(run_)
    scored = scored_images(tables.images)
    unreadable = int(tables.images["error"].notna().sum()) if "error" in tables.images else 0
    m = tables.manifest
    out = {"run": run_.name, "path": str(run_.path), "status": health.status, "problem": health.describe(),
           "created": m.get("created"), "models": {k: v for k, v in (m.get("models") or {}).items()
                                                   if k in ("classifier", "translator", "lm", "label_space")},
           "dataset": (m.get("dataset") or {}).get("name"), "split": (m.get("dataset") or {}).get("split"),
           "evaluated_on": split or "all images", "images": int(len(tables.images) - unreadable),
           "unreadable_images": unreadable,
           "settings": m.get("settings"), "accuracy": None, "per_class": [], "worst_group": None}
    if len(scored):
        out["accuracy"] = float((scored["label"] == scored["prediction"]).mean())
        per_class = group_accuracy(scored, groups="label", group_names=dict(enumerate(tables.class_names)))
        out["per_class"] = [{"class": r.group_name, "images": int(r.n), "accuracy": float(r.accuracy)}
                            for r in per_class.itertuples()]
        if "group" in scored and scored["group"].notna().any():
            w = worst_group_accuracy(scored, weights="test", group_names=tables.group_names)
            out["worst_group"] = {"group": w.worst_group_name, "accuracy": w.worst}
    return out


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _table(rows: list[dict], columns: list[str]) -> str:
    cells = [[("–" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def run(args) -> int:
    if args.action == "ls":
        rows = _entries()
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print("no runs yet: explain a dataset with `texplain explain ...` or from the dashboard's New run page")
        else:
            for r in rows:  # images read (explained or found unreadable) of the run's images
                r["images"] = f"{r['images'] or 0}/{r['of'] or '?'}"
            columns = ["run", "where", "status", "images", "classifier", "dataset", "split", "created"]
            if any(r["unreadable"] for r in rows):
                columns.insert(4, "unreadable")
            print(_table(rows, columns))
            broken = [r for r in rows if r["problem"]]
            for r in broken:
                print(f"note: {r['run']}: {r['problem']}")
        return 0
    s = _summary(args.run)
    if args.json:
        print(json.dumps(s, indent=2, default=str))
        return 0
    print(f"{s['run']}  ({s['path']})\nstatus: {s['status']}" + (f" ({s['problem']})" if s["problem"] else ""))
    print(f"created: {s['created']}\nclassifier: {s['models'].get('classifier')}\ntranslator: "
          f"{s['models'].get('translator')}\nlanguage model: {s['models'].get('lm')}")
    if s["models"].get("label_space"):
        print(f"classes: {s['models']['label_space']}")
    print(f"dataset: {s['dataset']} ({s['split'] or 'all splits'}); evaluated on {s['evaluated_on']}: {s['images']} "
          "images explained" + (f", and {s['unreadable_images']} unreadable (skipped, not counted in any number "
                                "below; their errors: texplain runs show RUN --json or the run's images table)"
                                if s["unreadable_images"] else ""))
    settings = s["settings"] or {}
    print(f"sampling: {settings.get('sentences_per_image')} sentences per image, top-p {settings.get('top_p')}, "
          f"temperature {settings.get('temperature')}, seed {settings.get('seed')}")
    print(f"accuracy: {_pct(s['accuracy'])}" + "".join(f"\n  {c['class']}: {_pct(c['accuracy'])} of {c['images']}"
                                                     for c in s["per_class"]))
    if s["worst_group"]:
        print(f"worst group: {s['worst_group']['group']}, {_pct(s['worst_group']['accuracy'])}")
    print(f"flags, groups and words: texplain report {s['path']} --format md")
    return 0
