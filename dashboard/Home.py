"""TExplain Studio: what an image classifier has learned, in words. `streamlit run dashboard/Home.py`."""
import html  # class names go into raw HTML below: escape them
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: `core` and `dashboard`

import streamlit as st  # noqa: E402

from dashboard import backend as api  # noqa: E402
from dashboard import common as ui  # noqa: E402

INTRO = ("A translator maps a frozen classifier's features into a language model's input; the language model "
         "then writes many sentences per image. The words it keeps using are what the features encode, "
         "including what they should not (water behind a landbird).")
run_a, run_b = ui.page(__file__, INTRO)

entries = ui.run_entries()


def run_card(entry, label: str) -> None:
    path = str(entry.path)
    s = ui.summary(path)
    st.subheader(f"{label}: {entry.folder}")
    # The status checked against the shards (a damaged run is not "complete" whatever its manifest says).
    status = entry.status if entry.status in ("complete", "running") else f":red[{entry.status}]"
    st.caption(f"{s['name']} · {status} · created {str(s['created'])[:16].replace('T', ' ')}")
    if entry.health:
        st.warning(f"This run is {entry.health}", icon=":material/warning:")
    c1, c2, c3 = st.columns(3)
    c1.metric("Accuracy", ui.pct(s["accuracy"], 1), help="Average accuracy over the run's evaluation images.")
    wg = s["worst_group"]
    cell = None
    if not wg and (bg := ui.background_challenge(entry)) is not None:
        cell = bg.worst_cell()  # ImageNet-9: each class in each background variation is a group
    if wg:
        c2.metric("Worst group", ui.pct(wg["accuracy"], 1),
                  help=f"Worst-group accuracy: the lowest per-group accuracy ({wg['group_name']})")
    elif cell:
        c2.metric("Worst group", ui.pct(cell["accuracy"], 1),
                  help=f"The worst class × background variation: {cell['class']} in {cell['variation']}, "
                       f"{int(cell['correct'])} of {int(cell['images'])} right (see Worst-group accuracy).")
    else:
        c2.metric("Worst group", "–", help="This dataset has no groups.")
    images_help = f"{s['sentences_per_image'] or '?'} sampled sentences per image"
    if s["n_errors"]:
        images_help += f"; {s['n_errors']} more could not be read and are left out"
    c3.metric("Images", s["n_images"] - s["n_errors"], help=images_help)
    split = f" ({s['split']} split)" if s["split"] else ""
    sentences = f", {s['sentences_per_image']} sentences each" if s["sentences_per_image"] else ""
    unreadable = f" ({s['n_errors']} unreadable, left out)" if s["n_errors"] else ""
    st.markdown(f"**Classifier** {s['classifier']}  \n**Dataset** {s['dataset']}{split} · "
                f"{s['n_dataset_classes']} classes  \n**Sample** {s['n_images'] - s['n_errors']} images{sentences}"
                f"{unreadable}  \n**Language model** {s['lm']}")
    if wg:
        st.caption(f"Worst group: **{wg['group_name']}**. Average over groups weighted by the training set: "
                   f"{ui.pct(wg['average_train_weighted'], 1)}.")
    elif cell:
        st.caption(f"Worst group: **{cell['class']} in {cell['variation']}** (class × background variation).")
    flagged = {c: ws for c, ws in s["flags"].items() if ws}
    if flagged:
        st.markdown("**Top flagged spurious terms**")
        for cls, words in flagged.items():
            st.markdown(f"{html.escape(str(cls))}: {ui.chips(words)}", unsafe_allow_html=True)
    else:
        st.markdown(f"**Top flagged spurious terms** none: {s['no_flags'] or 'no word pulls a class toward another'}.")


if not entries or run_a is None:
    st.info("**There are no runs yet.** A run is a folder of sentences and word counts for every image of a "
            f"dataset.\n\n{ui.HOW_TO_MAKE_A_RUN}")
else:
    link = api.mitigation_link(run_a, run_b)
    if link is not None:
        # Green only for a gain whose interval clears zero: a fix that may be noise is shown, not celebrated,
        # and one that made the worst group worse is a warning.
        show = st.warning if link.made_worse else st.success if link.clear_gain else st.info
        show(f":material/build: **Detect, fix, compare.** {link.sentence()} See *Compare classifiers* and "
             "*Worst-group accuracy*.")
    cols = st.columns(2 if run_b else 1, gap="large")
    with cols[0]:
        run_card(run_a, "Run A")
    if run_b:
        with cols[1]:
            run_card(run_b, "Run B")
    st.caption("Choose the runs in the sidebar; every page follows the choice.")

demos = ui.demo_runs(entries)
if demos:
    st.subheader("Demos")
    for title, (blurb, a, b) in demos.items():
        text, button = st.columns([4, 1], vertical_alignment="center")
        text.markdown(f"**{title}** · {blurb}")
        if button.button("Open as runs A and B", key=f"demo-{title}", width="stretch"):
            ui.select_runs(a, b)

st.divider()
st.subheader("Go to")
links = st.columns(4)
for i, (target, (label, icon, blurb)) in enumerate(ui.PAGES.items()):
    with links[i % 4]:
        st.page_link(target, label=label, icon=icon)
        st.caption(blurb)

st.divider()
left, right = st.columns([2, 3], gap="large")
with left:
    st.subheader("Compute")
    st.markdown(f"Live explanations run on **{ui.device_label()}**.")
    st.caption("CUDA with bf16 where a GPU is present, else the CPU in float32.")
with right:
    st.subheader("Offline assets")
    statuses = ui.asset_status()
    missing = [s for s in statuses if not s["ready"]]
    for s in statuses:
        mark = ":green[:material/check_circle: found]" if s["ready"] else ":red[:material/cancel: missing]"
        st.markdown(f"{mark} **{s['name']}**" + ("" if s["ready"] else f" · fix with `{s['fix']}`"))
    if missing:
        st.warning("Some assets are missing: run `make setup` (idempotent, offline apart from package registries).")
