"""Two classifiers explained on the same images, side by side: accuracy, words, flags and what changed."""
import html  # class names go into raw HTML below: escape them
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `core` and `dashboard`

import streamlit as st  # noqa: E402

from core import plots  # noqa: E402
from core.analysis import backgrounds, compare_runs  # noqa: E402
from core.analysis.agreement import agreement  # noqa: E402
from core.models import registry  # noqa: E402
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
    (st.warning if link.made_worse else st.success if link.clear_gain else st.info)(link.sentence())
pair = backgrounds.variation_pair(run_a, run_b)


@st.cache_data(show_spinner="Matching the images of the two runs…", max_entries=8)
def per_image(a: str, b: str, _stamps: tuple, by_photo: bool):
    return agreement(ui.eval_tables(a)[0], ui.eval_tables(b)[0], id_key=backgrounds.photo_ids if by_photo else None)


ag = per_image(path_a, path_b, (ui.stamp(path_a), ui.stamp(path_b)), pair is not None)


def interval(gap: dict | None) -> str | None:
    return None if not gap else (f"{100 * gap['gap']:+.1f} pts, 95% paired bootstrap interval "
                                 f"{100 * gap['low']:+.1f} to {100 * gap['high']:+.1f} over {gap['n']} images")


sa, sb = ui.summary(path_a), ui.summary(path_b)
left, right = st.columns(2, gap="large")
for col, entry, s, other in ((left, run_a, sa, sb), (right, run_b, sb, sa)):
    with col:
        st.subheader(f"{'A' if entry is run_a else 'B'}: {entry.folder}")
        st.caption(f"classifier **{s['classifier']}** · {s['n_images']} images")
        m1, m2 = st.columns(2)
        is_b = entry is run_b
        acc = {} if not is_b or s["accuracy"] is None or other["accuracy"] is None else \
            ui.delta(100 * (s["accuracy"] - other["accuracy"]))
        m1.metric("Average accuracy", ui.pct(s["accuracy"], 1), **acc,
                  help=f"B − A: {interval(ag.accuracy_gap)}" if is_b and ag.accuracy_gap else None)
        wg, wo = s["worst_group"], other["worst_group"]
        wgd = {} if not is_b or not wg or not wo else ui.delta(100 * (wg["accuracy"] - wo["accuracy"]))
        m2.metric("Worst-group accuracy", ui.pct(wg["accuracy"], 1) if wg else "–", **wgd,
                  help=(wg["group_name"] if wg else None) if not (is_b and ag.worst_group_gap) else
                  f"{wg['group_name'] if wg else ''}; B − A: {interval(ag.worst_group_gap)}")
        if is_b:
            spreads = [f"average {interval(ag.accuracy_gap)}" if ag.accuracy_gap else None,
                       f"worst group {interval(ag.worst_group_gap)}" if ag.worst_group_gap else None]
            if any(spreads):
                st.caption("B − A: " + "; ".join(x for x in spreads if x) + ".")
        for cls, words in s["flags"].items():
            st.markdown(f"Flags for {html.escape(str(cls))}: {ui.chips(words)}", unsafe_allow_html=True)

st.subheader("Image by image")
if ag.n == 0:
    st.warning("The runs share no image: there is nothing to compare image by image.")
