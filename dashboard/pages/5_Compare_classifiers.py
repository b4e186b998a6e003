"""Two classifiers explained on the same images, side by side: accuracy, words, flags and what changed."""
import html  # class names go into raw HTML below: escape them
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `core` and `dashboard`

import streamlit as st  # noqa: E402

from core import plots  # noqa: E402
from core.analysis import backgrounds, compare_runs  # noqa: E402
from dashboard import backend as api  # noqa: E402
from dashboard import common as ui  # noqa: E402

INTRO = ("The same images explained through two classifiers: where their words differ is where what they "
         "learned differs.")
run_a, run_b = ui.page(__file__, INTRO)
path_a = ui.require_run(run_a, "run A")
if run_b is None:
    st.info("Choose **Run B** in the sidebar: a second classifier's run on the same images (on the demo, "
            "demo-robust-test next to demo-erm-test).")
    st.stop()
path_b = ui.require_run(run_b, "run B")
if path_a == path_b:
    st.warning("Run A and run B are the same run; choose a different run B in the sidebar.")
    st.stop()
ta, tb = ui.tables(path_a), ui.tables(path_b)
mismatch = api.dataset_mismatch(ta.manifest, tb.manifest, run_a.folder, run_b.folder)
if mismatch:
    st.error(f"**These runs are not on the same data.** {mismatch}")
    st.stop()

link = api.mitigation_link(run_a, run_b)
if link is not None:
    (st.success if link.clear_gain else st.info)(link.sentence())
sa, sb = ui.summary(path_a), ui.summary(path_b)
left, right = st.columns(2, gap="large")
for col, entry, s, other in ((left, run_a, sa, sb), (right, run_b, sb, sa)):
    with col:
        st.subheader(f"{'A' if entry is run_a else 'B'}: {entry.folder}")
        st.caption(f"classifier **{s['classifier']}** · {s['n_images']} images")
        m1, m2 = st.columns(2)
        delta = None if entry is run_a or s["accuracy"] is None or other["accuracy"] is None else \
            f"{100 * (s['accuracy'] - other['accuracy']):+.1f} pts"
        m1.metric("Average accuracy", ui.pct(s["accuracy"], 1), delta=delta)
        wg, wo = s["worst_group"], other["worst_group"]
        delta = None if entry is run_a or not wg or not wo else f"{100 * (wg['accuracy'] - wo['accuracy']):+.1f} pts"
        m2.metric("Worst-group accuracy", ui.pct(wg["accuracy"], 1) if wg else "–", delta=delta,
                  help=wg["group_name"] if wg else None)
        for cls, words in s["flags"].items():
            st.markdown(f"Flags for {html.escape(str(cls))}: {ui.chips(words)}", unsafe_allow_html=True)

st.subheader("Words whose share changed most")
evaluated, _ = ui.eval_tables(path_a)
same_words = ui.same_explanations(path_a, path_b)
if same_words:
    st.info("**Both classifiers explain every image with the same words**: they share the feature extractor (and "
            "the translator), so what the features encode did not change. What changed is how the last layer "
            "uses it: which images each one *predicts* as a class. Compare the words per predicted class below.")
c1, c2 = st.columns([3, 1])
has_groups = "group" in evaluated.images and evaluated.images["group"].notna().any()
options = ["predicted class", "class", *(["group"] if has_groups else [])]
by_label = c1.radio("Per", options, index=0 if same_words else 1, horizontal=True,
                    help="class: the images' true class; predicted class: what each classifier called them.")
k = c2.slider("Words per panel", 4, 15, 8)
by = {"class": "label", "predicted class": "prediction", "group": "group"}[by_label]


@st.cache_data(show_spinner="Comparing the runs…", max_entries=8)
def changes(a: str, b: str, _stamps: tuple, by: str):
    return compare_runs(ui.eval_tables(a)[0], ui.eval_tables(b)[0], by=by, min_images=3)


changed = changes(path_a, path_b, (ui.stamp(path_a), ui.stamp(path_b)), by)
ui.chart(plots.run_comparison_chart(changed, by=by, k=k, a_name=run_a.folder, b_name=run_b.folder), key="changes")
if (pair := backgrounds.variation_pair(run_a, run_b)) is not None:
    st.info(f"A and B are the {pair[0]} and {pair[1]} variations of the same ImageNet-9 photos: the objects are "
            "the same, the backgrounds differ, so the words that change are what the backgrounds bring.")
elif changed.attrs.get("shared_images", 1) == 0:
    st.warning("The runs share no image id: the comparison is between different images.")
with st.expander("Table"):
    st.dataframe(changed, hide_index=True, width="stretch")

st.subheader("Words per predicted class, side by side" if same_words else "Words per class, side by side")
side_by = "prediction" if same_words else "label"
left, right = st.columns(2, gap="large")
for col, entry, path in ((left, run_a, path_a), (right, run_b, path_b)):
    with col:
        ui.chart(plots.class_words_chart(ui.shares(path, by=side_by), by=side_by, k=8, title=entry.folder, per_row=2),
                 key=f"words-{entry.folder}")

st.subheader("Flags, side by side")
left, right = st.columns(2, gap="large")
for col, entry, path in ((left, run_a, path_a), (right, run_b, path_b)):
    with col:
        ui.chart(plots.flags_chart(ui.scorer(path).flags_, k=5, title=f"Flags: {entry.folder}", per_row=2),
                 key=f"flags-{entry.folder}")
