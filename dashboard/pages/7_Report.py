"""Download the bias report of a run, or of a comparison of two runs, as HTML, JSON or Markdown."""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `core` and `dashboard`

import streamlit as st  # noqa: E402

from core.evaluation.causal import RESULT_FILE  # noqa: E402
from core.models import registry  # noqa: E402
from core.report import build_report, evidence, to_html, to_json, to_markdown  # noqa: E402
from core.store import user_file  # noqa: E402
from dashboard import backend as api  # noqa: E402
from dashboard import common as ui  # noqa: E402

INTRO = ("One file with the flags and their evidence, accuracy per class and group, inferred groups, top "
         "words, mitigation and provenance.")
run_a, run_b = ui.page(__file__, INTRO)
path_a = ui.require_run(run_a)
scopes = [f"{run_a.folder} alone"]
if run_b is not None and run_b.path != run_a.path:
    scopes.append(f"{run_a.folder} compared with {run_b.folder}")
scope = st.radio("Report on", scopes, horizontal=True)
compare = scope != scopes[0]
if run_b is None:
    st.caption("Choose a run B in the sidebar to report a comparison of two classifiers.")
if compare:
    mismatch = api.dataset_mismatch(ui.tables(path_a).manifest, ui.tables(str(run_b.path)).manifest,
                                    run_a.folder, run_b.folder)
    if mismatch:
        st.error(f"**These runs cannot be compared.** {mismatch}")
        st.stop()


@st.cache_data(show_spinner="Building the report…", max_entries=8)
def report_files(a: str, b: str | None, _stamps: tuple) -> dict:
    # Slices saved with this run, or with another run of the same data, are exported with it.
    report = build_report(a, compare=b, related=[str(e.path) for e in ui.run_entries() if e.ok])
    return {"json": to_json(report), "md": to_markdown(report), "html": to_html(report), "name": report["run"]["name"],
            "notes": report["notes"]}


path_b = str(run_b.path) if compare else None
try:
    from core.analysis.slices import slices_file

    files = report_files(path_a, path_b, (ui.stamp(path_a), ui.stamp(path_b) if path_b else None,
                                          ui.file_stamp(slices_file(path_a)),
                                          # causal tests and word maps computed since: part of the report
                                          ui.file_stamp(user_file(path_a, RESULT_FILE)),
                                          ui.file_stamp(user_file(path_a, evidence.MAPS_FOLDER))))
except Exception as exc:  # a broken run folder, a report that does not validate
    st.error(f"**The report could not be built.** {type(exc).__name__}: {exc}")
    st.stop()

stem = run_a.folder + (f"-vs-{run_b.folder}" if compare else "")
st.markdown(f"Report **{files['name']}**" + (f" compared with **{run_b.folder}**" if compare else "") + ".")
c1, c2, c3 = st.columns(3)
c1.download_button("HTML (interactive charts)", files["html"], file_name=f"{stem}-report.html", mime="text/html",
                   type="primary", width="stretch", on_click="ignore", icon=":material/download:")
c2.download_button("JSON (machine-readable)", files["json"], file_name=f"{stem}-report.json",
                   mime="application/json", width="stretch", on_click="ignore", icon=":material/download:")
c3.download_button("Markdown (for a pull request)", files["md"], file_name=f"{stem}-report.md", mime="text/markdown",
                   width="stretch", on_click="ignore", icon=":material/download:")
for note in files["notes"]:
    st.caption(note)
todo = evidence.maps_to_compute(json.loads(files["json"]))
if todo:  # the HTML report embeds the maps that exist; a few more on request (each takes seconds on a CPU)
    method = evidence.preferred_method(path_a)
    per = api.seconds_per_map(path_a, method)
    c1, c2 = st.columns([3, 2], vertical_alignment="center")
    c1.caption("The HTML report draws each flag's word map on its example images where the map was computed (on "
               "Explain an image, Spurious terms or here), so building it loads no model. Tested flags come first.")
    # (No "HTML" in its label: the download buttons are found by that word.)
    if c2.button(f"Draw {len(todo)} more word map(s) for the examples", icon=":material/travel_explore:",
                 help=f"About {per * len(todo):.0f} s, plus loading the models the first time" if per else None):
        bar = st.progress(0.0, text="Loading the classifier, translator and language model…")
        try:
            clf, tr, lm = ui.load_models(registry.run_model_sources(ui.tables(path_a).manifest))
            t0 = time.time()
            for i, (image_id, word) in enumerate(todo):
                bar.progress(i / len(todo), text=f"Mapping '{word}' on image {image_id} ({i + 1} of {len(todo)})…")
                try:
                    evidence.compute_map(path_a, image_id, word, clf, tr, lm, method=method)
                except ValueError:  # its kept sentences lack the word: the report shows the image without a map
                    pass
        except Exception as exc:  # the run's models are not here
            st.error(f"**The maps need the run's models.** {exc}")
        else:
            bar.progress(1.0, text=f"{len(todo)} map(s) in {time.time() - t0:.0f} s")
            st.rerun()
st.caption(f"The same report from a terminal: `texplain report {run_a.folder}"
           f"{f' --compare {run_b.folder}' if compare else ''} --format html --out report.html`")
st.caption(f"A gate for CI: `texplain audit {run_a.folder} --fail-under-worst-group 0.8 --fail-on-flag WORD` exits 1 "
           "when the run breaks a rule and prints why (`--json FILE`: this report with the verdict).")
st.subheader("Preview")
with st.container(height=520):
    st.markdown(files["md"])
