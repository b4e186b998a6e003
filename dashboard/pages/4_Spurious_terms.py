"""Spurious-term flags in two views (error view: misread vs read right; association view: what a class's
predictions go with), with their evidence, example images and sentences; mark words as core or spurious."""
import html  # class names go into raw HTML below: escape them
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `core` and `dashboard`

import streamlit as st  # noqa: E402

from core import paths, plots  # noqa: E402
from core.analysis import CoreWordList, flag_examples  # noqa: E402
from core.report import ASSOCIATION_DEFINITION, flags_definition  # noqa: E402
from dashboard import common as ui  # noqa: E402

run_a, _ = ui.page(__file__)
path = ui.require_run(run_a)
evaluated, _ = ui.eval_tables(path)
st.caption(flags_definition(evaluated.class_names))  # in this run's classes, not another dataset's
ui.run_caption(path)
scorer = ui.scorer(path)
flags = scorer.flags_
associations = scorer.associations_
try:
    marks = CoreWordList.for_run(evaluated.run)
except ValueError as exc:
    st.error(f"Your saved marks cannot be read: {exc}")
    marks = CoreWordList()


def save_mark(cls: str, word: str, action: str) -> None:
    """Save a core/spurious mark (or remove one), refit the flags and say so after the rerun."""
    try:
        {"spurious": marks.mark_spurious, "core": marks.mark_core, "no mark": marks.unmark}[action](cls, word)
    except ValueError as exc:
        st.error(str(exc))
        return
    ui.clear_scores()
    target = "every class" if cls == "*" else cls
    st.session_state["spurious_notice"] = (f"Saved: '{word.strip().lower()}' is now "
                                           f"{'unmarked' if action == 'no mark' else action} for {target}; "
                                           "the flags are recomputed.")
    st.rerun()


LOOKUP_COLUMNS = {  # words and percentages a user reads, not the analysis table's column names and fractions
    "predicted_as": "pulls toward", "reason": "why (not) flagged",
    "share_wrong": st.column_config.NumberColumn("misread", format="percent"),
    "share_right": st.column_config.NumberColumn("read right", format="percent"),
    "share_class": st.column_config.NumberColumn("predicted as the class", format="percent"),
    "share_other": st.column_config.NumberColumn("other images", format="percent"),
    "z": st.column_config.NumberColumn("z", format="%.1f")}


def slice_buttons(cls: str, words: list[str], key: str) -> None:
    """One click from a flag to its slice on the Images page: the images whose sentences use the word."""
    row = st.container(horizontal=True)
    row.caption("Its slice:")
    for word in words[:12]:
        if row.button(word, key=f"slice-{key}-{cls}-{word}", icon=":material/filter_alt:",
                      help=f"The images whose sentences use '{word}': their accuracy, errors and examples"):
            st.session_state["slice_words"] = word
            ui.go_to("pages/1_Images.py", slice=word)


notice = st.session_state.pop("spurious_notice", None)
if notice:
    st.success(notice)

st.subheader("Error view: what goes with misreading a class")
ui.chart(plots.flags_chart(flags, k=6), key="flags")
classes = scorer.classes_
tabs = st.tabs([f"Flags for {c} ({int((flags['class'] == c).sum())})" for c in classes])
for tab, cls in zip(tabs, classes):
    with tab:
        rows = scorer.flags_for(cls)
        if rows.empty:
            reason = scorer.note_for(cls, "error")
            st.info(f"No word is flagged for {cls}" + (f": {reason}." if reason else "."))
            continue
        table = rows[["rank", "word", "predicted_as", "share_wrong", "share_right", "z", "images_wrong", "n_wrong",
                      "source"]]
        table = table.assign(mark=[marks.status(cls, w) or "" for w in rows["word"]],
                             predicted_as=table["predicted_as"].fillna("–"))
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            "predicted_as": "pulls toward",
            "share_wrong": st.column_config.ProgressColumn("misread", format="percent", min_value=0, max_value=1),
            "share_right": st.column_config.ProgressColumn("read right", format="percent", min_value=0, max_value=1),
            "z": st.column_config.NumberColumn("z", format="%.1f"),
            "images_wrong": "misread images using it", "n_wrong": "misread images", "mark": "your mark",
            "source": "flagged by"})
        slice_buttons(cls, rows["word"].tolist(), key="error")

st.subheader("Association view: flags before the errors show")
st.caption(ASSOCIATION_DEFINITION)
assoc_tabs = st.tabs([f"Associated with {c} ({int((associations['class'] == c).sum())})" for c in classes])
for tab, cls in zip(assoc_tabs, classes):
    with tab:
        rows = scorer.associations_for(cls)
        if rows.empty:
            reason = scorer.note_for(cls, "association")
            st.info(f"No word is associated with {cls}" + (f": {reason}." if reason else "."))
            continue
        # Sized to fit the page (a table cut off on the right hid its last columns); rows are in rank order
        # and every row has the same number of misread images, said once below.
        columns = ["word", "share_class", "share_other", "z", "group_high", "share_group_high",
                   "group_low", "share_group_low", "confirmed", "images_misread"]
        if rows[["group_high", "group_low"]].isna().all().all():  # no true groups: nothing to confirm against
            columns = [c for c in columns if c not in ("group_high", "share_group_high", "group_low",
                                                       "share_group_low", "confirmed")]
        table = rows[columns]
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            "word": st.column_config.TextColumn("word", width=90),
            "share_class": st.column_config.ProgressColumn(f"predicted {cls}", format="percent", min_value=0,
                                                           max_value=1, width=115),
            "share_other": st.column_config.ProgressColumn("other images", format="percent", min_value=0,
                                                           max_value=1, width=115),
            "z": st.column_config.NumberColumn("z", format="%.1f", width=45),
            "group_high": st.column_config.TextColumn("group using it most", width=165),
            "share_group_high": st.column_config.NumberColumn("share there", format="percent", width=70),
            "group_low": st.column_config.TextColumn("group using it least", width=165),
            "share_group_low": st.column_config.NumberColumn("share there ", format="percent", width=70),
            "confirmed": st.column_config.CheckboxColumn("gap between groups", width=70),
            "images_misread": st.column_config.NumberColumn("misread images using it", width=80)})
        if len(rows) and "n_misread" in rows:
            st.caption(f"{cls} images misread in this run: {int(rows['n_misread'].iloc[0])}.")
        slice_buttons(cls, rows["word"].tolist(), key="association")

