"""Spurious-term flags in two views (error view: misread vs read right; association view: what a class's
predictions go with), with their evidence, example images and sentences; mark words as core or spurious."""
import html  # class names go into raw HTML below: escape them
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `core` and `dashboard`

import streamlit as st  # noqa: E402

from core import jobs, paths, plots  # noqa: E402
from core.analysis import CoreWordList, flag_examples  # noqa: E402
from core.evaluation.causal import RESULT_FILE  # noqa: E402
from core.evaluation.openworld import is_scene_word  # noqa: E402
from core.models import registry  # noqa: E402
from core.report import ASSOCIATION_DEFINITION, evidence, flags_definition  # noqa: E402
from core.store import user_file  # noqa: E402
from dashboard import backend as api  # noqa: E402
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


def example_maps(evaluated, ids: list[str], word: str) -> None:
    """The example images, each with the word's map over it where it was computed, and a button that computes the
    others (core.report.evidence: stored with the run, so they show at once next time and in the HTML report)."""
    info = evaluated.images.set_index("image_id")
    ids = [i for i in ids if i in info.index]
    cols = st.columns(5)
    doc = evidence.map_reliability(path)
    missing, method = [], evidence.preferred_in(doc)
    for col, image_id in zip(cols, ids):
        r = info.loc[image_id]
        with col:
            picture = evidence.stored_picture(evaluated.run, image_id, word, method=method)
            if picture is not None:
                st.image(picture, caption=f"{image_id}: {r['label_name']} → {r['prediction_name']}", width="stretch")
            else:
                missing.append(image_id)
                ui.show_image(evaluated.run.image_path(str(r["path"])),
                              caption=f"{image_id}: {r['label_name']} → {r['prediction_name']}")
    if len(missing) < len(ids):
        st.caption(f"Coloured: where in the image the classifier's features make the language model say '{word}' "
                   "(red: most, blue: least; the ring marks the peak), over the centre crop the classifier sees.")
        if reliability := evidence.reliability_text(doc, method):
            st.caption(f"How far to trust the maps: {reliability}")
    if not missing:
        return
    per = api.seconds_per_map(path, method)
    about = f" (about {per * len(missing):.0f} s, plus loading the models the first time)" if per else ""
    if not st.button(f"Show where '{word}' comes from on {'this image' if len(missing) == 1 else 'these images'}",
                     key="evidence-maps", icon=":material/travel_explore:",
                     help=f"Computes {len(missing)} word map(s){about}; they are kept with the run."):
        return
    bar = st.progress(0.0, text="Loading the classifier, translator and language model…")
    try:
        clf, tr, lm = ui.load_models(registry.run_model_sources(ui.tables(path).manifest))
    except Exception as exc:  # the run's models are not here
        bar.empty()
        st.error(f"**The maps need the run's models.** {exc}")
        return
    t0, problems = time.time(), []
    for i, image_id in enumerate(missing):
        bar.progress(i / len(missing), text=f"Mapping '{word}' on image {image_id} ({i + 1} of {len(missing)})…")
        try:
            evidence.compute_map(path, image_id, word, clf, tr, lm, method=method)
        except ValueError as exc:  # the image's sentences do not use the word after all
            problems.append(f"{image_id}: {exc}")
    bar.progress(1.0, text=f"{len(missing)} map(s) in {time.time() - t0:.0f} s")
    if problems:
        st.warning("Some images could not be mapped: " + "; ".join(problems))
    else:
        st.rerun()


def show_test(t: dict, cls: str, word: str) -> None:
    """One stored causal test of (cls, word): its verdict, the two rates with 95% intervals, the word's share."""
    badge = {"causal": ":red-background[**causal**]", "correlational only": ":gray-background[**correlational "
             "only**]"}.get(t["verdict"], f":orange-background[**{t['verdict']}**]")
    st.markdown(f"{badge} · {evidence.tested_images(t['record'], cls, word)}")
    if t["verdict"] not in ("causal", "correlational only"):
        st.caption(evidence.causal_text(t["record"], cls, word))
        return

    def interval(ci) -> str:
        return f"95% CI {ui.pct(ci[0])}–{ui.pct(ci[1])}" if ci else ""

    swap, scene = t["fill"] == "swap", t["region"] == "scene"
    where = ("The image's scene (all but its object: the top of the predicted class's Grad-CAM), " if scene
             else f"The top {ui.pct(t['share'])} of the word's map, ")
    m1, m2, m3 = st.columns(3)
    m1.metric(("Predictions changed: the scene swapped" if scene else "Predictions changed: the word's region "
               + ("swapped" if swap else "removed")), ui.pct(t["changed"]),
              interval(t["changed_ci"]), delta_color="off", delta_arrow="off",
              help=where + (f"taken from an image of {cls} whose sentences lack '{word}'" if swap
                            else f"filled ({t['fill']})") + ", then classified again.")
    m2.metric("Control: " + ("the scene from an image with the word" if scene else "the same region from an image "
                             "with the word" if swap else "as much removed elsewhere"),
              ui.pct(t["control"]), interval(t["control_ci"]), delta_color="off", delta_arrow="off",
              help=f"The same region taken from another image of {cls} whose sentences use '{word}'." if swap
              else "A rectangle of the same area at a random place.")
    m3.metric(f"Sentences using '{word}'", f"{ui.pct(t['share_before'])} → {ui.pct(t['share_after'])}",
              help="The image explained again after the word's region is " + ("swapped." if swap else "removed."))
    st.caption(evidence.causal_text(t["record"], cls, word))


