"""Per-group and worst-group accuracy, groups inferred from the flags vs. the true ones, and mitigation."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `core` and `dashboard`

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from core import jobs, plots  # noqa: E402
from core.analysis.groups import describe_group_words  # noqa: E402
from core.report.build import mitigation_cautions  # noqa: E402
from dashboard import backend as api  # noqa: E402
from dashboard import common as ui  # noqa: E402

INTRO = ("Average accuracy hides the groups a shortcut fails: the images of a class that come with what the "
         "classifier learned to read as another class (another class's usual background, say). The worst group is "
         "what a fix must raise.")
ACCURACY_COLUMNS = {"accuracy": st.column_config.NumberColumn(format="percent"),
                    "ci_low": st.column_config.NumberColumn("95% low", format="percent"),
                    "ci_high": st.column_config.NumberColumn("95% high", format="percent")}
run_a, _ = ui.page(__file__, INTRO)
path = ui.require_run(run_a)
ui.run_caption(path)

bg = ui.background_challenge(run_a)
if bg is not None:
    st.subheader("Accuracy by background variation")
    st.caption("The ImageNet-9 Backgrounds Challenge (Xiao et al. 2020): the same photos as they are (original), the "
               "object alone (only_fg), the background alone (only_bg_t), the object on a background of its own class "
               "(mixed_same) or of a random class (mixed_rand). One run per variation of this classifier; intervals "
               "are 95% Wilson intervals.")
    if bg.bg_gap is not None:
        gap = bg.bg_gap
        spread = f"95% paired bootstrap interval {100 * gap['low']:+.1f} to {100 * gap['high']:+.1f} pts"
        m1, m2 = st.columns([1, 3])
        m1.metric("BG-gap", f"{100 * gap['gap']:+.1f} pts", help=f"Accuracy on mixed_same minus accuracy on "
                  f"mixed_rand (Xiao et al.); {spread}.")
        m2.markdown(f"{bg.reading()}  \n:gray[{spread}, {gap['n']} photos in both runs.]")
    else:
        st.caption("The BG-gap needs this classifier's mixed_same and mixed_rand runs; one of them is missing.")
    ui.chart(plots.variation_accuracy_chart(bg.table), key="variations")
    st.dataframe(bg.table, hide_index=True, width="stretch", column_config=ACCURACY_COLUMNS)
    if not bg.by_class.empty:
        st.markdown("**Class × variation groups**: each class in each variation is a group, as Waterbirds' "
                    "class × background groups are.")
        worst = bg.worst_cell()
        if worst is not None:
            m1, m2 = st.columns([1, 3])
            m1.metric("Worst class × variation", ui.pct(worst["accuracy"], 1),
                      help=f"{worst['class']} in {worst['variation']}, {int(worst['images'])} images. Among the "
                           "groups with at least 5 images that show the object (only_bg_* hold none).")
            m2.markdown(f"Worst group: **{worst['class']} in {worst['variation']}**, {int(worst['correct'])} of "
                        f"{int(worst['images'])} right  \n:gray[95% Wilson interval {ui.pct(worst['ci_low'], 0)} to "
                        f"{ui.pct(worst['ci_high'], 0)}.]")
        ui.chart(plots.class_variation_heatmap(bg.by_class, worst), key="class-variations")
        with st.expander("Class × variation table"):
            st.dataframe(bg.by_class, hide_index=True, width="stretch", column_config=ACCURACY_COLUMNS)
    if len(bg.words):
        st.markdown("**Words that separate mixed_rand errors**: their share of sentences rises from the original "
                    "photos to the same objects on random backgrounds that the classifier gets wrong.")
        st.dataframe(bg.words, hide_index=True, width="stretch", column_config={
            "share_original": st.column_config.NumberColumn("share, original", format="percent"),
            "share_mixed_rand_errors": st.column_config.NumberColumn("share, mixed_rand errors", format="percent"),
            "rise": st.column_config.NumberColumn(format="percent"),
            "images": "mixed_rand errors using it", "z": st.column_config.NumberColumn(format="%.1f")})
    for note in bg.notes:
        st.caption(note)
    st.divider()

g = ui.groups(path)
for note in g.notes:
    st.caption(note)

if g.true is not None:
    st.subheader("True groups")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Worst-group accuracy", ui.pct(g.true.worst, 1), help=g.true.worst_group_name)
    m2.metric("Average (this split's group sizes)", ui.pct(g.true.average_weighted, 1),
              help="Weighted by the evaluation images' own group sizes: plain accuracy.")
    m3.metric("Average (training group shares)", ui.pct(g.average_train_weighted, 1),
              help="Weighted by the training set's group shares, as the Waterbirds literature reports it.")
    m4.metric("Mean over groups", ui.pct(g.true.average_unweighted, 1))
    st.caption(f"Worst group: **{g.true.worst_group_name}**.")
    if (caution := api.small_worst_group(g.true)) is not None:
        st.caption(caution)
    ui.chart(plots.group_accuracy_chart(g.true.per_group, g.true.worst_group, g.true.average_weighted), key="true")

st.subheader("Groups inferred from the explanations")
if g.inferred is None:
    st.info("No group could be inferred: no word is flagged for any class (see Spurious terms).")
else:
    st.caption("Each image is put in a group by its class and whether its explanations carry that class's flagged "
               "words: " + g.inferred_words_text + ".")
    m1, m2, m3 = st.columns(3)
    m1.metric("Worst inferred-group accuracy", ui.pct(g.inferred.worst, 1), help=g.inferred.worst_group_name)
    if (caution := api.small_worst_group(g.inferred)) is not None:
        st.caption(caution)
    if g.agreement is not None:
        m2.metric("Agreement with true groups", ui.pct(g.agreement.accuracy, 1),
                  help="Share of images whose inferred group matches their true group (best one-to-one matching).")
        m3.metric("Adjusted Rand index", f"{g.agreement.adjusted_rand:.2f}", help="1 = same partition, 0 = chance.")
    ui.chart(plots.group_accuracy_chart(g.inferred.per_group, g.inferred.worst_group, g.inferred.average_weighted,
                                        title="Accuracy per inferred group"), key="inferred")
    if g.crosstab is not None:
        st.markdown("**Inferred vs. true groups** (images)")
        # Fixed widths: wide group names pushed the last true group off the right edge.
        st.dataframe(g.crosstab, width="stretch", column_config={
            "_index": st.column_config.TextColumn("inferred group", width=230),
            **{str(c): st.column_config.NumberColumn(str(c), width=150) for c in g.crosstab.columns}})

st.subheader("Mitigation: fix the classifier with what its explanations flagged")
records, problem = api.read_mitigation(path)
star = records[(records["method"] == "dfr") & (records["groups"] == "inferred")] if records is not None else None
fitted = star.iloc[-1] if star is not None and len(star) else None  # your own result when there is one
details = fitted["details"] if fitted is not None and isinstance(fitted.get("details"), dict) else {}
if details.get("spurious_words"):
    used = (f"the words flagged on the validation run **{Path(str(details.get('run_val', '?'))).name}** "
            f"({describe_group_words(details['spurious_words'], details.get('word_views'))})")
else:
    used = ("the words flagged on the validation run it is fitted on (its own flags, which may differ from this "
            "run's above)")
st.caption("Last-layer reweighting (DFR) refits only the classifier's last layer on held-out (validation) images, "
           f"balanced over groups: groups inferred from {used}, with no group labels; the true groups (a "
           "reference); or the classes alone (a control). Scored on this run's images with the true groups; "
           "intervals are 95% paired bootstrap intervals.")
if problem:
    st.error(problem)
if records is not None:
    for caution in mitigation_cautions(records.to_dict("records")):
        st.warning(caution, icon=":material/warning:")
    if fitted is not None:
        r = fitted
        worse = r["worst_group_after"] < r["worst_group_before"] - 0.0005
        m1, m2, m3 = st.columns(3)
        spread = (f"95% interval {100 * r['worst_group_change_low']:+.0f} to {100 * r['worst_group_change_high']:+.0f}"
                  " pts" if pd.notna(r["worst_group_change_low"]) else None)
        m1.metric("Worst group after the fix: worse, do not ship" if worse else
                  "Worst group, fixed from the explanations", ui.pct(r["worst_group_after"], 1),
                  **ui.delta(100 * r["worst_group_change"]), help=spread)
        m2.metric("Worst group before", ui.pct(r["worst_group_before"], 1))
        m3.metric("Average after", ui.pct(r["average_after"], 1), **ui.delta(100 * r["average_change"]))
        if spread:
            st.caption(f"Worst-group gain with groups inferred from the explanations: {spread}.")
    sources = set(records["source"])
    st.caption({"shipped": "Results shipped with this demo run.", "yours": "Results of your own mitigation run."}
               .get(next(iter(sources)), "") if len(sources) == 1 else
               "Results shipped with this demo run, and of your own mitigation run (marked “yours”).")
    ui.chart(plots.mitigation_chart(records), key="mitigation")
    shown = records.reindex(columns=["label", "worst_group_before", "worst_group_after", "worst_group_gain",
                                     "average_before", "average_after", "checkpoint"])
    percent = {c: st.column_config.NumberColumn(c.replace("_", " ").replace("worst group ", "worst group, "),
                                                format="percent")
               for c in shown.columns if c.endswith(("_before", "_after"))}
    st.dataframe(shown, hide_index=True, width="stretch", column_config={
        **{c: {**v, "width": 95} for c, v in percent.items()},
        "label": st.column_config.TextColumn("fix", width=150),
        "worst_group_gain": st.column_config.TextColumn("worst-group gain (95% interval)", width=170),
        "checkpoint": st.column_config.TextColumn("new classifier", width=200)})
    per_group = api.mitigation_per_group(records)
    if len(per_group):
        with st.expander("Per group (accuracy on the true groups, before → after)"):
            st.dataframe(per_group.assign(change=100 * per_group["change"].astype(float)), hide_index=True,
                         width="stretch", column_config={
                             "before": st.column_config.NumberColumn(format="percent"),
                             "after": st.column_config.NumberColumn(format="percent"),
                             "change": st.column_config.NumberColumn(format="%+.1f pts")})

st.markdown("**Run the mitigation on this run**")
entries = ui.run_entries()
val, test = api.mitigation_pairs(run_a, entries)
if blocker := api.mitigation_blocker(run_a):
    st.info(blocker)
elif val is None:
    st.info(f"Mitigation fits on a run of the same classifier on the **validation** split; there is none for "
            f"**{run_a.models.get('classifier', '?')}**. Explain the val split on the New run page, then come back. "
            f"From a terminal:\n\n```\n{api.mitigate_command(run_a, entries)}\n```")
else:
    job_folder = ui.mitigation_job_folder(test or val)
    with st.form("mitigate"):
        st.caption(f"Fits on **{val.folder}** ({val.progress.get('done_images', '?')} validation images)"
                   + (f", scores on **{test.folder}**" if test else ", scores on the dataset's test split")
                   + ". New classifiers go to your runs folder; nothing is written into the shipped demo.")
        c1, c2 = st.columns(2)
        method = c1.selectbox("Method", ["dfr", "masktune", "all"], help="dfr: last-layer reweighting (about a "
                              "minute on a CPU); masktune: GradCAM masking + fine-tuning (slow on a CPU).")
        groups = c2.selectbox("Groups (DFR)", ["all", "inferred", "true", "class"],
                              help="all = inferred, true and classes only, side by side.")
        go = st.form_submit_button("Run in the background", type="primary")
    if go:
        try:
            jobs.start_mitigate(val.path, test.path if test else None, method=method, groups=groups)
        except (jobs.JobError, OSError) as exc:
            st.error(f"The mitigation could not be started: {exc}")
        else:
            st.rerun()
    state = jobs.job_status(job_folder, kind="mitigate")

    @st.fragment(run_every=2.0 if state.running else None)
    def show_job() -> None:
        job = jobs.job_status(job_folder, kind="mitigate")
        if job.state == "unknown":
            return
        with st.container(border=True):
            head, button = st.columns([4, 1])
            head.markdown(f"**Mitigation job** · {job.state}: {job.message}")
            if job.running and button.button("Stop", key="stop-mitigation"):
                jobs.stop(job.out, kind="mitigate")
                st.rerun(scope="app")
            if job.log_tail:
                st.code(job.log_tail, language=None)
        if state.running and not job.running:  # it just finished: show its results
            st.rerun(scope="app")

    show_job()
