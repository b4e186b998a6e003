"""Explain one image: a dataset image's stored explanation, or a new upload explained live."""
import dataclasses
import html
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `core` and `dashboard`

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from core import plots  # noqa: E402
from core.models import registry  # noqa: E402
from core.report import evidence  # noqa: E402
from dashboard import backend as api  # noqa: E402
from dashboard import common as ui  # noqa: E402

RESULT = "explain_upload"  # session-state key: the last live explanation (survives reruns and page changes)
MAPS_ON = "explain_maps_on"  # session-state key: the user asked for a word map once; later picks map at once

INTRO = ("The words the language model uses for one image are what the classifier's features say about it.")
run_a, _ = ui.page(__file__, INTRO)
_dataset = (run_a.dataset or {}) if run_a is not None else {}
if run_a is not None and run_a.folder.startswith("demo-"):  # the Waterbirds demo's runs
    st.info("On the demo, **species words for unseen birds are often wrong** (the translator saw 35 birds), while "
            "**scene words** (water, lake, forest, grass…) are reliable: read the scene words first.",
            icon=":material/lightbulb:")
elif _dataset.get("kind") == "backgrounds_challenge" and (tip := api.general_translator_tip(run_a.models)):
    st.info(tip, icon=":material/lightbulb:")

source = st.radio("Image", ["From the run", "Upload an image"], horizontal=True, label_visibility="collapsed")


def show_words(words, n_sentences: int, sentences: list[str], key: str) -> None:
    """Word cloud, bar chart of the most frequent words and sample sentences."""
    if words.empty:
        st.warning("The sentences for this image contain no countable words.")
        return
    cloud, bars = st.columns([1, 1], gap="large")
    with cloud:
        st.markdown("**Word cloud** (size = share of sentences using the word)")
        try:
            st.image(api.word_cloud_image(api.top_share(words)), width="stretch")
        except ValueError as exc:
            st.caption(str(exc))
    with bars:
        ui.chart(plots.top_words_chart(words, k=12, title=f"Most frequent words ({n_sentences} sentences)"),
                 key=f"{key}-bars")
    st.markdown("**Sample sentences**")
    # The language model's text is shown as text: it may hold markdown or HTML look-alikes.
    shown = [html.escape(s.strip()) for s in sentences if s and s.strip()]
    if shown:
        st.markdown("<ul>" + "".join(f"<li>{s}</li>" for s in shown) + "</ul>", unsafe_allow_html=True)
    empty = len(sentences) - len(shown)
    if empty or not shown:
        st.caption(f"{empty} empty sentence(s) not shown." if shown else "No sentences stored for this image.")


@st.cache_data(show_spinner=False, max_entries=64)
def class_cam(path: str, image_id: str, class_index: int):
    """The Grad-CAM of class `class_index` over a run's image, with the classifier's preprocessing (its crop)."""
    sources = registry.run_model_sources(ui.tables(path).manifest)
    stamp = ui.file_stamp(Path(sources.classifier) / "model.safetensors")  # as ui.load_models keys it
    clf = registry.classifier_for_run(ui.classifier(sources.classifier, stamp), sources)
    return evidence.class_map(api.run_image(path, image_id), clf, class_index), clf.preprocessing


def compute_map(path: str, image_id: str, word: str, method: str = "auto") -> bool:
    """Compute and store the map of `word` over the image, with progress; False (and an error shown) on failure."""
    with st.status(f"Mapping '{word}' over the image…", expanded=True) as status:
        try:
            st.write("Loading the classifier, translator and language model (cached after the first time)…")
            clf, tr, lm = ui.load_models(registry.run_model_sources(ui.tables(path).manifest))
            st.write(f"Following '{word}' in the image's sentences back to the classifier's features…")
            t0 = time.time()
            evidence.compute_map(path, image_id, word, clf, tr, lm, method=method)
        except Exception as exc:  # the run's models are not here, a word the sentences lack, an unreadable image
            status.update(label=f"Could not map '{word}'", state="error")
            st.error(f"**{type(exc).__name__}:** {exc}")
            return False
        status.update(label=f"Mapped '{word}' in {time.time() - t0:.1f} s", state="complete", expanded=False)
    return True


