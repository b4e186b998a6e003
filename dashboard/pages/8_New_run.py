"""Start explaining a dataset with your classifier and translator, in the background; follow, stop, resume."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: `core` and `dashboard`

import streamlit as st  # noqa: E402

from core import jobs, paths  # noqa: E402
from core.data import DatasetError, open_dataset  # noqa: E402
from core.errors import ClassifierLoadError  # noqa: E402
from core.models import registry  # noqa: E402
from dashboard import backend as api  # noqa: E402
from dashboard import common as ui  # noqa: E402

OTHER = "Another folder…"
AUTO = "auto"  # no --translator: explain finds or builds one (core.demo.auto_translator)
JOB_STATES = "new_run_states"  # session-state key: the last seen state of each job (to refresh on a change)

INTRO = ("Explain every image of a dataset with a classifier and its translator. The job runs in the "
         "background: it survives a page reload, and a stopped run resumes where it stopped.")
ui.page(__file__, INTRO)


def auto_translator(classifier_spec: str, lm_name: str) -> tuple[str, str] | None:
    """The translator `texplain explain` would pick for this classifier without --translator and what is known
    of its quality, or None (it would build one)."""
    from core.demo.auto_translator import find_translator, translator_quality

    found = find_translator(ui.classifier(classifier_spec), ui.language_model(lm_name))
    return (str(found), translator_quality(found)) if found else None


@st.cache_data(ttl=30, show_spinner="Reading the dataset…", max_entries=8)
def read_dataset(folder: str, variation: str | None = None) -> dict:
    return api.describe_dataset(open_dataset(folder, variation=variation))


def folder_picker(label: str, kind: str, key: str, help: str, builtin: dict[str, str] | None = None,
                  builtin_first: bool = False, placeholder: str = "/path/to/checkpoint folder") -> str:
    """A shipped checkpoint folder, a built-in model (`builtin`: spec -> label) or a folder the user types."""
    shipped = [str(p) for p in registry.checkpoint_folders(kind)]
    builtin = builtin or {}
    options = [*builtin, *shipped, OTHER] if builtin_first else [*shipped, *builtin, OTHER]
    choice = st.selectbox(label, options, key=f"{key}_choice", help=help,
                          format_func=lambda p: p if p == OTHER else builtin.get(p) or f"{Path(p).name} (shipped)")
    if choice == OTHER:
        return st.text_input(f"{label} folder", key=f"{key}_folder", placeholder=placeholder).strip()
    return choice


st.subheader("1 · Dataset")
default_data = str(paths.DEMO_DATA) if (paths.DEMO_DATA / "metadata.csv").exists() else ""
data_folder = st.text_input("Dataset folder", value=default_data, key="dataset_folder",
                            help="A Waterbirds folder (metadata.csv), a Backgrounds Challenge folder or an ImageFolder "
                                 "tree (one folder of images per class, optionally under train/ val/ test/).").strip()
dataset, variation = None, None
if data_folder:
    try:
        dataset = read_dataset(data_folder)
        if dataset.get("variations"):  # the Backgrounds Challenge: one run per variation folder
            variation = st.selectbox("Variation", dataset["variations"], key="variation",
                                     index=dataset["variations"].index(Path(dataset["root"]).name),
                                     help="The same objects as they are (original), alone (only_fg), on a background "
                                          "of their own class (mixed_same) or of a random class (mixed_rand).")
            dataset = read_dataset(data_folder, variation)
    except DatasetError as exc:
        st.error(f"**This folder is not a dataset TExplain can read.** {exc}")
    else:
        splits = ", ".join(f"{s} {n}" for s, n in dataset["splits"].items())
        st.success(f"**{dataset['name']}** ({dataset['kind']}): {dataset['n_images']} images ({splits}); classes "
                   f"{', '.join(dataset['class_names'])}" + (f"; {len(dataset['group_names'])} groups"
                                                             if dataset["group_names"] else "") + ".")

st.subheader("2 · Models")
c1, c2 = st.columns(2)
with c1:
    classifier = folder_picker("Classifier", "classifiers", "classifier",
                               "A classifier checkpoint folder (config.json + model.safetensors), a Hugging Face "
                               "image classifier folder, a TorchScript file, or an ImageNet EfficientNet-Lite as "
                               "it comes (its 1,000 classes are read in the dataset's). timm and torchvision "
                               "weights files: `texplain explain --classifier timm:ARCH --checkpoint FILE`.",
                               builtin={f"efficientnet-lite{i}": f"efficientnet-lite{i} (ImageNet, off the shelf)"
                                        for i in (0, 1, 2)},
                               placeholder="a checkpoint folder, hf:FOLDER or a TorchScript file")
with c2:
    translator = folder_picker("Translator", "translators", "translator",
                               "A translator trained for this classifier and language model. Automatic: one made "
                               "for this classifier's features (shipped or yours), else one built first by the "
                               "fast path, in minutes, from the general translator (no captions needed).",
                               builtin={AUTO: "Automatic: find one, or build one in minutes"}, builtin_first=True)
lm = st.text_input("Language model", value=api.DEFAULT_LM, help="The default SmolLM2, a local Hugging Face folder "
                                                                "or a .gguf file.").strip()


def check_models() -> bool:
    """Load the classifier, the LM and the translator against them; say what is wrong when they do not fit."""
    if not classifier or not translator:
        st.error("Choose a classifier and a translator.")
        return False
    try:
        if translator == AUTO:
            with st.spinner("Loading the classifier and the language model, looking for its translator…"):
                found = auto_translator(classifier, lm or api.DEFAULT_LM)
            if found:
                folder, quality = found
                st.success(f"The job will use **{folder}**, made for this classifier's features"
                           f"{f': {quality}' if quality else ''}.")
            else:
                st.info("No translator is made for this classifier yet: the job first builds one by the fast path "
                        "(a map of its features onto those the general translator reads, fitted on the demo "
                        "photos and the general caption world's images; about 10–15 minutes on a 2-core CPU, a "
                        "minute on a GPU), kept under "
                        f"{ui.user_runs_root()}/translators/ for the next run. Its log says how well the map "
                        "fits.", icon=":material/build:")
        else:
            with st.spinner("Loading the classifier, the language model and the translator…"):
                ui.translator(translator, classifier, lm or api.DEFAULT_LM)
    except Exception as exc:  # TranslatorMismatchError, ClassifierLoadError, a missing LM, a corrupt file
        kind = "The translator does not fit this classifier or language model" \
            if type(exc).__name__ == "TranslatorMismatchError" else "The models cannot be loaded"
        st.error(f"**{kind}.** {exc}")
        return False
    if translator != AUTO:
        st.success("The translator fits the classifier and the language model.")
    if dataset is None:
        return True
    try:  # predictions must count the dataset's classes, or every accuracy on the run is wrong
        note = api.classes_note(ui.classifier(classifier), open_dataset(data_folder, variation=variation))
    except (ClassifierLoadError, DatasetError) as exc:
        st.error(f"**The classifier's classes are not the dataset's.** {exc}")
        return False
    if note:
        st.info(note)
    return True


st.subheader("3 · Run")
c1, c2, c3 = st.columns([2, 1, 1])
split_options = ["all", *dataset["splits"]] if dataset else ["all"]
split = c2.selectbox("Split", split_options, index=split_options.index("test") if "test" in split_options else 0)
sentences = c3.number_input("Sentences per image", min_value=4, max_value=256, value=32, step=4,
                            help="The paper samples many; shares settle around 32–64.")
in_split = (dataset["n_images"] if split == "all" else dataset["splits"].get(split, 0)) if dataset else 0
s1, s2 = st.columns([1, 3], vertical_alignment="bottom")
sample = s1.number_input("Images to explain", min_value=1, max_value=max(in_split, 1), value=max(in_split, 1),
                         step=10, key="sample_size", disabled=not in_split,
                         help="Fewer than all: a sample stratified by group (each group keeps its share), drawn "
                              "with the run's seed; the same command resumes the same sample.")
if in_split:
    n_run = int(min(sample, in_split))
    try:
        guess = jobs.estimate(n_run, int(sentences))
    except jobs.JobError as exc:
        s2.caption(f"No time estimate: {exc}")
    else:
        what = f"all {in_split}" if n_run >= in_split else f"a sample of {n_run} of the {in_split}"
        s2.info(f"**{api.duration_text(guess.seconds)}** to explain {what} images at {int(sentences)} sentences "
                f"each on {guess.device.upper()}, plus loading the models ({guess.basis}).",
                icon=":material/schedule:")
with st.expander("Scale out on Ray (many GPUs or machines)"):
    use_ray = st.toggle("Run on Ray Data", key="use_ray",
                        help="Decoding and word counting run as Ray tasks, the models in a pool of actors (one GPU "
                             "each where there are GPUs). Same tables as a run in one process.")
    ray_address = st.text_input("Ray cluster", key="ray_address", placeholder="empty: a Ray started on this machine",
                                help="'auto' for the cluster already running here, or the head's HOST:6379.",
                                disabled=not use_ray).strip()
    ray_workers = st.number_input("Explainer actors", min_value=0, max_value=1024, value=0, key="ray_workers",
                                  help="0: one per GPU (or per spare CPU without GPUs).", disabled=not use_ray)
default_name = api.default_run_name(dataset["name"] if dataset else "run", classifier or "classifier",
                                    None if split == "all" else split)
name = c1.text_input("Run name", value=default_name, help=f"The run goes to {ui.user_runs_root()}/NAME.").strip()
buttons = st.container(horizontal=True)
check = buttons.button("Check models")
start = buttons.button("Start", type="primary", disabled=dataset is None)
if check:
    check_models()
if start:
    try:
        out = api.check_run_name(name, ui.user_runs_root())
    except ValueError as exc:
        st.error(str(exc))
    else:
        status = jobs.job_status(out)
        if status.running:
            st.error(f"A job is already running for {out.name}; stop it first.")
        elif check_models():
            if (out / "manifest.json").exists():
                st.info(f"{out.name} already exists: it is resumed if its settings are the same, refused otherwise.")
            try:
                jobs.start_explain(out, data_folder, classifier, None if translator == AUTO else translator,
                                   split=None if split == "all" else split, sentences=int(sentences),
                                   lm=lm or None, name=name,
                                   ray=(ray_address or "local") if use_ray else None,
                                   workers=int(ray_workers) or None, variation=variation,
                                   max_images=int(sample) if in_split and sample < in_split else None)
            except (jobs.JobError, OSError) as exc:
                st.error(f"The job could not be started: {exc}")
            else:
                st.success(f"Started **{out.name}** in the background. Its progress is below.")

st.subheader("Jobs")
found = jobs.list_jobs(ui.user_runs_root())
any_running = any(j.running for j in found)


@st.fragment(run_every=2.0 if any_running else None)
def show_jobs() -> None:
    current = jobs.list_jobs(ui.user_runs_root())
    if not current:
        st.caption("No job started from the dashboard yet.")
        return
    seen = st.session_state.setdefault(JOB_STATES, {})
    changed = False
    for job in current:
        key = job.out.name
        changed |= key in seen and seen[key] != job.state
        seen[key] = job.state
        with st.container(border=True):
            head, buttons = st.columns([4, 1])
            with head:
                st.markdown(f"**{key}** · {job.state}")
                st.progress(job.fraction, text=job.message)
                details = []
                if job.rate_images_per_s:
                    details.append(f"{job.rate_images_per_s:.2f} images/s")
                if job.eta_seconds is not None:
                    details.append(f"about {job.eta_seconds / 60:.0f} min left")
                if job.started:
                    details.append(f"started {job.started[:19].replace('T', ' ')} UTC")
                st.caption(" · ".join(details))
            with buttons:
                if job.running and st.button("Stop", key=f"stop-{key}"):
                    jobs.stop(job.out)
                    st.rerun()
                if job.resumable and st.button("Resume", key=f"resume-{key}", type="primary"):
                    try:
                        jobs.resume(job.out)
                    except jobs.JobError as exc:
                        st.error(str(exc))
                    else:
                        st.rerun(scope="app")
            if job.log_tail:
                with st.expander("Log"):
                    st.code(job.log_tail, language=None)
    if changed:  # a job finished or stopped: the run pickers should see it
        st.rerun(scope="app")


show_jobs()
if not any_running:
    st.caption("Nothing is running. A finished run appears in the sidebar's run pickers.")