st.subheader("Evidence")
pairs = [("error", r["class"], r["word"]) for _, r in flags.iterrows()]
pairs += [("association", r["class"], r["word"]) for _, r in associations.iterrows()]
if not pairs:
    st.info("Nothing is flagged in this run. You can still mark a word as spurious below; it is then always flagged.")
else:
    kinds = {"error": "flagged for", "association": "associated with"}
    choice = st.selectbox("Flag", pairs, format_func=lambda p: f"{p[2]} ({kinds[p[0]]} {p[1]})")
    view, cls, word = choice
    table = flags if view == "error" else associations
    row = table[(table["class"] == cls) & (table["word"] == word)].iloc[0]
    st.markdown(f"**{word}** for **{cls}**: {row['evidence']}.")
    current = marks.status(cls, word)
    row_of_buttons = st.container(horizontal=True)
    if current != "spurious" and row_of_buttons.button(f"Confirm '{word}' as spurious",
                                                       help="Always flag it for this class."):
        save_mark(cls, word, "spurious")
    if row_of_buttons.button(f"Not spurious: '{word}' is core for {cls}",
                             help="It describes the class itself: never flag it for this class."):
        save_mark(cls, word, "core")
    if row_of_buttons.button(f"Slice: images using '{word}'", icon=":material/filter_alt:", key="evidence-slice"):
        st.session_state["slice_words"] = word
        ui.go_to("pages/1_Images.py", slice=word)
    ids = list(row["example_image_ids"] or [])
    if ids:
        st.markdown("**Example misread images** (whose sentences use the word most)" if view == "error" else
                    f"**Example images predicted as {cls}** (misread ones first, then those using the word most)")
        info = evaluated.images.set_index("image_id")
        cols = st.columns(5)
        for col, image_id in zip(cols, ids[:5]):
            with col:
                if image_id in info.index:
                    r = info.loc[image_id]
                    ui.show_image(evaluated.run.image_path(str(r["path"])),
                                  caption=f"{image_id}: {r['label_name']} → {r['prediction_name']}")
    examples = flag_examples(evaluated.run, cls, word, k=6)
    st.markdown("**Sentences that use it**")
    if examples.empty:
        st.caption("No stored sample sentence uses this word (only a sample of sentences is kept per image).")
    else:
        st.dataframe(examples[["image_id", "prediction_name", "outcome", "text"]], hide_index=True, width="stretch",
                     column_config={"prediction_name": "predicted", "text": "sentence"})

st.subheader("Mark a word")
where = ui.short_path(marks.path) if marks.path else "the run folder"
st.caption("Core words describe the class's object and are never flagged; spurious words are always flagged. Marks "
           f"are saved in `{where}` and used by every page and report"
           + (" (a shipped demo run's folder stays untouched)." if paths.is_shipped(path) else "."))
with st.form("mark"):
    c1, c2, c3 = st.columns([2, 2, 3])
    cls = c1.selectbox("Class", [*classes, "*"], format_func=lambda c: "every class" if c == "*" else c)
    suggestions = sorted(set(flags["word"])) if len(flags) else []
    word = c2.text_input("Word", key="mark_word", placeholder="e.g. " + (suggestions[0] if suggestions else "water"),
                         help="Flagged now: " + ", ".join(suggestions[:12]) if suggestions else None)
    action = c3.radio("Mark as", ["spurious", "core", "no mark"], horizontal=True, key="mark_action")
    submitted = st.form_submit_button("Save mark", type="primary")
if submitted:
    save_mark(cls, word, action)

saved = marks.to_dict()
if saved["spurious"] or saved["core"]:
    lines = [f"{'every class' if c == '*' else html.escape(str(c))} · {kind}: {ui.chips(ws, kind)}"
             for kind in ("spurious", "core") for c, ws in saved[kind].items()]
    st.markdown("**Your marks**  \n" + "  \n".join(lines), unsafe_allow_html=True)

with st.expander("Why is a word not flagged?"):
    query = st.text_input("Look up a word", key="lookup").strip().lower()
    if query:
        found = scorer.scores_[scorer.scores_["word"] == query]
        if found.empty:
            st.caption(f"No misread image's sentences use '{query}'.")
        else:
            st.markdown("Error view")
            st.dataframe(found[["class", "predicted_as", "reason", "share_wrong", "share_right", "z"]],
                         hide_index=True, width="stretch", column_config=LOOKUP_COLUMNS)
        assoc = scorer.association_scores_[scorer.association_scores_["word"] == query]
        if len(assoc):
            st.markdown("Association view")
            st.dataframe(assoc[["class", "reason", "share_class", "share_other", "z"]], hide_index=True,
                         width="stretch", column_config=LOOKUP_COLUMNS)