def word_map_section(path: str, image_id: str, r, words) -> None:
    """Pick a word of the image's sentences: where in the image it comes from, next to the predicted class's
    Grad-CAM (core.report.evidence; maps are computed on demand and kept with the run)."""
    if words.empty:  # no sentences, no word to map
        return
    st.subheader("Where in the image a word comes from")
    scorer, cls = ui.scorer(path), str(r["label_name"])
    flags = scorer.flags_for(cls) if cls in scorer.classes_ else scorer.flags_.iloc[:0]  # and what they pull toward
    flagged = dict(zip(flags["word"], flags["predicted_as"].fillna("another class")))
    options = words["word"].head(40).tolist()
    share = dict(zip(words["word"], words["share"]))
    default = next((w for w in options if w in flagged), options[0])
    c1, c2, c3 = st.columns([3, 2, 2], vertical_alignment="bottom")
    word = c1.selectbox("Word to map", options, index=options.index(default), key=f"map_word_{image_id}",
                        format_func=lambda w: f"{w} ({ui.pct(share[w])} of sentences)"
                        + (f" · flagged: pulls {r['label_name']} toward {flagged[w]}" if w in flagged else ""),
                        help="The image's words, most used first; flagged words of its class are marked.")
    opacity = c2.slider("Map opacity", 0.0, 1.0, 0.5, 0.05, key="map_opacity",
                        help="0 shows the photo alone; 1 the map alone.")
    # The run's pointing game may say occlusion finds objects where gradient maps do not: then it comes first.
    method = c3.radio("Map by", ("auto", "occlusion"), horizontal=True, key="map_method",
                      index=("auto", "occlusion").index(evidence.preferred_method(path)),
                      format_func=lambda m: "gradient" if m == "auto" else "occlusion",
                      help="Gradient: the word's Grad-CAM, in seconds (occlusion where the classifier has no "
                           "spatial feature map). Occlusion: 49 patches hidden one at a time, several times slower; "
                           "on a classifier fine-tuned where object and background go together "
                           "it finds the object far more often. The figures under the maps say how often each pointed "
                           "right on this run; where they say occlusion does clearly better, it is chosen first.")
    if evidence.stored_map(path, image_id, word, method) is None:
        per = api.seconds_per_map(path, method)
        if not st.session_state.get(MAPS_ON) and not st.button(
                f"Show where '{word}' comes from", type="primary", icon=":material/travel_explore:"):
            st.caption("A word map is computed when you ask for it ("
                       + (f"about {per:.0f} s each on the machine that measured this run's maps" if per else "seconds")
                       + ", plus loading the models the first time) and kept with the run, so it shows at once next "
                       "time and in the HTML report.")
            return
        st.session_state[MAPS_ON] = True
        if not compute_map(path, image_id, word, method):
            return
    try:
        cam, pre = class_cam(path, image_id, int(r["prediction"]))
    except Exception as exc:  # the run's classifier is not here: the word map still shows
        cam, pre, cam_problem = None, None, f"No Grad-CAM: {exc}"
    else:
        cam_problem = None if cam is not None else "This classifier has no spatial feature map: no Grad-CAM."
    view = api.word_map_view(path, image_id, word, cam, pre, opacity, method)
    if view is None:
        st.warning("The map could not be drawn (the image cannot be read).")
        return
    left, right = st.columns(2, gap="large")
    with left:
        st.image(view.word_picture, width="stretch",
                 caption=f"'{word}': where the classifier's features make the language model say it")
    with right:
        if view.class_picture is not None:
            st.image(view.class_picture, width="stretch",
                     caption=f"Grad-CAM of the predicted class, {r['prediction_name']}: where the prediction comes "
                             "from")
        else:
            st.info(cam_problem)
    where = (f"Its peak (the ring) is in {api.where_in(view.peak)} of the image." if view.peak is not None else
             f"The map is flat: no part of the image makes the language model any likelier to say '{word}', so it "
             "points nowhere.")
    st.caption(f"Method: **{view.method}** ({api.MAP_METHODS.get(view.method, view.method)}), over the "
               f"{view.sentences} sentences of this image that use '{word}'. {where} Red: most; blue: least. Both "
               "maps cover the centre crop the classifier sees. A map says where the features that carry the word "
               "come from, not that the word is right.")
    if reliability := evidence.reliability_text(evidence.map_reliability(path), view.method):
        st.caption(f"How far to trust these maps: {reliability}")


