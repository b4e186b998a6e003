"""Word distributions per class and per group, and a log-odds comparison of any two sets of images."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `core` and `dashboard`

import streamlit as st  # noqa: E402

from core import plots  # noqa: E402
from dashboard import backend as api  # noqa: E402
from dashboard import common as ui  # noqa: E402

BY = {"class": "label", "group": "group", "prediction": "prediction", "correct vs. wrong": "outcome"}

INTRO = ("A word's share is the fraction of an image's sentences that use it, averaged over the images of a "
         "class or group (bars: 95% intervals).")
run_a, _ = ui.page(__file__, INTRO)
path = ui.require_run(run_a)
ui.run_caption(path)
evaluated, _ = ui.eval_tables(path)
cells = evaluated.stats.images  # the run's cells, not one row per image (a million-image run stays small)
has_groups = "group" in cells and cells["group"].notna().any()

st.subheader("Word distributions")
c1, c2 = st.columns([3, 1])
options = [k for k in BY if k != "group" or has_groups]
by_label = c1.radio("Per", options, horizontal=True)
k = c2.slider("Words per panel", 5, 20, 10)
by = BY[by_label]
shares = ui.shares(path, by=by)
ui.chart(plots.class_words_chart(shares, by=by, k=k, title=f"Top words per {by_label}"), key="distributions")
SHARE_COLUMNS = {"share": st.column_config.NumberColumn("share of sentences", format="percent"),
                 "ci_low": st.column_config.NumberColumn("95% low", format="percent"),
                 "ci_high": st.column_config.NumberColumn("95% high", format="percent"),
                 "images_with_word": "images using it", "n_images": "images", "label": "class",
                 "prediction": "predicted class", "outcome": "outcome"}
with st.expander("Table"):
    st.dataframe(shares, hide_index=True, width="stretch", column_config=SHARE_COLUMNS)

st.subheader("Compare two sets of images")
st.caption("Log-odds z-scores (Monroe et al., 'Fightin' Words'): bars to the right are words typical of the first "
           "set, to the left of the second. Read z as a ranking; the shares in the hover are the numbers to quote.")
choices = api.image_set_choices(evaluated)
labels = list(choices)
# The first class's two attribute values (Waterbirds: landbird on water vs on land), whatever they are called.
by_group = {v["group"]: i for i, v in enumerate(choices.values()) if set(v) == {"group"}}
defaults = [by_group[g] for g in (1, 0) if g in by_group]
if len(defaults) < 2:
    misread = [i for i, n in enumerate(labels) if n.endswith(", misread")]
    defaults = [misread[0], misread[0] - 1] if misread else [0, min(1, len(labels) - 1)]
s1, s2 = st.columns(2)
name_a = s1.selectbox("First set", labels, index=defaults[0], key="set_a")
name_b = s2.selectbox("Second set", labels, index=defaults[1], key="set_b")
if name_a == name_b:
    st.warning("Choose two different sets.")
    st.stop()
cmp = ui.comparison(path, name_a, name_b)
if cmp.n_a == 0 or cmp.n_b == 0:
    st.warning(cmp.note)
    st.stop()
comparison = cmp.table
m1, m2, m3 = st.columns(3)
m1.metric(f"Images in {name_a}", cmp.n_a)
m2.metric(f"Images in {name_b}", cmp.n_b)
if cmp.jensen_shannon is not None:
    m3.metric("Jensen–Shannon divergence", f"{cmp.jensen_shannon:.3f} bits",
              help="0 = the same word distribution, 1 = no word in common.")
else:
    m3.caption(cmp.note)
ui.chart(plots.log_odds_chart(comparison, k=12), key="log-odds")
with st.expander("Table"):
    st.dataframe(comparison.head(40), hide_index=True, width="stretch", column_config={
        "share_a": st.column_config.NumberColumn(f"share in {name_a}", format="percent"),
        "share_b": st.column_config.NumberColumn(f"share in {name_b}", format="percent"),
        "images_a": f"images in {name_a} using it", "images_b": f"images in {name_b} using it",
        "z": st.column_config.NumberColumn("z", format="%.1f"), "delta": st.column_config.NumberColumn(
            "log-odds", format="%.2f")})
