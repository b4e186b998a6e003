"""Per-group and worst-group accuracy, groups inferred from the flags vs. the true ones, and mitigation."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `core` and `dashboard`

import streamlit as st  # noqa: E402

from core import dashboard_api as api  # noqa: E402
from core import plots  # noqa: E402
from dashboard import common as ui  # noqa: E402

INTRO = ("Average accuracy hides the groups a shortcut fails: landbirds on water, waterbirds on land. The "
         "worst group is what a fix must raise.")
run_a, _ = ui.page(__file__, INTRO)
path = ui.require_run(run_a)
ui.run_caption(path)
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
    ui.chart(plots.group_accuracy_chart(g.true.per_group, g.true.worst_group, g.true.average_weighted), key="true")

st.subheader("Groups inferred from the explanations")
if g.inferred is None:
    st.info("No group could be inferred: no word is flagged for any class (see Spurious terms).")
else:
    st.caption("Each image is put in a group by its class and whether its explanations carry that class's flagged "
               "words: " + "; ".join(f"{c}: {', '.join(ws)}" for c, ws in g.inferred_words.items()) + ".")
    m1, m2, m3 = st.columns(3)
    m1.metric("Worst inferred-group accuracy", ui.pct(g.inferred.worst, 1), help=g.inferred.worst_group_name)
    if g.agreement is not None:
        m2.metric("Agreement with true groups", ui.pct(g.agreement.accuracy, 1),
                  help="Share of images whose inferred group matches their true group (best one-to-one matching).")
        m3.metric("Adjusted Rand index", f"{g.agreement.adjusted_rand:.2f}", help="1 = same partition, 0 = chance.")
    ui.chart(plots.group_accuracy_chart(g.inferred.per_group, g.inferred.worst_group, g.inferred.average_weighted,
                                        title="Accuracy per inferred group"), key="inferred")
    if g.crosstab is not None:
        st.markdown("**Inferred vs. true groups** (images)")
        st.dataframe(g.crosstab, width="stretch")

st.subheader("Mitigation")
records, problem = api.read_mitigation(path)
if problem:
    st.error(problem)
if records is None:
    command = api.mitigate_command(run_a, ui.run_entries())
    st.info("No mitigation results for this run yet. Produce them with\n\n"
            f"```\n{command}\n```\n\n"
            + ("(RUN_VAL: a run of the same classifier on the validation split.) " if "RUN_VAL" in command else "")
            + "It fixes the classifier with what the explanations flagged (last-layer reweighting on the inferred "
              "groups; MaskTune) and writes `mitigation.json` into the run folder; this page then shows "
              "worst-group and average accuracy before and after.")
else:
    ui.chart(plots.mitigation_chart(records), key="mitigation")
    shown = records[[c for c in ("method", "groups", "worst_group_before", "worst_group_after", "average_before",
                                 "average_after") if c in records]]
    percent = {c: st.column_config.NumberColumn(format="percent") for c in shown.columns
               if c.endswith(("_before", "_after"))}
    st.dataframe(shown, hide_index=True, width="stretch", column_config=percent)
    per_group = api.mitigation_per_group(records)
    if len(per_group):
        st.markdown("**Per group** (accuracy on the true groups, before → after)")
        st.dataframe(per_group.assign(change=100 * per_group["change"].astype(float)), hide_index=True,
                     width="stretch", column_config={
                         "before": st.column_config.NumberColumn(format="percent"),
                         "after": st.column_config.NumberColumn(format="percent"),
                         "change": st.column_config.NumberColumn(format="%+.1f pts")})