if source == "From the run":
    path = ui.require_run(run_a)
    evaluated, _ = ui.eval_tables(path)
    images = evaluated.images
    if images.empty:
        st.warning("This run has no images yet.")
        st.stop()
    groups = evaluated.group_names
    rows = images.set_index(images["image_id"].astype(str))
    # Which image: the URL's (?image=ID, from the Images page or a shared link), else the last one shown, else
    # the run's first misread image (the interesting ones), else its first.
    wanted = st.query_params.get(ui.URL_IMAGE)
    if wanted and st.session_state.get("_explain_from_url") != wanted:
        st.session_state["_explain_from_url"] = wanted
        st.session_state["explain_image_id"] = wanted
    if not st.session_state.get("explain_image_id"):
        misread = images[images["label"] != images["prediction"]]
        st.session_state["explain_image_id"] = str((misread if len(misread) else images)["image_id"].iloc[0])
    c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
    typed = c1.text_input("Image id", key="explain_image_id",
                          help="An image of run A by its id; browse, filter and click on the Images page.").strip()
    with c2:
        ui.link("pages/1_Images.py", "Choose on the Images page (table, map, slices)")
    if typed not in rows.index:
        close = [i for i in rows.index if typed and typed.lower() in i.lower()][:8]
        st.warning(f"No image **{typed}** in run {run_a.folder}"
                   + (f"; ids that contain it: {', '.join(close)}." if close else ".")
                   + " Pick one on the Images page.")
        st.stop()
    image_id = typed
    if st.query_params.get(ui.URL_IMAGE) != image_id:
        st.query_params[ui.URL_IMAGE] = image_id  # the URL names the image shown: reload or share it
    st.session_state["_explain_from_url"] = image_id  # a URL that says so is no news next time
    r = rows.loc[image_id]
    left, right = st.columns([1, 2], gap="large")
    with left:
        ui.show_image(evaluated.run.image_path(str(r["path"])), caption=str(r["path"]))
    with right:
        m1, m2, m3 = st.columns(3)
        m1.metric("Prediction", str(r["prediction_name"]))
        m2.metric("Confidence", ui.pct(r["confidence"], 1))
        m3.metric("True class", str(r["label_name"]), delta="correct" if r["label"] == r["prediction"] else "misread",
                  delta_color="normal" if r["label"] == r["prediction"] else "inverse")
        if "group" in r and pd.notna(r["group"]):  # pd.NA (nullable ints) as well as NaN
            st.caption(f"Group: {groups.get(int(r['group']), r['group'])}")
        if isinstance(r.get("error"), str) and r["error"]:
            st.error(f"This image could not be read when the run was made: {r['error']}")
    words = api.image_word_shares(evaluated, image_id)
    sentences = evaluated.run.sentences([image_id])["text"].tolist()
    n_sentences = int(r["n_sentences"]) if r["n_sentences"] == r["n_sentences"] and r["n_sentences"] else 0
    show_words(words, n_sentences, sentences, key=f"stored-{image_id}")
    word_map_section(path, image_id, r, words)
else:
    uploaded = st.file_uploader("An image file", type=list(api.UPLOAD_TYPES),
                                help="Explained live with the models of run A (classifier, translator, LM).")
    n_sentences = st.slider("Sentences to sample", 8, 64, 32, step=8,
                            help="More sentences give steadier word shares; ±2 points is sampling noise at 32.")
    if uploaded is None:
        st.caption("Upload a photo to see what the classifier's features say about it.")
        st.stop()
    try:
        image = api.decode_image(uploaded.getvalue(), name=f"'{uploaded.name}'")
    except ValueError as exc:
        st.error(f"**Cannot explain this upload.** {exc}")
        st.stop()
    path = ui.require_run(run_a)
    try:
        sources = registry.run_model_sources(ui.tables(path).manifest)
    except ValueError as exc:
        st.error(str(exc))
        st.stop()
    left, right = st.columns([1, 2], gap="large")
    with left:
        st.image(image, caption=uploaded.name, width="stretch")
    request = (uploaded.file_id, n_sentences, sources.describe())
    result = st.session_state.get(RESULT)
    if result is None or result["request"] != request:
        with right, st.status("Explaining the image…", expanded=True) as status:
            try:
                st.write("Loading the classifier, translator and language model (cached after the first time)…")
                clf, tr, lm = ui.load_models(sources)
                st.write(f"Sampling {n_sentences} sentences and counting their words…")
                from core.engine.config import ExplainConfig
                from core.engine.explainer import Explainer

                # As the run did: a run made without its translator's scene gate records None.
                gated = (ui.tables(path).manifest.get("models") or {}).get("scene_gate", True) is not None
                cfg = ExplainConfig(sentences_per_image=n_sentences, scene_gate=gated)
                out = Explainer(clf, tr, lm, cfg).explain([image])[0]
            except Exception as exc:  # a mismatched translator, a missing LM, an image the model cannot take
                status.update(label="Could not explain the image", state="error")
                st.error(f"**{type(exc).__name__}:** {exc}")
                st.stop()
            status.update(label="Explained", state="complete", expanded=False)
        result = {"request": request, **dataclasses.asdict(out)}
        st.session_state[RESULT] = result
    with right:
        m1, m2 = st.columns(2)
        m1.metric("Prediction", result["prediction_name"])
        m2.metric("Confidence", ui.pct(result["confidence"], 1))
        st.caption(f"Models: {sources.describe()}")
        if result.get("ruled_out"):
            st.caption(f"Scene gate: the classifier's features rule out {', '.join(result['ruled_out'])} here, so "
                       "sentences that name them were drawn again.")
    words = api.counts_frame(result["words"], len(result["sentences"]))
    show_words(words, len(result["sentences"]), result["sentences"][:10], key="upload")
