"""UI glue shared by every page: page set-up, the run pickers, cached loaders and small display helpers.

State that survives page changes lives in `st.session_state` under two keys: RUN_A and RUN_B hold the
folder paths of the chosen runs (RUN_B may be None). A run's tables are a view of its store (core.analysis.tables:
its cells are computed once per run fingerprint and kept on disk, rows are read only when a page shows them),
held with st.cache_resource; small results (summaries, word shares) with st.cache_data; all keyed by the run's
files' modification times, so a run that grows or a word marked core/spurious is picked up on the next rerun.
All computation is a call into `core`.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard/Home.py` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from core import store  # noqa: E402
from core.analysis import backgrounds  # noqa: E402
from core.analysis.spurious import ANNOTATIONS_FILE  # noqa: E402
from core.analysis.tables import RunTables, evaluation_tables  # noqa: E402
from core.models import registry  # noqa: E402
from core.store import MANIFEST, Run, describe_sentences, user_file  # noqa: E402
from dashboard import backend as api  # noqa: E402

RUN_A, RUN_B = "run_a", "run_b"  # session-state keys: the chosen runs' folder paths ("" for no run B)
DEFAULT_A = "demo-erm-test"
# Run B by default: ERM fixed from its own explanations, else the group-balanced classifier.
DEFAULT_B = ("demo-erm-fixed-test", "demo-robust-test")
PAGES = {  # page file -> (label, Material icon, what it is for): Home's shortcuts and each page's title
    "pages/1_Images.py": ("Images", ":material/photo_library:",
                          "every image: filter, sort, a map of the features, slices from words"),
    "pages/2_Explain_an_image.py": ("Explain an image", ":material/image_search:",
                                    "what the classifier's features say about one image"),
    "pages/3_Class_words.py": ("Class words", ":material/bar_chart:",
                               "word distributions per class and group, and contrasts"),
    "pages/4_Spurious_terms.py": ("Spurious terms", ":material/flag:",
                                  "words that pull a class toward another, with evidence"),
    "pages/5_Worst-group_accuracy.py": ("Worst-group accuracy", ":material/balance:",
                                        "per-group accuracy, inferred groups, mitigation"),
    "pages/6_Compare_classifiers.py": ("Compare classifiers", ":material/compare_arrows:",
                                       "two classifiers on the same images"),
    "pages/7_Report.py": ("Report", ":material/description:", "download HTML, JSON or Markdown"),
    "pages/8_New_run.py": ("New run", ":material/add_circle:", "explain a dataset with your classifier"),
}
DEMOS = {  # Home's demo buttons: title -> (what it shows, run A folder, run B folder or folders, first found)
    "Waterbirds": ("A landbird/waterbird classifier that learnt the background (ERM) next to the same classifier "
                   "fixed from its own explanations: the birds it misreads are explained with scene words.",
                   "demo-erm-test", DEFAULT_B),
    "ImageNet-9 backgrounds": ("An off-the-shelf ImageNet classifier on the Backgrounds Challenge: the same objects "
                               "on their own and on random backgrounds (accuracy per background: Worst-group page).",
                               "imagenet9-original", "imagenet9-mixed_rand"),
}
HOW_TO_MAKE_A_RUN = (
    "Make one on the **New run** page, or from a terminal:\n\n"
    "```\nmake setup        # offline assets (language model, WordNet, demo worlds) and the texplain command\n"
    ".venv/bin/texplain explain --dataset DATA --classifier CLASSIFIER --translator TRANSLATOR --out runs/NAME\n```")

_CSS = """
<style>
.block-container {padding-top: 2.2rem; padding-bottom: 2rem; max-width: 1280px;}
[data-testid="stMetricValue"] {font-size: 1.6rem;}
[data-testid="stSidebar"] [data-testid="stCaptionContainer"] {line-height: 1.25;}
.texplain-chip {display: inline-block; padding: 1px 9px; margin: 2px 4px 2px 0; border-radius: 10px;
  background: #fdf0e3; color: #8a4b0f; border: 1px solid #f0c89c; font-size: 0.9rem;}
.texplain-chip.core {background: #e8f0fb; color: #1d4f91; border-color: #b6cdee;}
</style>
"""


# --- where runs are --------------------------------------------------------------------------------

run_roots = store.run_roots  # {"shipped": ..., "yours": ...}, read from the environment on every call


def user_runs_root() -> Path:
    return run_roots()["yours"]


def run_entries() -> list[store.RunEntry]:
    return store.discover_runs(run_roots())


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def file_stamp(path: Path) -> int:
    """A file's modification time in ns (0 when it does not exist): a cache key that changes with the file."""
    return _mtime(Path(path))


def stamp(path: str) -> tuple[int, int]:
    """Changes whenever the run's manifest (new shards) or its annotations (core/spurious marks) change."""
    p = Path(path)
    return _mtime(p / MANIFEST), _mtime(user_file(p, ANNOTATIONS_FILE))


# --- cached loaders ---------------------------------------------------------------------------------

@st.cache_resource(show_spinner="Reading the run…", max_entries=16)
def _load_tables(path: str, _stamp: int) -> RunTables:
    tables = RunTables.from_run(Run.open(path))
    tables.stats  # noqa: B018  (the run's cells: one pass over its shards, or its cache; a broken shard fails here)
    return tables


def _fail(path: str, exc: Exception) -> None:
    st.error(f"**The run at `{path}` cannot be read.** {exc}\n\nPick another run in the sidebar; to rebuild this "
             "one, run its `texplain explain ... --out` command again (it resumes) or delete the folder.")
    st.stop()


def tables(path: str) -> RunTables:
    """A run's tables: a view of its store, whose rows are read only when a page asks for them (stops the page
    with a clear error when the run is broken)."""
    try:
        return _load_tables(path, stamp(path)[0])
    except Exception as exc:  # a broken folder: bad JSON, a corrupt Parquet shard, a missing table
        if type(exc).__name__ in ("StopException", "RerunException"):
            raise
        _fail(path, exc)


@st.cache_resource(show_spinner=False, max_entries=16)
def _eval_tables(path: str, _stamp: int) -> tuple[RunTables, str | None]:
    return evaluation_tables(tables(path))


def eval_tables(path: str) -> tuple[RunTables, str | None]:
    """The run's tables on its evaluation split (test when present, else all images)."""
    return _eval_tables(path, stamp(path)[0])


def image_info(path: str, image_ids: list[str]) -> pd.DataFrame:
    """The images rows of some of run `path`'s evaluation images, indexed by image_id (read by one query, not the
    whole table: what a page that shows a few images needs)."""
    evaluated, _ = eval_tables(path)
    return evaluated.images_of(list(image_ids)).drop_duplicates("image_id").set_index("image_id")


@st.cache_resource(show_spinner="Scoring spurious terms (the first time also loads WordNet)…", max_entries=16)
def _scorer(path: str, _stamp: tuple[int, int]):
    from core.analysis import SpuriousTermScorer

    evaluated, _ = eval_tables(path)
    return SpuriousTermScorer(split=None).fit(evaluated)


def scorer(path: str):
    """The run's SpuriousTermScorer, fitted on its evaluation split with the user's core/spurious marks."""
    try:
        return _scorer(path, stamp(path))
    except Exception as exc:
        if type(exc).__name__ in ("StopException", "RerunException"):
            raise
        _fail(path, exc)


def clear_scores() -> None:
    """Forget fitted scorers and summaries (after the user marks a word core or spurious)."""
    _scorer.clear()
    _summary.clear()
    _groups.clear()


@st.cache_data(show_spinner="Summarising the run…", max_entries=16)
def _summary(path: str, _stamp: tuple[int, int]) -> dict:
    evaluated, _ = eval_tables(path)
    return api.run_summary(evaluated, scorer(path))


def summary(path: str) -> dict:
    return _summary(path, stamp(path))


@st.cache_data(show_spinner="Comparing groups…", max_entries=16)
def _groups(path: str, _stamp: tuple[int, int]) -> api.GroupSummary:
    evaluated, _ = eval_tables(path)
    return api.group_summary(evaluated, scorer(path))


def groups(path: str) -> api.GroupSummary:
    return _groups(path, stamp(path))


@st.cache_data(show_spinner="Reading the variation runs…", max_entries=8)
def _background_challenge(path: str, _stamps: tuple) -> backgrounds.BackgroundChallenge | None:
    entries = run_entries()
    run = next((e for e in entries if str(e.path) == path), None)
    return backgrounds.background_challenge(run, entries) if run is not None else None


def background_challenge(entry: store.RunEntry) -> backgrounds.BackgroundChallenge | None:
    """Accuracy per ImageNet-9 variation and the BG-gap of run `entry`'s classifier (None: not such a run)."""
    runs = backgrounds.variation_runs(entry, run_entries())
    if not runs:
        return None
    try:
        return _background_challenge(str(entry.path), tuple((str(e.path), stamp(str(e.path))[0])
                                                            for e in runs.values()))
    except Exception as exc:  # one of the variation runs is broken
        if type(exc).__name__ in ("StopException", "RerunException"):
            raise
        _fail(str(entry.path), exc)


@st.cache_data(show_spinner="Counting words…", max_entries=32)
def _shares(path: str, _stamp: int, by: str | None, min_images: int) -> pd.DataFrame:
    from core.analysis import word_shares

    evaluated, _ = eval_tables(path)
    return word_shares(evaluated, by=by, min_images=min_images)


def shares(path: str, by: str | None = "label", min_images: int = 3) -> pd.DataFrame:
    return _shares(path, stamp(path)[0], by, min_images)


@st.cache_data(show_spinner="Comparing the two sets…", max_entries=32)
def _comparison(path: str, _stamp: int, name_a: str, name_b: str) -> api.SetComparison:
    evaluated, _ = eval_tables(path)
    return api.compare_sets(evaluated, name_a, name_b)


def comparison(path: str, name_a: str, name_b: str) -> api.SetComparison:
    return _comparison(path, stamp(path)[0], name_a, name_b)


@st.cache_data(show_spinner=False, max_entries=16)
def _same_explanations(a: str, b: str, _stamps: tuple) -> bool:
    return api.explanations_identical(tables(a), tables(b))


def same_explanations(a: str, b: str) -> bool:
    """Whether runs a and b hold the same words for the same images (e.g. a classifier and its DFR fix)."""
    return _same_explanations(a, b, (stamp(a)[0], stamp(b)[0]))


@st.cache_data(show_spinner="Listing the images…", max_entries=8)
def _image_rows(path: str, _stamp: tuple[int, int]) -> pd.DataFrame:
    from core.analysis.images import image_rows as rows

    evaluated, _ = eval_tables(path)
    return rows(evaluated, scorer(path).flagged_words())


def image_rows(path: str) -> pd.DataFrame:
    """Every evaluation image of a run as one row (core.analysis.images.image_rows), with its class's flags."""
    return _image_rows(path, stamp(path))


def feature_map_stamp(path: str) -> int:
    from core.analysis.images import FEATURE_MAP_FILE

    return _mtime(user_file(Path(path), FEATURE_MAP_FILE))


@st.cache_data(show_spinner=False, max_entries=8)
def _feature_map(path: str, _stamp: int) -> pd.DataFrame | None:
    from core.analysis.images import read_feature_map

    return read_feature_map(path)


def feature_map(path: str) -> pd.DataFrame | None:
    """The run's stored feature map (None before it is computed; ValueError when its file is broken)."""
    return _feature_map(path, feature_map_stamp(path))


@st.cache_data(show_spinner=False, max_entries=4096)
def thumbnail(file: str, _stamp: int, size: int = 72) -> str | None:
    return api.thumbnail_uri(file, size)


def thumbnails(run: store.Run | None, paths: list[str], size: int = 72) -> list[str | None]:
    """data: URIs of small thumbnails for a run's image paths (None where a file cannot be read)."""
    out = []
    for p in paths:
        file = run.image_path(str(p)) if run is not None else Path(p)
        out.append(thumbnail(str(file), _mtime(file), size))
    return out


@st.cache_data(show_spinner=False, max_entries=64)
def _word_shares(path: str, _stamp: int, word: str) -> pd.Series:
    from core.analysis.images import word_share

    evaluated, _ = eval_tables(path)
    return word_share(evaluated, word)


def word_shares_per_image(path: str, word: str) -> pd.Series:
    """image_id -> share of its sentences that use `word`."""
    return _word_shares(path, stamp(path)[0], word)


def compute_feature_map(path: str, progress) -> None:
    """Compute and store run `path`'s feature map with its own classifier (core.engine.feature_map)."""
    from core.engine.feature_map import build_feature_map, run_classifier

    run = Run.open(path)
    build_feature_map(run, classifier=run_classifier(run), progress=progress)
    _feature_map.clear()


@st.cache_resource(show_spinner="Cutting the slice…", max_entries=64)
def _word_slice(path: str, _stamp: int, spec):
    from core.analysis.slices import WordSlice

    evaluated, _ = eval_tables(path)
    return WordSlice.from_spec(spec).fit(evaluated)


def word_slice(path: str, spec):
    """The fitted WordSlice of `spec` on run `path`'s evaluation images."""
    return _word_slice(path, stamp(path)[0], spec)


@st.cache_data(show_spinner="Comparing the slice…", max_entries=32)
def _slice_comparison(a: str, b: str, _stamps: tuple, spec) -> pd.DataFrame:
    return word_slice(a, spec).compare(eval_tables(b)[0], names=(Path(a).name, Path(b).name))


def slice_comparison(a: str, b: str, spec) -> pd.DataFrame:
    """A slice of run a's images under run b's classifier (WordSlice.compare)."""
    return _slice_comparison(a, b, (stamp(a)[0], stamp(b)[0]), spec)


def same_data(a: str, b: str) -> bool:
    """Whether runs a and b explain the same images (so a slice or a per-image comparison applies to both)."""
    return api.dataset_mismatch(tables(a).manifest, tables(b).manifest) is None


def go_to(page: str, **query) -> None:
    """Switch to `page` (a key of PAGES) with query parameters; a page run on its own (a test) stays put."""
    from streamlit.errors import StreamlitAPIException

    try:
        st.switch_page(page, query_params=query or None)
    except StreamlitAPIException as exc:  # the page is not known: the app was started from another file
        st.error(f"Cannot open {PAGES[page][0]} from here ({exc}). Use the sidebar.")


def link(page: str, label: str) -> None:
    """A link to another page of the app (a caption when the page was started on its own)."""
    from streamlit.errors import StreamlitAPIException

    try:
        st.page_link(page, label=label, icon=PAGES[page][1])
    except StreamlitAPIException:
        st.caption(f"{label}: see **{PAGES[page][0]}** in the sidebar.")


def open_image(image_id: str) -> None:
    """Open one image of run A on Explain an image (its id in the URL, so the page can be shared)."""
    st.session_state["explain_image_id"] = str(image_id)
    go_to("pages/2_Explain_an_image.py", **{URL_IMAGE: str(image_id)})


@st.cache_resource(show_spinner=False)
def device_label() -> str:
    from core.device import resolve

    return resolve().label


@st.cache_data(ttl=60, show_spinner=False)
def asset_status() -> list[dict]:
    from dataclasses import asdict

    from core.demo.assets import status

    return [asdict(s) for s in status()]


# --- models (live explanations, new runs) --------------------------------------------------------------

@st.cache_resource(show_spinner=False, max_entries=2)
def language_model(name: str):
    from core.models.lm import load_language_model

    return load_language_model(name)


@st.cache_resource(show_spinner=False, max_entries=4)
def classifier(folder: str, _stamp: int = 0):
    from core.models.classifier import load_classifier

    return load_classifier(folder)


@st.cache_resource(show_spinner=False, max_entries=4)
def translator(folder: str, classifier_folder: str, lm_name: str, _stamp: int = 0):
    """A translator folder loaded against its classifier and LM (TranslatorMismatchError when they differ)."""
    from core.models.translator import Translator

    return Translator.from_pretrained(folder, classifier(classifier_folder, _mtime(Path(classifier_folder)
                                                                                   / "model.safetensors")),
                                      language_model(lm_name))


def load_models(sources: registry.ModelSources):
    """(classifier, translator, lm) for live explanations, cached across reruns and pages (core.engine.Explainer
    places them on the device)."""
    clf = classifier(sources.classifier, _mtime(Path(sources.classifier) / "model.safetensors"))
    lm = language_model(sources.lm)
    tr = translator(sources.translator, sources.classifier, sources.lm,
                    _mtime(Path(sources.translator) / "model.safetensors"))
    return registry.classifier_for_run(clf, sources), tr, lm


# --- page frame --------------------------------------------------------------------------------------

def _pick(label: str, slot: str, options: list, default, entries: dict, help: str) -> None:
    """A sidebar selectbox whose choice lives in st.session_state[slot], across pages and reruns."""
    widget = f"_{slot}_picker"
    current = st.session_state.get(slot, default)
    current = "" if current is None else current  # None (no run) is the "" option: a selectbox shows None as empty
    if current not in options:
        current = default
    # Set on every run: on a new page the widget is a new one, and only an explicit value carries over.
    st.session_state[widget] = current

    def remember():
        st.session_state[slot] = st.session_state[widget]

    st.sidebar.selectbox(label, options, key=widget, on_change=remember, help=help,
                         format_func=lambda p: "— none —" if not p else run_label(entries[p]))
    st.session_state[slot] = st.session_state[widget]


def run_label(entry: store.RunEntry) -> str:
    """How a picker names a run: a running job says so, with how far it is ("· running 64/200")."""
    if entry.status in ("running", "starting"):
        done, total = entry.progress.get("done_images"), entry.progress.get("total_images")
        so_far = f" {done}/{total}" if done is not None and total else ""
        return f"{entry.folder} · running{so_far} ({entry.location})"
    return entry.label


URL_A, URL_B, URL_IMAGE = "a", "b", "image"  # query parameters: the runs (and an image) survive a reload


def url_name(entry: store.RunEntry, entries: dict) -> str:
    """A run as the URL names it: its folder, or location:folder when two runs share a folder name."""
    twins = [e for e in entries.values() if e.folder == entry.folder]
    return entry.folder if len(twins) < 2 else f"{entry.location}:{entry.folder}"


def from_url(entries: dict) -> None:
    """On a session's first run (a reload, a shared link), take the runs named in the URL (?a=...&b=...)."""
    if st.session_state.get("_runs_from_url"):
        return
    st.session_state["_runs_from_url"] = True
    by_name = {url_name(e, entries): path for path, e in entries.items()}
    for param, slot in ((URL_A, RUN_A), (URL_B, RUN_B)):
        value = st.query_params.get(param)
        if value is None:
            continue
        if value == "" and slot == RUN_B:
            st.session_state[slot] = ""
        elif value in by_name:
            st.session_state[slot] = by_name[value]
        else:
            st.session_state["_url_problem"] = (f"The link names a run **{value}** that is not here; showing the "
                                                "default.")


def to_url(entries: dict) -> None:
    """Write the chosen runs into the URL, so that a reload or a copied link opens the same runs."""
    for param, slot in ((URL_A, RUN_A), (URL_B, RUN_B)):
        path = st.session_state.get(slot) or ""
        value = url_name(entries[path], entries) if path in entries else ""
        if st.query_params.get(param) != value:
            st.query_params[param] = value
    if problem := st.session_state.pop("_url_problem", None):
        st.sidebar.warning(problem)


def default_runs(entries: list[store.RunEntry]) -> tuple[str | None, str | None]:
    """Run A: the shipped demo-erm-test when present, else the first good run; run B: the first of DEFAULT_B."""
    good = [e for e in entries if e.ok]
    by_folder = {e.folder: str(e.path) for e in good if e.location == "shipped"}
    a = by_folder.get(DEFAULT_A) or (str(good[0].path) if good else None)
    b = next((by_folder[f] for f in DEFAULT_B if f in by_folder), None)
    return a, (b if b != a else None)


def demo_runs(entries: list[store.RunEntry]) -> dict[str, tuple[str, str, str]]:
    """The demos of DEMOS whose two runs are here: title -> (what it shows, run A path, run B path)."""
    by_folder: dict[str, str] = {}
    for e in entries:  # shipped runs first (discover_runs' order): a run of yours with the same name comes second
        if e.ok:
            by_folder.setdefault(e.folder, str(e.path))
    out = {}
    for title, (blurb, a, bs) in DEMOS.items():
        b = next((by_folder[f] for f in ((bs,) if isinstance(bs, str) else bs) if f in by_folder), None)
        if a in by_folder and b is not None:
            out[title] = (blurb, by_folder[a], b)
    return out


def select_runs(a: str, b: str | None) -> None:
    """Make `a` run A and `b` run B on every page (the sidebar pickers read these keys), then rerun."""
    st.session_state[RUN_A], st.session_state[RUN_B] = a, b or ""
    st.rerun()


HOME = ("TExplain Studio", ":material/visibility:")


def page(script: str, intro: str | None = None) -> tuple[store.RunEntry | None, store.RunEntry | None]:
    """Set up the page `script` (its __file__): config, style, sidebar run pickers, title; returns runs A and B."""
    name = Path(script).name
    title, icon = HOME if name == "Home.py" else PAGES[f"pages/{name}"][:2]
    st.set_page_config(page_title=f"{title} · TExplain Studio", page_icon=icon, layout="wide")
    st.markdown(_CSS, unsafe_allow_html=True)
    entries = run_entries()
    good = {str(e.path): e for e in entries if e.ok}
    st.sidebar.markdown("### Runs")
    if good:
        default_a, default_b = default_runs(entries)
        options = list(good)
        from_url(good)
        _pick("Run A", RUN_A, options, default_a, good, "The run every page shows; the first side of comparisons.")
        _pick("Run B (to compare)", RUN_B, ["", *options], default_b or "", good,
              "A second run, for Compare classifiers and comparison reports.")
        to_url(good)
        if st.session_state.get(RUN_A) and st.session_state.get(RUN_A) == st.session_state.get(RUN_B):
            st.sidebar.caption("Run B is the same as run A.")
    else:
        st.session_state[RUN_A] = st.session_state[RUN_B] = None
        st.sidebar.info("No runs yet.")
    broken = [e for e in entries if not e.ok]
    if broken:
        with st.sidebar.expander(f"{len(broken)} run folder(s) cannot be shown", icon=":material/warning:"):
            for e in broken:
                st.caption(f"**{e.folder}** ({e.location}): {e.error}")
    roots = run_roots()
    st.sidebar.caption(f"Demo runs: `{short_path(roots['shipped'])}` · your runs: `{short_path(roots['yours'])}`")
    st.title(f"{icon} {title}" if icon else title)
    if intro:
        st.caption(intro)
    a = good.get(st.session_state.get(RUN_A) or "")
    b = good.get(st.session_state.get(RUN_B) or "")
    return a, b


def short_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def mitigation_job_folder(entry: store.RunEntry) -> Path:
    """Where a mitigation job for this run keeps its log and results (outside checkpoints/ for shipped runs)."""
    return user_file(entry.path, "mitigation.json").parent


def require_run(entry: store.RunEntry | None, which: str = "run A") -> str:
    """The chosen run's path, or stop the page with what to do when there is none."""
    if entry is None:
        st.info(f"**No run is chosen** ({which}). There is no run to show yet.\n\n{HOW_TO_MAKE_A_RUN}")
        st.stop()
    if entry.health:  # partial or damaged: its shards checked against its manifest (core.store.RunHealth)
        st.warning(f"Run **{entry.folder}** is {entry.health}")
    elif entry.status not in ("complete",):
        done, total = entry.progress.get("done_images"), entry.progress.get("total_images")
        st.warning(f"Run **{entry.folder}** is {entry.status} ({done} of {total or '?'} images so far): numbers "
                   "cover the finished images only.")
    return str(entry.path)


def run_caption(path: str) -> None:
    """One line under a page title: which run, on which data and split."""
    evaluated, split = eval_tables(path)
    m = evaluated.manifest or {}
    models, dataset = m.get("models") or {}, m.get("dataset") or {}
    st.caption(f"Run **{Path(path).name}** · classifier **{models.get('classifier', '?')}** · dataset "
               f"**{dataset.get('name', '?')}** · {evaluated.stats.n_images} images"
               f"{f' of the {split} split' if split else ''}"
               f"{f' · {per}' if (per := describe_sentences(m.get('settings'), m.get('sentences'))) else ''}")


# --- display helpers -------------------------------------------------------------------------------------

def chart(fig, key: str | None = None) -> None:
    """A core.plots figure, full width, keeping its own look (not Streamlit's theme)."""
    from core.plots import legend_clear_of_titles

    st.plotly_chart(legend_clear_of_titles(fig), theme=None, key=key, config={"displaylogo": False, "responsive": True})


def pct(x, digits: int = 0) -> str:
    return api.as_percent(x, digits)


def delta(points: float | None, digits: int = 1) -> dict:
    """st.metric's delta arguments for a change in points: a change that rounds to zero is grey, not a green gain."""
    if points is None:
        return {"delta": None}
    text = f"{points:+.{digits}f} pts"
    if round(points, digits) == 0:
        return {"delta": text.replace("+", "±").replace("-", "±"), "delta_color": "off", "delta_arrow": "off"}
    return {"delta": text}


def show_image(path: Path, caption: str | None = None, width: int | str = "stretch") -> bool:
    """Show an image file; a warning (not an exception) when it is missing or unreadable."""
    from core.data import DatasetError, load_rgb

    try:
        st.image(load_rgb(path), caption=caption, width=width)
        return True
    except DatasetError as exc:
        st.warning(f"Image not shown: {exc}")
        return False


def chips(words, kind: str = "spurious") -> str:
    """Words as small coloured labels (HTML for st.markdown(unsafe_allow_html=True))."""
    import html

    cls = "texplain-chip core" if kind == "core" else "texplain-chip"
    return " ".join(f"<span class='{cls}'>{html.escape(str(w))}</span>" for w in words) or "–"