def causal_section(cls: str, word: str, predicted) -> None:
    """Does the classifier use what the word names? The stored causal tests of the flag, and a button that runs the
    test as a background job (`texplain verify`), with its progress."""
    predicted = predicted if isinstance(predicted, str) else None
    scene = is_scene_word(word)  # tested as a scene swap (core.jobs.start_verify)
    if scene:
        st.markdown(f"**Does the classifier use it?** '{word}' names a scene: swap each image's scene for that of a "
                    f"{cls} image whose sentences do not name it, and see whether the prediction changes more than "
                    "when the scene comes from one that does.")
    else:
        st.markdown("**Does the classifier use it?** Remove the part of the image the word comes from and see "
                    "whether the prediction changes more than when as much is removed elsewhere.")
    tests = api.causal_tests(path, cls, word)
    if len(tests):
        tests = tests.assign(first=[0 if p == predicted else 1 if p is None else 2 for p in tests["predicted"]])
        for t in tests.sort_values(["first", "images"], ascending=[True, False]).to_dict(orient="records"):
            show_test(t, cls, word)
    folder = user_file(path, RESULT_FILE).parent
    state = jobs.job_status(folder, kind="verify")
    n = api.causal_candidates(ui.tables(path), cls, word, predicted)
    same = tests["predicted"].eq(predicted) if predicted else tests["predicted"].isna()
    same &= tests["region"].eq("scene" if scene else "map")  # the images of the test the button runs
    done = int(tests.loc[same, "images"].max()) if same.any() else 0  # images this flag's own test already did
    read = f" read as {predicted}" if predicted and predicted != cls else ""
    if n == 0:
        st.caption(f"No {cls} image{read} uses '{word}': there is nothing to test.")
    elif done < n:
        per_image = (ui.tables(path).manifest.get("settings") or {}).get("sentences_per_image")
        # One word map, then the image explained twice (its region removed, and the control).
        per = (api.seconds_per_map(path) or 10.0) + jobs.estimate(2, per_image if isinstance(per_image, int)
                                                                  else 32).seconds
        c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
        k = c1.number_input("Images to test", min_value=1, max_value=n, value=min(n, 40), key="verify-images",
                            help=f"{n} {cls} image(s){read} use '{word}'; more images give narrower intervals.")
        label = "Test whether the classifier uses it" if not done else f"Test more images ({done} done are kept)"
        if c2.button(label, type="primary", icon=":material/science:", disabled=state.running, key="verify-start",
                     help=f"A background job (`texplain verify`), about {api.duration_text(per * (k - done))}; "
                          "you can leave the page."):
            try:
                jobs.start_verify(path, cls, word, predicted, max_images=None if k >= n else int(k))
            except (jobs.JobError, OSError) as exc:
                st.error(f"The test could not be started: {exc}")
            else:
                st.rerun()

    @st.fragment(run_every=2.0 if state.running else None)
    def show_job() -> None:
        job = jobs.job_status(folder, kind="verify")
        target = jobs.verify_target(job)
        mine = target["class"] == cls and target["word"] == word
        if job.running or (mine and job.state in ("failed", "stopped")):
            with st.container(border=True):
                head, button = st.columns([4, 1], vertical_alignment="center")
                head.markdown(f"**Causal test of '{target['word']}' under {target['class']}** · {job.message}")
                if job.running and button.button("Stop", key="stop-verify"):
                    jobs.stop(job.out, kind="verify")
                    st.rerun(scope="app")
                if job.total_images:
                    st.progress(job.fraction)
                if job.state == "failed" and job.log_tail:
                    st.code(job.log_tail, language=None)
                if job.running and not mine:
                    st.caption("One test runs at a time per run; this flag's can start when it ends.")
        if state.running and not job.running:  # it just finished: show its result
            st.rerun(scope="app")

    show_job()


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
        if any(verdicts := api.causal_verdicts(path, rows)):  # tested flags: the causal test's verdict, by the word
            table.insert(3, "causal", [v or "not tested" for v in verdicts])
        st.dataframe(table, hide_index=True, width="stretch", column_config={
            "predicted_as": "pulls toward",
            "share_wrong": st.column_config.ProgressColumn("misread", format="percent", min_value=0, max_value=1),
            "share_right": st.column_config.ProgressColumn("read right", format="percent", min_value=0, max_value=1),
            "z": st.column_config.NumberColumn("z", format="%.1f"),
            "images_wrong": "misread images using it", "n_wrong": "misread images", "mark": "your mark",
            "source": "flagged by", "causal": "causal test"})
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
        example_maps(evaluated, ids[:5], word)
    causal_section(cls, word, row.get("predicted_as") if view == "error" else cls)
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
