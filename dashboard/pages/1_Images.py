"""Every image of run A: a table to filter, sort and page through, a 2-D map of the classifier's features,
and slices from words (the images whose sentences use a word: their size, accuracy and errors)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `core` and `dashboard`

import streamlit as st  # noqa: E402

from core import plots  # noqa: E402
from core.analysis.slices import SliceSpec, save_slice, saved_slices, slice_table  # noqa: E402
from dashboard import common as ui  # noqa: E402

INTRO = ("Every image of the run with what the classifier said and what its explanations say. Filter and sort "
         "the table, find clusters on the map, and cut a slice by a word to see what it costs.")
PAGE_SIZES = (25, 50, 100)
SORTS = {"misread first, least confident first": (["correct", "confidence"], [True, True]),
         "least confident first": (["confidence"], [True]), "most confident first": (["confidence"], [False]),
         "class, then image id": (["class", "image_id"], [True, True]), "image id": (["image_id"], [True])}
SLICE = "slice_words"  # session-state key: the words of the slice shown (the Spurious terms page sets it)

run_a, run_b = ui.page(__file__, INTRO)
path = ui.require_run(run_a)
ui.run_caption(path)
evaluated, _ = ui.eval_tables(path)
rows = ui.image_rows(path)
if rows.empty:
    st.warning("This run has no images yet.")
    st.stop()

# --- the table -------------------------------------------------------------------------------------------
st.subheader("Images")
f1, f2, f3, f4 = st.columns(4)
classes = f1.multiselect("Class", sorted(rows["class"].dropna().unique()), key="images_class",
                         placeholder="every class")
group_names = sorted(rows["group"].dropna().unique())
groups = f2.multiselect("Group", group_names, key="images_group", placeholder="every group",
                        disabled=not group_names, help=None if group_names else "This dataset has no groups.")
outcome = f3.selectbox("Prediction", ["any", "misread", "read right", "unreadable"], key="images_outcome")
flagged = f4.selectbox("Its class's flagged words", ["any", "used", "not used"], key="images_flagged",
                       help="Whether the image's sentences use a word flagged for its class (Spurious terms).")
g1, g2, g3 = st.columns([2, 2, 1])
word = g1.text_input("Sentences use the word", key="images_word", placeholder="e.g. water").strip().lower()
sort = g2.selectbox("Sort by", list(SORTS), key="images_sort")
size = g3.selectbox("Per page", PAGE_SIZES, key="images_page_size")

shown = rows
if classes:
    shown = shown[shown["class"].isin(classes)]
if groups:
    shown = shown[shown["group"].isin(groups)]
if outcome != "any":
    correct = shown["correct"]
    shown = shown[{"misread": correct.eq(False), "read right": correct.eq(True),
                   "unreadable": correct.isna()}[outcome].fillna(False).astype(bool)]
if flagged != "any":
    shown = shown[shown["uses_flagged"] == (flagged == "used")]
if word:
    shares = ui.word_shares_per_image(path, word)
    shown = shown.assign(**{f"share of '{word}'": shown["image_id"].map(shares).fillna(0.0)})
    shown = shown[shown[f"share of '{word}'"] > 0]
columns, ascending = SORTS[sort]
shown = shown.assign(correct=shown["correct"].astype("boolean")).sort_values(
    columns, ascending=ascending, na_position="first", kind="stable")

pages = max(1, -(-len(shown) // size))
p1, p2 = st.columns([1, 4], vertical_alignment="bottom")
page = p1.number_input("Page", min_value=1, max_value=pages, value=1, key="images_page")
p2.caption(f"**{len(shown)}** of {len(rows)} images match · page {min(page, pages)} of {pages}")
if shown.empty:
    st.info("No image matches these filters.")
else:
    part = shown.iloc[(min(page, pages) - 1) * size:min(page, pages) * size]
    view = part.assign(thumbnail=ui.thumbnails(evaluated.run, part["path"].tolist()),
                       correct=part["correct"].map({True: "✓ right", False: "✗ misread"}).fillna("unreadable"))
    order = ["thumbnail", "image_id", "class", "group", "predicted", "confidence", "correct", "top_words",
             "flagged_used", *[c for c in view if c.startswith("share of")]]
    table = st.dataframe(
        view, hide_index=True, width="stretch", row_height=64, key="images_table", on_select="rerun",
        height=min(len(view), 8) * 64 + 40,
        selection_mode="single-row", column_order=[c for c in order if c in view and (c != "group" or group_names)],
        # Widths that fit a laptop's page: a table cut off on the right hides its last columns.
        column_config={
            "thumbnail": st.column_config.ImageColumn("image", width=64),
            "image_id": st.column_config.TextColumn("id", width=70 if view["image_id"].str.len().max() <= 10 else 150),
            "class": st.column_config.TextColumn("class", width=80),
            "group": st.column_config.TextColumn("group", width=125),
            "predicted": st.column_config.TextColumn("predicted", width=95),
            "confidence": st.column_config.NumberColumn("confidence", format="percent", width=80),
            "correct": st.column_config.TextColumn("outcome", width=80),
            "top_words": st.column_config.TextColumn("top words (share of its sentences)", width=180),
            "flagged_used": st.column_config.TextColumn("its class's flags it uses", width=120),
            **{c: st.column_config.ProgressColumn(c, format="percent", min_value=0, max_value=1)
               for c in view if c.startswith("share of")}})
    chosen = table.selection.rows if table is not None else []
    if chosen:
        picked = view.iloc[chosen[0]]
        o1, o2 = st.columns([3, 1], vertical_alignment="center")
        o1.markdown(f"Selected **{picked['image_id']}**: {picked['class']} → {picked['predicted']} "
                    f"({picked['correct']}).")
        if o2.button("Open its explanation", type="primary", key="open_from_table", icon=":material/open_in_new:"):
            ui.open_image(picked["image_id"])
    else:
        st.caption("Select a row to open that image's explanation.")

# --- the map ---------------------------------------------------------------------------------------------
st.subheader("Map of the classifier's features")
try:
    points = ui.feature_map(path)
except ValueError as exc:
    st.error(str(exc))
    points = None
if points is None:
    st.caption("The run stores words, not features: the map runs the run's own classifier over its images once "
               "(no language model), projects the features to 2-D with UMAP and keeps the result with the run.")
    if st.button("Compute the map", key="compute_map", icon=":material/scatter_plot:"):
        bar = st.progress(0.0, text="Loading the classifier…")

        def progress(done: int, total: int, stage: str) -> None:
            text = {"features": f"Classifying images: {done} of {total}", "projecting": "Projecting to 2-D (UMAP)…",
                    "done": "Done"}.get(stage, stage)
            bar.progress(min(done / max(total, 1), 1.0), text=text)

        try:
            ui.compute_feature_map(path, progress)
        except Exception as exc:  # a missing classifier, an image folder that moved
            st.error(f"**The map could not be computed.** {type(exc).__name__}: {exc}")
        else:
            st.rerun()
else:
    colour_options = ["class", "correct", "predicted", *(["group"] if group_names else []), "a word's share"]
    c1, c2 = st.columns([1, 2])
    colour = c1.selectbox("Colour by", colour_options, key="map_colour")
    data = rows.merge(points, on="image_id", how="inner")
    if colour == "a word's share":
        map_word = c2.text_input("Word", key="map_word", value=word or "", placeholder="e.g. water").strip().lower()
        if not map_word:
            st.caption("Type a word to colour each image by the share of its sentences that use it.")
            colour = "class"
        else:
            data = data.assign(**{f"share of '{map_word}'": data["image_id"].map(
                ui.word_shares_per_image(path, map_word)).fillna(0.0)})
            colour = f"share of '{map_word}'"
    fig = plots.feature_map_chart(data, colour=colour, method=points.attrs.get("method"))
    event = st.plotly_chart(fig, theme=None, key="feature_map", on_select="rerun", selection_mode=("points",),
                            config={"displaylogo": False, "responsive": True})
    picked = [p.get("customdata", [None])[0] for p in (event.selection.points if event else [])]
    picked = [p for p in picked if p]
    if picked:  # a click on a point opens that image (the selection is forgotten once the page changes)
        ui.open_image(picked[0])
    m1, m2 = st.columns([3, 1], vertical_alignment="bottom")
    fallback = m1.selectbox("Or open an image by id", ["", *data["image_id"]], key="map_pick",
                            format_func=lambda i: "—" if not i else i)
    if fallback and m2.button(f"Open {fallback}", key="open_from_map", type="primary", icon=":material/open_in_new:"):
        ui.open_image(fallback)
    st.caption(f"{len(data)} images · {str(points.attrs.get('method', '?')).upper()} of "
               f"{points.attrs.get('n_features', '?')} features · click a point to open its explanation. Images "
               "close together look alike to the classifier.")

# --- slices ----------------------------------------------------------------------------------------------
st.subheader("Slice by words")
st.caption("The images whose sentences use a word (or any or all of several): how many, how often the classifier "
           "reads them right, and which classes it takes them for. A flagged word's slice is what the flag costs.")
if (from_url := st.query_params.get("slice")) and st.session_state.get("_slice_from_url") != from_url:
    st.session_state["_slice_from_url"] = from_url
    st.session_state[SLICE] = from_url
s1, s2, s3 = st.columns([3, 1, 1], vertical_alignment="bottom")
text = s1.text_input("Words (comma-separated)", key=SLICE, placeholder="e.g. water, lake")
match = s2.selectbox("Images using", ["any", "all"], key="slice_match", format_func=lambda m: f"{m} of them")
words = [w.strip().lower() for w in text.split(",") if w.strip()]
if words:
    spec = SliceSpec(tuple(words), match)
    fitted = ui.word_slice(path, spec)
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Images in the slice", fitted.n_, help=f"of {fitted.n_total_} in the run")
    m2.metric("Accuracy in the slice", ui.pct(fitted.accuracy_, 1),
              help=f"95% Wilson interval {ui.pct(fitted.ci_low_, 0)} to {ui.pct(fitted.ci_high_, 0)}"
              if fitted.accuracy_ is not None else None)
    m3.metric("Accuracy elsewhere", ui.pct(fitted.accuracy_rest_, 1))
    if fitted.accuracy_ is not None and fitted.accuracy_rest_ is not None:
        m4.metric("Difference", "", **ui.delta(100 * (fitted.accuracy_ - fitted.accuracy_rest_)))
    if fitted.n_ == 0:
        st.info(f"No image's sentences use {spec.describe()}.")
    else:
        st.caption(f"95% interval of the slice's accuracy: {ui.pct(fitted.ci_low_, 0)} to "
                   f"{ui.pct(fitted.ci_high_, 0)}.")
        left, right = st.columns([2, 3], gap="large")
        with left:
            st.markdown("**Confusion** (images)")
            grid = fitted.confusion_.pivot_table(index="class", columns="predicted_as", values="images",
                                                 aggfunc="sum", fill_value=0)
            grid.index.name, grid.columns.name = "true class", "predicted"
            st.dataframe(grid, width="stretch")
            per_class = fitted.per_class_.assign(interval=[
                f"{ui.pct(lo, 0)}–{ui.pct(hi, 0)}" for lo, hi in zip(fitted.per_class_["ci_low"],
                                                                 fitted.per_class_["ci_high"])])
            st.dataframe(per_class[["class", "n", "accuracy", "interval", "share_of_class"]], hide_index=True,
                         width="stretch", column_config={
                             "class": st.column_config.TextColumn("class", width=90),
                             "n": st.column_config.NumberColumn("images", width=60),
                             "accuracy": st.column_config.NumberColumn("accuracy", format="percent", width=75),
                             "interval": st.column_config.TextColumn("95% interval", width=85),
                             "share_of_class": st.column_config.NumberColumn("of its class", format="percent",
                                                                             width=75)})
        with right:
            st.markdown("**Example images** (misread first)")
            info = rows.set_index("image_id")
            cols = st.columns(4)
            for i, image_id in enumerate(fitted.examples_[:8]):
                with cols[i % 4]:
                    r = info.loc[image_id]
                    ui.show_image(evaluated.run.image_path(str(r["path"])),
                                  caption=f"{image_id}: {r['class']} → {r['predicted']}")
                    if st.button("Explain", key=f"slice_open_{image_id}"):
                        ui.open_image(image_id)
        if st.button("Save this slice with the run", key="save_slice", icon=":material/bookmark_add:"):
            try:
                where = save_slice(evaluated.run, spec)
            except (OSError, ValueError) as exc:
                st.error(f"The slice could not be saved: {exc}")
            else:
                st.success(f"Saved **{spec.name}** in `{ui.short_path(where)}`; reports of this run export it.")
        if run_b is not None and run_b.path != run_a.path and ui.same_data(path, str(run_b.path)):
            both = ui.slice_comparison(path, str(run_b.path), spec)
            st.markdown(f"**The same images under run B ({run_b.folder})**")
            st.dataframe(both, hide_index=True, width="stretch", column_config={
                "n": "images", "accuracy": st.column_config.NumberColumn(format="percent"),
                "ci_low": st.column_config.NumberColumn("95% low", format="percent"),
                "ci_high": st.column_config.NumberColumn("95% high", format="percent"),
                "n_own_slice": "slice by its own sentences"})
            gap = both.attrs.get("gap")
            if gap:
                st.caption(f"Accuracy of {run_a.folder} minus {run_b.folder} on these images: "
                           f"{100 * gap['gap']:+.1f} pts (95% paired bootstrap {100 * gap['low']:+.1f} to "
                           f"{100 * gap['high']:+.1f}, {gap['n']} images).")

try:
    saved = saved_slices(evaluated.run, [e.path for e in ui.run_entries() if e.ok])
except ValueError as exc:
    st.error(str(exc))
    saved = []
if saved:
    st.markdown("**Saved slices**" + (" (also those saved with other runs of this dataset)"
                                     if any(not s.own for s in saved) else ""))
    fitted_all = [ui.word_slice(path, s.spec) for s in saved]
    table = slice_table(fitted_all).assign(saved_with=[s.source for s in saved])
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "share_of_run": st.column_config.NumberColumn("of the run", format="percent"),
        "accuracy": st.column_config.NumberColumn(format="percent"),
        "ci_low": st.column_config.NumberColumn("95% low", format="percent"),
        "ci_high": st.column_config.NumberColumn("95% high", format="percent"),
        "accuracy_rest": st.column_config.NumberColumn("accuracy elsewhere", format="percent"),
        "saved_with": "saved with run"})