else:
    fixed, broken = ag.count("wrong", "right"), ag.count("right", "wrong")
    c1, c2 = st.columns([2, 3], gap="large")
    with c1:
        ui.chart(plots.agreement_chart(ag.table, "A", "B", title=f"A and B on the same {ag.n} images"),
                 key="agreement")
    with c2:
        st.markdown(f"**{fixed}** images only B reads right (**fixed by B**), **{broken}** only A (**broken by B**).")
        st.caption(ag.sentence("A", "B") + " McNemar's test reads only the images where the two disagree.")
        if len(ag.group_gaps):
            st.dataframe(ag.group_gaps, hide_index=True, width="stretch", column_config={
                "n": "images", "accuracy_a": st.column_config.NumberColumn("A", format="percent"),
                "accuracy_b": st.column_config.NumberColumn("B", format="percent"),
                "change": st.column_config.NumberColumn("B − A", format="percent"),
                "low": st.column_config.NumberColumn("95% low", format="percent"),
                "high": st.column_config.NumberColumn("95% high", format="percent")})
    evaluated_a, _ = ui.eval_tables(path_a)
    flips = ag.flips
    tabs = st.tabs([f"Fixed by B ({fixed})", f"Broken by B ({broken})",
                    f"Changed, still wrong ({int((flips['direction'] == 'changed, still wrong').sum())})"])
    for tab, direction in zip(tabs, ("fixed by B", "broken by B", "changed, still wrong")):
        with tab:
            part = flips[flips["direction"] == direction]
            if part.empty:
                st.caption("No image.")
                continue
            shown = part.head(12)
            cols = st.columns(6)
            for i, r in enumerate(shown.to_dict("records")):
                with cols[i % 6]:
                    ui.show_image(evaluated_a.run.image_path(r["path"]),
                                  caption=f"{r['image_id']}: {r['class']} · A {r['predicted_a']} "
                                          f"→ B {r['predicted_b']}")
                    slug = direction.replace(",", "").replace(" ", "-")  # the key names a CSS class: no spaces
                    if st.button("Explain", key=f"flip-{slug}-{r['image_id']}"):
                        ui.open_image(r["image_id"])
            if len(part) > len(shown):
                st.caption(f"The first {len(shown)} of {len(part)}; every one is on the Images page.")

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
if pair is not None:
    st.info(f"A and B are the {pair[0]} and {pair[1]} variations of the same ImageNet-9 photos: the objects are "
            "the same, the backgrounds differ, so the words that change are what the backgrounds bring.")
elif changed.attrs.get("shared_images", 1) == 0:
    st.warning("The runs share no image id: the comparison is between different images.")
with st.expander("Table"):
    st.dataframe(changed, hide_index=True, width="stretch", column_config={
        by: "predicted class" if by == "prediction" else by,
        "share_a": st.column_config.NumberColumn(f"A: {run_a.folder}", format="percent"),
        "share_b": st.column_config.NumberColumn(f"B: {run_b.folder}", format="percent"),
        "change": st.column_config.NumberColumn("B − A", format="percent"),
        "z": st.column_config.NumberColumn("z", format="%.1f")})

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

st.subheader("An image of yours, explained by A and by B")
st.caption("Each run's own classifier, translator and language model explain the same upload, side by side.")
uploaded = st.file_uploader("An image file", type=list(api.UPLOAD_TYPES), key="compare_upload")
if uploaded is not None:
    n_sentences = st.slider("Sentences to sample", 8, 64, 16, step=8, key="compare_sentences")
    try:
        image = api.decode_image(uploaded.getvalue(), name=f"'{uploaded.name}'")
    except ValueError as exc:
        st.error(f"**Cannot explain this upload.** {exc}")
        st.stop()
    cols = st.columns([1, 2, 2], gap="large")
    cols[0].image(image, caption=uploaded.name, width="stretch")
    for col, entry, path in ((cols[1], run_a, path_a), (cols[2], run_b, path_b)):
        with col:
            st.markdown(f"**{'A' if entry is run_a else 'B'}: {entry.folder}**")
            key = ("compare_upload_result", entry.folder, uploaded.file_id, n_sentences)
            result = st.session_state.get(str(key))
            if result is None:
                try:
                    with st.spinner("Loading the models and sampling sentences…"):
                        sources = registry.run_model_sources(ui.tables(path).manifest)
                        clf, tr, lm = ui.load_models(sources)
                        from core.engine.config import ExplainConfig
                        from core.engine.explainer import Explainer

                        out = Explainer(clf, tr, lm, ExplainConfig(sentences_per_image=n_sentences)).explain([image])[0]
                except Exception as exc:  # a missing model, a translator for another classifier
                    st.error(f"**{type(exc).__name__}:** {exc}")
                    continue
                result = {"prediction": out.prediction_name, "confidence": out.confidence, "words": out.words,
                          "n": len(out.sentences)}
                st.session_state[str(key)] = result
            m1, m2 = st.columns(2)
            m1.metric("Prediction", result["prediction"])
            m2.metric("Confidence", ui.pct(result["confidence"], 1))
            ui.chart(plots.top_words_chart(api.counts_frame(result["words"], result["n"]), k=10,
                                           title=f"Most frequent words ({result['n']} sentences)"),
                     key=f"upload-words-{entry.folder}")
